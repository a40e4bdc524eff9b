"""Unread counts (p2pchat.chat.unread) and read marks (p2pchat.chat.store), on real database
files: what counts (incoming messages after the read mark, each once), what never counts
(outgoing messages, duplicates delivered again), and that the count kept in memory always
equals the one the database gives, across reads, restarts, deleted contacts and races."""

from __future__ import annotations

import random
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.abc import INetStream

from p2pchat import wire
from p2pchat.api import ApiError
from p2pchat.chat.friendship import DELETE, ContactState, Notice, Step
from p2pchat.chat.messages import Messages
from p2pchat.chat.roster import Roster
from p2pchat.chat.store import ChatStore, IncomingMessage, MessageRecord
from p2pchat.chat.unread import UnreadCounts
from p2pchat.events import Event, EventBus
from p2pchat.net.host import Network
from p2pchat.storage.database import Database
from p2pchat.storage.schema import open_database
from tests.harness import FakeStream

ANN = "12D3KooWAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnn1"
BOB = "12D3KooWBobBobBobBobBobBobBobBobBobBobBobBobBobBob2"


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def incoming(*ns: int) -> list[IncomingMessage]:
    return [IncomingMessage(mid(n), n, 1000 + n, f"message {n}") for n in ns]


@pytest.fixture
def store(db: Database) -> ChatStore:
    return ChatStore(db)


@pytest.fixture
async def unread(store: ChatStore) -> UnreadCounts:
    counts = UnreadCounts(store)
    await counts.load()
    return counts


async def friend(store: ChatStore, peer: str = ANN) -> None:
    await store.put_contact(peer, state=ContactState.FRIEND, now=1)


async def agrees(unread: UnreadCounts, store: ChatStore, *peers: str) -> None:
    """The count in memory is the database's, and a restart (a fresh load) gives it too."""
    reloaded = UnreadCounts(store)
    await reloaded.load()
    for peer in peers:
        db_count = await store.unread_count(peer)
        assert unread.count(peer) == db_count == reloaded.count(peer), peer


# --- the store: read marks and counting in the database ----------------------------------


async def test_mark_read_moves_to_the_newest_message_of_the_conversation(
    store: ChatStore,
) -> None:
    await friend(store, ANN)
    await friend(store, BOB)
    assert await store.mark_read(ANN) == 0  # no messages: nothing to mark
    assert await store.read_mark(ANN) == 0
    assert await store.unread_count(ANN) == 0
    [first, second] = await store.add_incoming(ANN, incoming(1, 2), now=5)
    await store.add_incoming(BOB, incoming(1), now=5)  # another conversation: not its newest
    assert await store.unread_count(ANN) == 2
    assert await store.mark_read(ANN) == second.row
    assert await store.unread_count(ANN) == 0
    assert await store.unread_count(BOB) == 1  # untouched
    # The newest message may be one of ours: the mark moves past it too.
    out, _ = await store.add_outgoing(ANN, mid(50), "mine", now=6)
    assert await store.mark_read(ANN) == out.row
    assert await store.read_mark(ANN) == out.row
    assert first.row < second.row < out.row


async def test_outgoing_messages_never_count(store: ChatStore) -> None:
    await friend(store)
    for n in range(5):
        await store.add_outgoing(ANN, mid(100 + n), f"out {n}", now=n)
    assert await store.unread_count(ANN) == 0
    assert await store.unread_counts() == {}
    await store.add_incoming(ANN, incoming(1), now=9)
    await store.add_outgoing(ANN, mid(200), "after", now=10)
    assert await store.unread_count(ANN) == 1
    assert await store.unread_counts() == {ANN: 1}


async def test_the_read_mark_never_moves_back(store: ChatStore, db: Database) -> None:
    await friend(store)
    await store.add_incoming(ANN, incoming(1, 2, 3), now=5)
    mark = await store.mark_read(ANN)
    # Even if the newest messages were to disappear, the mark stays.
    await db.run(lambda c: c.execute("DELETE FROM messages WHERE id = ?", (mark,)))
    assert await store.mark_read(ANN) == mark
    assert await store.read_mark(ANN) == mark


