"""The friend handshake state table (p2pchat.chat.friendship), checked exhaustively."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.chat.friendship import (
    DELETE,
    ContactState,
    Emit,
    Notice,
    PeerFrame,
    Reply,
    Step,
    UserAction,
    on_peer,
    on_user,
)

S = ContactState
A = UserAction
P = PeerFrame
STATES: list[ContactState | None] = [None, *ContactState]

# --- the expected tables, written out in full -------------------------------------------------

BLOCKED_ERR = Step(error="blocked")
NO_REQUEST = Step(error="no_request")
NOT_FOUND = Step(error="not_found")
SEND_REQUEST = Step(S.OUTGOING, notice=Notice.REQUEST)
BECOME_FRIEND = Step(S.FRIEND, notice=Notice.ACCEPT, emit=Emit.ACCEPTED)

USER_TABLE: dict[tuple[ContactState | None, UserAction], Step] = {
    # ADD
    (None, A.ADD): SEND_REQUEST,
    (S.REMOVED, A.ADD): SEND_REQUEST,
    (S.OUTGOING, A.ADD): SEND_REQUEST,  # re-sends the request
    (S.INCOMING, A.ADD): BECOME_FRIEND,  # adding someone who asked us accepts them
    (S.FRIEND, A.ADD): Step(),  # see test_readd_friend_keeps_pending_accept
    (S.BLOCKED, A.ADD): BLOCKED_ERR,
    # ACCEPT
    (None, A.ACCEPT): NO_REQUEST,
    (S.REMOVED, A.ACCEPT): NO_REQUEST,
    (S.OUTGOING, A.ACCEPT): NO_REQUEST,
    (S.INCOMING, A.ACCEPT): BECOME_FRIEND,
    (S.FRIEND, A.ACCEPT): NO_REQUEST,
    (S.BLOCKED, A.ACCEPT): NO_REQUEST,
    # DECLINE
    (None, A.DECLINE): NO_REQUEST,
    (S.REMOVED, A.DECLINE): NO_REQUEST,
    (S.OUTGOING, A.DECLINE): NO_REQUEST,
    (S.INCOMING, A.DECLINE): Step(DELETE),  # silently: the requester learns nothing
    (S.FRIEND, A.DECLINE): NO_REQUEST,
    (S.BLOCKED, A.DECLINE): NO_REQUEST,
    # REMOVE
    (None, A.REMOVE): NOT_FOUND,
    (S.REMOVED, A.REMOVE): NOT_FOUND,
    (S.OUTGOING, A.REMOVE): Step(S.REMOVED, notice=Notice.REMOVE),  # withdraws the request
    (S.INCOMING, A.REMOVE): Step(DELETE),
    (S.FRIEND, A.REMOVE): Step(S.REMOVED, notice=Notice.REMOVE),
    (S.BLOCKED, A.REMOVE): Step(error="blocked"),
    # BLOCK: always allowed, never tells the peer
    (None, A.BLOCK): Step(S.BLOCKED),
    (S.REMOVED, A.BLOCK): Step(S.BLOCKED),
    (S.OUTGOING, A.BLOCK): Step(S.BLOCKED),
    (S.INCOMING, A.BLOCK): Step(S.BLOCKED),
    (S.FRIEND, A.BLOCK): Step(S.BLOCKED),
    (S.BLOCKED, A.BLOCK): Step(S.BLOCKED),
    # UNBLOCK: forgets a blocked contact, no-op otherwise
    (None, A.UNBLOCK): Step(),
    (S.REMOVED, A.UNBLOCK): Step(),
    (S.OUTGOING, A.UNBLOCK): Step(),
    (S.INCOMING, A.UNBLOCK): Step(),
    (S.FRIEND, A.UNBLOCK): Step(),
    (S.BLOCKED, A.UNBLOCK): Step(DELETE),
}

REFUSED = Step(reply=Reply.REFUSED, error="not_friend")
NEW_REQUEST = Step(S.INCOMING, emit=Emit.REQUEST)
THEY_REMOVED = Step(S.REMOVED, emit=Emit.REMOVED)

PEER_TABLE: dict[tuple[ContactState | None, PeerFrame], Step] = {
    # REQUEST
    (None, P.REQUEST): NEW_REQUEST,
    (S.REMOVED, P.REQUEST): NEW_REQUEST,
    (S.OUTGOING, P.REQUEST): BECOME_FRIEND,  # both asked: mutual add
    (S.INCOMING, P.REQUEST): Step(S.INCOMING),  # repeat updates the pending request, no event
    (S.FRIEND, P.REQUEST): Step(S.FRIEND, notice=Notice.ACCEPT),  # they lost state: re-accept
    (S.BLOCKED, P.REQUEST): Step(),
    # ACCEPT
    (None, P.ACCEPT): REFUSED,
    (S.REMOVED, P.ACCEPT): REFUSED,
    (S.OUTGOING, P.ACCEPT): Step(S.FRIEND, emit=Emit.ACCEPTED),
    (S.INCOMING, P.ACCEPT): REFUSED,
    (S.FRIEND, P.ACCEPT): Step(),  # a retried accept is idempotent
    (S.BLOCKED, P.ACCEPT): Step(),
    # REMOVE
    (None, P.REMOVE): Step(),
    (S.REMOVED, P.REMOVE): Step(),
    (S.OUTGOING, P.REMOVE): Step(S.REMOVED),  # they turned our request down
    (S.INCOMING, P.REMOVE): Step(DELETE),  # they withdrew their request: leave no trace
    (S.FRIEND, P.REMOVE): THEY_REMOVED,
    (S.BLOCKED, P.REMOVE): Step(),
}


def _user_cases() -> list[object]:
    cases: list[object] = []
    for (state, action), expected in USER_TABLE.items():
        cases.append(pytest.param(state, action, expected, id=f"{state}-{action}"))
    return cases


def test_tables_are_complete() -> None:
    assert set(USER_TABLE) == set(itertools.product(STATES, UserAction))
    assert set(PEER_TABLE) == set(itertools.product(STATES, PeerFrame))


@pytest.mark.parametrize(("state", "action", "expected"), _user_cases())
def test_on_user(state: ContactState | None, action: UserAction, expected: Step) -> None:
    assert on_user(state, action) == expected


@pytest.mark.parametrize(
    ("state", "frame", "expected"),
    [pytest.param(s, f, e, id=f"{s}-{f}") for (s, f), e in PEER_TABLE.items()],
)
def test_on_peer(state: ContactState | None, frame: PeerFrame, expected: Step) -> None:
    assert on_peer(state, frame) == expected


# --- properties of the tables ------------------------------------------------------------------

ALL_USER = list(itertools.product(STATES, UserAction))
ALL_PEER = list(itertools.product(STATES, PeerFrame))


@pytest.mark.parametrize("frame", list(PeerFrame))
def test_blocked_peer_learns_nothing(frame: PeerFrame) -> None:
    step = on_peer(S.BLOCKED, frame)
    assert step == Step()
    assert step.reply is Reply.RECEIVED
    assert step.state is None and step.notice is None and step.emit is None


@pytest.mark.parametrize(("state", "action"), ALL_USER)
def test_user_errors_change_nothing(state: ContactState | None, action: UserAction) -> None:
    step = on_user(state, action)
    if step.error is not None:
        assert step == Step(error=step.error)
    assert step.reply is Reply.RECEIVED  # user actions never answer a peer


@pytest.mark.parametrize(("state", "frame"), ALL_PEER)
def test_peer_refusals_change_nothing(state: ContactState | None, frame: PeerFrame) -> None:
    step = on_peer(state, frame)
    assert (step.reply is Reply.REFUSED) == (step.error is not None)
    if step.error is not None:
        assert step.state is None and step.notice is None and step.emit is None


@pytest.mark.parametrize(("state", "frame"), ALL_PEER)
def test_peer_never_blocks_and_deletes_only_its_own_request(
    state: ContactState | None, frame: PeerFrame
) -> None:
    step = on_peer(state, frame)
    assert step.state not in (S.BLOCKED, S.OUTGOING)
    if step.state == DELETE:
        # The only deletion a peer can cause: withdrawing its own pending request.
        assert (state, frame) == (S.INCOMING, P.REMOVE)


@pytest.mark.parametrize("state", STATES)
def test_block_never_notifies(state: ContactState | None) -> None:
    assert on_user(state, A.BLOCK).notice is None
    assert on_user(state, A.UNBLOCK).notice is None


def test_every_step_is_well_typed() -> None:
    for state, action in ALL_USER:
        step = on_user(state, action)
        assert step.state is None or step.state == DELETE or isinstance(step.state, S)
        assert step.notice is None or isinstance(step.notice, Notice)
        assert step.emit is None or isinstance(step.emit, Emit)
    for state, frame in ALL_PEER:
        step = on_peer(state, frame)
        assert step.state is None or step.state == DELETE or isinstance(step.state, S)


def test_notices_map_onto_peer_frames() -> None:
    # The owed notice is sent as the peer frame of the same name.
    assert {n.value for n in Notice} == {f.value for f in PeerFrame}


# --- two daemons talking: a model of ChatService._apply and notice delivery ------------------


@dataclass
class Side:
    state: ContactState | None = None
    notice: Notice | None = None
    events: list[Emit] | None = None

    def apply(self, step: Step) -> None:
        """What ChatService._apply persists for a step (p2pchat/chat.py)."""
        if self.events is None:
            self.events = []
        if step.emit is not None:
            self.events.append(step.emit)
        if step.error is not None or (step.state is None and step.notice is None):
            return
        if step.state == DELETE:
            self.state, self.notice = None, None
            return
        if isinstance(step.state, ContactState):
            self.state = step.state
        self.notice = step.notice


class Pair:
    def __init__(self) -> None:
        self.sides = {"a": Side(), "b": Side()}

    def user(self, who: str, action: UserAction) -> Step:
        side = self.sides[who]
        step = on_user(side.state, action)
        side.apply(step)
        return step

    def deliver(self, who: str) -> Step | None:
        """Deliver ``who``'s owed notice to the other side; the sender then forgets it."""
        sender = self.sides[who]
        if sender.notice is None:
            return None
        receiver = self.sides["b" if who == "a" else "a"]
        step = on_peer(receiver.state, PeerFrame(sender.notice.value))
        receiver.apply(step)
        sender.notice = None  # received and refused both clear it
        return step

    def settle(self) -> None:
        for _ in range(10):
            if self.deliver("a") is None and self.deliver("b") is None:
                return
        raise AssertionError("notices never settle")  # pragma: no cover

    def states(self) -> tuple[ContactState | None, ContactState | None]:
        return self.sides["a"].state, self.sides["b"].state


