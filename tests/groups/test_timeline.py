"""Group timelines (p2pchat.groups.timeline): nothing lost, nothing twice, one order for all
members, receipts from the members' vectors (PROTOCOL.md §15.3). No network."""

from __future__ import annotations

import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.groups.timeline import (
    MAX_AHEAD,
    MAX_AHEAD_MS,
    MAX_CLOCK,
    Accepted,
    Duplicate,
    MessageRef,
    Position,
    Refused,
    Timeline,
    members_holding,
)

ALICE, BOB, CAROL = "alice", "bob", "carol"


NOW = 0
"""Wall clock in ms for tests about the Lamport part (clocks are at least the wall clock)."""


def send(timeline: Timeline, sender: str, now: int = NOW) -> MessageRef:
    """What ``sender`` does to send one message from its own timeline."""
    seq, clock = timeline.next_stamp(sender, now)
    ref = MessageRef(sender, seq, clock, os.urandom(16))
    assert isinstance(timeline.receive(ref, now), Accepted)
    return ref


def test_a_senders_messages_are_numbered_and_clocked_past_everything_seen() -> None:
    alice, bob = Timeline(), Timeline()
    a1 = send(alice, ALICE)
    assert (a1.seq, a1.clock) == (1, 1)
    bob.receive(a1, NOW)
    b1 = send(bob, BOB)
    assert (b1.seq, b1.clock) == (1, 2)  # after alice's, which bob has seen
    alice.receive(b1, NOW)
    a2 = send(alice, ALICE)
    assert (a2.seq, a2.clock) == (2, 3)
    assert [p.sender for p in alice.ordered()] == [ALICE, BOB, ALICE]


def test_each_message_is_taken_once_and_a_different_one_under_its_number_is_refused() -> None:
    source, member = Timeline(), Timeline()
    ref = send(source, ALICE)
    assert isinstance(member.receive(ref, NOW), Accepted)
    assert member.receive(ref, NOW) == Duplicate()
    forged = MessageRef(ALICE, 1, ref.clock, os.urandom(16))
    outcome = member.receive(forged, NOW)
    assert isinstance(outcome, Refused) and "already another message" in outcome.reason
    assert len(member.ordered()) == 1


def test_out_of_order_arrivals_leave_a_gap_that_sync_fills() -> None:
    source, member = Timeline(), Timeline()
    refs = [send(source, ALICE) for _ in range(5)]
    for ref in (refs[4], refs[1]):
        assert isinstance(member.receive(ref, NOW), Accepted)
    assert member.have() == {}  # message 1 missing: nothing held without a hole
    assert member.gaps() == {ALICE: [1, 3, 4]}
    wanted = source.missing_for(member.have())
    assert wanted == [(ALICE, s) for s in range(1, 6)]
    by_seq = {r.seq: r for r in refs}
    outcomes = [member.receive(by_seq[seq], NOW) for _, seq in wanted]
    assert sum(isinstance(o, Duplicate) for o in outcomes) == 2
    assert member.have() == {ALICE: 5} and member.gaps() == {}
    assert member.ordered() == source.ordered()


def test_what_a_member_lacks_comes_oldest_first_within_a_limit() -> None:
    source = Timeline()
    for _ in range(4):
        send(source, ALICE)
        send(source, BOB)
    assert source.missing_for({}, limit=5) == [(ALICE, s) for s in range(1, 5)] + [(BOB, 1)]
    assert source.missing_for({ALICE: 4, BOB: 1}, limit=2) == [(BOB, 2), (BOB, 3)]
    assert source.missing_for({ALICE: 4, BOB: 4}, limit=2) == []
    assert len(source.missing_for({})) == 8


def test_messages_below_a_floor_are_not_ours_and_the_vector_skips_them() -> None:
    """A member who joins late cannot open what was sent before: once a sender's key says
    where it starts, the vector moves past the rest, so nobody offers them again."""
    source, late = Timeline(), Timeline()
    refs = [send(source, ALICE) for _ in range(6)]
    assert isinstance(late.receive(refs[4], NOW), Accepted)  # the first it can open
    assert late.have() == {}
    late.set_floor(ALICE, 4)
    assert late.have() == {ALICE: 5}
    assert late.receive(refs[1], NOW) == Duplicate()  # offered anyway: not ours to hold
    assert source.missing_for(late.have()) == [(ALICE, 6)]
    late.set_floor(ALICE, 2)  # floors never go back
    assert late.have() == {ALICE: 5}


