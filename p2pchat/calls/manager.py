"""Audio/video calls between friends: the trio adapter around :mod:`p2pchat.calls.state`
(signalling over ``/p2pchat/call/1.0.0`` streams) and :mod:`p2pchat.calls.media` (aiortc media).

One call at a time. A call lives in one task (the stream handler for incoming calls, a task
of :meth:`CallManager.run`'s nursery for outgoing ones) that owns its stream, its state
machine and its media session, and releases all of them when the call ends, whatever ends it
(hangup, decline, timeout, failure, the friend vanishing, daemon shutdown). The aiortc thread
runs only while a call exists.

Only friends can call: a stranger's call stream is reset before anything rings.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio
from libp2p.abc import INetStream

from p2pchat.api import ApiError
from p2pchat.calls.frames import (
    CALL_ID_BYTES,
    CALL_PROTOCOL,
    MAX_SDP_BYTES,
    CallEnd,
    CallFrame,
    CallFrameDecoder,
    CallOffer,
    encode_call,
)
from p2pchat.calls.media import (
    SOURCES,
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
    Incoming,
    Output,
    RemoteRinging,
    Ring,
    Send,
    decide_incoming,
)
from p2pchat.chat.messages import Chat, _reset, short
from p2pchat.chat.store import ContactState
from p2pchat.events import EventBus
from p2pchat.net.host import read_some
from p2pchat.wire import FrameError

log = logging.getLogger(__name__)

OFFER_WAIT: Final = 10.0
"""Seconds an incoming call stream may take to send its offer."""
MEDIA_SETUP_TIMEOUT: Final = 15.0
CLEANUP_TIMEOUT: Final = 10.0
STATS_TIMEOUT: Final = 3.0
MAX_REMOTE_CANDIDATES: Final = 32


@dataclass(frozen=True, slots=True)
class CallsConfig:
    auto_answer: bool = False
    ring_timeout: float = 45.0
    ice_servers: tuple[tuple[str, str, str], ...] = ()
    record_dir: str = ""
    """Where auto-answered calls are recorded ("" discards their media)."""


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


@dataclass
class LiveCall:
    """One call and everything it holds; touched only under ``lock``."""

    peer: str
    call: Call
    stream: INetStream
    options: MediaOptions
    started_at: float = field(default_factory=time.time)
    connected_at: float | None = None
    ended_at: float | None = None
    session: MediaSession | None = None
    rtc: AsyncioThread | None = None
    pending_candidates: list[tuple[str, str, int]] = field(default_factory=list)
    lock: trio.Lock = field(default_factory=trio.Lock)
    ended: trio.Event = field(default_factory=trio.Event)
    media: MediaStates = field(default_factory=lambda: MediaStates())
    last_stats: tuple[float, int, int] = (0.0, 0, 0)  # time, video frames, bytes in
    candidates_taken: int = 0
    finished: trio.Event = field(default_factory=trio.Event)
    """Set once :meth:`CallManager._finish` is done (released or not)."""
    released: bool = False
    """Media, recording, thread and stream all released (a recording is complete)."""

    def json(self) -> dict[str, Any]:
        call = self.call
        return {
            "id": call.call_id.hex(),
            "peer_id": self.peer,
            "direction": call.direction.value,
            "video": call.video,
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


class CallManager:
    def __init__(
        self,
        chat: Chat,
        events: EventBus,
        config: CallsConfig,
        public_ips: Callable[[], list[str]] = list,
    ) -> None:
        self.chat = chat
        self.events = events
        self.config = config
        self._public_ips = public_ips
        self.current: LiveCall | None = None
        self.last: LiveCall | None = None
        self._nursery: trio.Nursery | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def load(self) -> None:
        self.chat.net.set_handler(CALL_PROTOCOL, self.chat._budgeted("call", self._serve))
        self.chat.add_unfriend_listener(self._unfriended)

    def _unfriended(self, peer: str) -> None:
        """A friendship ended: a call with that peer ends too."""
        live = self.current
        if live is not None and live.peer == peer and live.call.live and self._nursery:
            self._nursery.start_soon(self._end_call, live)

    async def _end_call(self, live: LiveCall) -> None:
        async with live.lock:
            await self._apply(live, live.call.hangup())

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def status(self) -> dict[str, Any] | None:
        live = self.current
        return live.json() if live is not None and live.call.live else None

    # --- API ------------------------------------------------------------------------------

    async def start_call(
        self, friend: str, video: bool, source: str, record: str
    ) -> dict[str, Any]:
        contact = self.chat.resolve(friend)
        if contact.state is not ContactState.FRIEND:
            raise ApiError(
                "not_friend",
                f"{contact.display_name or short(contact.peer_id)} "
                "is not a friend: only friends can be called",
            )
        options = _options(video, source, record, self.config.ice_servers)
        peer = contact.peer_id
        if self._ringing_from(peer) is not None:
            return await self._answer_instead(peer, options)
        if self.current is not None and self.current.call.live:
            raise ApiError("busy", "already in a call: hang up first")
        if not await self.chat.reach(peer):
            raise ApiError(
                "unreachable",
                f"{contact.display_name or short(peer)} is offline or cannot be reached now",
            )
        try:
            stream = await self.chat.net.open_stream(peer, CALL_PROTOCOL)
        except Exception as exc:
            raise ApiError(
                "unreachable",
                f"{contact.display_name or short(peer)} is offline or cannot be reached now "
                f"({exc})",
            ) from None
        call_id = secrets.token_bytes(CALL_ID_BYTES)
        rtc = AsyncioThread()
        live: LiveCall | None = None
        session: MediaSession | None = None
        media = MediaStates()
        try:
            session = await _open_session(rtc, options, media)
            with trio.fail_after(MEDIA_SETUP_TIMEOUT):
                offer = await rtc.call(session.create_offer())
            sdp = _sendable(with_reflexive(offer, self._public_ips()))
            call, outputs = Call.outgoing(
                call_id, options.video, sdp, trio.current_time(), self.config.ring_timeout
            )
            live = LiveCall(peer, call, stream, options, session=session, rtc=rtc, media=media)
            if self.current is not None and self.current.call.live:
                raise _Superseded()
            self.current = live
            async with live.lock:
                for out in outputs:  # the offer: if it cannot be sent, the friend is gone
                    assert isinstance(out, Send)
                    try:
                        with trio.fail_after(5):
                            await stream.write(encode_call(out.frame))
                    except Exception as exc:
                        live.call.stream_closed()
                        raise ApiError(
                            "unreachable",
                            f"{contact.display_name or short(peer)} is offline or cannot be "
                            f"reached now ({exc})",
                        ) from None
            assert self._nursery is not None
            self._nursery.start_soon(self._drive, live)
        except BaseException as exc:
            if live is None or self.current is not live:
                with trio.CancelScope(shield=True):
                    await _release(rtc, session)
                    await _close(stream)
            else:
                await self._finish(live)
            if isinstance(exc, MediaError | trio.TooSlowError):
                raise ApiError("media_error", f"cannot start the call's media: {exc}") from None
            if isinstance(exc, _Superseded):
                # The friend's call reached us while ours was being set up: that is the
                # call the user wants.
                if self._ringing_from(peer) is not None:
                    return await self._answer_instead(peer, options)
                raise ApiError("busy", "already in a call: hang up first") from None
            raise
        self._publish(live)
        log.info("calling %s (%s)", short(peer), "video" if video else "audio")
        return live.json()

    async def answer(self, friend: str | None, source: str, record: str) -> dict[str, Any]:
        live = self._ringing(friend)
        options = _options(live.call.video, source, record, self.config.ice_servers)
        await self._answer(live, options)
        return live.json()

    async def hangup(self, friend: str | None) -> dict[str, Any]:
        live = self.current
        if live is None or not live.call.live or (friend and not self._matches(live, friend)):
            raise ApiError("not_found", "no call to hang up")
        async with live.lock:
            if live.call.state is CallState.RINGING_IN:
                outputs = live.call.decline()
            else:
                outputs = live.call.hangup()
            await self._apply(live, outputs)
        return live.json()

    async def list_calls(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for live in (self.current, self.last):
            if live is None or any(c["id"] == live.call.call_id.hex() for c in out):
                continue
            entry = live.json()
            if live.call.live and live.session is not None and live.rtc is not None:
                entry["stats"] = await self._stats(live)
            out.append(entry)
        return out

    # --- incoming -------------------------------------------------------------------------

    async def _serve(self, stream: INetStream, peer: str) -> None:
        if not self.chat._is_friend(peer):
            log.info("refused a call from %s: not a friend", short(peer))
            await _reset(stream)
            return
        inbox = FrameInbox(stream)
        try:
            with trio.fail_after(OFFER_WAIT):
                offer = await inbox.next()
            if not isinstance(offer, CallOffer):
                raise FrameError("a call stream must start with call-offer")
        except Exception as exc:
            log.info("bad call stream from %s: %s", short(peer), exc)
            await _reset(stream)
            return
        try:
            await self._take_offer(stream, peer, inbox, offer)
        except Exception as exc:  # never let a call's failure escape into libp2p
            log.warning("call from %s failed: %s", short(peer), exc)
            await _reset(stream)

    async def _take_offer(
        self, stream: INetStream, peer: str, inbox: FrameInbox, offer: CallOffer
    ) -> None:
        current = self.current
        if current is not None and not current.call.live and not current.finished.is_set():
            # A call that just ended is still being released (e.g. ours, lost to this very
            # offer in a glare): decide once it is gone, so that the decision sees it as the
            # last call rather than as a current one, and two media sessions never overlap.
            with trio.move_on_after(CLEANUP_TIMEOUT):
                await current.finished.wait()
            current = self.current
        last = self.last
        decision = decide_incoming(
            current.call if current else None,
            current.peer if current else "",
            peer,
            offer.call_id,
            last=last.call if last else None,
            last_peer=last.peer if last else "",
            since_last_end=time.time() - last.ended_at if last and last.ended_at else float("inf"),
        )
        if decision in (Incoming.BUSY, Incoming.GLARE_KEEP_OURS):
            reason = "busy" if decision is Incoming.BUSY else "glare"
            log.info("call from %s: %s", short(peer), reason)
            with trio.move_on_after(5):
                await stream.write(encode_call(CallEnd(offer.call_id, reason)))
            await _close(stream)
            return
        answer_with: MediaOptions | None = None
        if decision is Incoming.GLARE_TAKE_THEIRS:
            log.info("we and %s called each other at once: taking their call", short(peer))
            answer_with = self._glare_options(peer)
            if current is not None and current.peer == peer and current.call.live:
                answer_with = current.options
                async with current.lock:
                    await self._apply(current, current.call.hangup("glare"))
            if current is not None:
                with trio.move_on_after(CLEANUP_TIMEOUT):
                    await current.finished.wait()
        call, outputs = Call.incoming(offer, trio.current_time(), self.config.ring_timeout)
        options = answer_with or _options(call.video, "test", "", self.config.ice_servers)
        live = LiveCall(peer, call, stream, options)
        self.current = live
        try:
            async with live.lock:
                await self._apply(live, outputs)
            if answer_with is None and self.config.auto_answer:
                answer_with = _options(
                    call.video, "test", self._auto_record(live), self.config.ice_servers
                )
            if answer_with is not None:
                try:
                    await self._answer(live, answer_with)
                except ApiError as exc:
                    log.warning("answering automatically failed: %s", exc.message)
        finally:
            # Whatever happened above, the call is driven to its end and released.
            await self._drive(live, inbox)

    def _auto_record(self, live: LiveCall) -> str:
        if not self.config.record_dir:
            return ""
        name = time.strftime("call-%Y%m%d-%H%M%S-") + live.call.call_id.hex()[:12] + ".mp4"
        return str(Path(self.config.record_dir) / name)

    def _glare_options(self, peer: str) -> MediaOptions | None:
        last = self.last
        if last is not None and last.peer == peer and last.call.end_reason == "glare":
            return last.options
        return None

    async def _answer(self, live: LiveCall, options: MediaOptions) -> None:
        async with live.lock:
            if live.call.state is not CallState.RINGING_IN:
                raise ApiError("invalid_state", f"the call is {live.call.state.value}")
            live.options = options
            if live.rtc is None:
                live.rtc = AsyncioThread()
            rtc = live.rtc
            try:
                if live.session is None:
                    live.session = await _open_session(rtc, options, live.media)
                with trio.fail_after(MEDIA_SETUP_TIMEOUT):
                    sdp = await rtc.call(live.session.accept_offer(live.call.remote_sdp))
                sdp = _sendable(with_reflexive(sdp, self._public_ips()))
            except Exception as exc:  # aiortc raises many types on offers it cannot use
                log.info("cannot answer the call from %s: %s", short(live.peer), exc)
                await self._apply(live, live.call.media_failed())
                raise ApiError("media_error", f"cannot answer this call: {exc}") from None
            outputs = live.call.answer(sdp, trio.current_time())
            await self._apply(live, outputs)
            for candidate, mid, index in live.pending_candidates:
                await self._add_candidate(live, candidate, mid, index)
            live.pending_candidates.clear()
        log.info("answered the call from %s", short(live.peer))

    def _ringing_from(self, peer: str) -> LiveCall | None:
        live = self.current
        if live is not None and live.peer == peer and live.call.state is CallState.RINGING_IN:
            return live
        return None

    async def _answer_instead(self, peer: str, options: MediaOptions) -> dict[str, Any]:
        """Calling a friend whose call is ringing here answers that call."""
        live = self._ringing_from(peer)
        if live is None:
            raise ApiError("busy", "already in a call: hang up first")
        log.info("%s is calling us already: answering instead of calling", short(peer))
        await self._answer(live, options)
        return live.json()

    def _ringing(self, friend: str | None) -> LiveCall:
        live = self.current
        if live is None or live.call.state is not CallState.RINGING_IN:
            raise ApiError("not_found", "no incoming call is ringing")
        if friend and not self._matches(live, friend):
            raise ApiError("not_found", f"no incoming call from {friend!r}")
        return live

    def _matches(self, live: LiveCall, friend: str) -> bool:
        try:
            return self.chat.resolve(friend).peer_id == live.peer
        except ApiError:
            return False

    # --- one call's life ------------------------------------------------------------------

    async def _drive(self, live: LiveCall, inbox: FrameInbox | None = None) -> None:
        """Run the call until it ends, then release everything it holds."""
        inbox = inbox or FrameInbox(live.stream)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_frames, live, inbox)
                nursery.start_soon(self._media_states, live, live.media.receive)
                nursery.start_soon(self._timeouts, live)
                await live.ended.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if live.call.live:  # daemon shutdown: tell the friend if we can
                    with trio.move_on_after(2):
                        async with live.lock:
                            await self._apply(live, live.call.hangup())
                await self._finish(live)

    async def _read_frames(self, live: LiveCall, inbox: FrameInbox) -> None:
        while True:
            try:
                frame = await inbox.next()
            except Exception as exc:
                log.info("call stream with %s ended: %s", short(live.peer), exc)
                async with live.lock:
                    if isinstance(exc, FrameError):
                        await self._apply(live, live.call.media_failed())
                    else:
                        await self._apply(live, live.call.stream_closed())
                return
            async with live.lock:
                await self._apply(live, live.call.receive(frame, trio.current_time()))

    async def _media_states(self, live: LiveCall, states: Any) -> None:
        async for state in states:
            async with live.lock:
                if state == "connected":
                    await self._apply(live, live.call.media_connected())
                elif state in ("failed", "closed") and live.call.live:
                    await self._apply(live, live.call.media_lost(trio.current_time()))

    async def _timeouts(self, live: LiveCall) -> None:
        while live.call.live:
            await trio.sleep_until(min(live.call.deadline, trio.current_time() + 1))
            async with live.lock:
                await self._apply(live, live.call.tick(trio.current_time()))

    async def _apply(self, live: LiveCall, outputs: list[Output]) -> None:
        """Carry out what the state machine asked for (caller holds ``live.lock``, or owns
        ``live`` alone)."""
        for out in outputs:
            if isinstance(out, Send):
                try:
                    with trio.fail_after(5):
                        await live.stream.write(encode_call(out.frame))
                except Exception as exc:
                    log.debug(
                        "could not send %s to %s: %s",
                        type(out.frame).__name__,
                        short(live.peer),
                        exc,
                    )
            elif isinstance(out, Ring):
                log.info(
                    "incoming %s call from %s",
                    "video" if live.call.video else "audio",
                    short(live.peer),
                )
                self.events.publish("call.incoming", call=live.json())
            elif isinstance(out, RemoteRinging):
                self._publish(live)
            elif isinstance(out, ApplyAnswer):
                assert live.session is not None and live.rtc is not None
                try:
                    await live.rtc.call(live.session.apply_answer(out.sdp))
                except Exception as exc:
                    log.info("the friend's answer is unusable: %s", exc)
                    await self._apply(live, live.call.media_failed())
                    return
                self._publish(live)
            elif isinstance(out, AddCandidate):
                # A friend may name at most MAX_REMOTE_CANDIDATES addresses for us to probe,
                # only while the call is being set up, and no mDNS (.local) names.
                live.candidates_taken += 1
                if (
                    live.candidates_taken > MAX_REMOTE_CANDIDATES
                    or live.call.state is CallState.ACTIVE
                    or ".local " in out.candidate
                ):
                    continue
                if live.session is None:
                    live.pending_candidates.append((out.candidate, out.mid, out.index))
                else:
                    await self._add_candidate(live, out.candidate, out.mid, out.index)
            elif isinstance(out, Connected):
                live.connected_at = time.time()
                log.info("call with %s connected", short(live.peer))
                self._publish(live)
            elif isinstance(out, Ended):
                live.ended_at = time.time()
                self.last = live  # the last call to end, even while it is still being released
                log.info(
                    "call with %s ended: %s (by %s)",
                    short(live.peer),
                    out.reason,
                    "the friend" if out.by_remote else "us",
                )
                live.ended.set()

    async def _add_candidate(self, live: LiveCall, candidate: str, mid: str, index: int) -> None:
        assert live.session is not None and live.rtc is not None
        try:
            with trio.fail_after(STATS_TIMEOUT):
                await live.rtc.call(live.session.add_candidate(candidate, mid, index))
        except Exception as exc:  # one bad candidate must not end the call
            log.info("ignored a candidate from %s (%s): %s", short(live.peer), candidate, exc)

    async def _stats(self, live: LiveCall) -> dict[str, Any]:
        assert live.session is not None and live.rtc is not None
        try:
            with trio.fail_after(STATS_TIMEOUT):
                stats = await live.rtc.call(live.session.stats())
        except Exception as exc:
            return {"error": str(exc)}
        now = time.monotonic()
        frames = int(stats.get("video_frames_in", 0))
        received = int(stats.get("bytes_in", 0))
        then, old_frames, old_bytes = live.last_stats
        if then:
            elapsed = max(now - then, 1e-3)
            stats["fps"] = round((frames - old_frames) / elapsed, 1)
            stats["kbps_in"] = round((received - old_bytes) * 8 / elapsed / 1000, 1)
        live.last_stats = (now, frames, received)
        return stats

    async def _finish(self, live: LiveCall) -> None:
        """Release the call's media, thread and stream; publish its end."""
        released = False
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLEANUP_TIMEOUT):
                async with live.lock:
                    released = await _release(live.rtc, live.session)
            await _close(live.stream)
            await trio.to_thread.run_sync(_reclaim_memory)
        live.session = None
        live.rtc = None
        live.released = released
        if not released:
            log.warning("the call with %s did not release cleanly", short(live.peer))
        live.finished.set()
        if live.ended_at is None:
            live.ended_at = time.time()
        self.last = live
        if self.current is live:
            self.current = None
        self.events.publish("call.ended", call=live.json())

    def _publish(self, live: LiveCall) -> None:
        self.events.publish("call.updated", call=live.json())