def test_handshake_request_then_accept() -> None:
    p = Pair()
    p.user("a", A.ADD)
    p.settle()
    assert p.states() == (S.OUTGOING, S.INCOMING)
    assert p.sides["b"].events == [Emit.REQUEST]
    p.user("b", A.ACCEPT)
    p.settle()
    assert p.states() == (S.FRIEND, S.FRIEND)
    assert p.sides["a"].events == [Emit.ACCEPTED]


def test_mutual_add_in_flight() -> None:
    p = Pair()
    p.user("a", A.ADD)
    p.user("b", A.ADD)
    p.settle()
    assert p.states() == (S.FRIEND, S.FRIEND)


def test_decline_is_silent() -> None:
    p = Pair()
    p.user("a", A.ADD)
    p.settle()
    p.user("b", A.DECLINE)
    p.settle()
    assert p.states() == (S.OUTGOING, None)


def test_remove_friend_propagates() -> None:
    p = Pair()
    p.user("a", A.ADD)
    p.settle()
    p.user("b", A.ACCEPT)
    p.settle()
    p.user("a", A.REMOVE)
    p.settle()
    assert p.states() == (S.REMOVED, S.REMOVED)
    assert p.sides["b"].events == [Emit.REQUEST, Emit.ACCEPTED, Emit.REMOVED]
    # Either can start again.
    p.user("b", A.ADD)
    p.settle()
    p.user("a", A.ACCEPT)
    p.settle()
    assert p.states() == (S.FRIEND, S.FRIEND)


