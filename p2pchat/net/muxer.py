"""Yamux with the receive-side limits py-libp2p 0.8.1 does not enforce, and cancel-safe writes.

py-libp2p's Yamux logs "peer exceeded receive window" and keeps buffering, and accepts any
number of streams per connection. A hostile peer can therefore make us buffer data without
bound (measured: +300 MB RSS from one stranger). :class:`BoundedYamux` is the stock muxer
with its per-stream buffers replaced by ones that refuse to grow past what flow control
allows, and with a cap on the streams a peer may open at once. py-libp2p builds its Yamux
connections from a hard-coded class (``muxer_multistream.Yamux``) whatever ``muxer_opt``
says, so :func:`install` points that name at :class:`BoundedYamux` (the patch itself, and the
check that the py-libp2p internals used here still exist, are in :mod:`p2pchat.net.compat`).

A violation raises :class:`YamuxLimitError`, an ``OSError``. Where py-libp2p's receive loop
meets it on a new stream's first frame, it closes the offending connection, as go-yamux
does; on a later DATA frame the loop only marks that stream finished, so its reader sees the
end. Either way nothing more is buffered. The wire format is untouched.

Cancel-safe writes: py-libp2p writes a frame by Noise-encrypting it (which uses up a nonce)
and then sending it on the socket. A write cancelled in between (a timeout, a nursery
ending; reads send window updates too) leaves the frame unsent or half sent, the peer fails
to decrypt the next one ("Failed authentication of message") and closes the connection,
killing every stream on it. :meth:`BoundedYamux._write_frame` therefore shields each frame's
write from cancellation; the caller's cancellation takes effect right after. A frame that
cannot be written within ``FRAME_WRITE_TIMEOUT`` means a dead peer: the connection is closed
rather than left half-written.

Remove this module when py-libp2p enforces its windows and makes frame writes atomic.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import trio
from libp2p.stream_muxer.exceptions import MuxedConnUnavailable
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, Yamux

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION: Final = 256
"""Concurrent streams (both directions) on one connection; p2pchat peers use a handful."""

WINDOW_SLACK_BYTES: Final = 64 * 1024
"""Tolerance over the advertised window, for frames already in flight when it shrank."""

FRAME_WRITE_TIMEOUT: Final = 30.0
"""Seconds one frame (at most 64 KiB) may take to write before the peer counts as dead."""


class YamuxLimitError(OSError):
    """The peer broke Yamux flow control or opened too many streams."""


class _BoundedBuffer(bytearray):
    """A stream's receive buffer that refuses to hold more than the peer may send."""

    def __init__(self, initial: bytes, muxer: Yamux, stream_id: int) -> None:
        super().__init__(initial)
        self._muxer = muxer
        self._stream_id = stream_id

    def extend(self, data: Any) -> None:
        stream = self._muxer.streams.get(self._stream_id)
        window = max(stream.target_recv_window if stream is not None else 0, DEFAULT_WINDOW_SIZE)
        if len(self) + len(data) > window + WINDOW_SLACK_BYTES:
            raise YamuxLimitError(
                f"peer {self._muxer.peer_id} overran the receive window of stream "
                f"{self._stream_id} ({len(self) + len(data)} bytes buffered, window {window})"
            )
        super().extend(data)


class _BoundedBuffers(dict[int, bytearray]):
    """The muxer's ``stream_buffers`` map: every buffer put in it is bounded."""

    def __init__(self, muxer: Yamux) -> None:
        super().__init__()
        self._muxer = muxer

    def __setitem__(self, stream_id: int, buffer: bytearray) -> None:
        # Only streams the peer opened count (failing our own open_stream here would leak its
        # slot inside py-libp2p). The connection's initiator uses odd stream IDs.
        # Every Yamux sets is_initiator_value in __init__ (compat.check verifies it).
        own_parity = 1 if self._muxer.is_initiator_value else 0
        if stream_id % 2 != own_parity and stream_id not in self:
            opened_by_peer = sum(1 for sid in self if sid % 2 != own_parity)
            if opened_by_peer >= MAX_STREAMS_PER_CONNECTION:
                raise YamuxLimitError(
                    f"peer {self._muxer.peer_id} opened more than {MAX_STREAMS_PER_CONNECTION} "
                    "streams on one connection"
                )
        super().__setitem__(stream_id, _BoundedBuffer(bytes(buffer), self._muxer, stream_id))


class BoundedYamux(Yamux):
    """py-libp2p's Yamux, with bounded receive buffers and a stream cap (see module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream_buffers = _BoundedBuffers(self)

    async def _write_frame(self, data: bytes) -> None:
        """Write one frame whole or not at all, whatever cancellation arrives meanwhile."""
        deadline = trio.current_time() + FRAME_WRITE_TIMEOUT
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            await super()._write_frame(data)
        if scope.cancelled_caught:  # half a frame may be out: the connection is unusable
            log.info("peer %s took no data for %.0f s: closing", self.peer_id, FRAME_WRITE_TIMEOUT)
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
                await self.secured_conn.close()
            raise MuxedConnUnavailable(f"writing to {self.peer_id} timed out")
        await trio.lowlevel.checkpoint_if_cancelled()  # the caller's cancellation lands here


def install() -> None:
    """Make py-libp2p build :class:`BoundedYamux` for every Yamux connection (idempotent):
    :func:`p2pchat.net.compat.install_bounded_yamux`, which holds the patch."""
    from p2pchat.net import compat  # compat imports this module

    compat.install_bounded_yamux()
