"""Sender keys (p2pchat.ratchet.megolm): who can open what, across joins, removals and
rotations (PROTOCOL.md §15.2). No network."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.ratchet.megolm import (
    ROTATE_AFTER_MESSAGES,
    ROTATE_AFTER_S,
    GroupSealError,
    ReceivedKey,
    SenderKey,
    needs_new_key,
)

KEY = b"k" * 32


def test_members_open_what_the_sender_seals_in_order_with_its_index() -> None:
    sender = SenderKey.create(0)
    bob, carol = ReceivedKey.from_shared(sender.share()), ReceivedKey.from_shared(sender.share())
    sealed = [sender.seal(f"m{i}".encode()) for i in range(5)]
    for member in (bob, carol):
        assert member.session_id == sender.session_id
        opened = [member.open(s) for s in reversed(sealed)]  # any order
        assert [(o.plaintext, o.index) for o in reversed(opened)] == [
            (f"m{i}".encode(), i) for i in range(5)
        ]
    assert sender.next_index == 5


def test_a_member_who_joins_later_opens_nothing_sent_before() -> None:
    sender = SenderKey.create(0)
    before = [sender.seal(b"before you came") for _ in range(3)]
    newcomer = ReceivedKey.from_shared(sender.share())
    assert newcomer.first_index == 3
    for sealed in before:
        with pytest.raises(GroupSealError, match="does not open"):
            newcomer.open(sealed)
    assert newcomer.open(sender.seal(b"welcome")).plaintext == b"welcome"


def test_after_a_removal_the_new_key_is_not_the_removed_members_to_use() -> None:
    old = SenderKey.create(0)
    removed, stays = ReceivedKey.from_shared(old.share()), ReceivedKey.from_shared(old.share())
    assert removed.open(old.seal(b"while you were in")).plaintext == b"while you were in"
    assert needs_new_key(old, 1, members_left=True)
    new = SenderKey.create(1)  # shared with those who stay only
    stays_new = ReceivedKey.from_shared(new.share())
    after = new.seal(b"after the removal")
    assert stays_new.open(after).plaintext == b"after the removal"
    with pytest.raises(GroupSealError):
        removed.open(after)  # the old key opens nothing of the new session
    with pytest.raises(GroupSealError):
        stays.open(after)


def test_keys_are_replaced_after_many_messages_or_a_long_time() -> None:
    key = SenderKey.create(100)
    assert not needs_new_key(key, 100, members_left=False)
    assert needs_new_key(key, 100 + ROTATE_AFTER_S, members_left=False)
    for _ in range(ROTATE_AFTER_MESSAGES):
        key.seal(b"x")
    assert needs_new_key(key, 101, members_left=False)


def test_tampered_and_foreign_messages_do_not_open() -> None:
    sender, other = SenderKey.create(0), SenderKey.create(0)
    member = ReceivedKey.from_shared(sender.share())
    sealed = bytearray(sender.seal(b"exact words"))
    for i in (len(sealed) // 2, len(sealed) - 1, 5):
        changed = bytearray(sealed)
        changed[i] ^= 1
        with pytest.raises(GroupSealError):
            member.open(bytes(changed))
    with pytest.raises(GroupSealError):
        member.open(other.seal(b"someone else's session"))
    with pytest.raises(GroupSealError, match="too long"):
        member.open(b"\x03" * (64 * 1024 + 1))
    assert member.open(bytes(sealed)).plaintext == b"exact words"


def test_a_replayed_message_opens_to_the_same_index() -> None:
    """The store, not the session, keeps a message once: by session ID and index."""
    sender = SenderKey.create(0)
    member = ReceivedKey.from_shared(sender.share())
    sealed = sender.seal(b"once")
    assert member.open(sealed) == member.open(sealed)


def test_pickles_go_on_where_they_left_off_and_need_their_key() -> None:
    sender = SenderKey.create(7)
    member = ReceivedKey.from_shared(sender.share())
    sender.seal(b"one")
    sender = SenderKey.from_pickle(sender.pickle(KEY), KEY, created_at=7)
    member = ReceivedKey.from_pickle(member.pickle(KEY), KEY)
    opened = member.open(sender.seal(b"two"))
    assert (opened.plaintext, opened.index) == (b"two", 1)
    for load in (
        lambda: SenderKey.from_pickle(sender.pickle(KEY), b"x" * 32, created_at=0),
        lambda: ReceivedKey.from_pickle(member.pickle(KEY), b"x" * 32),
        lambda: ReceivedKey.from_pickle("not a pickle", KEY),
    ):
        with pytest.raises(GroupSealError, match="cannot be read"):
            load()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_garbage_as_a_shared_key_or_a_message_is_refused_never_crashes(data: bytes) -> None:
    with contextlib.suppress(GroupSealError):  # garbage that happens to be a key is a key
        ReceivedKey.from_shared(data)
    member = ReceivedKey.from_shared(SenderKey.create(0).share())
    with pytest.raises(GroupSealError):
        member.open(data)
