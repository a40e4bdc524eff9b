"""Token buckets for friend requests (p2pchat.chat.ratelimit), with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.chat import ratelimit
from p2pchat.chat.ratelimit import MAX_TRACKED_PEERS, RequestLimiter, TokenBucket
from tests.harness import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def allowed(limiter: RequestLimiter, peer: str, n: int) -> int:
    return sum(limiter.allow(peer) for _ in range(n))


def test_token_bucket_burst_and_refill() -> None:
    b = TokenBucket(capacity=2, refill_per_s=0.5, tokens=2, updated=0.0)
    assert b.take(0.0) and b.take(0.0)
    assert not b.take(0.0)
    assert not b.take(1.0)  # half a token
    assert b.take(2.0)
    assert not b.take(2.0)
    assert b.take(100.0)
    assert b.tokens == pytest.approx(1.0)  # capped at capacity, minus the one taken


def test_borrowing_paces_whoever_goes_past_the_burst() -> None:
    """Pacing (group streams): a burst is free, then each take says how long to wait so the
    rate holds, and waiting it out pays the debt."""
    b = TokenBucket(capacity=3, refill_per_s=10, tokens=3, updated=0.0)
    assert [b.borrow(1, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.borrow(1, 0.0) == pytest.approx(0.1)
    assert b.borrow(5, 0.1) == pytest.approx(0.5)  # 5 more at once: 0.5 s of refill
    assert b.borrow(1, 0.6) == pytest.approx(0.1)
    assert b.borrow(1, 10.0) == 0.0  # refilled to the burst meanwhile


def test_per_peer_burst_then_refill(clock: FakeClock) -> None:
    lim = RequestLimiter(clock, per_peer_burst=3, per_peer_per_s=1 / 60, global_burst=100)
    assert allowed(lim, "p", 10) == 3
    clock.advance(59)
    assert not lim.allow("p")
    clock.advance(1)
    assert lim.allow("p")
    assert not lim.allow("p")
    clock.advance(3600)  # refill is capped at the burst
    assert allowed(lim, "p", 10) == 3


def test_peers_have_separate_buckets(clock: FakeClock) -> None:
    lim = RequestLimiter(clock, per_peer_burst=2, global_burst=100)
    assert allowed(lim, "a", 5) == 2
    assert allowed(lim, "b", 5) == 2
    assert allowed(lim, "a", 5) == 0


def test_default_limits(clock: FakeClock) -> None:
    lim = RequestLimiter(clock)
    assert allowed(lim, "p", 10) == 3
    assert sum(lim.allow(f"peer{i}") for i in range(100)) == 30 - 3


def test_global_cap_across_many_peers(clock: FakeClock) -> None:
    lim = RequestLimiter(clock, per_peer_burst=3, global_burst=30, global_per_s=1.0)
    assert sum(lim.allow(f"peer{i}") for i in range(1000)) == 30
    clock.advance(10)
    assert sum(lim.allow(f"new{i}") for i in range(1000)) == 10
    clock.advance(0.5)
    assert not lim.allow("another")
    clock.advance(0.5)
    assert lim.allow("another")


def test_global_refill_capped(clock: FakeClock) -> None:
    lim = RequestLimiter(clock, per_peer_burst=1, global_burst=5, global_per_s=1.0)
    clock.advance(10_000)
    assert sum(lim.allow(f"p{i}") for i in range(50)) == 5


def test_memory_is_bounded(clock: FakeClock) -> None:
    lim = RequestLimiter(clock)
    for i in range(MAX_TRACKED_PEERS * 2 + 10):
        lim.allow(f"peer{i}")
        assert len(lim._peers) <= MAX_TRACKED_PEERS
    assert len(lim._peers) == MAX_TRACKED_PEERS
    # The most recently seen peers are the ones kept.
    assert f"peer{MAX_TRACKED_PEERS * 2 + 9}" in lim._peers
    assert "peer0" not in lim._peers


def test_recently_seen_peer_is_not_evicted(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "MAX_TRACKED_PEERS", 3)
    lim = RequestLimiter(clock, per_peer_burst=1, global_burst=1000)
    assert lim.allow("hot")
    for name in ["x", "y"]:
        lim.allow(name)
    assert not lim.allow("hot")  # touching it makes it most recent
    lim.allow("z")  # evicts "x", the least recently seen
    assert list(lim._peers) == ["y", "hot", "z"]
    assert not lim.allow("hot")  # still remembered: still out of tokens


def test_flood_of_fresh_ids_still_hits_global_limit(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "MAX_TRACKED_PEERS", 4)
    lim = RequestLimiter(clock, per_peer_burst=1, global_burst=10, global_per_s=0.0)
    # Cycling through more IDs than are tracked resets their per-peer buckets, but the
    # global bucket still caps the total.
    total = sum(lim.allow(f"p{i % 8}") for i in range(200))
    assert total == 10
    assert len(lim._peers) == 4


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=20), st.floats(min_value=0, max_value=5)),
        max_size=200,
    )
)
def test_never_exceeds_burst_plus_refill(events: list[tuple[int, float]]) -> None:
    clock = FakeClock(0.0)
    burst, rate, gburst, grate = 3, 0.1, 10, 0.5
    lim = RequestLimiter(
        clock, per_peer_burst=burst, per_peer_per_s=rate, global_burst=gburst, global_per_s=grate
    )
    per_peer: dict[int, int] = {}
    total = 0
    for peer, dt in events:
        clock.advance(dt)
        if lim.allow(f"p{peer}"):
            per_peer[peer] = per_peer.get(peer, 0) + 1
            total += 1
    elapsed = clock.now
    assert total <= gburst + grate * elapsed + 1e-9
    for count in per_peer.values():
        assert count <= burst + rate * elapsed + 1e-9