async def test_every_peer_with_incoming_messages_has_a_read_mark(
    store: ChatStore, db: Database
) -> None:
    async def all_marks() -> dict[str, int]:
        rows = await db.run(
            lambda c: c.execute("SELECT peer_id, read_row FROM read_marks").fetchall()
        )
        return {r[0]: r[1] for r in rows}

    await friend(store)
    await store.add_outgoing(ANN, mid(1), "hi", now=1)
    assert await all_marks() == {}  # only incoming messages need one
    await store.add_incoming(ANN, incoming(1), now=2)
    assert await all_marks() == {ANN: 0}  # nothing read yet
    await store.add_incoming(ANN, incoming(1), now=3)  # a duplicate: still one mark
    assert await all_marks() == {ANN: 0}


async def test_counting_reads_only_the_unread_entries_of_an_index(db: Database) -> None:
    """Cheap however long the history: SQLite's plan for each query the counts use is a
    range search of an index (never a scan of the messages table)."""

    async def plan(sql: str, *args: object) -> str:
        def fn(conn: sqlite3.Connection) -> str:
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
            return " | ".join(str(r["detail"]) for r in rows)

        return await db.run(fn)

    unread_plan = await plan(
        "SELECT COUNT(*) FROM messages INDEXED BY messages_incoming "
        "WHERE peer_id = ? AND outgoing = 0 AND id > ?",
        ANN,
        0,
    )
    assert "COVERING INDEX messages_incoming (peer_id=? AND outgoing=? AND id>?)" in unread_plan
    outbox_plan = await plan(
        "SELECT COUNT(*) FROM messages INDEXED BY messages_outbox "
        "WHERE peer_id = ? AND outgoing = 1 AND state = 'pending'",
        ANN,
    )
    assert "INDEX messages_outbox (peer_id=?)" in outbox_plan
    newest_plan = await plan("SELECT COALESCE(MAX(id), 0) FROM messages WHERE peer_id = ?", ANN)
    assert "INDEX messages_by_peer (peer_id=?)" in newest_plan


async def test_outbox_size_counts_one_conversations_pending_messages(store: ChatStore) -> None:
    await friend(store, ANN)
    await friend(store, BOB)
    for n in range(3):
        await store.add_outgoing(ANN, mid(n), "x", now=n)
    await store.add_outgoing(BOB, mid(9), "y", now=1)
    await store.mark_delivered(ANN, [mid(0)], now=5)
    assert await store.outbox_size(ANN) == 2
    assert await store.outbox_size(BOB) == 1
    assert await store.outbox_size("12D3KooWNobody") == 0
    assert await store.outbox_sizes() == {ANN: 2, BOB: 1}


# --- the counts in memory ------------------------------------------------------------------


async def test_new_incoming_messages_count_once_each(
    unread: UnreadCounts, store: ChatStore
) -> None:
    await friend(store)
    assert unread.count(ANN) == 0
    announced: list[tuple[int, int]] = []

    def announce(record: MessageRecord) -> None:
        announced.append((record.seq, unread.count(ANN)))

    stored = await unread.add_incoming(ANN, incoming(1, 2, 3), 5, announce)
    assert [m.seq for m in stored] == [1, 2, 3]
    # Each announcement sees the count with its own message counted.
    assert announced == [(1, 1), (2, 2), (3, 3)]
    await agrees(unread, store, ANN)


async def test_duplicates_delivered_again_count_once(
    unread: UnreadCounts, store: ChatStore
) -> None:
    await friend(store)
    announced: list[int] = []
    await unread.add_incoming(ANN, incoming(1, 2), 5, lambda r: announced.append(r.seq))
    # The sender lost our ack and sends everything again, plus one new message, and one
    # message twice in the same batch.
    again = await unread.add_incoming(
        ANN, incoming(1, 2, 3, 3), 6, lambda r: announced.append(r.seq)
    )
    assert [m.seq for m in again] == [3]
    assert announced == [1, 2, 3]
    assert unread.count(ANN) == 3
    await agrees(unread, store, ANN)
    # Delivered again after being read: still read.
    await unread.mark_read(ANN)
    assert await unread.add_incoming(ANN, incoming(1, 2, 3), 7) == []
    assert unread.count(ANN) == 0
    await agrees(unread, store, ANN)


