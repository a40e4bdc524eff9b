"""Group membership logs (p2pchat.groups.membership): every rule of PROTOCOL.md §15.1, and
forks resolved alike by every member whatever order entries arrive in. No network."""

from __future__ import annotations

import itertools
import random

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.groups import membership
from p2pchat.groups.membership import (
    NO_PREVIOUS,
    SIGNING_CONTEXT,
    Appended,
    Duplicate,
    Gap,
    MembershipError,
    MembershipLog,
    Op,
    Refused,
    Replaced,
    parse_entry,
)
from p2pchat.identity import Identity

T = 1_800_000_000_000
OWNER, BOB, CAROL, DAVE, EVE = (Identity.generate() for _ in range(5))


def group(
    *, admins: tuple[Identity, ...] = (), members: tuple[Identity, ...] = ()
) -> MembershipLog:
    """OWNER's group "friends", with ``admins`` (made admins in that order) and ``members``."""
    log = MembershipLog.create(OWNER, "friends", T)
    for who in (*admins, *members):
        log.propose(OWNER, Op.ADD, T, target=who.peer_id)
    for who in admins:
        log.propose(OWNER, Op.PROMOTE, T, target=who.peer_id)
    return log


def copy(log: MembershipLog) -> MembershipLog:
    return MembershipLog.replay([e.raw for e in log.entries])


def entry_raw(body: dict[str, object], signer: Identity) -> bytes:
    encoded = cbor2.dumps(body, canonical=True)
    return cbor2.dumps(
        {"v": 1, "body": encoded, "sig": signer.sign(SIGNING_CONTEXT + encoded)}, canonical=True
    )


# --- changes and who may make them ------------------------------------------------------------


def test_a_new_group_has_its_creator_as_owner_and_only_member() -> None:
    log = MembershipLog.create(OWNER, "friends", T)
    state = log.state
    assert (state.version, state.name, state.members) == (0, "friends", {OWNER.peer_id})
    assert state.owner == OWNER.peer_id and state.admins == (OWNER.peer_id,)
    assert len(state.group_id) == 16 and state.head == log.entries[0].hash


def test_the_whole_life_of_a_group_replays_to_the_same_state() -> None:
    log = group(admins=(BOB,), members=(CAROL,))
    log.propose(BOB, Op.ADD, T, target=DAVE.peer_id)
    log.propose(BOB, Op.RENAME, T, name="old friends")
    log.propose(BOB, Op.REMOVE, T, target=DAVE.peer_id)
    log.propose(CAROL, Op.LEAVE, T)
    log.propose(OWNER, Op.DEMOTE, T, target=BOB.peer_id)
    state = log.state
    assert state.name == "old friends"
    assert state.members == {OWNER.peer_id, BOB.peer_id}
    assert state.admins == (OWNER.peer_id,)
    assert state.version == len(log.entries) - 1
    again = MembershipLog.replay(log.since(-1))
    assert again.state == state
    with pytest.raises(MembershipError, match="not an admin"):
        log.propose(BOB, Op.ADD, T, target=EVE.peer_id)  # demoted: no longer allowed


def test_when_the_owner_leaves_the_most_senior_admin_owns_the_group() -> None:
    log = group(admins=(BOB, CAROL))
    log.propose(OWNER, Op.LEAVE, T)
    assert log.state.owner == BOB.peer_id
    log.propose(BOB, Op.DEMOTE, T, target=CAROL.peer_id)
    assert log.state.admins == (BOB.peer_id,)


@pytest.mark.parametrize(
    ("author", "op", "target", "reason"),
    [
        (CAROL, Op.ADD, DAVE, "not an admin"),
        (CAROL, Op.REMOVE, BOB, "not an admin"),
        (CAROL, Op.RENAME, None, "not an admin"),
        (DAVE, Op.LEAVE, None, "not a member"),
        (DAVE, Op.ADD, EVE, "not a member"),
        (BOB, Op.REMOVE, OWNER, "more senior admin"),
        (BOB, Op.PROMOTE, CAROL, "only the group's owner"),
        (BOB, Op.DEMOTE, BOB, "only the group's owner"),
        (OWNER, Op.ADD, CAROL, "already a member"),
        (OWNER, Op.REMOVE, DAVE, "not a member"),
        (OWNER, Op.REMOVE, OWNER, "leave the group"),
        (OWNER, Op.PROMOTE, BOB, "already an admin"),
        (OWNER, Op.PROMOTE, DAVE, "not a member"),
        (OWNER, Op.DEMOTE, CAROL, "not an admin the owner can demote"),
        (OWNER, Op.DEMOTE, OWNER, "not an admin the owner can demote"),
    ],
)
def test_changes_an_author_may_not_make_are_refused_with_the_reason(
    author: Identity, op: Op, target: Identity | None, reason: str
) -> None:
    log = group(admins=(BOB,), members=(CAROL,))
    before = log.state
    name = "x" if op is Op.RENAME else None
    with pytest.raises(MembershipError, match=reason):
        log.propose(author, op, T, target=target.peer_id if target else None, name=name)
    assert log.state == before  # nothing of the refused change was kept


