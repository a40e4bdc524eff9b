"""Every libp2p TCP connection keeps little unsent data in the kernel (``TCP_NOTSENT_LOWAT``),
and reads in large pieces.

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
from libp2p.io.exceptions import ConnectionClosedError
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


READ_AHEAD: Final = 256 * 1024
"""Bytes asked of the socket per receive. Noise reads each message as a 2-byte length, then
its body, each through its own ``read``: served from what one receive brought in, instead of
two system calls (and two trio waits) per message of at most 64 KiB."""


class TunedTCPStream(TrioTCPStream):
    """``TrioTCPStream`` whose socket keeps at most ``NOTSENT_LOWAT`` unsent bytes, and whose
    reads are served from one larger receive."""

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream)
        tune(stream.socket)
        self._ahead = b""
        self._at = 0

    async def read(self, n: int | None = None) -> bytes:
        """Up to ``n`` bytes (all that is here for None), as the library's ``read``: its
        errors, and ``b""`` at the end or once closed here."""
        if n is not None and n <= 0:
            return b""
        async with self.read_lock:
            if self._at >= len(self._ahead):
                self._ahead = await self._receive(max(n or 0, READ_AHEAD))
                self._at = 0
            end = len(self._ahead) if n is None else min(len(self._ahead), self._at + n)
            if self._at == 0 and end == len(self._ahead):
                data, self._ahead = self._ahead, b""
                return data
            data = self._ahead[self._at : end]
            self._at = end
            return data

    async def _receive(self, max_bytes: int) -> bytes:
        try:
            return await self.stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            raise ConnectionClosedError(
                f"TCP connection reset by remote peer: {exc}", transport="tcp"
            ) from exc
        except trio.ClosedResourceError:
            return b""