def _reclaim_memory() -> None:
    """Give a finished call's memory back to the system: collect the peer connection's
    reference cycles now, then ask glibc to return free pages (the media threads' malloc
    arenas otherwise keep them, and RSS would grow with every call)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _sendable(sdp: str) -> str:
    """Our SDP, if it fits a frame; otherwise a clear media error (not a silent stall)."""
    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise MediaError(
            f"our session description is {len(sdp.encode())} bytes, over {MAX_SDP_BYTES}"
        )
    return sdp


class _Superseded(Exception):
    """Another call became current while an outgoing one was being set up."""


def _options(
    video: bool, source: str, record: str, ice: tuple[tuple[str, str, str], ...]
) -> MediaOptions:
    source = source or "test"
    if source not in SOURCES and (not os.path.isabs(source) or not os.path.isfile(source)):
        raise ApiError(
            "invalid_params",
            f"--source must be {', '.join(SOURCES)} or the "
            f"absolute path of a media file (got {source!r})",
        )
    if source == "camera" and not os.path.exists("/dev/video0"):
        raise ApiError("media_error", "no camera found (/dev/video0)")
    if record and (not os.path.isabs(record) or not os.path.isdir(os.path.dirname(record))):
        raise ApiError("invalid_params", "--record needs an absolute path in an existing directory")
    return MediaOptions(video=video, source=source, record=record, ice_servers=ice)


async def _open_session(
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


async def _release(rtc: AsyncioThread | None, session: MediaSession | None) -> bool:
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


async def _close(stream: INetStream) -> None:
    try:
        with trio.move_on_after(2):
            await stream.close()
    except Exception:
        await _reset(stream)