def test_an_admin_removes_junior_admins_but_not_senior_ones() -> None:
    log = group(admins=(BOB, CAROL))
    with pytest.raises(MembershipError, match="more senior admin"):
        log.propose(CAROL, Op.REMOVE, T, target=BOB.peer_id)
    log.propose(BOB, Op.REMOVE, T, target=CAROL.peer_id)
    assert CAROL.peer_id not in log.state.members and log.state.admins == (
        OWNER.peer_id,
        BOB.peer_id,
    )


def test_a_removed_member_can_change_nothing_more() -> None:
    log = group(admins=(BOB,))
    log.propose(OWNER, Op.REMOVE, T, target=BOB.peer_id)
    for op, target, name in (
        (Op.ADD, DAVE, None),
        (Op.RENAME, None, "mine"),
        (Op.LEAVE, None, None),
    ):
        with pytest.raises(MembershipError, match="not a member"):
            log.propose(BOB, op, T, target=target.peer_id if target else None, name=name)


def test_the_member_cap_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership, "MAX_MEMBERS", 3)
    log = group(members=(BOB, CAROL))
    with pytest.raises(MembershipError, match="most members it may"):
        log.propose(OWNER, Op.ADD, T, target=DAVE.peer_id)
    log.propose(OWNER, Op.REMOVE, T, target=BOB.peer_id)
    log.propose(OWNER, Op.ADD, T, target=DAVE.peer_id)  # room again


def test_a_full_log_takes_no_more_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership, "MAX_ENTRIES", 3)
    log = group(members=(BOB, CAROL))  # versions 0, 1, 2
    with pytest.raises(MembershipError, match="log is full"):
        log.propose(OWNER, Op.RENAME, T, name="more")


def test_names_are_checked_like_any_text_field() -> None:
    log = group()
    for bad in ("", "x" * 200, "a\nb", "a\x00b"):
        with pytest.raises(MembershipError, match="group name"):
            log.propose(OWNER, Op.RENAME, T, name=bad)
    with pytest.raises(MembershipError, match="gives name"):
        log.propose(OWNER, Op.RENAME, T)
    with pytest.raises(MembershipError, match="names member"):
        log.propose(OWNER, Op.ADD, T)
    with pytest.raises(MembershipError, match="created once"):
        log.propose(OWNER, Op.CREATE, T, name="again")


# --- entries from the network --------------------------------------------------------------


def test_another_member_takes_each_entry_once_in_order() -> None:
    ours = group()
    theirs = copy(ours)
    first = ours.propose(OWNER, Op.ADD, T, target=BOB.peer_id)
    second = ours.propose(OWNER, Op.ADD, T, target=CAROL.peer_id)
    assert theirs.receive(second) == Gap(need_from=1)  # ahead: fetch what comes before
    # The entry that was ahead was kept: it follows as soon as its predecessor is here.
    outcome = theirs.receive(first)
    assert isinstance(outcome, Appended) and outcome.state == ours.state
    assert theirs.receive(first) == Duplicate()
    assert theirs.receive(second) == Duplicate()
    assert theirs.receive(ours.entries[0].raw) == Duplicate()
    assert ours.since(0) == [first, second] and ours.since(2) == []


