"""Verification marks (p2pchat.chat.verified) on a real database: a mark covers the friend's
end-to-end identity key as it was, a changed key unmarks it until confirmed again, and marks
made before keys were recorded take the first key seen after."""

from __future__ import annotations

from p2pchat.chat.store import ChatStore
from p2pchat.chat.verified import VerifiedMarks
from p2pchat.identity import Identity
from p2pchat.storage.database import Database

ME, FRIEND = Identity.generate().peer_id, Identity.generate().peer_id
OLD, NEW = b"o" * 32, b"n" * 32


async def test_a_changed_key_unmarks_until_confirmed_again_and_it_is_kept(db: Database) -> None:
    store = ChatStore(db)
    marks = VerifiedMarks(store, ME)
    await marks.load()
    assert await marks.saw_keys(FRIEND, OLD, now=1) is False  # first seen: nothing to flag
    v = await marks.mark(FRIEND, now=2)
    assert (v.verified, v.changed) == (True, False)
    assert await marks.saw_keys(FRIEND, OLD, now=3) is False
    assert await marks.saw_keys(FRIEND, NEW, now=4) is True
    v = await marks.get(FRIEND)
    assert (v.verified, v.changed, v.verified_at) == (False, True, 2)
    assert not marks.is_verified(FRIEND)

    again = VerifiedMarks(store, ME)  # after a restart: the same answer from the database
    await again.load()
    assert ((await again.get(FRIEND)).changed, again.is_verified(FRIEND)) == (True, False)
    v = await again.mark(FRIEND, now=5)
    assert (v.verified, v.changed) == (True, False)
    assert await store.olm_identity_keys() == {FRIEND: NEW}


async def test_a_mark_older_than_recorded_keys_takes_the_first_key_seen(db: Database) -> None:
    store = ChatStore(db)
    await store.set_verified(FRIEND, "number from before", now=1)  # no key, as schema 8 left it
    marks = VerifiedMarks(store, ME)
    await marks.load()
    # Its number is from another scheme here, so it is "changed" either way; what matters is
    # which key it is bound to from now on.
    assert await marks.saw_keys(FRIEND, OLD, now=2) is False
    assert (await store.verified_marks())[FRIEND][2] == OLD
    assert await marks.saw_keys(FRIEND, NEW, now=3) is True
    assert (await store.verified_marks())[FRIEND][2] == OLD  # bound to what it first saw
