"""Exhaustive tests of the file-transfer state table (p2pchat.files.state)."""

from __future__ import annotations

import itertools

import pytest

from p2pchat.files.state import (
    PEER_EVENTS,
    TABLE,
    TERMINAL,
    USER_EVENTS,
    Direction,
    TEvent,
    TState,
    step,
)
from p2pchat.wire import FILE_OUTCOMES

ALL = list(itertools.product(Direction, TState, TEvent))


@pytest.mark.parametrize(("direction", "state", "event"), ALL)
def test_nothing_leaves_a_finished_transfer(
    direction: Direction, state: TState, event: TEvent
) -> None:
    if state in TERMINAL:
        assert step(direction, state, event) is None


def test_every_owed_notice_is_a_wire_outcome() -> None:
    for tr in TABLE.values():
        assert tr.notify is None or tr.notify in FILE_OUTCOMES


def test_receiver_never_reaches_sender_only_states() -> None:
    for (direction, state, _event), tr in TABLE.items():
        if direction is Direction.IN:
            assert state is not TState.OFFERING and tr.state is not TState.OFFERING


def test_peer_reports_never_notify_back() -> None:
    """Answering a peer's report with one of ours would ping-pong forever."""
    for (_d, _s, event), tr in TABLE.items():
        if event in PEER_EVENTS:
            assert tr.notify is None


def test_only_receiver_ends_delete_the_partial_file() -> None:
    for (direction, _s, _e), tr in TABLE.items():
        if tr.drop_partial:
            assert direction is Direction.IN


@pytest.mark.parametrize(
    ("direction", "state", "event", "expected", "notify"),
    [
        (Direction.OUT, TState.OFFERING, TEvent.OFFER_DELIVERED, TState.OFFERED, None),
        (Direction.OUT, TState.OFFERING, TEvent.DATA_REQUESTED, TState.ACTIVE, None),
        (Direction.OUT, TState.ACTIVE, TEvent.USER_CANCEL, TState.CANCELLED, "cancelled"),
        (Direction.OUT, TState.OFFERED, TEvent.PEER_COMPLETED, TState.COMPLETED, None),
        (Direction.OUT, TState.ACTIVE, TEvent.PEER_DECLINED, None, None),
        (Direction.IN, TState.OFFERED, TEvent.USER_ACCEPT, TState.ACTIVE, None),
        (Direction.IN, TState.OFFERED, TEvent.USER_CANCEL, TState.DECLINED, "declined"),
        (Direction.IN, TState.ACTIVE, TEvent.USER_DECLINE, None, None),
        (Direction.IN, TState.ACTIVE, TEvent.VERIFIED, TState.COMPLETED, "completed"),
        (Direction.IN, TState.ACTIVE, TEvent.FAILED, TState.FAILED, "failed"),
        (Direction.IN, TState.OFFERED, TEvent.VERIFIED, None, None),
        (Direction.IN, TState.ACTIVE, TEvent.PEER_COMPLETED, None, None),
    ],
)
def test_transitions(
    direction: Direction,
    state: TState,
    event: TEvent,
    expected: TState | None,
    notify: str | None,
) -> None:
    tr = step(direction, state, event)
    if expected is None:
        assert tr is None
    else:
        assert tr is not None and tr.state is expected and tr.notify == notify


def test_user_can_end_every_open_transfer() -> None:
    for direction in Direction:
        for state in set(TState) - TERMINAL:
            if direction is Direction.IN and state is TState.OFFERING:
                continue
            tr = step(direction, state, TEvent.USER_CANCEL)
            assert tr is not None and tr.state in TERMINAL, (direction, state)
    assert USER_EVENTS