def test_forged_and_malformed_entries_are_refused_and_change_nothing() -> None:
    log = group(members=(BOB,))
    before = log.state
    honest = copy(log).propose(OWNER, Op.ADD, T, target=CAROL.peer_id)
    base: dict[str, object] = {
        "g": before.group_id,
        "n": 2,
        "p": before.head,
        "op": "add",
        "by": OWNER.public_key,
        "who": CAROL.public_key,
        "at": T,
    }
    envelope = cbor2.loads(honest)
    cases = [  # (the entry, what the refusal says)
        (cbor2.dumps({**envelope, "body": envelope["body"][:-1] + b"\x00"}), "bad signature"),
        (entry_raw(base, BOB), "bad signature"),  # claims OWNER wrote it
        (entry_raw({**base, "by": DAVE.public_key}, DAVE), "not a member"),
        (entry_raw({**base, "by": BOB.public_key}, BOB), "not an admin"),
        (entry_raw({**base, "g": bytes(16)}, OWNER), "another group"),
        (entry_raw({**base, "n": 0}, OWNER), "first entry"),
        (entry_raw({**base, "op": "own"}, OWNER), "unknown change"),
        (entry_raw({**base, "name": "x"}, OWNER), "has exactly"),
        (entry_raw({**base, "who": b"short"}, OWNER), "32-byte"),
        (entry_raw({**base, "n": -1}, OWNER), "version"),
        (entry_raw({**base, "n": True}, OWNER), "version"),
        (b"\xff\x00garbage", "malformed"),
        (b"\x00" * 2000, "exceeds"),
    ]
    for raw, reason in cases:
        outcome = log.receive(raw)
        assert isinstance(outcome, Refused) and reason in outcome.reason, (reason, outcome)
        assert log.state == before
    # One that follows an entry we have never seen: we ask for the whole log (it may be on
    # a branch we lack), and keep it aside; nothing changes.
    assert log.receive(entry_raw({**base, "p": bytes(32)}, OWNER)) == Gap(need_from=1)
    assert log.state == before
    assert isinstance(log.receive(honest), Appended)


def test_a_create_entry_that_follows_something_is_refused() -> None:
    body = {"g": bytes(16), "n": 0, "p": b"\x01" * 32, "op": "create", "by": OWNER.public_key}
    with pytest.raises(MembershipError, match="follows no other"):
        parse_entry(entry_raw({**body, "name": "g", "at": T}, OWNER))
    with pytest.raises(MembershipError, match="first entry"):
        parse_entry(
            entry_raw({**body, "p": NO_PREVIOUS, "op": "rename", "name": "g", "at": T}, OWNER)
        )


def test_a_stored_log_with_an_entry_missing_or_changed_does_not_load() -> None:
    log = group(members=(BOB, CAROL))
    raws = [e.raw for e in log.entries]
    with pytest.raises(MembershipError, match="does not follow"):
        MembershipLog.replay([raws[0], raws[2]])
    changed = cbor2.loads(raws[1])
    changed["sig"] = bytes(64)
    with pytest.raises(MembershipError, match="bad signature"):
        MembershipLog.replay([raws[0], cbor2.dumps(changed), raws[2]])
    with pytest.raises(MembershipError, match="at least"):
        MembershipLog.replay([])
    assert MembershipLog.replay(raws).state == log.state


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_garbage_is_refused_never_crashes(raw: bytes) -> None:
    log = group()
    outcome = log.receive(raw)
    assert isinstance(outcome, Refused | Gap | Duplicate)
    assert log.state.version == 0


def test_an_entry_packed_into_other_bytes_is_refused_and_undoes_nothing() -> None:
    """Anyone holding an entry could re-pack its signed body and signature into other CBOR
    (key order, integer widths, a float or boolean version): a new hash for the same entry,
    which could then compete with the original in a fork."""
    log = group(admins=(BOB,))
    added = log.propose(OWNER, Op.ADD, T, target=CAROL.peer_id)
    log.propose(OWNER, Op.REMOVE, T, target=CAROL.peer_id)
    before = log.state
    envelope = cbor2.loads(added)
    versions = [b"\x01", b"\x18\x01", b"\x19\x00\x01", b"\x1a\x00\x00\x00\x01"]  # widths of 1
    fields = {
        "v": lambda enc: b"\x61v" + enc,
        "body": lambda enc: cbor2.dumps("body") + cbor2.dumps(envelope["body"]),
        "sig": lambda enc: cbor2.dumps("sig") + cbor2.dumps(envelope["sig"]),
    }
    repacked = {
        b"\xa3" + b"".join(fields[k](enc) for k in order)
        for order in itertools.permutations(fields)
        for enc in versions
    } | {
        cbor2.dumps({**envelope, "v": 1.0}, canonical=True),
        cbor2.dumps({**envelope, "v": True}, canonical=True),
    }
    repacked.discard(added)
    assert len(repacked) == 25  # among them, almost surely some with a lower hash
    for raw in repacked:
        outcome = log.receive(raw)
        assert isinstance(outcome, Refused), outcome
        assert "canonical" in outcome.reason or "version" in outcome.reason, outcome
        assert log.state == before
    assert log.receive(added) == Duplicate()
    assert CAROL.peer_id not in log.state.members


# --- forks ---------------------------------------------------------------------------------


