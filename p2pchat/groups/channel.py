"""One group's stream with one member (``/p2pchat/group/1.0.0``): the I/O around the
service's protocol logic.

A channel writes the frames handed to it, in order, from its own task, so whoever hands it
a frame never waits on the network; a member that stops reading for long enough to fill
``MAX_QUEUED_FRAMES`` is dropped (its next stream syncs again from the vectors, so nothing is
lost). It reads frames and hands each to its :class:`Handler` in order.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

import trio
from libp2p.abc import INetStream

from p2pchat.groups import frames
from p2pchat.groups.frames import GroupDecoder, GroupFrame
from p2pchat.identity import short
from p2pchat.net.streams import read_some, reset
from p2pchat.wire import FrameError

log = logging.getLogger(__name__)

MAX_QUEUED_FRAMES: Final = 4096
IDLE_TIMEOUT_S: Final = 600.0
"""A channel that hears nothing (not even a ``have``) for this long ends; its link redials."""


class Handler(Protocol):
    async def on_frame(self, channel: Channel, frame: GroupFrame) -> None: ...


class Channel:
    def __init__(self, group_id: bytes, peer: str, stream: INetStream, outbound: bool) -> None:
        self.group_id = group_id
        self.peer = peer
        self.outbound = outbound
        self._stream = stream
        self._send, self._queue = trio.open_memory_channel[bytes](MAX_QUEUED_FRAMES)
        self._cancel = trio.CancelScope()
        self.their_identity_key: bytes | None = None
        """The member's Olm identity key, from its signed bundle (checks its pre-keys)."""
        self.asked_bundle = False
        self.frames_in = 0
        self.closed = False

    def send(self, frame: GroupFrame) -> None:
        """Queue ``frame``; a member too far behind is dropped."""
        if self.closed:
            return
        try:
            self._send.send_nowait(frames.encode(frame))
        except trio.WouldBlock:
            log.info("dropped the group stream with %s: it stopped reading", short(self.peer))
            self.close()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()

    def close(self) -> None:
        """End the channel once what is queued is written."""
        self.closed = True
        self._send.close()

    def abort(self) -> None:
        self.closed = True
        self._cancel.cancel()

    async def run(self, handler: Handler, first: list[GroupFrame] | None = None) -> None:
        """Until the stream ends, the channel is closed (and drained) or aborted."""
        with self._cancel:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_all, nursery.cancel_scope)
                    await self._read_all(handler, first or [])
                    nursery.cancel_scope.cancel()
            finally:
                self.closed = True
                await reset(self._stream)

    async def _write_all(self, scope: trio.CancelScope) -> None:
        try:
            async for data in self._queue:
                await self._stream.write(data)
        except Exception as exc:
            log.debug("group stream with %s: write failed: %s", short(self.peer), exc)
        scope.cancel()  # closed (and drained) or broken: the channel ends

    async def _read_all(self, handler: Handler, first: list[GroupFrame]) -> None:
        decoder = GroupDecoder()
        for frame in first:
            await handler.on_frame(self, frame)
        while True:
            try:
                with trio.move_on_after(IDLE_TIMEOUT_S) as idle:
                    data = await read_some(self._stream)
            except Exception as exc:  # reset, connection gone: py-libp2p raises many types
                log.debug("group stream with %s ended: %s", short(self.peer), exc)
                return
            if idle.cancelled_caught or not data:
                return
            try:
                received = decoder.feed(data)
            except FrameError as exc:
                log.info("group stream with %s: %s", short(self.peer), exc)
                self.send(frames.Refused("malformed", str(exc)[:200]))
                self.close()
                await trio.sleep(1)  # a moment for the refusal to be written
                return
            for frame in received:
                self.frames_in += 1
                await handler.on_frame(self, frame)
