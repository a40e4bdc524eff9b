"""One call's life: everything a call holds, and the task that drives it to its end.

A :class:`CallSession` carries out what the sans-IO state machine (:mod:`.state`) asks for:
frames to send, ringing, the friend's answer and candidates for the media session
(:mod:`.media`), connected, ended. :meth:`CallSession.drive` runs three children (frames from
the stream, peer-connection states from the media thread, the ringing/connecting deadline)
until the state machine says the call ended, then releases everything in a shielded
``finally``, whatever ended it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import trio
from libp2p.abc import INetStream

from p2pchat.api import ApiError
from p2pchat.calls.browser import BrowserMedia, page_options
from p2pchat.calls.frames import MAX_SDP_BYTES, CallFrame, CallFrameDecoder, encode_call
from p2pchat.calls.media import (
    AsyncioThread,
    MediaError,
    MediaOptions,
    MediaSession,
    with_reflexive,
)
from p2pchat.calls.state import (
    AddCandidate,
    ApplyAnswer,
    Call,
    CallState,
    Connected,
    Ended,
    Output,
    RemoteRinging,
    Ring,
    Send,
)
from p2pchat.events import EventBus
from p2pchat.identity import short
from p2pchat.net.streams import read_some, reset
from p2pchat.wire import FrameError

log = logging.getLogger(__name__)

MEDIA_SETUP_TIMEOUT: Final = 15.0
CLEANUP_TIMEOUT: Final = 10.0
STATS_TIMEOUT: Final = 3.0


class MediaStates:
    """Peer-connection states, reported on the asyncio thread, delivered to the call task."""

    def __init__(self) -> None:
        self._send, self.receive = trio.open_memory_channel[str](32)
        self._token = trio.lowlevel.current_trio_token()

    def report(self, state: str) -> None:  # called on the asyncio thread
        def deliver() -> None:
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                self._send.send_nowait(state)

        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(deliver)

    def report_here(self, state: str) -> None:
        """The same, from the trio thread (a web page's report)."""
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            self._send.send_nowait(state)


class CallSession:
    """One call and everything it holds (stream, state machine, media session, asyncio
    thread), and what it does over its life: carrying out the state machine's outputs,
    reading frames and media states, the deadline, and the release. Touched only under
    ``lock``."""

    def __init__(
        self,
        peer: str,
        call: Call,
        stream: INetStream,
        options: MediaOptions,
        *,
        events: EventBus,
        on_ended: Callable[[CallSession], None],
        on_released: Callable[[CallSession], None],
        session: MediaSession | None = None,
        rtc: AsyncioThread | None = None,
        media: MediaStates | None = None,
        browser: BrowserMedia | None = None,
    ) -> None:
        self.peer = peer
        self.browser = browser
        """Set when a web page is this call's media endpoint (then no aiortc at all)."""
        self.call = call
        self.stream = stream
        self.options = options
        self.session = session
        self.rtc = rtc
        self.media = media or MediaStates()
        self._events = events
        self._on_ended = on_ended
        self._on_released = on_released
        self.started_at = time.time()
        self.connected_at: float | None = None
        self.ended_at: float | None = None
        self.pending_candidates: list[tuple[str, str, int]] = []
        self.lock = trio.Lock()
        self.ended = trio.Event()
        self.last_stats: tuple[float, int, int] = (0.0, 0, 0)  # time, video frames, bytes in
        self.finished = trio.Event()
        """Set once :meth:`finish` is done (released or not)."""
        self.released = False
        """Media, recording, thread and stream all released (a recording is complete)."""

    def json(self) -> dict[str, Any]:
        call = self.call
        return {
            "id": call.call_id.hex(),
            "peer_id": self.peer,
            "direction": call.direction.value,
            "video": call.video,
            "media": "browser" if self.browser is not None else "aiortc",
            "state": call.state.value,
            "reason": call.end_reason,
            "ended_by": ("friend" if call.ended_by_remote else "you") if call.end_reason else "",
            "source": self.options.source,
            "record": self.options.record,
            "started_at": int(self.started_at * 1000),
            "connected_at": int(self.connected_at * 1000) if self.connected_at else None,
            "ended_at": int(self.ended_at * 1000) if self.ended_at else None,
            "released": self.released,
        }

    async def answer(self, options: MediaOptions, public_ips: list[str]) -> None:
        """Accept the ringing call with ``options`` (our media, the answer SDP)."""
        async with self.lock:
            if self.call.state is not CallState.RINGING_IN:
                raise ApiError("invalid_state", f"the call is {self.call.state.value}")
            self.options = options
            if self.rtc is None:
                self.rtc = AsyncioThread()
            rtc = self.rtc
            try:
                if self.session is None:
                    self.session = await open_session(rtc, options, self.media)
                with trio.fail_after(MEDIA_SETUP_TIMEOUT):
                    sdp = await rtc.call(self.session.accept_offer(self.call.remote_sdp))
                sdp = sendable(with_reflexive(sdp, public_ips))
            except Exception as exc:  # aiortc raises many types on offers it cannot use
                log.info("cannot answer the call from %s: %s", short(self.peer), exc)
                await self.apply(self.call.media_failed())
                raise ApiError("media_error", f"cannot answer this call: {exc}") from None
            outputs = self.call.answer(sdp, trio.current_time())
            await self.apply(outputs)
            for candidate, mid, index in self.pending_candidates:
                await self.add_candidate(candidate, mid, index)
            self.pending_candidates.clear()
        log.info("answered the call from %s", short(self.peer))

    async def answer_browser(self, browser: BrowserMedia, sdp: str, public_ips: list[str]) -> None:
        """Accept the ringing call with a web page's answer: the page is the media endpoint."""
        async with self.lock:
            if self.call.state is not CallState.RINGING_IN:
                raise ApiError("invalid_state", f"the call is {self.call.state.value}")
            if self.session is not None or self.rtc is not None:
                raise ApiError("invalid_state", "this call's media is already set up here")
            try:
                sdp = sendable(with_reflexive(sdp, public_ips))
            except MediaError as exc:
                raise ApiError("invalid_params", str(exc)) from None
            self.browser = browser
            self.options = page_options(self.call.video)
            await self.apply(self.call.answer(sdp, trio.current_time()))
            for candidate, mid, index in self.pending_candidates:
                browser.add_candidate(candidate, mid, index)
            self.pending_candidates.clear()
        log.info("answered the call from %s in the web app", short(self.peer))

    def browser_report(self, state: str | None, stats: dict[str, Any] | None) -> None:
        """A web page's report on its peer connection, fed to the call like aiortc's."""
        assert self.browser is not None
        media_state = self.browser.report(state, stats)
        if media_state is not None:
            self.media.report_here(media_state)

    # --- the call's life ----------------------------------------------------------------

    async def drive(self, inbox: FrameInbox | None = None) -> None:
        """Run the call until it ends, then release everything it holds."""
        inbox = inbox or FrameInbox(self.stream)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_frames, inbox)
                nursery.start_soon(self._media_states, self.media.receive)
                nursery.start_soon(self._timeouts)
                await self.ended.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if self.call.live:  # daemon shutdown: tell the friend if we can
                    with trio.move_on_after(2):
                        async with self.lock:
                            await self.apply(self.call.hangup())
                await self.finish()

    async def _read_frames(self, inbox: FrameInbox) -> None:
        while True:
            try:
                frame = await inbox.next()
            except Exception as exc:
                log.info("call stream with %s ended: %s", short(self.peer), exc)
                async with self.lock:
                    if isinstance(exc, FrameError):
                        await self.apply(self.call.media_failed())
                    else:
                        await self.apply(self.call.stream_closed())
                return
            async with self.lock:
                await self.apply(self.call.receive(frame, trio.current_time()))

    async def _media_states(self, states: Any) -> None:
        async for state in states:
            async with self.lock:
                if state == "connected":
                    await self.apply(self.call.media_connected())
                elif state in ("failed", "closed") and self.call.live:
                    await self.apply(self.call.media_lost(trio.current_time()))

    async def _timeouts(self) -> None:
        while self.call.live:
            await trio.sleep_until(min(self.call.deadline, trio.current_time() + 1))
            async with self.lock:
                await self.apply(self.call.tick(trio.current_time()))

    async def apply(self, outputs: list[Output]) -> None:
        """Carry out what the state machine asked for (caller holds ``self.lock``, or owns
        the session alone)."""
        for out in outputs:
            if isinstance(out, Send):
                try:
                    with trio.fail_after(5):
                        await self.stream.write(encode_call(out.frame))
                except Exception as exc:
                    log.debug(
                        "could not send %s to %s: %s",
                        type(out.frame).__name__,
                        short(self.peer),
                        exc,
                    )
            elif isinstance(out, Ring):
                log.info(
                    "incoming %s call from %s",
                    "video" if self.call.video else "audio",
                    short(self.peer),
                )
                self._log_dropped("offer")
                self._events.publish("call.incoming", call=self.json())
            elif isinstance(out, RemoteRinging):
                self.publish()
            elif isinstance(out, ApplyAnswer) and self.browser is not None:
                self._log_dropped("answer")
                self.browser.apply_answer(out.sdp)
                self.publish()
            elif isinstance(out, ApplyAnswer):
                assert self.session is not None and self.rtc is not None
                self._log_dropped("answer")
                try:
                    await self.rtc.call(self.session.apply_answer(out.sdp))
                except Exception as exc:
                    log.info("the friend's answer is unusable: %s", exc)
                    await self.apply(self.call.media_failed())
                    return
                self.publish()
            elif isinstance(out, AddCandidate):
                # Already within the call's candidate budget (p2pchat.calls.candidates).
                if self.browser is not None:
                    self.browser.add_candidate(out.candidate, out.mid, out.index)
                elif self.session is None:
                    self.pending_candidates.append((out.candidate, out.mid, out.index))
                else:
                    await self.add_candidate(out.candidate, out.mid, out.index)
            elif isinstance(out, Connected):
                self.connected_at = time.time()
                log.info("call with %s connected", short(self.peer))
                self.publish()
            elif isinstance(out, Ended):
                self.ended_at = time.time()
                self._on_ended(self)  # the last call to end, even while still being released
                log.info(
                    "call with %s ended: %s (by %s)",
                    short(self.peer),
                    out.reason,
                    "the friend" if out.by_remote else "us",
                )
                self.ended.set()

    def _log_dropped(self, what: str) -> None:
        dropped = self.call.candidates.summary()
        if dropped:
            log.info("dropped candidates of %s's %s: %s", short(self.peer), what, dropped)

    async def add_candidate(self, candidate: str, mid: str, index: int) -> None:
        assert self.session is not None and self.rtc is not None
        try:
            with trio.fail_after(STATS_TIMEOUT):
                await self.rtc.call(self.session.add_candidate(candidate, mid, index))
        except Exception as exc:  # one bad candidate must not end the call
            log.info("ignored a candidate from %s (%s): %s", short(self.peer), candidate, exc)

    async def stats(self) -> dict[str, Any]:
        if self.browser is not None:
            return self.browser.stats_json()
        assert self.session is not None and self.rtc is not None
        try:
            with trio.fail_after(STATS_TIMEOUT):
                stats = await self.rtc.call(self.session.stats())
        except Exception as exc:
            return {"error": str(exc)}
        now = time.monotonic()
        frames = int(stats.get("video_frames_in", 0))
        received = int(stats.get("bytes_in", 0))
        then, old_frames, old_bytes = self.last_stats
        if then:
            elapsed = max(now - then, 1e-3)
            stats["fps"] = round((frames - old_frames) / elapsed, 1)
            stats["kbps_in"] = round((received - old_bytes) * 8 / elapsed / 1000, 1)
        self.last_stats = (now, frames, received)
        return stats

    async def finish(self) -> None:
        """Release the call's media, thread and stream; publish its end."""
        released = False
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLEANUP_TIMEOUT):
                async with self.lock:
                    released = await release(self.rtc, self.session)
            await close(self.stream)
            await trio.to_thread.run_sync(_reclaim_memory)
        self.session = None
        self.rtc = None
        self.released = released
        if not released:
            log.warning("the call with %s did not release cleanly", short(self.peer))
        self.finished.set()
        if self.ended_at is None:
            self.ended_at = time.time()
        self._on_released(self)
        self._events.publish("call.ended", call=self.json())

    def publish(self) -> None:
        self._events.publish("call.updated", call=self.json())


