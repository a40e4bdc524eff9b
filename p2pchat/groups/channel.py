"""One group's stream with one member (``/p2pchat/group/1.0.0``): the I/O around the
service's protocol logic.

A channel writes the frames handed to it, in order, from its own task, so whoever hands it
a frame never waits on the network; a member that stops reading for long enough to fill
``MAX_QUEUED_FRAMES`` or ``MAX_QUEUED_BYTES`` is dropped (its next stream syncs again from
the vectors, so nothing is lost). It reads frames and hands each to its :class:`Handler` in
order, at most ``FRAMES_PER_S`` after a burst (a member sending faster is read no further
meanwhile), and none once the channel is closed: closing stops everything the member sends
from being taken, then gives what is queued ``DRAIN_S`` to be written.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

import trio
from libp2p.abc import INetStream

from p2pchat.chat.ratelimit import TokenBucket
from p2pchat.groups import frames
from p2pchat.groups.frames import GroupDecoder, GroupFrame
from p2pchat.identity import short
from p2pchat.net.streams import read_some, reset
from p2pchat.wire import FrameError

log = logging.getLogger(__name__)

MAX_QUEUED_FRAMES: Final = 4096
MAX_QUEUED_BYTES: Final = 16 * 1024 * 1024
IDLE_TIMEOUT_S: Final = 600.0
"""A channel that hears nothing (not even a ``have``) for this long ends; its link redials."""
DRAIN_S: Final = 30.0
FRAMES_PER_S: Final = 1000.0
FRAME_BURST: Final = 10_000.0
ENTRIES_PER_S: Final = 2000.0
ENTRY_BURST: Final = 20_000.0
VECTORS_PER_S: Final = 20.0
VECTOR_BURST: Final = 100.0
"""``sync`` and ``have`` frames (each names up to 1024 senders and may ask for messages)."""
ASIDE_PER_S: Final = 50.0
ASIDE_BURST: Final = 500.0
"""Entries that do not extend our log (forks, out of date, ahead, refused): each costs a
weighing of branches, so a member's are paced much harder."""
"""Membership entries taken from one member (each is a signature check): a whole log at
once, then a trickle."""


class Handler(Protocol):
    async def on_frame(self, channel: Channel, frame: GroupFrame) -> None: ...


class Channel:
    def __init__(self, group_id: bytes, peer: str, stream: INetStream, outbound: bool) -> None:
        self.group_id = group_id
        self.peer = peer
        self.outbound = outbound
        self._stream = stream
        self._send, self._queue = trio.open_memory_channel[bytes](MAX_QUEUED_FRAMES)
        self._queued_bytes = 0
        self._drained = trio.Event()
        self._cancel = trio.CancelScope()
        now = trio.current_time()
        self._frames = TokenBucket(FRAME_BURST, FRAMES_PER_S, FRAME_BURST, now)
        self._entries = TokenBucket(ENTRY_BURST, ENTRIES_PER_S, ENTRY_BURST, now)
        self._aside = TokenBucket(ASIDE_BURST, ASIDE_PER_S, ASIDE_BURST, now)
        self._vectors = TokenBucket(VECTOR_BURST, VECTORS_PER_S, VECTOR_BURST, now)
        self.sent: dict[str, int] = {}
        """Per sender, the highest seq we sent on this stream (it has it, or will)."""
        self.their_identity_key: bytes | None = None
        """The member's Olm identity key, from its signed bundle (checks its pre-keys)."""
        self.asked_bundle = False
        self.gave_bundle = False
        self.keys_sent: set[str] = set()
        self.closed = False
        self._started = trio.current_time()

    @property
    def age(self) -> float:
        return trio.current_time() - self._started

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def send(self, frame: GroupFrame) -> None:
        """Queue ``frame``; a member too far behind is dropped."""
        if self.closed:
            return
        data = frames.encode(frame)
        if self._queued_bytes + len(data) > MAX_QUEUED_BYTES:
            log.info("dropped the group stream with %s: it stopped reading", short(self.peer))
            self.close()
            return
        try:
            self._send.send_nowait(data)
            self._queued_bytes += len(data)
        except trio.WouldBlock:
            log.info("dropped the group stream with %s: it stopped reading", short(self.peer))
            self.close()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()

    def close(self) -> None:
        """Take nothing more from the member; end once what is queued is written (at most
        ``DRAIN_S`` from now)."""
        self.closed = True
        self._send.close()
        self._cancel.deadline = min(self._cancel.deadline, trio.current_time() + DRAIN_S)

    def abort(self) -> None:
        self.closed = True
        self._cancel.cancel()

    async def run(
        self,
        handler: Handler,
        first: list[GroupFrame] | None = None,
        decoder: GroupDecoder | None = None,
    ) -> None:
        """Until the stream ends, the channel is closed (and drained) or aborted. ``first``:
        frames already read from the stream; ``decoder``: the decoder that read them, which
        may hold the start of the next frame (a fresh one would lose those bytes)."""
        with self._cancel:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_all, nursery.cancel_scope)
                    await self._read_all(handler, first or [], decoder or GroupDecoder())
                    if self.closed:
                        with trio.move_on_after(DRAIN_S):
                            await self._drained.wait()
                    nursery.cancel_scope.cancel()
            finally:
                self.closed = True
                with trio.CancelScope(shield=True):
                    await reset(self._stream)

    async def _write_all(self, scope: trio.CancelScope) -> None:
        try:
            async for data in self._queue:
                await self._stream.write(data)
                self._queued_bytes -= len(data)
        except Exception as exc:
            log.debug("group stream with %s: write failed: %s", short(self.peer), exc)
        self._drained.set()
        scope.cancel()  # closed (and drained) or broken: the channel ends

    @staticmethod
    async def _pace(bucket: TokenBucket, n: float = 1) -> None:
        await trio.sleep(bucket.borrow(n, trio.current_time()))

    async def pace_entries(self, count: int) -> None:
        """Wait until ``count`` more membership entries from this member fit its rate."""
        await self._pace(self._entries, count)

    async def pace_vector(self) -> None:
        """Wait until one more ``sync`` or ``have`` from this member fits its rate."""
        await self._pace(self._vectors)

    async def pace_aside(self) -> None:
        """Wait until one more entry that does not extend our log fits this member's rate."""
        await self._pace(self._aside)

    async def _read_all(
        self, handler: Handler, first: list[GroupFrame], decoder: GroupDecoder
    ) -> None:
        pending = list(first)
        while True:
            for frame in pending:
                if self.closed:
                    return
                await self._pace(self._frames)
                await handler.on_frame(self, frame)
            if self.closed:
                return
            try:
                with trio.move_on_after(IDLE_TIMEOUT_S) as idle:
                    data = await read_some(self._stream)
            except Exception as exc:  # reset, connection gone: py-libp2p raises many types
                log.debug("group stream with %s ended: %s", short(self.peer), exc)
                return
            if idle.cancelled_caught or not data:
                return
            try:
                pending = decoder.feed(data)
            except FrameError as exc:
                log.info("group stream with %s: %s", short(self.peer), exc)
                self.send(frames.Refused("malformed", str(exc)[:200]))
                self.close()
                return
