"""The shared per-peer link loop (p2pchat.net.link) on trio's mock clock: rounds, backoff,
wake-ups, failures contained, one link per peer, forgotten when done."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from p2pchat.net.link import BACKOFF_MAX, BACKOFF_MIN, Link, Links, Wakeup


class ScriptedLink(Link):
    """A link whose rounds follow a script: True (progress), False (none) or an exception."""

    kind = "test-link"
    what = "test link"

    def __init__(self, peer: str, script: list[bool | Exception]) -> None:
        super().__init__(peer)
        self.script = script
        self.rounds: list[float] = []

    def wanted(self) -> bool:
        return bool(self.script)

    async def step(self) -> bool:
        self.rounds.append(trio.current_time())
        outcome = self.script.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_progress_runs_the_next_round_at_once_and_failures_back_off(
    clock: trio.testing.MockClock,
) -> None:
    link = ScriptedLink("peer", [True, True, False, False, False, True])
    await link.run()
    gaps = [round(b - a, 3) for a, b in zip(link.rounds, link.rounds[1:], strict=False)]
    # two progressing rounds back to back, then 0.5, 1, 2 s of backoff after each empty one
    assert gaps == [0.0, 0.0, BACKOFF_MIN, 2 * BACKOFF_MIN, 4 * BACKOFF_MIN]


async def test_backoff_is_capped(clock: trio.testing.MockClock) -> None:
    link = ScriptedLink("peer", [False] * 12)
    await link.run()
    gaps = [b - a for a, b in zip(link.rounds, link.rounds[1:], strict=False)]
    assert max(gaps) == BACKOFF_MAX
    assert gaps[-1] == BACKOFF_MAX


async def test_a_failing_round_is_logged_and_retried(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="p2pchat.net.streams")
    link = ScriptedLink("12D3KooWpeer", [OSError("connection refused"), RuntimeError("bug"), True])
    await link.run()  # neither exception escapes
    assert len(link.rounds) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("test link to" in m and "connection refused" in m for m in messages)
    # an error that is not a network/frame/storage error is a bug: logged with its traceback
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


async def test_network_changed_cuts_the_wait_and_resets_the_backoff(
    clock: trio.testing.MockClock,
) -> None:
    link = ScriptedLink("peer", [False, False, False, False, True])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        await trio.sleep(BACKOFF_MIN + 2 * BACKOFF_MIN + 0.1)  # after the 3rd round, waiting 2 s
        assert len(link.rounds) == 3
        link.network_changed()
        await trio.sleep(0)
    # the 4th round came at once; the 5th after the reset backoff (doubled once by the wait
    # that was cut short), not after the 4 s the backoff had grown to
    assert link.rounds[3] == pytest.approx(link.rounds[2] + 0.1)
    assert link.rounds[4] - link.rounds[3] == pytest.approx(2 * BACKOFF_MIN)


async def test_retry_now_cuts_the_wait_but_keeps_the_backoff(clock: trio.testing.MockClock) -> None:
    link = ScriptedLink("peer", [False, False, False, True])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        await trio.sleep(BACKOFF_MIN + 0.1)  # 2nd round done, waiting 1 s
        link.retry_now()
    assert len(link.rounds) == 4
    assert link.rounds[3] - link.rounds[2] == 4 * BACKOFF_MIN  # the backoff kept growing


async def test_links_keep_one_per_peer_and_forget_finished_ones(
    clock: trio.testing.MockClock,
) -> None:
    scripts = {"a": [False, True], "b": [True], "idle": []}
    made: list[ScriptedLink] = []

    def make(peer: str) -> ScriptedLink:
        link = ScriptedLink(peer, list(scripts[peer]))
        made.append(link)
        return link

    links: Links[ScriptedLink] = Links(make)
    assert links.ensure("a") is None  # not running yet
    async with trio.open_nursery() as nursery:
        await nursery.start(links.run)
        first = links.ensure("a")
        assert first is not None and links.ensure("a") is first  # one per peer
        assert links.ensure("idle") is None  # no work: no link
        assert "idle" not in links
        assert links.ensure("b") is not None
        await trio.sleep(0.1)
        assert "b" not in links  # done after its one round
        assert "a" in links
        await trio.sleep(BACKOFF_MIN)
        assert "a" not in links and "b" not in links
        nursery.cancel_scope.cancel()
    assert [link.peer for link in made] == ["a", "idle", "b"]


async def test_wakeup_is_level_triggered(clock: trio.testing.MockClock) -> None:
    wakeup = Wakeup()
    wakeup.set()
    with trio.fail_after(0.01):
        await wakeup.wait(10)  # already set: returns at once
    start = trio.current_time()
    await wakeup.wait(3)  # cleared by the last wait: times out
    assert trio.current_time() - start == 3
