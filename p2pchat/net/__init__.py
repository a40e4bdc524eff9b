"""Networking: everything that talks to libp2p.

Owns the libp2p host (TCP, Noise, Yamux) and dialing (:mod:`.host`), our bounded Yamux
(:mod:`.muxer`), the stream helpers every protocol uses (:mod:`.streams`), the per-peer
link tasks that keep a peer reachable with backoff (:mod:`.link`), the Kademlia overlay
(:mod:`.kad`) and its signed address records (:mod:`.records`, sans-IO), discovery
(:mod:`.discovery`), circuit relays and hole punching (:mod:`.relay`), and every patch of
py-libp2p's internals (:mod:`.compat`), and the daemon's lean import of py-libp2p
(:mod:`.lean`).

May import: the core modules (``p2pchat.identity``, ``p2pchat.wire``, ``p2pchat.api``),
``p2pchat.storage``. Never ``p2pchat.chat``, ``p2pchat.files``, ``p2pchat.calls``.
"""
