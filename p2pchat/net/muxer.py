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

One writer at a time, and a receive loop that never waits to write. Stock py-libp2p writes
from whichever task makes a frame, including its receive loop (ping replies, stream ACKs and
RSTs); while the socket is full that loop stops reading, so two peers sending pings and data
at once could each wait for the other to read until the frame timeout cut the connection
(seen in CI under load). Here frames go through one queue, in order: the receive loop only
queues its answers (at most ``MAX_PENDING_ANSWERS``; a peer asking for more while taking no
data is closed) and goes on reading; any other caller writes itself when no one else is
writing (the common case: no task switch), otherwise the current writer takes its frame
too, batching what queued up into one Noise message; what a writer leaves queued, and the
receive loop's answers, the connection's sender task writes. Flow control still holds
writers back, since each waits for its own frame.

A frame is never half written (py-libp2p's writes were not cancel-safe: a frame cancelled
after Noise encrypted it, or midway through the socket write, made the peer fail to decrypt
the next one, "Failed authentication of message", and close the connection, killing every
stream): a caller waits for its frame shielded, whoever writes it, and its cancellation
lands right after. A write that takes longer than ``FRAME_WRITE_TIMEOUT`` means a dead
peer: the connection is closed rather than left half-written.

Remove this module when py-libp2p enforces its windows and writes from one task.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Final

import trio
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.stream_muxer.exceptions import MuxedConnUnavailable
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, Yamux

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION: Final = 256
"""Concurrent streams (both directions) on one connection; p2pchat peers use a handful."""

WINDOW_SLACK_BYTES: Final = 256 * 1024
"""Tolerance over the advertised window, for frames already in flight when it shrank, and
for py-libp2p's own accounting: a stock sender with a full 1 MiB window was measured
sending a few hundred bytes past window + 64 KiB (it grants a little beyond its target)."""

FRAME_WRITE_TIMEOUT: Final = 30.0
"""Seconds one write (at most ``SEND_BATCH_BYTES``) may take before the peer counts as dead."""

SEND_BATCH_BYTES: Final = 65535 - 16
"""Queued frames joined into one write (a frame bigger than this goes alone): at most one
Noise message's plaintext (65,535 bytes less the 16-byte tag), so a batch is one message
(at 64 KiB every full batch also cost a second, 17-byte message), bounded like a single
frame for ``FRAME_WRITE_TIMEOUT``."""

MAX_RECEIVE_WINDOW: Final = 1024 * 1024
"""How far a stream's receive window may grow (py-libp2p and go-yamux: 16 MiB). Each stream
may have that much in flight on one hop, and everything else on the connection queues behind
it: through a relay's 1 MB/s uplink, 16 MiB on each of its two hops was half a minute, and
DCUtR's stream on that connection timed out for as long as a file moved (measured in the NAT
lab). 1 MiB still allows 10 MB/s per stream at 100 ms round trips, more than a relay gives;
direct connections carry bulk data outside libp2p (``p2pchat.files.direct``)."""

MAX_PENDING_ANSWERS: Final = 4096
"""Frames the receive loop may have queued and unwritten (ping replies, ACKs, RSTs)."""


class YamuxLimitError(OSError):
    """The peer broke Yamux flow control or opened too many streams."""


class _BoundedBuffer(bytearray):
    """A stream's receive buffer that refuses to hold more than the peer may send.

    Once it has refused a frame it refuses every later one: py-libp2p then marks the stream
    finished but still appends the frames already in flight, so without this the reader would
    get the bytes after the refused frame, a gap in the middle of the stream (seen: file
    records failing authentication, the transfer failed). This way the reader gets what came
    before the gap, then the end of the stream."""

    def __init__(self, initial: bytes, muxer: Yamux, stream_id: int) -> None:
        super().__init__(initial)
        self._muxer = muxer
        self._stream_id = stream_id
        self._refused = False

    def extend(self, data: Any) -> None:
        if self._refused:
            raise YamuxLimitError(
                f"stream {self._stream_id} of {self._muxer.peer_id} already overran its window"
            )
        stream = self._muxer.streams.get(self._stream_id)
        window = max(stream.target_recv_window if stream is not None else 0, DEFAULT_WINDOW_SIZE)
        if len(self) + len(data) > window + WINDOW_SLACK_BYTES:
            self._refused = True
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


class _Frame:
    """One queued frame; ``done`` (absent for the receive loop's answers) is set once the
    frame is written or the connection has failed (then ``error`` says why)."""

    __slots__ = ("data", "done", "error")

    def __init__(self, data: bytes, done: trio.Event | None) -> None:
        self.data = data
        self.done = done
        self.error: BaseException | None = None


