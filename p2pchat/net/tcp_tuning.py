"""Every libp2p TCP connection keeps little unsent data in the kernel (``TCP_NOTSENT_LOWAT``).

One libp2p connection carries many streams: chat, receipts, call signalling, DCUtR's hole
punch and, where no direct data connection can be made, file data. By default Linux lets a
socket's send buffer grow to megabytes, and every small frame queues behind all the bulk data
in it: through a relay with a 1 MB/s uplink, seconds. Measured in the NAT lab with a 40 MiB
file on the relayed stream: DCUtR's exchange over that connection failed for a whole minute
(until the transfer ended), so the transfer never moved to the direct path. With at most
``NOTSENT_LOWAT`` bytes waiting beyond what is in flight, the socket only reports itself
writable when that little is left; back-pressure then reaches the Yamux stream that sends bulk
(its window fills) instead of every other stream, and what is in flight is still a full
congestion window, so throughput does not suffer.

py-libp2p wraps each accepted and dialled ``trio.SocketStream`` in ``TrioTCPStream``, looked up
as a global of its TCP transport module; :func:`p2pchat.net.compat.install_tcp_tuning` points
that global at :class:`TunedTCPStream`.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Final

import trio
from libp2p.io.trio import TrioTCPStream

NOTSENT_LOWAT: Final = 128 * 1024
"""Unsent bytes a libp2p socket may hold beyond those in flight."""


def tune(sock: trio.socket.SocketType) -> None:
    """Apply the option to one TCP socket (quietly: a kernel without it keeps its default)."""
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    if option is None:  # pragma: no cover - Linux and macOS have it
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, NOTSENT_LOWAT)


class TunedTCPStream(TrioTCPStream):
    """``TrioTCPStream`` whose socket keeps at most ``NOTSENT_LOWAT`` unsent bytes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream)
        tune(stream.socket)
