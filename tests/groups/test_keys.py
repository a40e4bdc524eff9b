"""Sender-key plans (p2pchat.groups.keys): a key for every member, a new one whenever
someone who had ours is gone (PROTOCOL.md §15.2). No network."""

from __future__ import annotations

from p2pchat.groups.keys import KeyPlan, plan_keys
from p2pchat.ratchet.megolm import ROTATE_AFTER_MESSAGES, ROTATE_AFTER_S, SenderKey

ME, BOB, CAROL, DAVE = "me", "bob", "carol", "dave"


def test_the_first_message_needs_a_key_for_everyone_else() -> None:
    plan = plan_keys(None, frozenset(), frozenset({ME, BOB, CAROL}), ME, now=0)
    assert plan == KeyPlan(True, frozenset({BOB, CAROL}))


def test_a_member_who_joins_gets_the_current_key_and_the_rest_nothing() -> None:
    key = SenderKey.create(0)
    shared = frozenset({BOB, CAROL})
    assert plan_keys(key, shared, frozenset({ME, BOB, CAROL}), ME, now=1) == KeyPlan(
        False, frozenset()
    )
    assert plan_keys(key, shared, frozenset({ME, BOB, CAROL, DAVE}), ME, now=1) == KeyPlan(
        False, frozenset({DAVE})
    )


def test_someone_gone_who_had_the_key_means_a_new_key_for_those_who_remain() -> None:
    key = SenderKey.create(0)
    plan = plan_keys(key, frozenset({BOB, CAROL}), frozenset({ME, CAROL, DAVE}), ME, now=1)
    assert plan == KeyPlan(True, frozenset({CAROL, DAVE}))


def test_old_or_worn_keys_are_replaced() -> None:
    key = SenderKey.create(0)
    members, shared = frozenset({ME, BOB}), frozenset({BOB})
    assert plan_keys(key, shared, members, ME, now=ROTATE_AFTER_S).new_key
    key = SenderKey.create(0)
    for _ in range(ROTATE_AFTER_MESSAGES):
        key.seal(b"x")
    assert plan_keys(key, shared, members, ME, now=1) == KeyPlan(True, frozenset({BOB}))


def test_a_member_who_left_plans_nothing() -> None:
    key = SenderKey.create(0)
    assert plan_keys(key, frozenset({BOB}), frozenset({BOB}), ME, now=1) == KeyPlan(
        False, frozenset()
    )
