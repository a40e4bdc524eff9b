"""The trio side of p2pchat's Yamux: py-libp2p's muxer interface over a :class:`Session`.

:class:`LeanYamux` is what py-libp2p builds for every Yamux connection (installed by
:func:`p2pchat.net.compat.install_lean_yamux`); it speaks the standard wire format, so its
peers may be stock py-libp2p, go-libp2p or js-libp2p. It replaces py-libp2p's own Yamux,
whose per-frame costs were measured to be most of a libp2p stream's CPU: two or more reads
per frame, a debug-log line per frame, a window update written as its own Noise message
after every read, and locks on every step.

Here one receive loop reads whole Noise messages and hands them to the session, which
reports each stream's data as it arrives; readers take it from the stream's queue (a read
never writes: the window update it makes due goes to the sender task, so a read cancelled
can never lose the bytes it took). Frames go out through one writer at a time, control
frames before data: a caller writes itself when no one else is writing (the common case: no
task switch), otherwise the current writer takes its frame too, in batches of at most one
Noise message. The receive loop never writes either (ping answers, ACKs, RSTs are queued for
the connection's sender task): so two peers each waiting for the other to read can never
stall. A frame is never half written: a writer waits for its frame shielded, and its
cancellation lands right after; a write that takes longer than ``WRITE_TIMEOUT`` means a
dead peer, and the connection is closed. A peer that breaks the protocol (see
:mod:`~p2pchat.net.yamux.session`), or leaves ``MAX_UNWRITTEN_ANSWERS`` bytes of control
frames unread, is sent GO_AWAY and disconnected; a stream we closed that the peer never
closes is reset after ``HALF_CLOSED_TIMEOUT``.

When only the connection's tasks are cancelled (the daemon stopping) the socket is left
open, so that clean-ups elsewhere can still say goodbye; py-libp2p's swarm closes its
connections as it stops, which is why the daemon hangs up calls before it cancels anything
(``Node.before_stop``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import islice
from types import TracebackType
from typing import Any, Final

import multiaddr
import trio
from libp2p.abc import IMuxedConn, IMuxedStream, ISecureConn
from libp2p.connection_types import ConnectionType
from libp2p.io.exceptions import ConnectionClosedError, IOException
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import (
    MuxedConnUnavailable,
    MuxedStreamClosed,
    MuxedStreamEOF,
    MuxedStreamError,
    MuxedStreamReset,
)

from p2pchat.net.yamux import events as ev
from p2pchat.net.yamux import frames as fr
from p2pchat.net.yamux.session import (
    DEFAULT_MAX_WINDOW,
    MAX_FRAME_PAYLOAD,
    Session,
    YamuxProtocolError,
)

log = logging.getLogger(__name__)

SEND_BATCH_BYTES: Final = 65535 - 16
"""Queued output joined into one write: at most one Noise message's plaintext."""

RELAYED_BATCH_BYTES: Final = MAX_FRAME_PAYLOAD - 2 - 16
"""The same on a relayed connection, which runs inside a stream of the connection to the
relay: one write is then one inner Noise message (2-byte length, plaintext, 16-byte tag),
and that fits the outer connection's largest DATA frame exactly, so each hop moves it as
one frame in one outer Noise message (at 65,519 bytes each inner message took two: one
full, one of 30 bytes, on every hop)."""

WRITE_TIMEOUT: Final = 30.0
"""Seconds one batch may take to write before the peer counts as dead."""

WINDOW_TIMEOUT: Final = 30.0
"""Seconds a writer waits for the peer to grant window before the stream is reset."""

MAX_UNWRITTEN_ANSWERS: Final = 1024 * 1024
"""Control bytes (pongs, ACKs, refusals, window updates) that may wait unwritten: more means
a peer that asks and does not read."""

TRANSPORT_ENDS: Final = (
    IOException,
    OSError,
    EOFError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)
"""How the secure channel under a connection ends (py-libp2p's I/O errors cover TCP and
relayed streams alike); anything else ending the receive loop is a bug, logged as one."""

