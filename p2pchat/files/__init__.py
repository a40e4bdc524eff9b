"""File transfers between friends.

Owns the transfer state table (:mod:`.state`, sans-IO), the sealed record layer of the data
path (:mod:`.bulk`, sans-IO), safe names for received files (:mod:`.filenames`), the blocking
data pumps that run in worker threads (:mod:`.datapath`), the transfers table (:mod:`.store`),
and the trio adapter: the sender's and receiver's data sessions (:mod:`.sending`,
:mod:`.receiving`) and the manager that keeps the state table, user actions and links
(:mod:`.manager`).

May import: the core modules, ``p2pchat.storage``, ``p2pchat.net``, ``p2pchat.chat`` (the
roster: only friends may send files). Never ``p2pchat.calls``.
"""
