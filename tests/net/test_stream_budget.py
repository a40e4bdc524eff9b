"""chat.StreamBudget: per-peer caps for everyone, a shared cap for strangers only."""

from __future__ import annotations

from p2pchat.net.streams import StreamBudget


def test_per_peer_cap_applies_to_friends_and_strangers() -> None:
    budget = StreamBudget(per_peer=2, strangers_total=10)
    assert budget.try_acquire("f", friend=True)
    assert budget.try_acquire("f", friend=True)
    assert not budget.try_acquire("f", friend=True)
    budget.release("f", friend=True)
    assert budget.try_acquire("f", friend=True)


def test_strangers_cannot_crowd_out_friends() -> None:
    budget = StreamBudget(per_peer=8, strangers_total=4)
    for n in range(4):
        assert budget.try_acquire(f"stranger{n}", friend=False)
    assert not budget.try_acquire("stranger9", friend=False)  # the shared cap is full
    assert budget.try_acquire("friend", friend=True)  # friends never wait on strangers
    budget.release("stranger0", friend=False)
    assert budget.try_acquire("stranger9", friend=False)
