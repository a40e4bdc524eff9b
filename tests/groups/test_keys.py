"""Sender-key plans (p2pchat.groups.keys): one key per set of members, a new one whenever the
members change (PROTOCOL.md §15.2). No network."""

from __future__ import annotations

from p2pchat.groups.keys import KeyPlan, plan_keys
from p2pchat.ratchet.megolm import ROTATE_AFTER_MESSAGES, ROTATE_AFTER_S, SenderKey

ME, BOB, CAROL, DAVE = "me", "bob", "carol", "dave"


def test_the_first_message_needs_a_key_for_everyone_else() -> None:
    plan = plan_keys(None, frozenset(), frozenset({ME, BOB, CAROL}), ME, now=0)
    assert plan == KeyPlan(True, frozenset({BOB, CAROL}))


def test_the_same_members_keep_the_key() -> None:
    key = SenderKey.create(0)
    members = frozenset({ME, BOB, CAROL})
    assert plan_keys(key, members, members, ME, now=1) == KeyPlan(False, frozenset())


def test_a_member_who_joins_means_a_new_key_so_it_reads_nothing_from_before() -> None:
    key = SenderKey.create(0)
    plan = plan_keys(key, frozenset({ME, BOB}), frozenset({ME, BOB, DAVE}), ME, now=1)
    assert plan == KeyPlan(True, frozenset({BOB, DAVE}))


def test_someone_gone_means_a_new_key_for_those_who_remain() -> None:
    key = SenderKey.create(0)
    plan = plan_keys(key, frozenset({ME, BOB, CAROL}), frozenset({ME, CAROL}), ME, now=1)
    assert plan == KeyPlan(True, frozenset({CAROL}))


def test_old_or_worn_keys_are_replaced() -> None:
    key = SenderKey.create(0)
    members = frozenset({ME, BOB})
    assert plan_keys(key, members, members, ME, now=ROTATE_AFTER_S).new_key
    key = SenderKey.create(0)
    for _ in range(ROTATE_AFTER_MESSAGES):
        key.seal(b"x")
    assert plan_keys(key, members, members, ME, now=1) == KeyPlan(True, frozenset({BOB}))


def test_a_member_who_left_plans_nothing() -> None:
    key = SenderKey.create(0)
    members = frozenset({ME, BOB})
    assert plan_keys(key, members, frozenset({BOB}), ME, now=1) == KeyPlan(False, frozenset())
