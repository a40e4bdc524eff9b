"""What every p2pchat stream protocol does with a libp2p stream: read frames, answer and end
a stream so nothing the peer sends later is kept, log a failure at the level it deserves,
and serve inbound streams within a budget that strangers cannot use up.

The chat, file and call protocols all use these; none of them needs another's internals.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import trio
from libp2p.abc import INetStream
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.network.stream.net_stream import NetStream

from p2pchat import wire
from p2pchat.identity import short
from p2pchat.storage.database import DatabaseError

log = logging.getLogger(__name__)

FINISH_GRACE: Final = 2.0
"""How long an answered stream waits for the peer to read the answer and close its side."""
MAX_INBOUND_STREAMS_PER_PEER: Final = 8
MAX_STRANGER_STREAMS: Final = 256

StreamHandler = Callable[[INetStream], Awaitable[None]]
PeerStreamHandler = Callable[[INetStream, str], Awaitable[None]]


async def read_some(stream: INetStream, max_bytes: int = 65536) -> bytes:
    """One read from a libp2p stream; ``b""`` at end of stream (py-libp2p raises instead)."""
    try:
        data: bytes = await stream.read(max_bytes)
    except StreamEOF:
        return b""
    return data


def remote_peer(stream: INetStream) -> str:
    """The Noise-authenticated peer at the other end of ``stream``."""
    return str(stream.muxed_conn.peer_id)


async def read_one_frame(stream: INetStream) -> wire.Frame:
    """Exactly one frame, then nothing: a second frame or trailing bytes are a protocol error."""
    decoder = wire.FrameDecoder()
    while True:
        data = await read_some(stream)
        if not data:
            raise wire.FrameError("stream ended before a complete frame")
        frames = decoder.feed(data)
        if frames:
            if len(frames) > 1 or decoder.buffered:
                raise wire.FrameError("more than one frame where one was expected")
            return frames[0]


async def refuse(stream: INetStream, code: str, reason: str) -> None:
    """Answer ``refused`` with ``code`` and a (clipped) reason, then end the stream."""
    try:
        with trio.move_on_after(FINISH_GRACE):
            clipped = reason.encode()[: wire.MAX_REASON_BYTES].decode(errors="ignore")
            await stream.write(wire.encode(wire.Refused(code, clipped)))
    except Exception:
        pass
    await finish(stream)


async def finish(stream: INetStream) -> None:
    """End a stream we answered: send our FIN, give the peer a moment to read the answer and
    close its side (discarding at most a few KiB it still sends), then reset, so that nothing
    it sends later is buffered for a stream nobody reads."""
    try:
        with trio.move_on_after(FINISH_GRACE):
            if isinstance(stream, NetStream):
                await stream.close_write()
            else:
                await stream.close()
            discarded = 0
            while discarded <= 4096:
                data = await read_some(stream, 4096)
                if not data:
                    break
                discarded += len(data)
    except Exception:
        pass
    await reset(stream)


async def reset(stream: INetStream) -> None:
    """Reset ``stream``, ignoring a connection that is already gone."""
    try:
        with trio.move_on_after(2):
            await stream.reset()
    except Exception:
        pass


_EXPECTED_ERRORS = (
    wire.FrameError,
    DatabaseError,
    BaseLibp2pError,
    OSError,
    EOFError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)


def is_expected_error(exc: BaseException) -> bool:
    """A network failure, bad frame or storage error: each has its own handling."""
    if isinstance(exc, BaseExceptionGroup):  # errors from inside a nursery arrive grouped
        return all(is_expected_error(inner) for inner in exc.exceptions)
    return isinstance(exc, _EXPECTED_ERRORS)


def log_stream_failure(
    exc: BaseException, what: str, peer: str, *, level: int = logging.DEBUG
) -> None:
    """Network failures, bad frames and storage errors are expected (logged at ``level``;
    each has its own handling); anything else is a bug in our code and is logged loudly with
    its traceback instead of becoming a silent retry loop. ``what`` has one ``%s``: the peer."""
    if is_expected_error(exc):
        log.log(level, what + ": %s", short(peer), exc)
    else:
        log.error(what + ": unexpected error", short(peer), exc_info=exc)


async def end_failed_stream(stream: INetStream, exc: Exception, kind: str, peer: str) -> None:
    """End a one-frame (notice) stream that failed: a bad frame is answered
    ``refused``/``bad_frame``; a timeout, a storage error (the peer retries) or anything else
    resets it. Each is logged at its own level."""
    if isinstance(exc, wire.FrameError):
        log.warning("closing %s stream from %s: %s", kind, short(peer), exc)
        await refuse(stream, wire.REFUSED_BAD_FRAME, str(exc))
        return
    if isinstance(exc, trio.TooSlowError):
        log.info("%s stream from %s timed out", kind, short(peer))
    elif isinstance(exc, DatabaseError):
        log.error("could not store %s frame from %s: %s", kind, short(peer), exc)
    else:
        log_stream_failure(exc, f"{kind} stream from %s failed", peer)
    await reset(stream)


class StreamBudget:
    """How many inbound p2pchat streams may be handled at once: a per-peer cap for everyone,
    and a shared cap for non-friends only, so that strangers (whose IDs cost nothing) can
    never crowd out friends' streams. Extra streams are reset at once."""

    def __init__(self, per_peer: int, strangers_total: int) -> None:
        self._per_peer = per_peer
        self._strangers_total = strangers_total
        self._active: dict[str, int] = {}
        self._strangers = 0

    def try_acquire(self, peer: str, *, friend: bool) -> bool:
        mine = self._active.get(peer, 0)
        if mine >= self._per_peer:
            return False
        if not friend:
            if self._strangers >= self._strangers_total:
                return False
            self._strangers += 1
        self._active[peer] = mine + 1
        return True

    def release(self, peer: str, *, friend: bool) -> None:
        if not friend:
            self._strangers -= 1
        left = self._active.get(peer, 0) - 1
        if left > 0:
            self._active[peer] = left
        else:
            self._active.pop(peer, None)


class InboundStreams:
    """One :class:`StreamBudget` shared by every p2pchat protocol's handler, so that a peer's
    streams count together whatever protocol they use. ``is_friend`` decides which side of
    the budget a peer's stream counts on (fixed for the stream's lifetime)."""

    def __init__(
        self,
        is_friend: Callable[[str], bool],
        per_peer: int = MAX_INBOUND_STREAMS_PER_PEER,
        strangers_total: int = MAX_STRANGER_STREAMS,
    ) -> None:
        self._is_friend = is_friend
        self._budget = StreamBudget(per_peer, strangers_total)

    def handler(self, kind: str, serve: PeerStreamHandler) -> StreamHandler:
        """A stream handler that serves within the budget (else resets the stream)."""

        async def handle(stream: INetStream) -> None:
            peer = remote_peer(stream)
            friend = self._is_friend(peer)  # fixed for this stream: acquire and release agree
            if not self._budget.try_acquire(peer, friend=friend):
                log.info("reset a %s stream from %s: too many open at once", kind, short(peer))
                await reset(stream)
                return
            try:
                await serve(stream, peer)
            finally:
                self._budget.release(peer, friend=friend)

        return handle
