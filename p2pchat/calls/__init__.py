"""Audio/video calls between friends.

Owns the signalling frames of ``/p2pchat/call/1.0.0`` (:mod:`.frames`, sans-IO), the call
state machine and the glare decision (:mod:`.state`, sans-IO), the aiortc media on its own
asyncio thread (:mod:`.media`; aiortc is imported only there, only when a call starts) and
the trio adapter that drives one call per task (:mod:`.manager`).

May import: the core modules, ``p2pchat.net``, ``p2pchat.chat`` (the roster: only friends
may call). Never ``p2pchat.files``.
"""