HALF_CLOSED_TIMEOUT: Final = 300.0
"""Seconds a stream we closed may wait for the peer to close its side before it is reset
(go-yamux's stream close timeout): a peer that never does must not keep it, and what it
sends into it, for the life of the connection."""

SMALL_CHUNK: Final = 4096
MERGE_UP_TO: Final = 64 * 1024
"""Received pieces under ``SMALL_CHUNK`` bytes join the last one while it is under
``MERGE_UP_TO``, so a window's worth of tiny frames costs about the window in memory."""

REGISTER_WAIT: Final = 1.0
"""Seconds a connection that ended at once waits for py-libp2p's swarm to list it, so that
telling the swarm it ended removes it (see ``LeanYamux._until_registered``)."""

CLOSE_TIMEOUT: Final = 2.0
"""Seconds closing may spend sending GO_AWAY and closing the secure channel."""

SHUTDOWN_TIMEOUT: Final = 10.0
"""Seconds a connection that ended may spend telling py-libp2p (its ``on_close`` hook), even
while the daemon is being cancelled."""


def _relayed(secured_conn: ISecureConn) -> bool:
    try:
        return secured_conn.get_connection_type() is ConnectionType.RELAYED
    except Exception:  # a secure channel that cannot tell is taken as direct
        return False