def test_a_sender_far_ahead_is_refused_until_the_gap_is_smaller() -> None:
    member = Timeline()
    far = MessageRef(ALICE, MAX_AHEAD + 1, 5, os.urandom(16))
    outcome = member.receive(far, NOW)
    assert isinstance(outcome, Refused) and "sync first" in outcome.reason
    assert member.receive(MessageRef(ALICE, 1, 1, os.urandom(16)), NOW) == Accepted(
        Position(1, ALICE, 1)
    )
    assert isinstance(member.receive(far, NOW), Accepted)


def test_bad_numbers_and_clocks_that_go_back_are_refused() -> None:
    member = Timeline()
    member.receive(MessageRef(ALICE, 2, 10, b"2" * 16), NOW)
    for ref, reason in (
        (MessageRef(ALICE, 0, 5, b"0" * 16), "starts at 1"),
        (MessageRef(ALICE, 3, 0, b"3" * 16), "clock is between"),
        (MessageRef(ALICE, 3, MAX_CLOCK, b"3" * 16), "clock is between"),
        (MessageRef(ALICE, 3, 10, b"3" * 16), "not past that sender's earlier"),
        (MessageRef(ALICE, 1, 10, b"1" * 16), "not before that sender's later"),
    ):
        outcome = member.receive(ref, NOW)
        assert isinstance(outcome, Refused) and reason in outcome.reason, (ref, outcome)
    assert [p.seq for p in member.ordered()] == [2]


def test_clocks_follow_the_wall_clock_and_one_from_the_future_waits() -> None:
    t = 1_800_000_000_000
    alice, bob = Timeline(), Timeline()
    first = send(alice, ALICE, now=t)
    assert first.clock == t  # at least the sender's wall clock
    assert send(alice, ALICE, now=t).clock == t + 1  # and past what it has seen
    ahead = MessageRef(BOB, 1, t + MAX_AHEAD_MS + 1, os.urandom(16))
    outcome = alice.receive(ahead, t)
    assert isinstance(outcome, Refused) and "ahead of ours" in outcome.reason
    assert alice.have() == {ALICE: 2}  # the refused sender left nothing behind
    assert isinstance(alice.receive(ahead, t + 2), Accepted)  # sync brings it again later
    # Nobody can push the group's clock to its end: the furthest is our time plus the skew.
    assert isinstance(bob.receive(MessageRef(ALICE, 1, MAX_CLOCK - 1, b"x" * 16), t), Refused)


def test_receipts_count_the_members_holding_a_message() -> None:
    alice, bob, carol = Timeline(), Timeline(), Timeline()
    refs = [send(alice, ALICE) for _ in range(3)]
    bob.receive(refs[0], NOW), bob.receive(refs[1], NOW)
    carol.receive(refs[1], NOW)  # past a hole: not counted until the hole fills
    haves = [alice.have(), bob.have(), carol.have()]
    assert [members_holding(ALICE, r.seq, haves) for r in refs] == [2, 2, 1]
    carol.receive(refs[0], NOW)
    assert members_holding(ALICE, 2, [alice.have(), bob.have(), carol.have()]) == 3


@settings(max_examples=80, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(min_value=2, max_value=5))
def test_members_who_sync_with_each_other_end_with_the_same_messages_in_one_order(
    rng: random.Random, members: int
) -> None:
    """Members send while partly apart (each hears a random part of the others' messages),
    then sync pairwise by their vectors in a random order: each ends with every message once,
    and all show them in one order that keeps each sender's own order."""
    names = [f"m{i}" for i in range(members)]
    timelines = {n: Timeline() for n in names}
    sent: list[MessageRef] = []
    for _ in range(rng.randint(1, 40)):
        sender = rng.choice(names)
        ref = send(timelines[sender], sender)
        sent.append(ref)
        for other in names:
            if other != sender and rng.random() < 0.5:
                timelines[other].receive(ref, NOW)
    by_key = {(r.sender, r.seq): r for r in sent}
    pairs = [(a, b) for a in names for b in names if a != b]
    for _ in range(2):  # two rounds of everyone syncing with everyone, in a random order
        rng.shuffle(pairs)
        for a, b in pairs:
            for key in timelines[a].missing_for(timelines[b].have()):
                assert not isinstance(timelines[b].receive(by_key[key], NOW), Refused)
    orders = {tuple(t.ordered()) for t in timelines.values()}
    assert len(orders) == 1
    (order,) = orders
    assert sorted((p.sender, p.seq) for p in order) == sorted(by_key)
    for name in names:
        assert [p.seq for p in order if p.sender == name] == sorted(
            r.seq for r in sent if r.sender == name
        )
        assert timelines[name].gaps() == {}