class BoundedYamux(Yamux):
    """py-libp2p's Yamux, with bounded receive buffers, a stream cap and one sender task
    (see module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream_buffers = _BoundedBuffers(self)
        self._outbox: deque[_Frame] = deque()
        self._writing = False
        self._sender_waiting = trio.lowlevel.ParkingLot()
        self._sender_running = False
        self._pending_answers = 0
        self._send_error: BaseException | None = None
        self._receiver: trio.lowlevel.Task | None = None

    async def start(self) -> None:
        """The stock start (receive loop, pings, sweeper), with the sender beside it. Once
        it ends (the connection's tasks cancelled, as when the daemon stops) the socket may
        still be open: callers then write everything queued themselves (a call's hang-up
        sent during shutdown still goes out)."""
        async with trio.open_nursery() as nursery:
            self._sender_running = True
            nursery.start_soon(self._send_loop)
            try:
                await super().start()
            finally:
                self._sender_running = False
                nursery.cancel_scope.cancel()

    async def handle_incoming(self) -> None:
        """The stock receive loop; remembered so that its own frames are queued, not awaited."""
        self._receiver = trio.lowlevel.current_task()
        await super().handle_incoming()

    async def _write_frame(self, data: bytes) -> None:
        """Write one frame whole, in order with every other. The receive loop only queues
        its frames (they must never wait for the peer to read) and goes on. Any other caller
        writes itself when no one else is writing, else waits for the writer to take its
        frame too; either way shielded, so a frame is never cut in half and the caller's
        cancellation lands once its frame is out."""
        if self._send_error is not None:
            raise ConnectionClosedError(f"writing to {self.peer_id}: {self._send_error}")
        if trio.lowlevel.current_task() is self._receiver:
            if self._pending_answers >= MAX_PENDING_ANSWERS:
                raise YamuxLimitError(
                    f"peer {self.peer_id} takes no data but asked for {MAX_PENDING_ANSWERS} answers"
                )
            self._pending_answers += 1
            self._outbox.append(_Frame(data, None))
            if not self._writing:
                self._sender_waiting.unpark_all()
            await trio.lowlevel.checkpoint()
            return
        frame = _Frame(data, trio.Event())
        self._outbox.append(frame)
        # Shielded either way: a frame handed over is written before its caller goes on (a
        # hang-up sent as a daemon stops goes out before the connection closes). The wait
        # ends: every write has a deadline, and a failed one fails every queued frame.
        with trio.CancelScope(shield=True):
            if self._writing:
                assert frame.done is not None
                await frame.done.wait()
            else:
                await self._write_queued(until=frame)
        if frame.error is not None:
            raise ConnectionClosedError(f"writing to {self.peer_id}: {frame.error}")
        await trio.lowlevel.checkpoint_if_cancelled()  # a writer's cancellation lands here

    async def _send_loop(self) -> None:
        """Write what the receive loop queued, and what a writer left queued, when no
        caller is writing."""
        while True:
            while self._send_error is None and (not self._outbox or self._writing):
                await self._sender_waiting.park()
            if self._send_error is not None:
                return
            await self._write_queued(until=None)

    async def _write_queued(self, until: _Frame | None) -> None:
        """As the one writer: write queued frames in order, a batch at a time, until
        ``until`` is written (``None``: until the queue is empty) or the connection fails."""
        self._writing = True
        try:
            while self._outbox:
                batch: list[_Frame] = []
                size = 0
                while self._outbox and (
                    not batch or size + len(self._outbox[0].data) <= SEND_BATCH_BYTES
                ):
                    queued = self._outbox.popleft()
                    batch.append(queued)
                    size += len(queued.data)
                data = batch[0].data if len(batch) == 1 else b"".join(f.data for f in batch)
                try:
                    # Shielded, for the sender task too: cancelled as the connection's
                    # tasks end, it still finishes the batch rather than cut a frame.
                    deadline = trio.current_time() + FRAME_WRITE_TIMEOUT
                    with trio.CancelScope(shield=True, deadline=deadline) as scope:
                        await self.secured_conn.write(data)
                except Exception as exc:  # the transport's errors, whatever their type
                    await self._give_up(exc, batch)
                    return
                if scope.cancelled_caught:  # part of a batch may be out: unusable connection
                    log.info(
                        "peer %s took no data for %.0f s: closing",
                        self.peer_id,
                        FRAME_WRITE_TIMEOUT,
                    )
                    error = MuxedConnUnavailable(f"writing to {self.peer_id} timed out")
                    await self._give_up(error, batch)
                    return
                for written in batch:
                    if written.done is None:
                        self._pending_answers -= 1
                    else:
                        written.done.set()
                if self._written(until) and self._sender_running:
                    return  # the sender task takes the rest; without it, this writer does
        finally:
            self._writing = False
            if self._outbox:  # left for the sender task
                self._sender_waiting.unpark_all()

    async def _give_up(self, error: BaseException, batch: list[_Frame]) -> None:
        """A write failed or timed out: fail every frame and close the connection (its
        receive loop then ends too, rather than go on with a connection that cannot send)."""
        self._fail_outbox(error, batch)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
            try:
                await self.secured_conn.close()
            except Exception as exc:  # already closed, or the transport's own error
                log.debug("closing the connection to %s: %s", self.peer_id, exc)

    @staticmethod
    def _written(frame: _Frame | None) -> bool:
        return frame is not None and frame.done is not None and frame.done.is_set()

    def _fail_outbox(self, error: BaseException, batch: list[_Frame] | None = None) -> None:
        """Fail the frames in flight and queued, and every later write, with ``error``."""
        if self._send_error is None:
            self._send_error = error
            self._sender_waiting.unpark_all()
        for frame in [*(batch or ()), *self._outbox]:
            frame.error = error
            if frame.done is not None:
                frame.done.set()
        self._outbox.clear()


def install() -> None:
    """Make py-libp2p build :class:`BoundedYamux` for every Yamux connection (idempotent):
    :func:`p2pchat.net.compat.install_bounded_yamux`, which holds the patch."""
    from p2pchat.net import compat  # compat imports this module

    compat.install_bounded_yamux()
