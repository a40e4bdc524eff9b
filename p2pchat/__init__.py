"""p2pchat: a serverless, end-to-end encrypted peer-to-peer messenger engine.

The engine is layered; a module imports only from its own layer or the ones below it, and
nothing here imports ``daemon`` or ``cli`` (``tests/core/test_layers.py`` checks this):

1. core (these top-level modules): ``identity`` (keys, IDs, friend codes), ``wire`` (the
   frame format of the friend, msg and file protocols, sans-IO), ``paths``, ``config``,
   ``events`` (fan-out to API subscribers), ``locks``, ``api`` (control-API vocabulary and
   the blocking client the CLI uses: it must stay importable without trio or libp2p);
2. ``storage``: the SQLite worker, schema and settings; ``ratchet``: Olm key bundles and
   sessions between friends (sans-IO over vodozemac);
3. ``net``: libp2p host, streams, links, DHT, records, discovery, relays, library patches;
4. ``chat``: roster, friend handshake, messages;
5. ``files``, ``mailbox`` and ``groups``: transfers between friends, messages held by
   friends for friends who are offline, and group chats;
6. ``calls``: 1:1 calls between friends, and group calls (which ask ``groups`` who is a
   member);
7. ``node``: one identity's engine, wiring all of the above under one nursery.

The package ``__init__`` modules import nothing, so ``import p2pchat.api`` stays light.
"""

__version__ = "0.1.0"
