"""Audio/video calls: 1:1 between friends, and group calls among a group's members.

Owns the signalling frames of ``/p2pchat/call/1.0.0`` (:mod:`.frames`, sans-IO), the call
state machine and the glare decision (:mod:`.state`, sans-IO), the aiortc media on its own
asyncio thread (:mod:`.media`; aiortc is imported only there and in :mod:`.conf_media`, only
when a call starts) and the trio adapter that drives one call per task (:mod:`.manager`).
Group calls: frames of ``/p2pchat/conf/1.0.0`` (:mod:`.conf_frames`), their state machine
(:mod:`.conference`), their media (:mod:`.conf_media`) and adapter (:mod:`.conferences`).

May import: the core modules, ``p2pchat.net``, ``p2pchat.chat`` (the roster: only friends
may call), ``p2pchat.groups`` (who is a member, for group calls). Never ``p2pchat.files``.
"""
