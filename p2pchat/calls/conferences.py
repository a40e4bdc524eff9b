"""Group calls ("conferences"): the trio adapter around :mod:`p2pchat.calls.conference`
(signalling over ``/p2pchat/conf/1.0.0`` streams, one per pair of participants) and
:mod:`p2pchat.calls.conf_media` (one aiortc peer connection per pair, on one asyncio thread).

One call at a time per daemon, 1:1 or group: a member in a call answers ``busy``. A
conference lives in one task of :meth:`Conferences.run`'s nursery (:meth:`ConferenceCall.run`)
that owns its links, media and thread and releases all of them when the call ends, whatever
ends it. Only members of the group, by our copy of its signed membership, reach this far: any
other stream is refused before anything rings, and the participants others name are filtered
to the group's members.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from libp2p.abc import INetStream

from p2pchat.api import ApiError
from p2pchat.calls.conf_frames import (
    CONF_PROTOCOL,
    ConfAnswer,
    ConfEnd,
    ConfFrame,
    ConfFrameDecoder,
    ConfOffer,
    ConfPeers,
    encode_conf,
)
from p2pchat.calls.conf_media import ConferenceMedia, ConfMediaOptions
from p2pchat.calls.conference import (
    Announce,
    Answer,
    ApplyAnswer,
    Conference,
    ConfState,
    Ended,
    EndLink,
    LinkState,
    Offer,
    Output,
    Refuse,
    Ring,
)
from p2pchat.calls.frames import CALL_ID_BYTES
from p2pchat.calls.manager import check_source
from p2pchat.calls.media import AsyncioThread, MediaError, with_reflexive
from p2pchat.calls.session import CLEANUP_TIMEOUT, MEDIA_SETUP_TIMEOUT, close, sendable
from p2pchat.calls.state import MEDIA_LOSS_GRACE
from p2pchat.events import EventBus
from p2pchat.groups.service import Group, Groups
from p2pchat.groups.store import GroupStatus
from p2pchat.identity import short
from p2pchat.net.streams import read_some, reset

log = logging.getLogger(__name__)

OFFER_WAIT: Final = 10.0
"""Seconds a new conference stream may take to send its offer."""
WRITE_TIMEOUT: Final = 5.0
LEFT_MEMORY: Final = 120.0
"""Seconds a conference we declined or left refuses later offers instead of ringing again
(a participant that has not heard yet may still offer)."""
TICK: Final = 0.5


@dataclass
class LinkIO:
    """One pair's stream, as the adapter holds it."""

    peer: str
    stream: INetStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    offer_sdp: str = ""
    """Their offer, held until we answer it."""
    answer_sdp: str = ""
    gen: int = 0
    """The generation of this link's peer connection (its media states carry it)."""
    reader: trio.lowlevel.Task | None = None
    """The task reading this stream (a link it ends itself is not cancelled under it)."""
    write_lock: trio.Lock = field(default_factory=trio.Lock)

    async def send(self, frame: ConfFrame) -> bool:
        try:
            async with self.write_lock:
                with trio.fail_after(WRITE_TIMEOUT):
                    await self.stream.write(encode_conf(frame))
            return True
        except Exception as exc:
            log.debug("conference frame to %s not sent: %s", short(self.peer), exc)
            return False