def _reclaim_memory() -> None:
    """Give a finished call's memory back to the system: collect the peer connection's
    reference cycles now, then ask glibc to return free pages (the media threads' malloc
    arenas otherwise keep them, and RSS would grow with every call)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def sendable(sdp: str) -> str:
    """Our SDP, if it fits a frame; otherwise a clear media error (not a silent stall)."""
    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise MediaError(
            f"our session description is {len(sdp.encode())} bytes, over {MAX_SDP_BYTES}"
        )
    return sdp


async def open_session(
    rtc: AsyncioThread, options: MediaOptions, media: MediaStates
) -> MediaSession:
    async def build() -> MediaSession:
        return MediaSession(options, media.report)

    try:
        with trio.fail_after(MEDIA_SETUP_TIMEOUT):
            return await rtc.call(build())
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"cannot start media: {exc}") from None


async def release(rtc: AsyncioThread | None, session: MediaSession | None) -> bool:
    """Close the media session (peer connection, tracks, recorder) and stop the thread;
    True if all of it went well (then a recording is complete)."""
    ok = True
    if rtc is not None:
        if session is not None:
            ok = False
            try:
                with trio.move_on_after(CLEANUP_TIMEOUT / 2):
                    await rtc.call(session.close())
                    ok = True
            except Exception as exc:
                log.warning("closing the call's media failed: %s", exc)
        await rtc.stop()
    return ok


class FrameInbox:
    """Frames from a call stream, one at a time (several may arrive in one read)."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._decoder = CallFrameDecoder()
        self._ready: deque[CallFrame] = deque()

    async def next(self) -> CallFrame:
        while not self._ready:
            data = await read_some(self._stream)
            if not data:
                raise EOFError("the friend closed the call stream")
            self._ready.extend(self._decoder.feed(data))
        return self._ready.popleft()


async def close(stream: INetStream) -> None:
    try:
        with trio.move_on_after(2):
            await stream.close()
    except Exception:
        await reset(stream)
