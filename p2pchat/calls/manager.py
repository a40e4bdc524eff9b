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

import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio
from libp2p.abc import INetStream

from p2pchat.api import ApiError
from p2pchat.calls.browser import BrowserMedia, PageOwner, check_browser_sdp, page_options
from p2pchat.calls.frames import (
    CALL_ID_BYTES,
    CALL_PROTOCOL,
    CallEnd,
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
from p2pchat.calls.session import (
    CLEANUP_TIMEOUT,
    MEDIA_SETUP_TIMEOUT,
    CallSession,
    FrameInbox,
    MediaStates,
    close,
    open_session,
    release,
    sendable,
)
from p2pchat.calls.state import (
    Call,
    CallState,
    Incoming,
    Send,
    decide_incoming,
)
from p2pchat.chat.service import Chat
from p2pchat.events import EventBus
from p2pchat.identity import short
from p2pchat.net.streams import reset
from p2pchat.wire import FrameError

log = logging.getLogger(__name__)

OFFER_WAIT: Final = 10.0
"""Seconds an incoming call stream may take to send its offer."""


@dataclass(frozen=True, slots=True)
class CallsConfig:
    auto_answer: bool = False
    ring_timeout: float = 45.0
    ice_servers: tuple[tuple[str, str, str], ...] = ()
    record_dir: str = ""
    """Where auto-answered calls are recorded ("" discards their media)."""


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
        self.current: CallSession | None = None
        self.last: CallSession | None = None
        self._nursery: trio.Nursery | None = None
        self.in_other_call: Callable[[], bool] = lambda: False
        """Whether this daemon is in a group call (then a 1:1 call is busy)."""

    # --- lifecycle ------------------------------------------------------------------------

    def load(self) -> None:
        self.chat.net.set_handler(CALL_PROTOCOL, self.chat.inbound.handler("call", self._serve))
        self.chat.roster.add_unfriend_listener(self._unfriended)

    def _unfriended(self, peer: str) -> None:
        """A friendship ended: a call with that peer ends too."""
        live = self.current
        if live is not None and live.peer == peer and live.call.live and self._nursery:
            self._nursery.start_soon(self._end_call, live)

    async def _end_call(self, live: CallSession) -> None:
        async with live.lock:
            await live.apply(live.call.hangup())

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def status(self) -> dict[str, Any] | None:
        live = self.current
        return live.json() if live is not None and live.call.live else None

    def _session(
        self, peer: str, call: Call, stream: INetStream, options: MediaOptions, **media: Any
    ) -> CallSession:
        """A session for ``call``; ``media`` holds its aiortc parts or its web page."""
        return CallSession(
            peer,
            call,
            stream,
            options,
            events=self.events,
            on_ended=self._ended,
            on_released=self._released,
            **media,
        )

    def _ended(self, live: CallSession) -> None:
        self.last = live  # the last call to end, even while it is still being released

    def _released(self, live: CallSession) -> None:
        self.last = live
        if self.current is live:
            self.current = None

    # --- API ------------------------------------------------------------------------------

    async def start_call(
        self,
        friend: str,
        video: bool,
        source: str,
        record: str,
        browser_sdp: str | None = None,
        owner: PageOwner | None = None,
    ) -> dict[str, Any]:
        """Call ``friend``: with aiortc media, or, given ``browser_sdp`` (a web page's
        offer), with that page as the media endpoint (``owner``: its control session)."""
        contact = self.chat.roster.resolve_friend(friend, "only friends can be called")
        if browser_sdp is not None:
            browser_sdp = check_browser_sdp(browser_sdp)
            options = page_options(video)
        else:
            options = _options(video, source, record, self.config.ice_servers)
        peer = contact.peer_id
        if self._ringing_from(peer) is not None:
            if browser_sdp is not None:
                raise ApiError("busy", "that friend is calling you now: answer their call instead")
            return await self._answer_instead(peer, options)
        if (self.current is not None and self.current.call.live) or self.in_other_call():
            raise ApiError("busy", "already in a call: hang up first")
        if not await self.chat.reach.reach(peer, lookup=True):
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
        rtc: AsyncioThread | None = None
        live: CallSession | None = None
        session: MediaSession | None = None
        media = MediaStates()
        try:
            if browser_sdp is not None:
                sdp = sendable(with_reflexive(browser_sdp, self._public_ips()))
                browser = BrowserMedia(self.events, call_id)
                browser.owner = owner
                parts: dict[str, Any] = {"browser": browser, "media": media}
            else:
                rtc = AsyncioThread()
                session = await open_session(rtc, options, media)
                with trio.fail_after(MEDIA_SETUP_TIMEOUT):
                    offer = await rtc.call(session.create_offer())
                sdp = sendable(with_reflexive(offer, self._public_ips()))
                parts = {"session": session, "rtc": rtc, "media": media}
            call, outputs = Call.outgoing(
                call_id, options.video, sdp, trio.current_time(), self.config.ring_timeout
            )
            live = self._session(peer, call, stream, options, **parts)
            if (self.current is not None and self.current.call.live) or self.in_other_call():
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
            self._nursery.start_soon(live.drive)
        except BaseException as exc:
            if live is None or self.current is not live:
                with trio.CancelScope(shield=True):
                    await release(rtc, session)
                    await close(stream)
            else:
                await live.finish()
            if isinstance(exc, MediaError | trio.TooSlowError):
                raise ApiError("media_error", f"cannot start the call's media: {exc}") from None
            if isinstance(exc, _Superseded):
                # The friend's call reached us while ours was being set up: that is the
                # call the user wants (a page answers it itself: it rings there).
                if browser_sdp is None and self._ringing_from(peer) is not None:
                    return await self._answer_instead(peer, options)
                raise ApiError("busy", "already in a call: hang up first") from None
            raise
        live.publish()
        log.info("calling %s (%s)", short(peer), "video" if video else "audio")
        if owner is not None and owner.gone:
            self.owner_gone(owner)  # the page went away while the call was being set up
        return live.json()

    async def answer(
        self,
        friend: str | None,
        source: str,
        record: str,
        browser_sdp: str | None = None,
        owner: PageOwner | None = None,
    ) -> dict[str, Any]:
        """Answer the ringing call with aiortc media, or with a web page's answer SDP."""
        live = self._ringing(friend)
        if browser_sdp is not None:
            browser = BrowserMedia(self.events, live.call.call_id)
            browser.owner = owner
            await live.answer_browser(browser, check_browser_sdp(browser_sdp), self._public_ips())
            if owner is not None and owner.gone:
                self.owner_gone(owner)
            return live.json()
        options = _options(live.call.video, source, record, self.config.ice_servers)
        await live.answer(options, self._public_ips())
        return live.json()

    def remote_offer(self) -> dict[str, Any]:
        """The ringing call's offer, for a web page that will answer it."""
        live = self._ringing(None)
        return {
            "call_id": live.call.call_id.hex(),
            "video": live.call.video,
            "sdp": live.call.remote_sdp,
        }

    def ice_servers(self) -> list[dict[str, Any]]:
        """The configured STUN/TURN servers in RTCConfiguration form (none by default)."""
        out: list[dict[str, Any]] = []
        for url, username, credential in self.config.ice_servers:
            entry: dict[str, Any] = {"urls": url}
            if username:
                entry["username"] = username
            if credential:
                entry["credential"] = credential
            out.append(entry)
        return out

    async def report(
        self, call_id: str, state: str | None, stats: dict[str, Any] | None
    ) -> dict[str, Any]:
        """A web page's report on the peer connection of the browser call it runs."""
        live = self._browser_call(call_id)
        async with live.lock:
            live.browser_report(state, stats)
        return live.json()

    def owner_gone(self, owner: PageOwner) -> None:
        """A control session ended: a browser call whose page that was ends too."""
        owner.gone = True
        live = self.current
        if live is None or live.browser is None or live.browser.owner is not owner:
            return
        if live.call.live and self._nursery is not None:
            log.info("the web page running the call with %s went away", short(live.peer))
            self._nursery.start_soon(self._end_call, live)

    def _browser_call(self, call_id: str) -> CallSession:
        live = self.current
        if (
            live is None
            or live.browser is None
            or not live.call.live
            or live.call.call_id.hex() != call_id.lower()
        ):
            raise ApiError("not_found", "no live browser call with that id")
        return live

    async def hangup(self, friend: str | None) -> dict[str, Any]:
        live = self.current
        if live is None or not live.call.live or (friend and not self._matches(live, friend)):
            raise ApiError("not_found", "no call to hang up")
        async with live.lock:
            if live.call.state is CallState.RINGING_IN:
                outputs = live.call.decline()
            else:
                outputs = live.call.hangup()
            await live.apply(outputs)
        return live.json()

    async def end_before_stop(self) -> None:
        """The daemon is about to stop: hang up (or decline) a live call while the connection
        is still there, so the friend sees a hang-up rather than a failed call. (Once the
        daemon's tasks are cancelled, py-libp2p's swarm closes its connections as it stops
        while the call's own clean-up tries to say goodbye, and which came first was luck.)"""
        live = self.current
        if live is None or not live.call.live:
            return
        async with live.lock:
            if not live.call.live:
                return
            if live.call.state is CallState.RINGING_IN:
                await live.apply(live.call.decline())
            else:
                await live.apply(live.call.hangup())

    async def list_calls(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for live in (self.current, self.last):
            if live is None or any(c["id"] == live.call.call_id.hex() for c in out):
                continue
            entry = live.json()
            if live.call.live and (
                live.browser is not None or (live.session is not None and live.rtc is not None)
            ):
                entry["stats"] = await live.stats()
            out.append(entry)
        return out

    # --- incoming -------------------------------------------------------------------------

    async def _serve(self, stream: INetStream, peer: str) -> None:
        if not self.chat.roster.is_friend(peer):
            log.info("refused a call from %s: not a friend", short(peer))
            await reset(stream)
            return
        inbox = FrameInbox(stream)
        try:
            with trio.fail_after(OFFER_WAIT):
                offer = await inbox.next()
            if not isinstance(offer, CallOffer):
                raise FrameError("a call stream must start with call-offer")
        except Exception as exc:
            log.info("bad call stream from %s: %s", short(peer), exc)
            await reset(stream)
            return
        try:
            await self._take_offer(stream, peer, inbox, offer)
        except Exception as exc:  # never let a call's failure escape into libp2p
            log.warning("call from %s failed: %s", short(peer), exc)
            await reset(stream)

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
        if self.in_other_call():
            decision = Incoming.BUSY
        if decision in (Incoming.BUSY, Incoming.GLARE_KEEP_OURS):
            reason = "busy" if decision is Incoming.BUSY else "glare"
            log.info("call from %s: %s", short(peer), reason)
            with trio.move_on_after(5):
                await stream.write(encode_call(CallEnd(offer.call_id, reason)))
            await close(stream)
            return
        answer_with: MediaOptions | None = None
        if decision is Incoming.GLARE_TAKE_THEIRS:
            log.info("we and %s called each other at once: taking their call", short(peer))
            answer_with = self._glare_options(peer)
            if current is not None and current.peer == peer and current.call.live:
                # Our own call to them, lost to theirs: answer theirs with the same media
                # (a page's call instead rings for that page to answer).
                answer_with = current.options if current.browser is None else None
                async with current.lock:
                    await current.apply(current.call.hangup("glare"))
            if current is not None:
                with trio.move_on_after(CLEANUP_TIMEOUT):
                    await current.finished.wait()
        call, outputs = Call.incoming(offer, trio.current_time(), self.config.ring_timeout)
        options = answer_with or _options(call.video, "test", "", self.config.ice_servers)
        live = self._session(peer, call, stream, options)
        self.current = live
        try:
            async with live.lock:
                await live.apply(outputs)
            if answer_with is None and self.config.auto_answer:
                answer_with = _options(
                    call.video, "test", self._auto_record(live), self.config.ice_servers
                )
            if answer_with is not None:
                try:
                    await live.answer(answer_with, self._public_ips())
                except ApiError as exc:
                    log.warning("answering automatically failed: %s", exc.message)
        finally:
            # Whatever happened above, the call is driven to its end and released.
            await live.drive(inbox)

    def _auto_record(self, live: CallSession) -> str:
        if not self.config.record_dir:
            return ""
        name = time.strftime("call-%Y%m%d-%H%M%S-") + live.call.call_id.hex()[:12] + ".mp4"
        return str(Path(self.config.record_dir) / name)

    def _glare_options(self, peer: str) -> MediaOptions | None:
        last = self.last
        if (
            last is not None
            and last.peer == peer
            and last.call.end_reason == "glare"
            and last.browser is None  # a page's lost call: the friend's rings for the page
        ):
            return last.options
        return None

    def is_ringing(self) -> bool:
        live = self.current
        return live is not None and live.call.state is CallState.RINGING_IN

    def _ringing_from(self, peer: str) -> CallSession | None:
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
        await live.answer(options, self._public_ips())
        return live.json()

    def _ringing(self, friend: str | None) -> CallSession:
        live = self.current
        if live is None or live.call.state is not CallState.RINGING_IN:
            raise ApiError("not_found", "no incoming call is ringing")
        if friend and not self._matches(live, friend):
            raise ApiError("not_found", f"no incoming call from {friend!r}")
        return live

    def _matches(self, live: CallSession, friend: str) -> bool:
        try:
            return self.chat.roster.resolve(friend).peer_id == live.peer
        except ApiError:
            return False


class _Superseded(Exception):
    """Another call became current while an outgoing one was being set up."""


def check_source(source: str) -> str:
    """``source`` if a call can send it (``test`` when empty), else a clear API error."""
    source = source or "test"
    if source not in SOURCES and (not os.path.isabs(source) or not os.path.isfile(source)):
        raise ApiError(
            "invalid_params",
            f"--source must be {', '.join(SOURCES)} or the "
            f"absolute path of a media file (got {source!r})",
        )
    if source == "camera" and not os.path.exists("/dev/video0"):
        raise ApiError("media_error", "no camera found (/dev/video0)")
    return source


def _options(
    video: bool, source: str, record: str, ice: tuple[tuple[str, str, str], ...]
) -> MediaOptions:
    source = check_source(source)
    if record and (not os.path.isabs(record) or not os.path.isdir(os.path.dirname(record))):
        raise ApiError("invalid_params", "--record needs an absolute path in an existing directory")
    return MediaOptions(video=video, source=source, record=record, ice_servers=ice)
