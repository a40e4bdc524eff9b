"""The Yamux protocol as a plain class: bytes in, events and bytes out, no I/O.

:class:`Session` keeps one connection's streams, windows and state. The connection adapter
(:mod:`p2pchat.net.yamux.connection`) feeds it what the secure channel delivers
(:meth:`Session.receive`), acts on the events it returns, and writes what
:meth:`Session.data_to_send` hands out. The session enforces what a stranger must not be able
to do: send past the window granted (the spec's protocol error: the whole connection goes),
open more than ``max_streams`` streams at once (the extra ones are reset, as go-yamux does),
or reopen a stream still open. Every violation raises :class:`YamuxProtocolError`; the adapter then
sends GO_AWAY and closes the connection.

Flow control: each stream starts with the spec's 256 KiB window each way. The session grants
the peer more as the application consumes (:meth:`Session.consumed`), once at least half the
window can be granted in one update, and doubles a stream's window (up to ``max_window``)
when the reader had taken everything or the peer had nearly run out of credit by then:
so a stream whose window limits it grows, and one nobody reads never holds more than
256 KiB of payload (windows grow only as the application reads).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from p2pchat.net.yamux import events as ev
from p2pchat.net.yamux import frames as fr

MAX_FRAME_PAYLOAD: Final = 65535 - 16 - fr.HEADER_SIZE
"""Data per frame sent: a frame and its header fill one Noise message (65,535 bytes less the
16-byte tag) exactly."""

DEFAULT_MAX_STREAMS: Final = 256
DEFAULT_MAX_WINDOW: Final = 1024 * 1024
"""How far a stream's receive window may grow (go-yamux: 16 MiB). Each stream may have that
much in flight on one hop, and everything else on the connection queues behind it: through
a relay's 1 MB/s uplink, 16 MiB on each of its two hops was half a minute, and DCUtR's
stream on that connection timed out for as long as a file moved (measured in the NAT lab).
1 MiB still allows 10 MB/s per stream at 100 ms round trips, more than a relay gives;
direct connections carry bulk data outside libp2p (``p2pchat.files.direct``)."""


class YamuxProtocolError(Exception):
    """The peer broke the Yamux protocol; the connection must be closed (GO_AWAY 1)."""


@dataclass(slots=True)
class _Stream:
    stream_id: int
    send_window: int = fr.INITIAL_WINDOW
    credit: int = fr.INITIAL_WINDOW
    """Bytes the peer may still send us before we grant more."""
    window: int = fr.INITIAL_WINDOW
    """The receive window we aim to keep granted (grows up to the session's max)."""
    unconsumed: int = 0
    """Bytes received that the application has not consumed yet."""
    sent_fin: bool = False
    got_fin: bool = False


@dataclass(slots=True)
class _Body:
    """The DATA payload being received: for which stream, how much is left, the frame's flags."""

    stream_id: int
    left: int
    flags: int
    known: bool


@dataclass
class Session:
    """One Yamux connection's protocol state (see module doc). ``client`` is the side that
    dialled: it opens odd stream IDs, the other side even ones."""

    client: bool
    max_streams: int = DEFAULT_MAX_STREAMS
    max_window: int = DEFAULT_MAX_WINDOW
    max_frame_payload: int = MAX_FRAME_PAYLOAD
    _streams: dict[int, _Stream] = field(default_factory=dict)
    _next_id: int = 0
    _in: bytearray = field(default_factory=bytearray)
    _body: _Body | None = None
    _control: deque[bytes] = field(default_factory=deque)
    """Frames that go out first: window updates, SYN, ACK, RST, pings, GO_AWAY."""
    _data: deque[bytes] = field(default_factory=deque)
    """DATA frames and FINs, in the order written (a FIN must follow its stream's data)."""
    _queued_bytes: int = 0
    control_queued: int = 0
    data_queued: int = 0
    """Bytes put in each queue since the session began."""
    control_out: int = 0
    data_out: int = 0
    """Bytes of each queue handed out by :meth:`data_to_send` since the session began."""
    go_away_sent: bool = False
    go_away_received: bool = False

    def __post_init__(self) -> None:
        self._next_id = 1 if self.client else 2

    # --- what the application does ---------------------------------------------------------

    def open_stream(self) -> int:
        """A new outbound stream's ID; its SYN is queued."""
        if self.go_away_sent or self.go_away_received:
            raise YamuxProtocolError("the connection is going away: no new streams")
        stream_id = self._next_id
        if stream_id > fr.MAX_UINT32:
            raise YamuxProtocolError("stream IDs exhausted")
        self._next_id += 2
        self._streams[stream_id] = _Stream(stream_id)
        self._queue(fr.WINDOW_UPDATE, fr.SYN, stream_id, 0)
        return stream_id

    def send_window(self, stream_id: int) -> int:
        """Bytes that may be sent on the stream now (0 for a stream that is gone)."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None or stream.sent_fin else stream.send_window

    def send_data(self, stream_id: int, data: bytes | memoryview) -> int:
        """Queue as much of ``data`` as the stream's window allows, in frames of at most
        ``max_frame_payload`` bytes; returns how much was taken (0: wait for the window)."""
        stream = self._live(stream_id)
        if stream.sent_fin:
            raise ValueError(f"stream {stream_id} is closed for sending")
        taken = 0
        total = min(len(data), stream.send_window)
        while taken < total:
            size = min(total - taken, self.max_frame_payload)
            frame = b"".join((fr.encode(fr.DATA, 0, stream_id, size), data[taken : taken + size]))
            self._data.append(frame)
            self._queued_bytes += len(frame)
            self.data_queued += len(frame)
            taken += size
        stream.send_window -= taken
        return taken

    def consumed(self, stream_id: int, size: int) -> None:
        """The application took ``size`` received bytes of the stream: grant the peer more
        window when at least half of it can be granted at once."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.got_fin:
            return  # nothing more will come: no window to grant
        stream.unconsumed -= size
        grant = stream.window - stream.credit - stream.unconsumed
        if grant < stream.window // 2:
            return
        if stream.window < self.max_window and (
            stream.unconsumed == 0 or stream.credit < stream.window // 4
        ):
            # The reader took everything there was, or the peer had nearly run out of
            # credit before the reader freed half the window: the window limits this stream.
            grown = min(stream.window * 2, self.max_window)
            grant += grown - stream.window
            stream.window = grown
        stream.credit += grant
        self._queue(fr.WINDOW_UPDATE, 0, stream_id, grant)

    def close_stream(self, stream_id: int) -> None:
        """Half-close: queue FIN (nothing more will be sent). Idempotent."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.sent_fin:
            return
        stream.sent_fin = True
        self._queue(fr.WINDOW_UPDATE, fr.FIN, stream_id, 0)
        self._forget_if_done(stream)

    def reset_stream(self, stream_id: int) -> None:
        """Queue RST and forget the stream (both directions end now). Idempotent."""
        if self._streams.pop(stream_id, None) is not None:
            self._queue(fr.WINDOW_UPDATE, fr.RST, stream_id, 0)

    def ping(self, opaque: int) -> None:
        self._queue(fr.PING, fr.SYN, 0, opaque & fr.MAX_UINT32)

    def go_away(self, code: int = fr.GO_AWAY_NORMAL) -> None:
        """Queue GO_AWAY (once): no new streams either way from now on."""
        if not self.go_away_sent:
            self.go_away_sent = True
            self._queue(fr.GO_AWAY, 0, 0, code)

    def is_open(self, stream_id: int) -> bool:
        """Whether the session still tracks the stream (not reset, not closed both ways)."""
        return stream_id in self._streams

    # --- output -----------------------------------------------------------------------------

    @property
    def bytes_to_send(self) -> int:
        return self._queued_bytes

    def mark(self) -> tuple[int, int]:
        """Where the queues end now: output up to here is out once both ``*_out`` counters
        (as written by the adapter) reach it."""
        return (self.control_queued, self.data_queued)

    @property
    def control_unsent(self) -> int:
        """Control bytes queued and not handed out yet: what a peer that reads nothing makes
        us hold (pongs, ACKs, refusals, window updates)."""
        return self.control_queued - self.control_out

    def data_to_send(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of queued output, control frames first, then data in order,
        removed from the queues: whole frames where they fit (a lone data frame is handed
        out without a copy), a frame cut only when it alone is larger than ``max_bytes``."""
        parts: list[bytes] = []
        size = 0
        for queue, is_control in ((self._control, True), (self._data, False)):
            while queue and size < max_bytes:
                frame = queue[0]
                if size + len(frame) > max_bytes:
                    if parts:
                        break
                    queue[0] = frame[max_bytes:]
                    frame = frame[:max_bytes]
                else:
                    queue.popleft()
                parts.append(frame)
                size += len(frame)
                if is_control:
                    self.control_out += len(frame)
                else:
                    self.data_out += len(frame)
            if size and queue:
                break  # the next frame did not fit
        self._queued_bytes -= size
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # --- input ------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[ev.Event]:
        """Take bytes from the peer; returns what they meant, in order. DATA payload is
        reported as it arrives, not only once its frame is whole."""
        out: list[ev.Event] = []
        view = memoryview(data)
        at = 0
        end = len(view)
        if self._in:  # a header began in the previous piece: complete it
            at = min(fr.HEADER_SIZE - len(self._in), end)
            self._in += view[:at]
            if len(self._in) < fr.HEADER_SIZE:
                return out
            header = fr.decode(self._in)
            self._in.clear()
            self._frame(header, out)
        while at < end:
            body = self._body
            if body is not None:
                size = min(body.left, end - at)
                if body.known:
                    out.append(ev.DataReceived(body.stream_id, bytes(view[at : at + size])))
                at += size
                body.left -= size
                if body.left:
                    break
                self._body = None
                if body.known:
                    self._flags_after(body.stream_id, body.flags, out)
                continue
            if end - at < fr.HEADER_SIZE:
                self._in += view[at:]
                break
            header = fr.decode(view, at)
            at += fr.HEADER_SIZE
            self._frame(header, out)
        return out

    def _frame(self, header: fr.Header, out: list[ev.Event]) -> None:
        if header.version != fr.VERSION:
            raise YamuxProtocolError(f"unknown Yamux version {header.version}")
        kind = header.type
        if kind == fr.PING:
            if header.flags & fr.SYN:
                self._queue(fr.PING, fr.ACK, 0, header.length)
            elif header.flags & fr.ACK:
                out.append(ev.PongReceived(header.length))
            return
        if kind == fr.GO_AWAY:
            self.go_away_received = True
            out.append(ev.GoAwayReceived(header.length))
            return
        if kind not in (fr.DATA, fr.WINDOW_UPDATE):
            raise YamuxProtocolError(f"unknown frame type {kind}")
        sid = header.stream_id
        if sid == 0:
            raise YamuxProtocolError(f"{fr.TYPE_NAMES[kind]} frame on stream 0")
        known = self._stream_for(header, out)
        if kind == fr.WINDOW_UPDATE:
            if known:
                stream = self._streams[sid]
                if header.length:
                    stream.send_window += header.length
                    if stream.send_window > fr.MAX_UINT32:
                        raise YamuxProtocolError(f"stream {sid}: window beyond 2^32")
                    out.append(ev.WindowOpened(sid))
                self._flags_after(sid, header.flags, out)
            return
        # DATA
        if known:
            stream = self._streams[sid]
            if header.length > stream.credit:
                raise YamuxProtocolError(
                    f"stream {sid}: {header.length} bytes sent with {stream.credit} of window left"
                )
            if stream.got_fin and header.length:
                raise YamuxProtocolError(f"stream {sid}: data after FIN")
            stream.credit -= header.length
            stream.unconsumed += header.length
        elif header.length > self.max_window:
            # Data still in flight to a stream we reset is dropped; more than any window
            # could have allowed is not in flight.
            raise YamuxProtocolError(f"{header.length} bytes for unknown stream {sid}")
        if header.length:
            self._body = _Body(sid, header.length, header.flags, known)
        elif known:
            self._flags_after(sid, header.flags, out)

    def _stream_for(self, header: fr.Header, out: list[ev.Event]) -> bool:
        """Whether the frame is for a stream we track; a SYN opens one (or is refused)."""
        sid = header.stream_id
        if not header.flags & fr.SYN:
            return sid in self._streams
        if sid % 2 == self._next_id % 2:
            raise YamuxProtocolError(f"peer opened stream {sid}, an ID of ours")
        if sid in self._streams:
            raise YamuxProtocolError(f"peer reopened stream {sid}")
        if header.flags & fr.RST:
            return False  # opened and reset at once: nothing to open, nothing to answer
        if self.go_away_sent or self._opened_by_peer() >= self.max_streams:
            self._queue(fr.WINDOW_UPDATE, fr.RST, sid, 0)
            return False
        self._streams[sid] = _Stream(sid)
        self._queue(fr.WINDOW_UPDATE, fr.ACK, sid, 0)
        out.append(ev.StreamOpened(sid))
        return True

    def _flags_after(self, stream_id: int, flags: int, out: list[ev.Event]) -> None:
        """FIN and RST apply once the frame's payload (if any) is delivered."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if flags & fr.RST:
            del self._streams[stream_id]
            out.append(ev.StreamReset(stream_id))
        elif flags & fr.FIN and not stream.got_fin:
            stream.got_fin = True
            out.append(ev.StreamEnded(stream_id))
            self._forget_if_done(stream)

    def _opened_by_peer(self) -> int:
        parity = self._next_id % 2
        return sum(1 for sid in self._streams if sid % 2 != parity)

    def _live(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise ValueError(f"stream {stream_id} is not open")
        return stream

    def _forget_if_done(self, stream: _Stream) -> None:
        if stream.sent_fin and stream.got_fin:
            self._streams.pop(stream.stream_id, None)

    def _queue(self, kind: int, flags: int, sid: int, length: int) -> None:
        frame = fr.encode(kind, flags, sid, length)
        self._queued_bytes += fr.HEADER_SIZE
        if flags & fr.FIN:  # after the stream's data
            self._data.append(frame)
            self.data_queued += fr.HEADER_SIZE
        else:
            self._control.append(frame)
            self.control_queued += fr.HEADER_SIZE