async def test_reading_resets_and_later_messages_count_from_zero(
    unread: UnreadCounts, store: ChatStore
) -> None:
    await friend(store, ANN)
    await friend(store, BOB)
    await unread.add_incoming(ANN, incoming(1, 2, 3), 5)
    await unread.add_incoming(BOB, incoming(1), 5)
    mark = await unread.mark_read(ANN)
    assert mark == await store.read_mark(ANN)
    assert (unread.count(ANN), unread.count(BOB)) == (0, 1)
    await unread.add_incoming(ANN, incoming(4, 5), 6)
    assert unread.count(ANN) == 2
    await agrees(unread, store, ANN, BOB)
    # Reading twice is harmless; reading a conversation with nothing in it too.
    await unread.mark_read(ANN)
    await unread.mark_read(ANN)
    assert await unread.mark_read("12D3KooWNobody") == 0
    assert unread.count(ANN) == 0
    await agrees(unread, store, ANN, BOB, "12D3KooWNobody")


async def test_our_replies_do_not_count_and_do_not_read(
    unread: UnreadCounts, store: ChatStore
) -> None:
    """Sending is not reading: a reply leaves the friend's messages unread (the user may
    reply from the CLI's ``send`` without opening the conversation)."""
    await friend(store)
    await unread.add_incoming(ANN, incoming(1, 2), 5)
    await store.add_outgoing(ANN, mid(77), "reply", now=6)
    assert unread.count(ANN) == 2
    await agrees(unread, store, ANN)


async def test_counts_and_marks_survive_a_restart(db_path: Path) -> None:
    async with open_database(db_path) as db:
        store = ChatStore(db)
        await friend(store, ANN)
        await friend(store, BOB)
        unread = UnreadCounts(store)
        await unread.load()
        await unread.add_incoming(ANN, incoming(1, 2, 3), 5)
        await unread.add_incoming(BOB, incoming(1, 2), 5)
        await unread.mark_read(BOB)
        await unread.add_incoming(BOB, incoming(3), 6)
        mark = await store.read_mark(BOB)
    async with open_database(db_path) as db:
        store = ChatStore(db)
        unread = UnreadCounts(store)
        await unread.load()
        assert (unread.count(ANN), unread.count(BOB)) == (3, 1)
        assert await store.read_mark(BOB) == mark
        assert await store.unread_counts() == {ANN: 3, BOB: 1}


async def test_a_deleted_contact_keeps_its_history_and_what_was_read_of_it(
    unread: UnreadCounts, store: ChatStore
) -> None:
    """History outlives a contact (remove, block -> unblock, add again), so does the read
    mark: a friend added again shows the unread count it had, not its whole history."""
    await friend(store)
    await unread.add_incoming(ANN, incoming(1, 2), 5)
    await unread.mark_read(ANN)
    await unread.add_incoming(ANN, incoming(3), 6)
    await store.delete_contact(ANN)
    assert unread.count(ANN) == 1
    await agrees(unread, store, ANN)  # also after a restart with no contact row
    await friend(store)
    assert unread.count(ANN) == 1
    await agrees(unread, store, ANN)


async def test_reads_and_arrivals_racing_keep_memory_equal_to_the_database(
    unread: UnreadCounts, store: ChatStore
) -> None:
    """Many arrivals and reads at once, committed in batches in whatever order the worker
    takes them: the count in memory ends equal to the database's count every time."""
    await friend(store, ANN)
    await friend(store, BOB)
    rng = random.Random(11)
    next_id = iter(range(1, 10_000))
    for _round in range(8):
        async with trio.open_nursery() as nursery:
            for _ in range(30):
                peer = rng.choice([ANN, BOB])
                if rng.random() < 0.3:
                    nursery.start_soon(unread.mark_read, peer)
                else:
                    ids = [next(next_id) for _ in range(rng.randint(1, 4))]
                    if rng.random() < 0.3:
                        ids.append(ids[0])  # a duplicate too
                    nursery.start_soon(unread.add_incoming, peer, incoming(*ids), 1)
                if rng.random() < 0.5:
                    await trio.sleep(0)
        await agrees(unread, store, ANN, BOB)


Op = tuple[Any, ...]

OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("in"), st.sampled_from([ANN, BOB]), st.lists(st.integers(0, 12), max_size=5)
        ),
        st.tuples(st.just("out"), st.sampled_from([ANN, BOB])),
        st.tuples(st.just("read"), st.sampled_from([ANN, BOB])),
        st.tuples(st.just("delete"), st.sampled_from([ANN, BOB])),
        st.tuples(st.just("restart")),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_count_matches_a_model_for_any_sequence(ops: list[Op]) -> None:
    """The model: a conversation's count is its distinct incoming messages since it was
    last read; nothing else (our messages, duplicates, deleting the contact, a restart)
    changes it."""

    async def main(path: Path) -> None:
        model: dict[str, int] = {ANN: 0, BOB: 0}
        seen: dict[str, set[int]] = {ANN: set(), BOB: set()}
        out_ids = iter(range(1000, 2000))
        async with open_database(path) as db:
            store = ChatStore(db)
            for peer in (ANN, BOB):
                await friend(store, peer)
            unread = UnreadCounts(store)
            await unread.load()
            for op in ops:
                kind = op[0]
                if kind == "in":
                    _, peer, ids = op
                    await unread.add_incoming(peer, incoming(*ids), 1)
                    fresh = set(ids) - seen[peer]
                    seen[peer] |= fresh
                    model[peer] += len(fresh)
                elif kind == "out":
                    await friend(store, op[1])  # sending needs a contact
                    await store.add_outgoing(op[1], mid(next(out_ids)), "mine", now=1)
                elif kind == "read":
                    await unread.mark_read(op[1])
                    model[op[1]] = 0
                elif kind == "delete":
                    await store.delete_contact(op[1])
                else:
                    unread = UnreadCounts(store)
                    await unread.load()
                for peer in (ANN, BOB):
                    assert unread.count(peer) == model[peer]
            for peer in (ANN, BOB):
                assert await store.unread_count(peer) == model[peer]

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp) / "p2pchat.db")


# --- the roster, the message protocol and messages.read -------------------------------------


def chat_frames(*ns: int) -> list[wire.Frame]:
    return [wire.ChatMessage(mid(n), n, 1000 + n, f"message {n}") for n in ns]


@pytest.fixture
async def roster(db: Database) -> Roster:
    r = Roster(ChatStore(db), EventBus())
    await r.load()
    return r


@pytest.fixture
def messages(roster: Roster) -> Messages:
    return Messages(network=cast(Network, None), roster=roster, my_addrs=lambda: ())


async def befriend(roster: Roster, peer: str) -> None:
    async with roster.locked(peer):
        await roster.apply(peer, Step(state=ContactState.FRIEND), name=peer[8:11].lower())


async def receive(messages: Messages, peer: str, *ns: int) -> FakeStream:
    stream = FakeStream(*([f] for f in chat_frames(*ns)))
    await messages.serve(cast(INetStream, stream), peer)
    return stream


def drain(events: trio.MemoryReceiveChannel[Event]) -> list[Event]:
    found: list[Event] = []
    while True:
        try:
            found.append(events.receive_nowait())
        except trio.WouldBlock:
            return found


async def test_received_messages_announce_the_contact_with_its_new_count(
    roster: Roster, messages: Messages
) -> None:
    await befriend(roster, ANN)
    events = roster.events.subscribe()
    stream = await receive(messages, ANN, 1, 2, 3)
    received = [e for e in drain(events) if e["type"] == "message.received"]
    assert [e["message"]["seq"] for e in received] == [1, 2, 3]
    assert [e["contact"]["unread"] for e in received] == [1, 2, 3]
    assert all(isinstance(f, wire.Ack) for f in stream.written)
    contact = roster.get(ANN)
    assert contact is not None and roster.contact_json(contact)["unread"] == 3

    # The sender missed the ack and sends it all again: acked again, not counted again.
    stream = await receive(messages, ANN, 1, 2, 3, 4)
    received = [e for e in drain(events) if e["type"] == "message.received"]
    assert [(e["message"]["seq"], e["contact"]["unread"]) for e in received] == [(4, 4)]
    acked = [i for f in stream.written if isinstance(f, wire.Ack) for i in f.msg_ids]
    assert acked == [mid(n) for n in (1, 2, 3, 4)]
    assert roster.unread.count(ANN) == 4 == await roster.store.unread_count(ANN)