def test_of_two_changes_at_once_the_more_senior_authors_wins_everywhere() -> None:
    base = group(admins=(BOB,), members=(CAROL,))
    at_owner, at_bob, at_carol = copy(base), copy(base), copy(base)
    by_owner = at_owner.propose(OWNER, Op.RENAME, T, name="owner's")
    by_bob = at_bob.propose(BOB, Op.ADD, T, target=DAVE.peer_id)
    # Carol hears Bob first, then the owner: the owner's change replaces Bob's.
    assert isinstance(at_carol.receive(by_bob), Appended)
    replaced = at_carol.receive(by_owner)
    assert isinstance(replaced, Replaced)
    assert [e.raw for e in replaced.dropped] == [by_bob]
    # Bob's own daemon agrees, and the owner's refuses Bob's as out of date.
    assert isinstance(at_bob.receive(by_owner), Replaced)
    refused = at_owner.receive(by_bob)
    assert isinstance(refused, Refused) and "out of date" in refused.reason
    assert at_owner.state == at_bob.state == at_carol.state
    assert at_carol.state.name == "owner's" and DAVE.peer_id not in at_carol.state.members
    # Bob makes his change again on top: everyone takes it.
    again = at_bob.propose(BOB, Op.ADD, T, target=DAVE.peer_id)
    for log in (at_owner, at_carol):
        assert isinstance(log.receive(again), Appended)
    assert at_owner.state == at_bob.state == at_carol.state


def test_a_junior_admin_cannot_grind_a_win_over_a_senior_admins_change() -> None:
    """At the version where a senior admin removed it, no entry of the junior admin wins,
    whatever its hash."""
    base = group(admins=(BOB, CAROL), members=(DAVE,))
    at_bob, at_carol = copy(base), copy(base)
    removal = at_bob.propose(BOB, Op.REMOVE, T, target=CAROL.peer_id)
    assert isinstance(at_carol.receive(removal), Appended)
    # Carol forks the version Bob's removal took, trying many hashes; none wins.
    fork = copy(base)
    for at in range(T, T + 200):
        attempt = copy(fork).propose(CAROL, Op.REMOVE, at, target=DAVE.peer_id)
        outcome = at_bob.receive(attempt)
        assert isinstance(outcome, Refused) and "out of date" in outcome.reason
    assert CAROL.peer_id not in at_bob.state.members


def test_one_authors_two_entries_at_one_version_resolve_by_hash_alike() -> None:
    base = group(members=(BOB,))
    one = copy(base).propose(OWNER, Op.RENAME, T, name="one")
    two = copy(base).propose(OWNER, Op.RENAME, T, name="two")
    first, second = copy(base), copy(base)
    first.receive(one), first.receive(two)
    second.receive(two), second.receive(one)
    assert first.state == second.state


def test_entries_of_a_losing_branch_are_refused() -> None:
    base = group(admins=(BOB,))
    at_owner, at_bob = copy(base), copy(base)
    bob_1 = at_bob.propose(BOB, Op.ADD, T, target=CAROL.peer_id)
    bob_2 = at_bob.propose(BOB, Op.ADD, T, target=DAVE.peer_id)
    at_owner.propose(OWNER, Op.RENAME, T, name="a")
    at_owner.propose(OWNER, Op.RENAME, T, name="b")
    assert at_owner.receive(bob_2) == Gap(need_from=1)  # it follows what we do not have
    refused = at_owner.receive(bob_1)
    assert isinstance(refused, Refused) and "out of date" in refused.reason
    assert at_owner.state.name == "b" and CAROL.peer_id not in at_owner.state.members


def test_a_removed_admin_cannot_undo_its_removal_by_forking_before_it() -> None:
    """Carol (an admin senior to Bob) is removed by the owner after Bob's change; she signs
    a change at the version Bob's took, where she outranks him. The branch that holds the
    owner's removal still wins, at every member, whatever order the entries come in."""
    base = group(admins=(CAROL, BOB), members=(DAVE,))
    honest = copy(base)
    bobs = honest.propose(BOB, Op.RENAME, T, name="bob's")
    removal = honest.propose(OWNER, Op.REMOVE, T, target=CAROL.peer_id)
    forked = copy(base)
    carols = forked.propose(CAROL, Op.REMOVE, T, target=BOB.peer_id)
    more = forked.propose(CAROL, Op.ADD, T, target=EVE.peer_id)
    for order in itertools.permutations([bobs, removal, carols, more]):
        member = copy(base)
        for _ in range(2):
            for raw in order:
                member.receive(raw)
        assert member.state == honest.state, order
        assert CAROL.peer_id not in member.state.members
        assert EVE.peer_id not in member.state.members


