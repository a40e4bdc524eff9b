"""Groups in the database (p2pchat.groups.store), on a real SQLite file (plain and
encrypted): what one member can do to what the store keeps for the others."""

from __future__ import annotations

from dataclasses import replace

import pytest

from p2pchat.groups import store as store_module
from p2pchat.groups.frames import Message
from p2pchat.groups.store import GroupStatus, GroupStore
from p2pchat.ratchet.megolm import ReceivedKey, SenderKey
from p2pchat.storage.database import Database

G = b"g" * 16
KEY = b"p" * 32
ALICE, MALLORY = "12D3KooWalice", "12D3KooWmallory"


async def test_a_key_belongs_to_the_member_who_gave_it(db: Database) -> None:
    """Mallory gives us Alice's key as her own first: Alice's own copy is kept apart, and
    Mallory's opens nothing in Alice's name (the service looks keys up by sender)."""
    store = GroupStore(db, KEY)
    alices = SenderKey.create(0)
    shared = ReceivedKey.from_shared(alices.share())
    await store.add_received_key(G, MALLORY, shared.session_id, shared)
    await store.add_received_key(G, ALICE, shared.session_id, shared)
    keys = await store.received_keys(G)
    assert set(keys) == {(MALLORY, shared.session_id), (ALICE, shared.session_id)}


async def test_a_members_old_keys_go_past_the_limit(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = GroupStore(db, KEY)
    monkeypatch.setattr(store_module, "MAX_KEYS_PER_SENDER", 3)
    sessions = []
    for _ in range(5):
        key = ReceivedKey.from_shared(SenderKey.create(0).share())
        sessions.append(key.session_id)
        dropped = await store.add_received_key(G, ALICE, key.session_id, key)
        assert dropped == sessions[:-3][-1:]
    kept = {s for (_, s) in await store.received_keys(G)}
    assert kept == set(sessions[2:])


async def test_a_forged_copy_does_not_keep_the_genuine_message_out(db: Database) -> None:
    store = GroupStore(db, KEY)
    genuine = Message(G, b"i" * 16, b"\x01" * 32, 1, 10, 1, "session", b"genuine body")
    forged = replace(genuine, body=b"junk with the same id and seq")
    await store.hold_pending(forged, ALICE)
    await store.hold_pending(genuine, ALICE)
    await store.hold_pending(genuine, ALICE)  # again: held once
    held = await store.take_pending(G, ALICE, "session")
    assert sorted(m.body for m in held) == sorted([genuine.body, forged.body])
    assert await store.take_pending(G, ALICE, "session") == []


async def test_leaving_forgets_what_we_owed_and_held(db: Database) -> None:
    store = GroupStore(db, KEY)
    await store.add_group(G, GroupStatus.JOINED, ALICE, [b"entry"])
    ours = await store.run(
        lambda conn: store.new_key(conn, G, frozenset({ALICE, MALLORY}), ALICE, 1)
    )
    assert [s for s, _, _ in await store.owed_to(G, MALLORY)] == [ours.key.session_id]
    await store.hold_pending(Message(G, b"i" * 16, b"\x01" * 32, 1, 10, 1, "s", b"b"), MALLORY)
    await store.set_status(G, GroupStatus.LEFT)
    assert await store.owed_to(G, MALLORY) == []
    assert await store.pending_count(G) == 0
