"""A group call's media set-up cut short (a slow camera past the time limit, a cancelled
answer) leaves nothing behind: the media built late is closed and the asyncio thread stopped,
so a retry starts clean (no thread per failed attempt)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import trio

from p2pchat.calls import conferences
from p2pchat.calls.conference import Conference
from p2pchat.calls.media import MediaError
from p2pchat.identity import Identity

A, B = sorted(Identity.generate().peer_id for _ in range(2))


class SlowMedia:
    """Stands in for ConferenceMedia: its constructor blocks the asyncio thread (a camera
    that takes long to open); ``closed`` records that it was closed."""

    made: ClassVar[list[SlowMedia]] = []

    def __init__(self, options: Any, report: Any) -> None:
        time.sleep(0.5)
        self.closed = False
        SlowMedia.made.append(self)

    async def close(self) -> None:
        self.closed = True


def conf_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "p2pchat-conf" and t.is_alive()]


def a_call() -> conferences.ConferenceCall:
    service = SimpleNamespace(ice_servers=(), encode_once=True)
    conf, _ = Conference.ringing(b"g" * 16, b"c" * 16, False, A, B, (), now=0.0)
    return conferences.ConferenceCall(service, SimpleNamespace(), conf)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def slow_media(monkeypatch: pytest.MonkeyPatch) -> None:
    SlowMedia.made = []
    monkeypatch.setattr(conferences, "ConferenceMedia", SlowMedia)


async def test_media_that_misses_the_time_limit_is_closed_and_its_thread_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conferences, "MEDIA_SETUP_TIMEOUT", 0.1)
    before = len(conf_threads())
    call = a_call()
    with trio.fail_after(10), pytest.raises(MediaError):
        await call.start_media("test")
    assert call.rtc is None and call.media is None
    assert [m.closed for m in SlowMedia.made] == [True]  # built after we gave up, then closed
    assert len(conf_threads()) == before


async def test_a_cancelled_set_up_leaves_nothing_and_a_retry_starts_clean() -> None:
    before = len(conf_threads())
    call = a_call()
    with trio.move_on_after(0.1) as cancelled:
        await call.start_media("test")
    assert cancelled.cancelled_caught
    assert call.rtc is None and call.media is None
    assert len(conf_threads()) == before
    with trio.fail_after(10):
        await call.start_media("test")  # the retry
    assert call.media is SlowMedia.made[-1] and call.rtc is not None
    assert len(conf_threads()) == before + 1
    await call.rtc.stop()
    assert [m.closed for m in SlowMedia.made] == [True, False]