class ConferenceCall:
    """One conference and all it holds. Touched only under ``lock``."""

    def __init__(self, service: Conferences, group: Group, conf: Conference) -> None:
        self.service = service
        self.group = group
        self.conf = conf
        self.options = ConfMediaOptions(conf.video, "test", service.ice_servers)
        self.lock = trio.Lock()
        self.links: dict[str, LinkIO] = {}
        self.rtc: AsyncioThread | None = None
        self.media: ConferenceMedia | None = None
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.released = False
        self.finished = trio.Event()
        self.rang_by = ""
        self._ended = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._states_send, self._states = trio.open_memory_channel[tuple[str, int, str]](64)
        self._last_stats: dict[str, tuple[float, int, int]] = {}

    # --- facts ------------------------------------------------------------------------------

    def json(self) -> dict[str, Any]:
        conf = self.conf
        return {
            "id": conf.conf_id.hex(),
            "kind": "group",
            "group_id": self.group.group_id.hex(),
            "group": self.group.state.name,
            "peer_id": self.rang_by,
            "direction": "in" if self.rang_by else "out",
            "video": conf.video,
            "media": "aiortc",
            "state": conf.state.value,
            "participants": [
                {"peer_id": peer, "state": link.state.value}
                for peer, link in sorted(conf.links.items())
            ],
            "reason": conf.end_reason,
            "ended_by": ("member" if conf.ended_by_remote else "you") if conf.end_reason else "",
            "source": self.options.source,
            "started_at": int(self.started_at * 1000),
            "ended_at": int(self.ended_at * 1000) if self.ended_at else None,
            "released": self.released,
        }

    async def stats(self) -> dict[str, Any]:
        """Per participant: state, frames decoded, fps and kbit/s since the last ask."""
        media, rtc = self.media, self.rtc
        if media is None or rtc is None:
            return {}
        try:
            with trio.fail_after(3):
                per_peer = await rtc.call(media.stats())
        except Exception as exc:
            return {"error": str(exc)}
        now = time.monotonic()
        for peer, stats in per_peer.items():
            frames = int(stats.get("video_frames_in", 0))
            received = int(stats.get("bytes_in", 0) or 0)
            then, old_frames, old_bytes = self._last_stats.get(peer, (0.0, 0, 0))
            if then and now > then:
                stats["fps"] = round((frames - old_frames) / (now - then), 1)
                stats["kbps_in"] = round((received - old_bytes) * 8 / (now - then) / 1000, 1)
            self._last_stats[peer] = (now, frames, received)
        return {"participants": per_peer, "encoder": media.encoder_facts()}

    # --- life -------------------------------------------------------------------------------

    async def run(
        self, first: list[Output], *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Carry out ``first``, then run the call until it ends; release all it holds."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._media_states)
                nursery.start_soon(self._timer)
                async with self.lock:
                    await self.apply(first)
                task_status.started()
                await self._ended.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._release()

    async def start_media(self, source: str) -> None:
        """Our media, before we offer or answer (under ``lock``)."""
        if self.media is not None:
            return
        self.options = ConfMediaOptions(
            self.conf.video, source, self.service.ice_servers, self.service.encode_once
        )
        rtc = AsyncioThread("p2pchat-conf")
        self.rtc = rtc
        states = self._states_send

        def report(peer: str, gen: int, state: str) -> None:  # on the asyncio thread
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(_deliver, states, (peer, gen, state))

        token = trio.lowlevel.current_trio_token()
        options = self.options
        built: list[ConferenceMedia] = []

        async def build() -> ConferenceMedia:
            media = ConferenceMedia(options, report)
            built.append(media)
            return media

        try:
            with trio.fail_after(MEDIA_SETUP_TIMEOUT):
                self.media = await rtc.call(build())
        except BaseException as exc:
            # Cut short (a timeout, a cancelled answer or start, an error): nothing of it may
            # outlive this, not even media that finished building after we gave up on it.
            with trio.CancelScope(shield=True):
                await self._drop_media(rtc, built)
            if isinstance(exc, MediaError) or not isinstance(exc, Exception):
                raise
            raise MediaError(f"cannot start media: {exc}") from None

    async def _drop_media(self, rtc: AsyncioThread, built: list[ConferenceMedia]) -> None:
        """Undo a start_media that did not finish: close what was built, stop the thread."""

        async def close_built() -> None:  # queued after the build on the one asyncio loop
            for media in built:
                await media.close()

        try:
            with trio.move_on_after(CLEANUP_TIMEOUT / 2):
                await rtc.call(close_built())
        except Exception as exc:
            log.warning("closing the group call's unfinished media failed: %s", exc)
        await rtc.stop()
        if self.rtc is rtc:
            self.rtc = None
            self.media = None

    async def apply(self, outputs: list[Output]) -> None:
        """Carry out what the state machine asked for (under ``lock``)."""
        for out in outputs:
            match out:
                case Offer(peer):
                    assert self._nursery is not None
                    self._nursery.start_soon(self._offer, peer)
                case Answer(peer):
                    await self._answer(peer)
                case ApplyAnswer(peer):
                    await self._apply_answer(peer)
                case EndLink(peer, reason, tell):
                    await self._end_link(peer, reason, tell)
                case Announce():
                    await self._announce()
                case Ring():
                    self.service.events.publish("call.incoming", call=self.json())
                case Refuse():
                    pass  # carried out where the offer's stream is (``Conferences._serve``)
                case Ended(reason, _):
                    self.ended_at = time.time()
                    self._ended.set()
                    log.info("group call in %s ended: %s", self.group.state.name, reason)
                    self.service.events.publish("call.ended", call=self.json())
        if outputs and self.conf.live:
            self.service.events.publish("call.updated", call=self.json())

    async def feed(self, step: Callable[[], list[Output]]) -> None:
        """Take the lock, then change the state (``step``) and carry out what it returns:
        a change computed before the lock is held could act on a link that is gone."""
        async with self.lock:
            await self.apply(step())

    def _others(self, peer: str) -> tuple[str, ...]:
        return tuple(p for p in self.conf.participants() if p != peer)

    async def _offer(self, peer: str) -> None:
        """Open a link to ``peer`` and offer it (in the call's nursery)."""

        def failed() -> list[Output]:
            link = self.conf.links.get(peer)
            if link is None or link.state is not LinkState.OFFER_OUT or peer in self.links:
                return []  # that offer is gone already (glare, a timeout, the call's end)
            return self.conf.link_ended(peer, "failed", by_remote=False)

        try:
            if not await self.service.groups.reach(peer):
                raise ConnectionError("unreachable")
            stream = await self.service.groups.net.open_stream(peer, CONF_PROTOCOL)
        except Exception as exc:
            log.info("group call: cannot reach %s: %s", short(peer), exc)
            await self.feed(failed)
            return
        io = LinkIO(peer, stream)
        try:
            async with self.lock:
                link = self.conf.links.get(peer)
                if link is None or link.state is not LinkState.OFFER_OUT or peer in self.links:
                    return  # the link ended, or became theirs, meanwhile
                try:
                    assert self.media is not None and self.rtc is not None
                    with trio.fail_after(MEDIA_SETUP_TIMEOUT):
                        sdp, io.gen = await self.rtc.call(self.media.offer(peer))
                    sdp = sendable(with_reflexive(sdp, self.service.public_ips()))
                except Exception as exc:
                    log.warning("group call: no offer for %s: %s", short(peer), exc)
                    await self.apply(failed())
                    return
                self.links[peer] = io
                frame = ConfOffer(
                    self.group.group_id,
                    self.conf.conf_id,
                    self.conf.video,
                    sdp,
                    self._others(peer),
                )
                if not await io.send(frame):
                    await self.apply(self.conf.link_ended(peer, "failed", by_remote=False))
                    return
        finally:
            if self.links.get(peer) is not io:  # never registered (or gone): not left open
                with trio.CancelScope(shield=True):
                    await reset(stream)
        await self.read_link(io, ConfFrameDecoder())

    async def _answer(self, peer: str) -> None:
        io = self.links.get(peer)
        try:
            if io is None:
                raise MediaError("no stream")
            assert self.media is not None and self.rtc is not None
            with trio.fail_after(MEDIA_SETUP_TIMEOUT):
                sdp, io.gen = await self.rtc.call(self.media.accept(peer, io.offer_sdp))
            sdp = sendable(with_reflexive(sdp, self.service.public_ips()))
        except Exception as exc:
            log.info("group call: cannot answer %s: %s", short(peer), exc)
            await self.apply(self.conf.link_ended(peer, "failed", by_remote=False, tell=True))
            return
        if not await io.send(ConfAnswer(self.conf.conf_id, sdp, self._others(peer))):
            await self.apply(self.conf.link_ended(peer, "failed", by_remote=False))

    async def _apply_answer(self, peer: str) -> None:
        io = self.links.get(peer)
        try:
            if io is None:
                raise MediaError("no stream")
            assert self.media is not None and self.rtc is not None
            with trio.fail_after(MEDIA_SETUP_TIMEOUT):
                await self.rtc.call(self.media.apply_answer(peer, io.answer_sdp))
        except Exception as exc:
            log.info("group call: the answer of %s is unusable: %s", short(peer), exc)
            await self.apply(self.conf.link_ended(peer, "failed", by_remote=False, tell=True))

    async def _end_link(self, peer: str, reason: str, tell: bool) -> None:
        io = self.links.pop(peer, None)
        # Shielded (each step bounded): the link's own reader may be what ends it, and
        # cancelling its scope must not cut short the release of its stream and media.
        with trio.CancelScope(shield=True):
            if io is not None:
                if io.reader is not trio.lowlevel.current_task():
                    io.scope.cancel()
                # (A reader that ends its own link is not cancelled: it carries out the rest
                # of what ended it, then sees its link gone and stops.)
                if tell:
                    with trio.move_on_after(2):
                        await io.send(ConfEnd(self.conf.conf_id, reason))
                await close(io.stream)
            if self.media is not None and self.rtc is not None:
                try:
                    with trio.move_on_after(CLEANUP_TIMEOUT / 2):
                        await self.rtc.call(self.media.close_peer(peer))
                except Exception as exc:
                    log.info("group call: closing the link with %s: %s", short(peer), exc)
        self._last_stats.pop(peer, None)

    async def _announce(self) -> None:
        for peer, io in list(self.links.items()):
            await io.send(ConfPeers(self.conf.conf_id, self._others(peer)))

    async def read_link(self, io: LinkIO, decoder: ConfFrameDecoder) -> None:
        """Frames from one pair's stream until it ends (runs in the task that owns it)."""
        reason, by_remote = "failed", True
        io.reader = trio.lowlevel.current_task()
        try:
            with io.scope:
                while True:
                    data = await read_some(io.stream)
                    if not data:
                        break
                    for frame in decoder.feed(data):
                        if not await self._on_frame(io, frame):
                            return
        except Exception as exc:
            log.info("group call stream with %s: %s", short(io.peer), exc)
            reason, by_remote = "failed", False
        if io.scope.cancelled_caught:
            return
        async with self.lock:
            if self.links.get(io.peer) is io:
                await self.apply(
                    self.conf.link_ended(io.peer, reason, by_remote=by_remote, tell=not by_remote)
                )

    async def _on_frame(self, io: LinkIO, frame: ConfFrame) -> bool:
        """Feed one frame; False once the link is over."""
        async with self.lock:
            if self.links.get(io.peer) is not io or frame.conf_id != self.conf.conf_id:
                if self.links.get(io.peer) is io:
                    await self.apply(
                        self.conf.link_ended(io.peer, "failed", by_remote=False, tell=True)
                    )
                return False
            now = trio.current_time()
            match frame:
                case ConfAnswer(_, sdp, peers):
                    io.answer_sdp = sdp
                    named = self.service.members_only(self.group, peers)
                    await self.apply(self.conf.answer_from(io.peer, named, now))
                case ConfPeers(_, peers):
                    named = self.service.members_only(self.group, peers)
                    await self.apply(self.conf.peers_from(io.peer, named, now))
                case ConfEnd(_, reason):
                    await self.apply(self.conf.link_ended(io.peer, reason, by_remote=True))
                    return False
                case ConfOffer():  # only ever the first frame of a stream
                    await self.apply(
                        self.conf.link_ended(io.peer, "failed", by_remote=False, tell=True)
                    )
                    return False
            return self.links.get(io.peer) is io

    async def _media_states(self) -> None:
        async for peer, gen, state in self._states:
            io = self.links.get(peer)
            if io is None or io.gen != gen:
                continue  # a peer connection that is closed already, or another link's
            if state == "connected":
                await self.feed(functools.partial(self._connected, peer, gen))
            elif state in ("failed", "closed"):
                assert self._nursery is not None
                self._nursery.start_soon(self._media_lost, peer, io)

    def _connected(self, peer: str, gen: int) -> list[Output]:
        io = self.links.get(peer)
        return self.conf.link_connected(peer) if io is not None and io.gen == gen else []

    async def _media_lost(self, peer: str, io: LinkIO) -> None:
        """A pair's media path closed: its ``conf-end`` may be on its way; else it failed."""
        await trio.sleep(MEDIA_LOSS_GRACE)
        async with self.lock:
            if self.links.get(peer) is io:
                await self.apply(self.conf.link_ended(peer, "failed", by_remote=False, tell=True))

    async def _timer(self) -> None:
        while True:
            await trio.sleep(TICK)
            await self.feed(self._tick)

    def _tick(self) -> list[Output]:
        """Deadlines, and membership: a member removed from the group (or we) mid-call
        leaves the call."""
        members = self.group.state.members
        if self.service.me not in members or self.group.status is not GroupStatus.JOINED:
            return self.conf.hangup("not_member")
        out: list[Output] = []
        for peer in [p for p in self.conf.links if p not in members]:
            out.extend(self.conf.link_ended(peer, "not_member", by_remote=False, tell=True))
        self.conf.forget_all_but(members)
        return out + self.conf.tick(trio.current_time())

    async def _release(self) -> None:
        for peer in list(self.links):
            await self._end_link(peer, self.conf.end_reason or "hangup", tell=True)
        ok = True
        if self.rtc is not None:
            if self.media is not None:
                ok = False
                try:
                    with trio.move_on_after(CLEANUP_TIMEOUT / 2):
                        await self.rtc.call(self.media.close())
                        ok = True
                except Exception as exc:
                    log.warning("closing the group call's media failed: %s", exc)
            await self.rtc.stop()
        self.released = ok
        self.finished.set()
        self.service.released(self)


def _deliver(channel: trio.MemorySendChannel[Any], item: tuple[str, int, str]) -> None:
    with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
        channel.send_nowait(item)


class Conferences:
    """Group calls of this daemon. ``load()`` before the host listens, then
    ``nursery.start(conferences.run)``."""

    def __init__(
        self,
        groups: Groups,
        events: EventBus,
        *,
        in_other_call: Callable[[], bool],
        public_ips: Callable[[], list[str]] = list,
        ice_servers: tuple[tuple[str, str, str], ...] = (),
        auto_answer: bool = False,
        ring_timeout: float = 45.0,
        encode_once: bool = True,
    ) -> None:
        self.groups = groups
        self.events = events
        self.me = groups.me
        self.public_ips = public_ips
        self.ice_servers = ice_servers
        self.auto_answer = auto_answer
        self.ring_timeout = ring_timeout
        self.encode_once = encode_once
        self._in_other_call = in_other_call
        self.current: ConferenceCall | None = None
        self.last: ConferenceCall | None = None
        self._left: dict[bytes, tuple[float, str]] = {}
        """Conferences we declined or left: until when, and what later offers are told."""
        self._nursery: trio.Nursery | None = None

    def load(self) -> None:
        net = self.groups.net
        net.set_handler(CONF_PROTOCOL, self.groups.chat.inbound.handler("conf", self._serve))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    @property
    def live(self) -> bool:
        return self.current is not None and self.current.conf.live

    def status(self) -> dict[str, Any] | None:
        return self.current.json() if self.live and self.current else None

    def released(self, call: ConferenceCall) -> None:
        self.last = call
        # However it ended, a participant that has not heard may still offer: not again.
        until = trio.current_time() + LEFT_MEMORY
        reason = "declined" if call.conf.end_reason == "declined" else "hangup"
        self._left.setdefault(call.conf.conf_id, (until, reason))
        if self.current is call:
            self.current = None

    def members_only(self, group: Group, peers: tuple[str, ...]) -> tuple[str, ...]:
        """The participants someone named, less any who are not members (by our log)."""
        members = group.state.members
        return tuple(p for p in peers if p in members and p != self.me)

    # --- API --------------------------------------------------------------------------------

    async def start(self, group_text: str, video: bool, source: str) -> dict[str, Any]:
        group = self._joined(group_text)
        source = check_source(source)
        if self.current is not None and self.current.conf.live:
            if self.current.group is group and self.current.conf.state is ConfState.RINGING:
                return await self.answer(group_text, source)  # a call there rings: join it
            raise ApiError("busy", "already in a call: hang up first")
        if self._in_other_call():
            raise ApiError("busy", "already in a call: hang up first")
        online = [p for p in group.state.members if p != self.me and group.channel_to(p)]
        if not online:
            raise ApiError("unreachable", f"no other member of {group.state.name!r} is online")
        conf, first = Conference.start(
            group.group_id,
            secrets.token_bytes(CALL_ID_BYTES),
            video,
            self.me,
            online,
            trio.current_time(),
            self.ring_timeout,
        )
        call = ConferenceCall(self, group, conf)
        self.current = call
        try:
            async with call.lock:
                await call.start_media(source)
            if self._in_other_call():  # a 1:1 call began while our media was set up
                raise ApiError("busy", "already in a call: hang up first")
            assert self._nursery is not None
            await self._nursery.start(call.run, first)
        except BaseException as exc:
            if not call.finished.is_set():  # never ran: nothing else will release it
                if self.current is call:
                    self.current = None
                if call.rtc is not None:
                    with trio.CancelScope(shield=True):
                        if call.media is not None:
                            with trio.move_on_after(CLEANUP_TIMEOUT / 2):
                                await call.rtc.call(call.media.close())
                        await call.rtc.stop()
            if isinstance(exc, MediaError):
                raise ApiError("media_error", f"cannot start the call's media: {exc}") from None
            raise
        log.info("group call in %s: offered to %d members", group.state.name, len(online))
        return call.json()

    async def answer(self, group_text: str | None, source: str) -> dict[str, Any]:
        call = self.ringing(group_text)
        source = check_source(source)
        async with call.lock:
            if call.conf.state is not ConfState.RINGING:
                raise ApiError("invalid_state", f"the group call is {call.conf.state.value}")
            try:
                await call.start_media(source)
            except MediaError as exc:
                await call.apply(call.conf.hangup("failed"))
                raise ApiError("media_error", f"cannot join the call: {exc}") from None
            await call.apply(call.conf.answer(trio.current_time()))
        log.info("joined the group call in %s", call.group.state.name)
        return call.json()

    async def hangup(self, group_text: str | None) -> dict[str, Any]:
        call = self.current
        if call is None or not call.conf.live:
            raise ApiError("not_found", "no group call to hang up")
        if group_text and self.groups.resolve(group_text) is not call.group:
            raise ApiError("not_found", f"no group call in {group_text!r}")
        async with call.lock:
            until = trio.current_time() + LEFT_MEMORY
            if call.conf.state is ConfState.RINGING:
                self._left[call.conf.conf_id] = (until, "declined")
                await call.apply(call.conf.decline())
            else:
                self._left[call.conf.conf_id] = (until, "hangup")
                await call.apply(call.conf.hangup())
        return call.json()

    def ringing(self, group_text: str | None) -> ConferenceCall:
        call = self.current
        if call is None or call.conf.state is not ConfState.RINGING:
            raise ApiError("not_found", "no group call is ringing")
        if group_text and self.groups.resolve(group_text) is not call.group:
            raise ApiError("not_found", f"no group call rings in {group_text!r}")
        return call

    def is_ringing(self) -> bool:
        return self.current is not None and self.current.conf.state is ConfState.RINGING

    def names_group(self, text: str) -> bool:
        """Whether ``text`` names one of our groups (so ``call NAME`` means a group call)."""
        try:
            self.groups.resolve(text)
        except ApiError:
            return False
        return True

    async def list_calls(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for call in (self.current, self.last):
            if call is None or any(c["id"] == call.conf.conf_id.hex() for c in out):
                continue
            entry = call.json()
            if call.conf.live and call.media is not None:
                entry["stats"] = await call.stats()
            out.append(entry)
        return out

    def _joined(self, text: str) -> Group:
        group = self.groups.resolve(text)
        if group.status is not GroupStatus.JOINED or self.me not in group.state.members:
            raise ApiError("not_member", f"you are not a member of {group.state.name!r}")
        return group

    # --- the network ------------------------------------------------------------------------

    async def _serve(self, stream: INetStream, peer: str) -> None:
        decoder = ConfFrameDecoder()
        try:
            with trio.fail_after(OFFER_WAIT):
                frames: list[ConfFrame] = []
                while not frames:
                    data = await read_some(stream)
                    if not data:
                        raise EOFError("closed before its offer")
                    frames = decoder.feed(data)
            offer = frames[0]
            if not isinstance(offer, ConfOffer) or len(frames) > 1:
                raise ValueError("a conference stream must start with conf-offer, alone")
        except Exception as exc:
            log.info("bad conference stream from %s: %s", short(peer), exc)
            await reset(stream)
            return
        try:
            await self._take_offer(stream, peer, offer, decoder)
        except Exception as exc:  # never let a call's failure escape into libp2p
            log.warning("group call offer from %s failed: %s", short(peer), exc)
            await reset(stream)

    async def _take_offer(
        self, stream: INetStream, peer: str, offer: ConfOffer, decoder: ConfFrameDecoder
    ) -> None:
        io = LinkIO(peer, stream, offer_sdp=offer.sdp)
        group = self.groups.groups.get(offer.group_id)
        if (
            group is None
            or group.status is not GroupStatus.JOINED
            or peer not in group.state.members
            or self.me not in group.state.members
        ):
            log.info("refused a group call stream from %s: not a member", short(peer))
            await _refuse(io, offer.conf_id, "not_member")
            return
        now = trio.current_time()
        current = self.current
        if current is not None and not current.conf.live and not current.finished.is_set():
            with trio.move_on_after(CLEANUP_TIMEOUT):
                await current.finished.wait()
            current = self.current
        if current is not None and current.conf.conf_id == offer.conf_id and current.conf.live:
            if current.group is not group:
                # The call's ID with another group's: membership is judged by the call's.
                log.info("refused a group call stream from %s: another group", short(peer))
                await _refuse(io, offer.conf_id, "not_member")
                return
            async with current.lock:
                if not current.conf.live:
                    await _refuse(io, offer.conf_id, "hangup")
                    return
                outputs = current.conf.offer_from(peer, self.members_only(group, offer.peers), now)
                refused = next((o for o in outputs if isinstance(o, Refuse)), None)
                if refused is not None:
                    await _refuse(io, offer.conf_id, refused.reason)
                    return
                # An old link with it ends first (on its old stream), then this one goes on.
                old: list[Output] = [
                    o for o in outputs if isinstance(o, EndLink) and o.peer == peer
                ]
                await current.apply(old)
                current.links[peer] = io
                await current.apply([o for o in outputs if o not in old])
            await current.read_link(io, decoder)
            return
        if (current is not None and current.conf.live) or self._in_other_call():
            await _refuse(io, offer.conf_id, "busy")
            return
        for conf_id, (until, _) in list(self._left.items()):
            if until <= now:
                del self._left[conf_id]
        if offer.conf_id in self._left:
            await _refuse(io, offer.conf_id, self._left[offer.conf_id][1])
            return
        conf, first = Conference.ringing(
            group.group_id,
            offer.conf_id,
            offer.video,
            self.me,
            peer,
            self.members_only(group, offer.peers),
            now,
            self.ring_timeout,
        )
        call = ConferenceCall(self, group, conf)
        call.rang_by = peer
        call.links[peer] = io
        self.current = call
        assert self._nursery is not None
        await self._nursery.start(call.run, first)
        log.info("group call in %s from %s rings", group.state.name, short(peer))
        if self.auto_answer:
            try:
                await self.answer(None, "test")
            except ApiError as exc:
                log.warning("joining the group call automatically failed: %s", exc.message)
        await call.read_link(io, decoder)


async def _refuse(io: LinkIO, conf_id: bytes, reason: str) -> None:
    await io.send(ConfEnd(conf_id, reason))
    await close(io.stream)
