"""Friends and 1:1 messages.

Owns the friend handshake state table (:mod:`.friendship`, sans-IO), the strangers' rate
limits (:mod:`.ratelimit`, sans-IO), the contacts and messages tables (:mod:`.store`), the
roster of contacts that every other concern asks "is this peer a friend?" (:mod:`.roster`),
the friend protocol (:mod:`.friends`), the message protocol with its outbox delivery
(:mod:`.messages`) and each conversation's unread count (:mod:`.unread`).

May import: the core modules, ``p2pchat.storage``, ``p2pchat.net``. Never ``p2pchat.files``
or ``p2pchat.calls`` (they build on this package, not the other way round).
"""
