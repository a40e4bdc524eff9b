"""Olm pair sessions (p2pchat.ratchet.pair) over real vodozemac: a session starts from a
friend's verified bundle, seals and opens both ways, refuses replays, tampering and strangers'
keys, and keeps no key that opens a message already read."""

from __future__ import annotations

import random

import pytest

from p2pchat.identity import Identity
from p2pchat.ratchet.bundle import KeyBundle, parse_bundle
from p2pchat.ratchet.pair import (
    MAX_SEALED_BYTES,
    NORMAL,
    PRE_KEY,
    OlmAccount,
    PairSession,
    Sealed,
    SealError,
    pickle_key,
)

NOW = 1_800_000_000


class Side:
    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.account = OlmAccount.create()
        self.key = pickle_key(self.identity)

    def bundle(self, count: int = 3) -> KeyBundle:
        raw = self.account.bundle(self.identity, count, NOW)
        return parse_bundle(self.identity.peer_id, raw, NOW)


def started() -> tuple[Side, Side, PairSession, PairSession]:
    """Alice starts a session from Bob's bundle; Bob accepts her first message."""
    alice, bob = Side(), Side()
    bundle = bob.bundle()
    a = PairSession.start(alice.account, bundle, bundle.one_time_keys[0][0])
    first = a.seal(b"hello Bob")
    assert first.kind == PRE_KEY
    b, plaintext = bob.account.accept(alice.account.identity_key, first)
    assert plaintext == b"hello Bob"
    return alice, bob, a, b


def test_a_session_carries_messages_both_ways() -> None:
    _, _, a, b = started()
    for i in range(20):
        assert b.open(a.seal(f"a{i}".encode())) == f"a{i}".encode()
        reply = b.seal(f"b{i}".encode())
        assert reply.kind == NORMAL
        assert a.open(reply) == f"b{i}".encode()
    # Once Bob has answered, Alice's messages are normal messages.
    assert a.seal(b"x").kind == NORMAL


def test_messages_open_in_any_order_but_each_only_once() -> None:
    _, _, a, b = started()
    sealed = [a.seal(f"m{i}".encode()) for i in range(30)]
    order = list(range(30))
    random.Random(7).shuffle(order)
    for i in order:
        assert b.open(sealed[i]) == f"m{i}".encode()
    for i in (0, 13, 29):
        with pytest.raises(SealError, match="cannot open"):
            b.open(sealed[i])


def test_the_state_after_n_messages_cannot_open_message_one_again() -> None:
    """Forward secrecy as stored: what a thief of the database finds opens nothing read."""
    _, bob, a, b = started()
    sealed = [a.seal(f"m{i}".encode()) for i in range(10)]
    for s in sealed:
        b.open(s)
    stolen = PairSession.from_pickle(b.pickle(bob.key), bob.key)
    for s in sealed:
        with pytest.raises(SealError):
            stolen.open(s)
    # ...while the stored state goes on working for what comes next.
    assert stolen.open(a.seal(b"next")) == b"next"


def test_a_pickled_session_goes_on_where_it_left_off() -> None:
    alice, bob, a, b = started()
    a2 = PairSession.from_pickle(a.pickle(alice.key), alice.key)
    b2 = PairSession.from_pickle(b.pickle(bob.key), bob.key)
    assert b2.open(a2.seal(b"after a restart")) == b"after a restart"
    assert a2.open(b2.seal(b"and back")) == b"and back"
    account = OlmAccount.from_pickle(bob.account.pickle(bob.key), bob.key)
    assert account.identity_key == bob.account.identity_key


def test_a_pickle_under_another_key_or_damaged_is_refused_clearly() -> None:
    alice, bob, a, _ = started()
    with pytest.raises(SealError, match="stored session cannot be read"):
        PairSession.from_pickle(a.pickle(alice.key), bob.key)
    with pytest.raises(SealError, match="stored session cannot be read"):
        PairSession.from_pickle(a.pickle(alice.key)[:-4] + "AAAA", alice.key)
    with pytest.raises(SealError, match="stored Olm account cannot be read"):
        OlmAccount.from_pickle("not a pickle", alice.key)