class LeanYamux(IMuxedConn):
    """A Yamux connection (see module doc), built by py-libp2p as it builds its own."""

    def __init__(
        self,
        secured_conn: ISecureConn,
        peer_id: ID,
        is_initiator: bool | None = None,
        on_close: Callable[[], Awaitable[Any]] | None = None,
        *,
        max_window: int = DEFAULT_MAX_WINDOW,
    ) -> None:
        self.secured_conn = secured_conn
        self.peer_id = peer_id
        self.on_close = on_close
        self.is_initiator_value = (
            secured_conn.is_initiator if is_initiator is None else is_initiator
        )
        self._batch = RELAYED_BATCH_BYTES if _relayed(secured_conn) else SEND_BATCH_BYTES
        self._session = Session(
            client=self.is_initiator_value,
            max_window=max_window,
            max_frame_payload=self._batch - fr.HEADER_SIZE,
        )
        self._streams: dict[int, LeanYamuxStream] = {}
        self._accepted: deque[LeanYamuxStream] = deque()
        self._accept_wait = trio.lowlevel.ParkingLot()
        self.event_started = trio.Event()
        self.event_shutting_down = trio.Event()
        self.event_closed = trio.Event()
        self._done = (0, 0)  # of the session's two queues, the bytes written so far
        self._writing = False
        self._progress = trio.lowlevel.ParkingLot()
        self._sender_wake = trio.lowlevel.ParkingLot()
        self._failure: BaseException | None = None
        self._nursery: trio.Nursery | None = None
        self._created_at = time.time()

    # --- IMuxedConn -------------------------------------------------------------------------

    @property
    def is_initiator(self) -> bool:
        return self.is_initiator_value

    @property
    def is_established(self) -> bool:
        """Running, and still taking new streams (not after the peer's GO_AWAY)."""
        return (
            self.event_started.is_set()
            and not self.event_shutting_down.is_set()
            and not self._session.go_away_received
        )

    @property
    def is_closed(self) -> bool:
        return self.event_closed.is_set()

    def get_transport_addresses(self) -> list[multiaddr.Multiaddr]:
        return self.secured_conn.get_transport_addresses()

    def get_connection_type(self) -> ConnectionType:
        return self.secured_conn.get_connection_type()

    def get_remote_address(self) -> tuple[str, int] | None:
        return self.secured_conn.get_remote_address()

    async def start(self) -> None:
        """Run the connection: its receive loop and sender task, until it closes."""
        if self.event_started.is_set():
            return
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._send_loop)
            nursery.start_soon(self._sweep_half_closed)
            await nursery.start(self._receive_loop)
            self.event_started.set()

    async def close(self) -> None:
        """Say GO_AWAY, close the secure channel and end every stream. Idempotent."""
        if self.event_shutting_down.is_set():
            await self.event_closed.wait()
            return
        self._session.go_away(fr.GO_AWAY_NORMAL)
        await self._say_goodbye()
        await self._shut_down(None)

    async def open_stream(self) -> LeanYamuxStream:
        if self.event_shutting_down.is_set() or self._failure is not None:
            raise MuxedConnUnavailable(f"the connection to {self.peer_id} is closed")
        try:
            stream_id = self._session.open_stream()
        except YamuxProtocolError as exc:
            raise MuxedConnUnavailable(f"{self.peer_id}: {exc}") from exc
        stream = LeanYamuxStream(stream_id, self, is_initiator=True)
        self._streams[stream_id] = stream
        try:
            await self._flush(self._session.mark())
        except ConnectionClosedError as exc:
            raise MuxedStreamError(f"opening a stream to {self.peer_id}: {exc}") from exc
        except trio.Cancelled:  # the SYN went out, but no one will ever use the stream
            self._session.reset_stream(stream_id)
            self._streams.pop(stream_id, None)
            self._wake_sender()
            raise
        return stream

    async def accept_stream(self) -> IMuxedStream:
        while not self._accepted:
            if self.event_shutting_down.is_set():
                raise MuxedConnUnavailable(f"the connection to {self.peer_id} is closed")
            await self._accept_wait.park()
        return self._accepted.popleft()

    # --- receiving --------------------------------------------------------------------------

    async def _receive_loop(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        error: BaseException | None = None
        cancelled = False
        try:
            while True:
                data = await self.secured_conn.read(None)
                if not data:
                    break
                self._handle(self._session.receive(data))
                if self._session.control_unsent > MAX_UNWRITTEN_ANSWERS:
                    raise YamuxProtocolError(
                        f"asked for {MAX_UNWRITTEN_ANSWERS} bytes of answers it does not read"
                    )
                self._wake_sender()
        except YamuxProtocolError as exc:
            log.info("peer %s broke the Yamux protocol: %s; disconnecting", self.peer_id, exc)
            error = exc
            self._session.go_away(fr.GO_AWAY_PROTOCOL_ERROR)
            await self._say_goodbye()
        except TRANSPORT_ENDS as exc:
            log.debug("connection to %s ended: %r", self.peer_id, exc)
            error = exc
        except Exception as exc:  # a bug here or below: ends the connection, not quietly
            log.warning("connection to %s failed: %r", self.peer_id, exc, exc_info=True)
            error = exc
        except trio.Cancelled:
            # The connection's tasks are cancelled (the daemon stopping; or close(), which
            # shuts down itself): the socket stays open, and callers write what they still
            # have to say themselves, so a call's hang-up sent as the daemon stops goes out.
            cancelled = True
            raise
        finally:
            if not cancelled:
                deadline = trio.current_time() + SHUTDOWN_TIMEOUT
                with trio.CancelScope(shield=True, deadline=deadline):
                    await self._shut_down(error or ConnectionClosedError("closed by the peer"))

    def _handle(self, events: list[ev.Event]) -> None:
        for event in events:
            if isinstance(event, ev.DataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._received(event.data)
            elif isinstance(event, ev.WindowOpened):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._wake_writer()
            elif isinstance(event, ev.StreamOpened):
                stream = LeanYamuxStream(event.stream_id, self, is_initiator=False)
                self._streams[event.stream_id] = stream
                self._accepted.append(stream)
                self._accept_wait.unpark_all()
            elif isinstance(event, ev.StreamEnded):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._ended()
                    self._forget(event.stream_id)
            elif isinstance(event, ev.StreamReset):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    stream._was_reset()
            elif isinstance(event, ev.GoAwayReceived):
                log.debug("peer %s sent GO_AWAY %d", self.peer_id, event.code)

    def _forget(self, stream_id: int) -> None:
        if not self._session.is_open(stream_id):
            self._streams.pop(stream_id, None)

    # --- sending ----------------------------------------------------------------------------

    def _reached(self, mark: tuple[int, int]) -> bool:
        return self._done[0] >= mark[0] and self._done[1] >= mark[1]

    def _wake_sender(self) -> None:
        """Have the sender task write what is queued, unless a writer is at it already."""
        if self._session.bytes_to_send and not self._writing:
            self._sender_wake.unpark_all()

    async def _flush(self, mark: tuple[int, int]) -> None:
        """Return once the output up to ``mark`` (a :meth:`Session.mark`) is written: as the
        writer, or waiting for the one writing. Shielded, so no frame is cut in half; a
        caller's cancellation lands once its frame is out. Raises ConnectionClosedError if
        the connection failed first."""
        if not self._reached(mark) and self._failure is None:
            with trio.CancelScope(shield=True):
                while not self._reached(mark) and self._failure is None:
                    if self._writing:
                        await self._progress.park()
                    else:
                        await self._write_until(mark)
        if not self._reached(mark):
            raise ConnectionClosedError(f"writing to {self.peer_id}: {self._failure}")
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _write_until(self, mark: tuple[int, int] | None) -> None:
        """As the one writer: write queued output a batch at a time until ``mark`` (None:
        all of it) is out or the connection fails."""
        self._writing = True
        try:
            while self._session.bytes_to_send and (mark is None or not self._reached(mark)):
                data = self._session.data_to_send(self._batch)
                with trio.move_on_after(WRITE_TIMEOUT) as scope:
                    try:
                        await self.secured_conn.write(data)
                    except Exception as exc:  # the transport's errors, whatever their type
                        self._fail(exc)
                        await self._close_channel()
                        return
                if scope.cancelled_caught:  # part of a batch may be out: unusable connection
                    log.info(
                        "peer %s took no data for %.0f s: closing", self.peer_id, WRITE_TIMEOUT
                    )
                    self._fail(MuxedConnUnavailable(f"writing to {self.peer_id} timed out"))
                    await self._close_channel()
                    return
                self._done = (self._session.control_out, self._session.data_out)
                self._progress.unpark_all()
        finally:
            self._writing = False
            self._progress.unpark_all()
            if self._session.bytes_to_send:
                self._sender_wake.unpark_all()

    async def _sweep_half_closed(self) -> None:
        """Reset streams we closed whose peer has not closed its side for
        ``HALF_CLOSED_TIMEOUT``."""
        while True:
            await trio.sleep(HALF_CLOSED_TIMEOUT / 10)
            now = trio.current_time()
            for stream in list(self._streams.values()):
                overdue = now - stream._closed_at >= HALF_CLOSED_TIMEOUT
                if stream._closed and not stream._fin and not stream._reset and overdue:
                    log.debug("a stream to %s half-closed too long: reset", self.peer_id)
                    await stream.reset()

    async def _say_goodbye(self) -> None:
        """Write what is queued (GO_AWAY last) before the connection closes: best effort,
        within ``CLOSE_TIMEOUT``, and not at all if a write is stuck on a peer that reads
        nothing (the connection closes right after either way)."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
            while self._writing and self._failure is None:  # a write under way ends first
                await self._progress.park()
            if self._failure is not None:
                return
            self._writing = True
            try:
                while self._session.bytes_to_send:
                    data = self._session.data_to_send(self._batch)
                    await self.secured_conn.write(data)
                    self._done = (self._session.control_out, self._session.data_out)
            except Exception as exc:  # the transport's errors, whatever their type
                log.debug("GO_AWAY to %s not sent: %r", self.peer_id, exc)
            finally:
                self._writing = False
                self._progress.unpark_all()

    async def _send_loop(self) -> None:
        """Write what the receive loop queued, and what writers left, when no one writes."""
        while self._failure is None:
            if self._session.bytes_to_send and not self._writing:
                with trio.CancelScope(shield=True):
                    await self._write_until(None)
            else:
                await self._sender_wake.park()

    def _fail(self, error: BaseException) -> None:
        """Writing failed: every waiting and later write fails (the writer then closes the
        secure channel, so the receive loop ends too)."""
        if self._failure is None:
            self._failure = error
            self._progress.unpark_all()
            self._sender_wake.unpark_all()

    async def _until_registered(self) -> None:
        """Wait (briefly) until py-libp2p's swarm lists this connection. The swarm registers a
        connection only once its muxer has started; one that ended before (a peer closing
        it as it opens, as a daemon does to a friend it keeps away) heard ``on_close`` too
        early, was registered afterwards and never removed: it stayed "connected"."""
        swarm = getattr(self, "swarm", None)  # set by py-libp2p's SwarmConn
        connections = getattr(swarm, "connections", None)
        if not isinstance(connections, dict):
            return
        with trio.move_on_after(REGISTER_WAIT):
            while not any(
                getattr(c, "muxed_conn", None) is self for c in connections.get(self.peer_id, ())
            ):
                await trio.sleep(0.01)

    async def _close_channel(self) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
            try:
                await self.secured_conn.close()
            except Exception as exc:  # already closed, or the transport's own error
                log.debug("closing the connection to %s: %r", self.peer_id, exc)

    async def _shut_down(self, error: BaseException | None) -> None:
        """End the connection once: streams reset, accept_stream ends, the channel closed,
        py-libp2p told (``on_close``)."""
        if self.event_shutting_down.is_set():
            await self.event_closed.wait()
            return
        self.event_shutting_down.set()
        if self._failure is None:
            self._failure = error or MuxedConnUnavailable("connection closed")
        self._progress.unpark_all()
        self._sender_wake.unpark_all()
        self._accept_wait.unpark_all()
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream._was_reset()
        await self._close_channel()
        self.event_closed.set()
        try:
            await self._until_registered()
            if self.on_close is not None:
                try:
                    await self.on_close()
                except Exception as exc:  # py-libp2p's hook; its failure must not hide ours
                    log.warning("on_close for %s failed: %r", self.peer_id, exc)
        finally:
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()


class LeanYamuxStream(IMuxedStream):
    """One Yamux stream: reads served from what the receive loop queued, writes framed by the
    session within the peer's window."""

    def __init__(self, stream_id: int, conn: LeanYamux, *, is_initiator: bool) -> None:
        self.stream_id = stream_id
        self.muxed_conn = conn
        self.conn = conn
        self.is_initiator = is_initiator
        self._chunks: deque[bytes | bytearray] = deque()
        self._closed_at = 0.0
        self._at = 0
        self._buffered = 0
        self._fin = False
        self._reset = False
        self._closed = False
        self._readable = trio.lowlevel.ParkingLot()
        self._writable = trio.lowlevel.ParkingLot()
        self._write_lock = trio.Lock()

    async def __aenter__(self) -> LeanYamuxStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def send_window(self) -> int:
        return self.conn._session.send_window(self.stream_id)

    @send_window.setter
    def send_window(self, value: int) -> None:
        """For tests that play a peer ignoring flow control (as a hostile one would)."""
        state = self.conn._session._streams.get(self.stream_id)
        if state is not None:
            state.send_window = value

    # --- called by the connection ---------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        chunks = self._chunks
        if len(data) < SMALL_CHUNK and chunks and len(chunks[-1]) < MERGE_UP_TO:
            # Small frames join the last piece: a bytes object per 1-byte frame costs ~40
            # times the byte (measured: 11 MB for one 256 KiB window of them).
            last = chunks[-1]
            if not isinstance(last, bytearray):
                last = chunks[-1] = bytearray(last)
            last += data
        else:
            chunks.append(data)
        self._buffered += len(data)
        self._readable.unpark_all()

    def _ended(self) -> None:
        self._fin = True
        self._readable.unpark_all()

    def _was_reset(self) -> None:
        self._reset = True
        self._readable.unpark_all()
        self._writable.unpark_all()

    def _wake_writer(self) -> None:
        self._writable.unpark_all()

    # --- IMuxedStream -----------------------------------------------------------------------

    async def read(self, n: int | None = -1) -> bytes:
        """Up to ``n`` bytes (everything buffered for None or -1), waiting for some. Raises
        MuxedStreamEOF once the peer closed its side and everything was read,
        MuxedStreamReset once the stream (or its connection) was reset. Cancelled only
        while nothing has been taken: data read is never lost to a cancellation."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._buffered:
            if self._fin:  # everything the peer sent was read: a clean end, whatever came after
                raise MuxedStreamEOF(f"stream {self.stream_id} ended")
            if self._reset:
                raise MuxedStreamReset(f"stream {self.stream_id} was reset")
            await self._readable.park()
        chunks = self._chunks
        at = self._at  # how much of the first chunk was read already
        if n is None or n < 0 or n >= self._buffered:
            first = chunks[0][at:] if at else chunks[0]
            data = first if len(chunks) == 1 else b"".join([first, *islice(chunks, 1, None)])
            chunks.clear()
            at = 0
        else:
            parts: list[bytes | bytearray] = []
            size = 0
            while size < n:
                chunk = chunks[0]
                left, wanted = len(chunk) - at, n - size
                if left > wanted:  # a small read (a length prefix): no copy of the rest
                    parts.append(chunk[at : at + wanted])
                    at += wanted
                    size = n
                else:
                    parts.append(chunk[at:] if at else chunk)
                    chunks.popleft()
                    at = 0
                    size += left
            data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._at = at
        if not isinstance(data, bytes):
            data = bytes(data)
        self._buffered -= len(data)
        session = self.conn._session
        session.consumed(self.stream_id, len(data))
        self.conn._wake_sender()  # a window update, if one is due: the sender writes it
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    async def write(self, data: bytes) -> None:
        """Send all of ``data``, as fast as the peer's window allows."""
        async with self._write_lock:
            view = memoryview(data)
            sent = 0
            session = self.conn._session
            while sent < len(view):
                self._check_writable()
                taken = session.send_data(self.stream_id, view[sent:])
                if taken:
                    sent += taken
                    try:
                        await self.conn._flush(session.mark())
                    except ConnectionClosedError as exc:
                        raise MuxedStreamReset(f"stream {self.stream_id}: {exc}") from exc
                    continue
                with trio.move_on_after(WINDOW_TIMEOUT) as scope:
                    await self._writable.park()
                if scope.cancelled_caught:
                    await self.reset()
                    raise MuxedStreamReset(
                        f"stream {self.stream_id}: the peer granted no window for "
                        f"{WINDOW_TIMEOUT:.0f} s"
                    )

    def _check_writable(self) -> None:
        if self._reset:
            raise MuxedStreamReset(f"stream {self.stream_id} was reset")
        if self._closed:
            raise MuxedStreamClosed(f"stream {self.stream_id} is closed for writing")

    async def close(self) -> None:
        """Half-close: the peer reads to the end of what was sent. Idempotent."""
        if self._closed or self._reset:
            return
        self._closed = True
        self._closed_at = trio.current_time()
        session = self.conn._session
        session.close_stream(self.stream_id)
        self.conn._forget(self.stream_id)
        try:
            await self.conn._flush(session.mark())
        except ConnectionClosedError as exc:
            log.debug("FIN for stream %d not sent: %s", self.stream_id, exc)

    async def reset(self) -> None:
        """End both directions now; the peer's reads and writes fail. Idempotent."""
        if self._reset:
            return
        self._was_reset()
        self._chunks.clear()
        self._at = 0
        self._buffered = 0
        session = self.conn._session
        session.reset_stream(self.stream_id)
        self.conn._streams.pop(self.stream_id, None)
        try:
            await self.conn._flush(session.mark())
        except ConnectionClosedError as exc:
            log.debug("RST for stream %d not sent: %s", self.stream_id, exc)

    def set_deadline(self, ttl: int) -> None:
        raise NotImplementedError("Yamux streams have no deadlines (use trio cancel scopes)")

    def get_remote_address(self) -> tuple[str, int] | None:
        return self.conn.get_remote_address()
