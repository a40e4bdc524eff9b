"""p2pchat's Yamux: the standard stream multiplexer, with a fraction of py-libp2p's CPU cost.

:mod:`.frames` holds the wire format, :mod:`.events` what received bytes mean,
:mod:`.session` the protocol as a plain class (no I/O), :mod:`.connection` the trio adapter
py-libp2p builds for every connection. docs/PROTOCOL.md §Yamux describes what is enforced.
"""