def test_a_branch_that_grows_a_more_senior_author_wins_later() -> None:
    """Bob's branch wins over Carol's (he is senior) until the owner's change lands on top of
    Carol's: then hers, holding the owner, is the group's, and Bob's change is dropped (for
    him to make again)."""
    base = group(admins=(BOB, CAROL))
    at_bob, at_carol = copy(base), copy(base)
    bobs = at_bob.propose(BOB, Op.RENAME, T, name="bob's")
    carols = at_carol.propose(CAROL, Op.RENAME, T, name="carol's")
    owners = at_carol.propose(OWNER, Op.ADD, T, target=DAVE.peer_id)
    member = copy(base)
    assert isinstance(member.receive(bobs), Appended)
    assert isinstance(member.receive(carols), Refused)
    replaced = member.receive(owners)
    assert isinstance(replaced, Replaced) and [e.raw for e in replaced.dropped] == [bobs]
    assert member.state == at_carol.state


def test_a_branch_wins_by_its_best_continuation_not_its_first_step() -> None:
    """Carol's change ranks below Bob's rival one (he is the senior admin), but the branch
    after hers holds the owner's change, on the second of two alternatives: that branch wins
    at every member, in any order (choosing step by step, entry by entry, would miss it)."""
    base = group(admins=(BOB, CAROL))
    state = base.state
    gid, v = state.group_id, state.version

    def rename(who: Identity, n: int, prev: bytes, name: str, at: int = 10) -> bytes:
        return membership._sign(who, gid, n, prev, Op.RENAME, None, name, at)

    at = 10
    while True:  # hashes as in the case that fooled a step-by-step choice
        bobs_rival = parse_entry(rename(BOB, v + 1, state.head, "rival", at))
        carols = parse_entry(rename(CAROL, v + 1, state.head, "first"))
        if bobs_rival.hash < carols.hash:
            break
        at += 1
    second_a = rename(BOB, v + 2, carols.hash, "second a")
    second_b = parse_entry(rename(CAROL, v + 2, carols.hash, "second b"))
    owners = rename(OWNER, v + 3, second_b.hash, "owner's")
    raws = [bobs_rival.raw, carols.raw, second_a, second_b.raw, owners]
    heads = set()
    for order in itertools.permutations(raws):
        member = copy(base)
        for raw in order:
            member.receive(raw)
        heads.add(member.state.name)
    assert heads == {"owner's"}


def test_a_fork_further_back_than_the_window_is_refused() -> None:
    log = group(admins=(BOB,))
    fork = copy(log)
    for i in range(membership.FORK_WINDOW + 1):
        log.propose(BOB, Op.RENAME, T, name=f"n{i}")
    late = fork.propose(OWNER, Op.RENAME, T, name="owner, late")
    outcome = log.receive(late)
    assert isinstance(outcome, Refused) and "changes back" in outcome.reason


def test_many_entries_aside_cost_little_and_change_nothing() -> None:
    """A member signs thousands of alternatives at one version: they are kept within the
    pool's bound, and the log stays as it was."""
    log = group(members=(DAVE,))
    for i in range(5):
        log.propose(OWNER, Op.RENAME, T, name=f"n{i}")
    at = log.state_at(log.state.version - 3)
    assert at is not None
    before = log.state
    for i in range(3 * membership.MAX_POOL):
        raw = membership._sign(DAVE, at.group_id, at.version + 1, at.head, Op.LEAVE, None, None, i)
        assert isinstance(log.receive(raw), Refused)
    assert log.state == before
    assert len(log._pool) <= membership.MAX_POOL


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_every_member_ends_with_the_same_log_whatever_the_order(rng: random.Random) -> None:
    """Three admins each make one or two changes on the same version; every member, fed
    all entries in its own order (and again, as a sync would), ends with one log."""
    base = group(admins=(BOB, CAROL), members=(DAVE,))
    branches = []
    for author, target in ((OWNER, EVE), (BOB, EVE), (CAROL, EVE)):
        branch = copy(base)
        branch.propose(author, Op.ADD, T, target=target.peer_id)
        if rng.random() < 0.5:
            branch.propose(author, Op.RENAME, T, name=f"by {author.peer_id[-4:]}")
        branches.append(branch.since(base.state.version))
    pool = [raw for branch in branches for raw in branch]
    heads = set()
    for _ in range(4):
        member = copy(base)
        for _ in range(len(pool)):  # enough passes for every dependency order
            rng.shuffle(pool)
            for raw in pool:
                member.receive(raw)
        heads.add(member.state.head)
    assert len(heads) == 1
    winner = MembershipLog.replay([*base.since(-1), *branches[0]])  # the owner's branch
    assert heads == {winner.state.head}
