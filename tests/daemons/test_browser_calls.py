"""A web page as a call's media endpoint, between real daemons: the test process plays the page
(its own aiortc RTCPeerConnection, driven through the control API exactly as the web app
drives it: ``calls.start``/``calls.answer`` with ``media: "browser"``, ``call.media`` events,
``calls.report``), the friend's daemon uses its own aiortc. Frames must be decoded on both
sides, and the page going away must end the call. The real-browser version is in
tests/web/test_browser.py."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from p2pchat.api import ApiError, Client
from tests.daemons.test_calls import _lan_ip, call_state
from tests.harness import Daemon, befriend, start_all, wait_for

T = TypeVar("T")

pytestmark = [
    pytest.mark.daemons,
    pytest.mark.skipif(
        _lan_ip() is None,
        reason="calls need a non-loopback IPv4 address: ICE host candidates never use loopback",
    ),
]


class FakePage:
    """The media side of a web page: one RTCPeerConnection in its own asyncio thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.frames = 0
        self.pc: Any = None
        self.readers: list[Any] = []  # the tasks reading remote tracks (kept referenced)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    async def _new_pc(self) -> Any:
        from aiortc import (
            AudioStreamTrack,
            RTCConfiguration,
            RTCPeerConnection,
            VideoStreamTrack,
        )

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # never a public STUN server
        pc.addTrack(AudioStreamTrack())  # audio first, then video: as the web app offers
        pc.addTrack(VideoStreamTrack())

        @pc.on("track")
        def on_track(track: Any) -> None:
            async def count() -> None:
                from aiortc.mediastreams import MediaStreamError

                with contextlib.suppress(MediaStreamError):  # the track ended with the call
                    while True:
                        await track.recv()
                        if track.kind == "video":
                            self.frames += 1

            self.readers.append(asyncio.ensure_future(count()))

        self.pc = pc
        return pc

    async def _offer(self) -> str:
        pc = await self._new_pc()
        await pc.setLocalDescription(await pc.createOffer())  # aiortc: gathering done here
        return str(pc.localDescription.sdp)

    async def _answer(self, offer: str) -> str:
        from aiortc import RTCSessionDescription

        pc = await self._new_pc()
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def _apply_answer(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    def offer(self) -> str:
        return self.run(self._offer())

    def answer(self, offer: str) -> str:
        return self.run(self._answer(offer))

    def apply_answer(self, sdp: str) -> None:
        self.run(self._apply_answer(sdp))

    def state(self) -> str:
        return str(self.pc.connectionState) if self.pc is not None else "new"

    def close(self) -> None:
        if self.pc is not None:
            self.run(self.pc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def media_answer(events: Any, call_id: str) -> str:
    for ev in events:
        if ev.get("type") == "call.media" and ev["call_id"] == call_id and ev["kind"] == "answer":
            return str(ev["sdp"])
    raise AssertionError("the event stream ended before the friend's answer")


def stats_of(d: Daemon) -> dict[str, Any]:
    calls = d.call("calls.list")["calls"]
    return dict(calls[0].get("stats") or {}) if calls else {}


@pytest.fixture
def page() -> Any:
    fake = FakePage()
    yield fake
    fake.close()


@pytest.mark.timeout(90)
def test_page_calls_an_aiortc_friend_and_leaving_the_page_hangs_up(
    make_daemon: Callable[..., Daemon], page: FakePage
) -> None:
    alice, bob = make_daemon("alice", start=False), make_daemon("bob", start=False)
    start_all([alice, bob])
    befriend(alice, bob)

    # What the daemon refuses from a page, before any call exists.
    with Client(alice.home) as c:
        for bad in ("", "hello", "v=0" + "x" * 40_000, 42):
            with pytest.raises(ApiError) as err:
                c.call("calls.start", friend="bob", media="browser", sdp=bad)
            assert err.value.name == "invalid_params"
        with pytest.raises(ApiError) as err:
            c.call("calls.start", friend="bob", media="browser")
        assert err.value.name == "invalid_params" and "sdp" in err.value.message
        with pytest.raises(ApiError) as err:
            c.call("calls.start", friend="bob", media="webcam", sdp="v=0")
        assert err.value.name == "invalid_params"
        with pytest.raises(ApiError) as err:
            c.call("calls.report", id="00" * 16, state="connected")
        assert err.value.name == "not_found"
        with pytest.raises(ApiError) as err:
            c.call("calls.remote_offer")
        assert err.value.name == "not_found"
        assert c.call("calls.ice_servers") == {"ice_servers": []}  # no STUN default
    assert alice.call("calls.list")["calls"] == []

    owner = Client(alice.home)  # the page's control session
    listener = Client(alice.home, timeout=30)
    try:
        events = listener.events()
        call = owner.call("calls.start", friend="bob", media="browser", sdp=page.offer())["call"]
        assert call["media"] == "browser" and call["state"] == "offering"
        with pytest.raises(ApiError) as err:
            owner.call("calls.report", id=call["id"], state="sideways")
        assert err.value.name == "invalid_params"
        wait_for(lambda: call_state(bob) == "ringing_in", what="bob's phone to ring")
        bob.call("calls.answer")  # bob's daemon answers with its own aiortc
        page.apply_answer(media_answer(events, call["id"]))
        wait_for(lambda: page.state() == "connected", timeout=20, what="the page's media")
        owner.call("calls.report", id=call["id"], state="connected", stats={"fps": 30})
        wait_for(lambda: call_state(alice) == "active", what="alice's call to be active")
        wait_for(lambda: call_state(bob) == "active", what="bob's call to be active")
        # Frames decoded on each side: the daemon's aiortc from the page, the page from it.
        wait_for(
            lambda: stats_of(bob).get("video_frames_in", 0) > 10,
            timeout=20,
            what="bob to decode the page's video",
        )
        wait_for(lambda: page.frames > 10, timeout=20, what="the page to decode bob's video")
        assert stats_of(alice) == {"fps": 30, "state": "connected"}  # what the page reported
        assert alice.call("calls.list")["calls"][0]["media"] == "browser"
    finally:
        owner.close()  # the page went away ...
    try:
        # ... so its call ends, on both sides.
        wait_for(lambda: call_state(alice) == "", timeout=15, what="alice's call to end")
        wait_for(lambda: call_state(bob) == "", timeout=15, what="bob's call to end")
        # A call leaves status when it ends; its release (stream closed) follows shortly.
        wait_for(
            lambda: alice.call("calls.list")["calls"][0]["released"],
            timeout=15,
            what="alice's call to be released",
        )
        ended = alice.call("calls.list")["calls"][0]
        assert ended["state"] == "ended" and ended["ended_by"] == "you"
        assert bob.call("calls.list")["calls"][0]["ended_by"] == "friend"
    finally:
        listener.close()


@pytest.mark.timeout(90)
def test_page_answers_an_aiortc_call_and_hangs_up(
    make_daemon: Callable[..., Daemon], page: FakePage
) -> None:
    alice, bob = make_daemon("alice", start=False), make_daemon("bob", start=False)
    start_all([alice, bob])
    befriend(alice, bob)
    with Client(bob.home) as owner:
        alice.call("calls.start", friend="bob")  # alice's daemon calls with its aiortc
        wait_for(lambda: call_state(bob) == "ringing_in", what="bob's phone to ring")
        offer = owner.call("calls.remote_offer")
        assert offer["video"] is True and offer["sdp"].startswith("v=0")
        call = owner.call("calls.answer", media="browser", sdp=page.answer(offer["sdp"]))["call"]
        assert call["id"] == offer["call_id"] and call["media"] == "browser"
        wait_for(lambda: page.state() == "connected", timeout=20, what="the page's media")
        owner.call("calls.report", id=call["id"], state="connected")
        wait_for(lambda: call_state(bob) == "active", what="bob's call to be active")
        wait_for(
            lambda: stats_of(alice).get("video_frames_in", 0) > 10,
            timeout=20,
            what="alice to decode the page's video",
        )
        wait_for(lambda: page.frames > 10, timeout=20, what="the page to decode alice's video")
        alice.call("calls.hangup")  # the friend hangs up; the page's call ends
        wait_for(lambda: call_state(bob) == "", timeout=15, what="bob's call to end")
        assert bob.call("calls.list")["calls"][0]["ended_by"] == "friend"
        with pytest.raises(ApiError) as err:
            owner.call("calls.report", id=call["id"], state="connected")
        assert err.value.name == "not_found"  # an ended call takes no more reports