async def test_messages_read_resets_the_count_and_announces_the_contact(
    roster: Roster, messages: Messages
) -> None:
    await befriend(roster, ANN)
    await befriend(roster, BOB)
    await receive(messages, ANN, 1, 2)
    await receive(messages, BOB, 1)
    await messages.send("ann", "queued reply")
    events = roster.events.subscribe()
    shown = await messages.mark_read("ann")  # by name, like every `friend` parameter
    assert shown["peer_id"] == ANN
    assert shown["unread"] == 0
    assert shown["outbox"] == 1  # the whole Contact, its undelivered message included
    assert drain(events) == [{"type": "contact.updated", "contact": shown}]
    assert roster.unread.count(BOB) == 1
    assert await roster.store.unread_count(ANN) == 0
    # Listed contacts show the counts.
    listed = {c.peer_id: roster.contact_json(c)["unread"] for c in roster.contacts()}
    assert listed == {ANN: 0, BOB: 1}
    # A message after the read counts again.
    await receive(messages, ANN, 3)
    assert roster.unread.count(ANN) == 1


async def test_messages_read_names_errors(roster: Roster, messages: Messages) -> None:
    with pytest.raises(ApiError) as caught:
        await messages.mark_read("nobody")
    assert caught.value.name == "not_found"
    with pytest.raises(ApiError) as caught:
        await messages.mark_read("  ")
    assert caught.value.name == "invalid_params"


async def test_unfriended_blocked_and_deleted_contacts(roster: Roster, messages: Messages) -> None:
    await befriend(roster, ANN)
    await receive(messages, ANN, 1, 2)
    # Removed: a stranger again. Its messages are refused, so nothing more counts, and it
    # is no longer a contact that `friend` can name.
    async with roster.locked(ANN):
        await roster.apply(ANN, Step(state=ContactState.REMOVED, notice=Notice.REMOVE))
    stream = await receive(messages, ANN, 3)
    assert isinstance(stream.written[0], wire.Refused)
    assert roster.unread.count(ANN) == 2 == await roster.store.unread_count(ANN)
    with pytest.raises(ApiError) as caught:
        await messages.mark_read(ANN)
    assert caught.value.name == "not_found"
    # Friends again: the two old messages are still unread, and new ones count on.
    await befriend(roster, ANN)
    await receive(messages, ANN, 3)
    assert roster.unread.count(ANN) == 3
    # Blocked: its conversation can still be read (the count is shown in friends.list).
    async with roster.locked(ANN):
        await roster.apply(ANN, Step(state=ContactState.BLOCKED))
    await receive(messages, ANN, 4)  # refused
    assert roster.unread.count(ANN) == 3
    assert (await messages.mark_read(ANN))["unread"] == 0
    # Deleted (unblocked: a stranger with no contact row), then added again.
    async with roster.locked(ANN):
        await roster.apply(ANN, Step(state=DELETE))
    assert roster.get(ANN) is None
    await befriend(roster, ANN)
    await receive(messages, ANN, 5)
    assert roster.unread.count(ANN) == 1 == await roster.store.unread_count(ANN)


async def test_the_roster_loads_the_counts(db: Database) -> None:
    store = ChatStore(db)
    await friend(store, ANN)
    await friend(store, BOB)
    await store.add_incoming(ANN, incoming(1, 2), now=1)
    await store.add_incoming(BOB, incoming(1), now=1)
    await store.mark_read(BOB)
    roster = Roster(store, EventBus())
    await roster.load()
    shown = {c.peer_id: roster.contact_json(c)["unread"] for c in roster.contacts()}
    assert shown == {ANN: 2, BOB: 0}


async def test_a_failed_read_changes_nothing(
    roster: Roster, messages: Messages, db: Database
) -> None:
    await befriend(roster, ANN)
    await receive(messages, ANN, 1)
    events = roster.events.subscribe()
    await db.close()
    with pytest.raises(ApiError) as caught:
        await messages.mark_read(ANN)
    assert caught.value.name == "storage_error"
    assert roster.unread.count(ANN) == 1
    assert drain(events) == []