def test_blocked_requester_stays_outgoing() -> None:
    p = Pair()
    p.user("b", A.BLOCK)
    p.user("a", A.ADD)
    p.settle()
    assert p.states() == (S.OUTGOING, S.BLOCKED)
    assert p.sides["b"].events == []


def test_readd_friend_keeps_pending_accept() -> None:
    p = Pair()
    p.user("a", A.ADD)
    p.user("b", A.ADD)
    p.deliver("b")  # a: OUTGOING + their REQUEST -> FRIEND, owes them ACCEPT
    assert p.sides["a"].state is S.FRIEND and p.sides["a"].notice is Notice.ACCEPT
    p.user("a", A.ADD)  # e.g. `p2pchat friends add` again to set a name
    p.settle()
    assert p.states() == (S.FRIEND, S.FRIEND)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from([*UserAction, "deliver"]),
        ),
        max_size=12,
    )
)
def test_random_interleavings_never_leave_one_sided_friendship_without_blocks(
    ops: list[tuple[str, UserAction | str]],
) -> None:
    # Without BLOCK (a blocked peer is deliberately told nothing), settled peers agree on
    # being friends.
    p = Pair()
    for who, op in ops:
        if op == "deliver":
            p.deliver(who)
        elif op in (A.BLOCK, A.UNBLOCK):
            continue
        else:
            assert isinstance(op, UserAction)
            p.user(who, op)
    p.settle()
    a, b = p.states()
    assert (a is S.FRIEND) == (b is S.FRIEND), (a, b)
