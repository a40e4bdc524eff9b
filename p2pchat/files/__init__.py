"""File transfers between friends.

Sans-IO: the transfer state machine (:mod:`.state`), the sealed record layer of the data path
(:mod:`.bulk`), safe names for received files (:mod:`.filenames`). Blocking, run in threads:
the data pumps (:mod:`.datapath`) and the file operations (:mod:`.disk`). The transfers table
(:mod:`.store`) and its in-memory copy, through which every state change goes
(:mod:`.table`). The trio adapter: the direct TCP connection and pump threads
(:mod:`.direct`), the sender's and the receiver's data sessions (:mod:`.sending`,
:mod:`.receiving`, sharing :mod:`.sessions`), file notices both ways (:mod:`.notices`),
progress reports (:mod:`.progress`), and the manager that wires them, takes the user's
actions and keeps each friend's transfers moving (:mod:`.manager`).

May import: the core modules, ``p2pchat.storage``, ``p2pchat.net``, ``p2pchat.chat`` (the
roster: only friends may send files). Never ``p2pchat.calls``.
"""