def test_a_replayed_first_message_starts_no_second_session() -> None:
    alice, bob = Side(), Side()
    bundle = bob.bundle()
    a = PairSession.start(alice.account, bundle, bundle.one_time_keys[0][0])
    first = a.seal(b"hello")
    b, _ = bob.account.accept(alice.account.identity_key, first)
    # The one-time key is used up: the same message again (a replay, or Alice resending it
    # before she saw an answer) starts nothing new...
    with pytest.raises(SealError, match="cannot start a session"):
        bob.account.accept(alice.account.identity_key, first)
    # ...it belongs to the session Bob has, which knows it was read.
    assert b.matches(first)
    with pytest.raises(SealError):
        b.open(first)


def test_a_first_message_from_another_identity_key_is_refused() -> None:
    alice, bob, mallory = Side(), Side(), Side()
    bundle = bob.bundle()
    a = PairSession.start(mallory.account, bundle, bundle.one_time_keys[0][0])
    first = a.seal(b"I am Alice")
    # Bob expects Alice's key (from Alice's verified bundle): Mallory's message fails.
    with pytest.raises(SealError, match="cannot start a session"):
        bob.account.accept(alice.account.identity_key, first)


def test_a_changed_message_never_opens_to_other_words() -> None:
    """Every single byte of a normal message changed: refused, or (where the change only
    re-spells its encoding) the very same words; never anything else."""
    refused = 0
    for i in range(64):
        _, _, a, b = started()
        a.open(b.seal(b"answer"))  # from now on Alice sends normal messages
        good = a.seal(b"secret")
        assert good.kind == NORMAL
        if i >= len(good.body):
            break
        body = bytearray(good.body)
        body[i] ^= 0x40
        try:
            assert b.open(Sealed(good.kind, bytes(body))) == b"secret", i
        except SealError:
            refused += 1
    assert refused >= 55, refused


def test_truncated_and_foreign_messages_are_refused() -> None:
    _, _, a, b = started()
    a.open(b.seal(b"answer"))
    good = a.seal(b"secret")
    with pytest.raises(SealError):
        b.open(Sealed(good.kind, good.body[:-10]))
    with pytest.raises(SealError, match="unknown sealed message kind"):
        b.open(Sealed(7, good.body))
    with pytest.raises(SealError, match="exceeds"):
        b.open(Sealed(NORMAL, bytes(MAX_SEALED_BYTES + 1)))
    # A message of another session (Carol's with Bob's same account) does not open here.
    _, _, c, _ = started()
    with pytest.raises(SealError):
        b.open(c.seal(b"other session"))
    assert b.open(good) == b"secret"  # the real one still opens after all that


def test_a_session_needs_a_key_the_bundle_has_and_accepts_only_pre_keys() -> None:
    alice, bob = Side(), Side()
    bundle = bob.bundle(2)
    with pytest.raises(SealError, match="no one-time key"):
        PairSession.start(alice.account, bundle, "AAAAAAAAAAZ")
    _, _, a, b = started()
    with pytest.raises(SealError, match="starts with a pre-key"):
        bob.account.accept(alice.account.identity_key, b.seal(b"normal"))
    assert not a.matches(b.seal(b"normal"))


def test_each_bundle_lists_fresh_one_time_keys() -> None:
    bob = Side()
    first, second = bob.bundle(3), bob.bundle(3)
    assert len(first.one_time_keys) == len(second.one_time_keys) == 3
    assert not {k for k, _ in first.one_time_keys} & {k for k, _ in second.one_time_keys}
    assert first.identity_key == second.identity_key
    with pytest.raises(ValueError, match="0 to 20"):
        bob.account.bundle(bob.identity, 21, NOW)
    # Keys of an older bundle still start sessions.
    alice = Side()
    a = PairSession.start(alice.account, first, first.one_time_keys[2][0])
    _, text = bob.account.accept(alice.account.identity_key, a.seal(b"late"))
    assert text == b"late"


def test_a_changed_first_message_never_opens_to_other_words() -> None:
    """A pre-key message's header names keys that only matter for starting the session; the
    text inside is authenticated: any change is refused or opens the very same words."""
    for i in range(0, 170, 3):
        _, _, a, b = started()
        good = a.seal(b"the words")
        assert good.kind == PRE_KEY
        if i >= len(good.body):
            break
        body = bytearray(good.body)
        body[i] ^= 0x40
        try:
            opened = b.open(Sealed(good.kind, bytes(body)))
        except SealError:
            continue
        assert opened == b"the words", i
