"""The SQLite worker (p2pchat.storage.database) and the durable store (p2pchat.chat.store),
on real files."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pchat import wire
from p2pchat.chat.store import (
    MIGRATIONS,
    ContactState,
    IncomingMessage,
    MessageState,
    Notice,
    Store,
)
from p2pchat.storage.database import Database, DatabaseError, DiskFullError

PEER = "12D3KooWPeerA"
OTHER = "12D3KooWPeerB"


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "p2pchat.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    async with Store.open(db_path) as database:
        yield database


@pytest.fixture
def store(db: Database) -> Store:
    return Store(db)


async def friend(store: Store, peer: str = PEER, now: int = 1) -> None:
    await store.put_contact(peer, state=ContactState.FRIEND, now=now)


def count_batches(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every batch the worker commits."""
    sizes: list[int] = []
    original = db._run_batch

    def wrapped(conn: sqlite3.Connection, batch: list[Any]) -> None:
        sizes.append(len(batch))
        original(conn, batch)

    monkeypatch.setattr(db, "_run_batch", wrapped)
    return sizes


# --- opening and migrations ------------------------------------------------------------------


async def test_migrations_set_user_version_and_reopen_is_idempotent(db_path: Path) -> None:
    async with Store.open(db_path) as db:
        await Store(db).put_contact(PEER, state=ContactState.FRIEND, now=5, name="Ann")
    assert user_version(db_path) == len(MIGRATIONS)
    for _ in range(2):
        async with Store.open(db_path) as db:
            contact = await Store(db).contact(PEER)
            assert contact is not None and contact.name == "Ann"
        assert user_version(db_path) == len(MIGRATIONS)


async def test_each_migration_runs_once(db_path: Path) -> None:
    calls: list[str] = []

    def m1(conn: sqlite3.Connection) -> None:
        calls.append("m1")
        conn.execute("CREATE TABLE one (x)")

    def m2(conn: sqlite3.Connection) -> None:
        calls.append("m2")
        conn.execute("CREATE TABLE two (x)")

    async with Database(db_path, [m1]):
        pass
    assert calls == ["m1"] and user_version(db_path) == 1
    async with Database(db_path, [m1, m2]):
        pass
    assert calls == ["m1", "m2"] and user_version(db_path) == 2
    async with Database(db_path, [m1, m2]) as db:
        tables = await db.run(
            lambda c: sorted(r[0] for r in c.execute("SELECT name FROM sqlite_master"))
        )
    assert calls == ["m1", "m2"]
    assert tables == ["one", "two"]


async def test_failed_migration_rolls_back(db_path: Path) -> None:
    def m1(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE one (x)")

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x)")
        raise RuntimeError("migration exploded")

    with pytest.raises(DatabaseError, match="migration exploded"):
        async with Database(db_path, [m1, bad]):
            pass  # pragma: no cover
    assert user_version(db_path) == 1
    conn = sqlite3.connect(db_path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert names == {"one"}


async def test_newer_schema_is_refused(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(DatabaseError, match="newer"):
        async with Store.open(db_path):
            pass  # pragma: no cover
    assert user_version(db_path) == len(MIGRATIONS) + 1


async def test_unopenable_paths(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="cannot open"):
        async with Store.open(tmp_path / "missing-dir" / "x.db"):
            pass  # pragma: no cover
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DatabaseError):
        async with Store.open(garbage):
            pass  # pragma: no cover


async def test_pragmas(db: Database) -> None:
    def fn(conn: sqlite3.Connection) -> tuple[str, int, int]:
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA foreign_keys").fetchone()[0],
        )

    assert await db.run(fn) == ("wal", 2, 1)


async def test_file_is_in_wal_mode_on_disk(db_path: Path, store: Store) -> None:
    await friend(store)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


# --- Database.run semantics ------------------------------------------------------------------


async def test_run_after_close(db_path: Path) -> None:
    db = Database(db_path, MIGRATIONS)
    async with db:
        assert await db.run(lambda c: 42) == 42
    with pytest.raises(DatabaseError, match="closed"):
        await db.run(lambda c: 1)
    await db.close()  # closing twice is fine
    with pytest.raises(DatabaseError):
        await Store(db).contacts()


async def _run_or_detect_hang(db: Database) -> str:
    """Call ``db.run``; if it blocks forever (shielded), unstick it and report "hung"."""
    outcome: list[str] = []

    async def call() -> None:
        try:
            await db.run(lambda c: 1)
            outcome.append("returned")
        except DatabaseError:
            outcome.append("DatabaseError")
        except RuntimeError as exc:
            outcome.append(str(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        if not outcome:  # nobody will ever run the queued job: finish it ourselves
            job = db._queue.get_nowait()
            assert job is not None
            job.error = RuntimeError("hung")
            job.done(job)
    return outcome[0]


async def test_run_before_open_raises(db_path: Path) -> None:
    assert await _run_or_detect_hang(Database(db_path, MIGRATIONS)) == "DatabaseError"


async def test_run_after_failed_open_raises(tmp_path: Path) -> None:
    db = Database(tmp_path / "missing-dir" / "x.db", MIGRATIONS)
    with pytest.raises(DatabaseError):
        await db.__aenter__()
    assert await _run_or_detect_hang(db) == "DatabaseError"


async def test_result_is_committed_when_run_returns(db_path: Path, store: Store) -> None:
    await store.set_setting("k", "v1")
    reader = sqlite3.connect(db_path)
    try:
        assert reader.execute("SELECT value FROM settings WHERE key='k'").fetchone() == ("v1",)
    finally:
        reader.close()


async def test_non_durable_batches_commit_and_switch_sync_mode_back(db_path: Path) -> None:
    """A batch of only ``durable=False`` jobs commits with synchronous=NORMAL; the next durable
    job gets synchronous=FULL again. Both survive a close and reopen."""

    def sync_mode(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    async with Store.open(db_path) as db:
        await db.run(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
        await db.run(lambda c: c.execute("INSERT INTO t VALUES (1)"), durable=False)
        assert await db.run(sync_mode, durable=False) == 1  # NORMAL
        await db.run(lambda c: c.execute("INSERT INTO t VALUES (2)"))
        assert await db.run(sync_mode) == 2  # FULL
    async with Store.open(db_path) as db:
        rows = await db.run(lambda c: c.execute("SELECT x FROM t ORDER BY x").fetchall())
        assert [r[0] for r in rows] == [1, 2]


async def test_job_exceptions(db: Database) -> None:
    def boom(conn: sqlite3.Connection) -> None:
        raise ValueError("mine")

    with pytest.raises(ValueError, match="mine"):
        await db.run(boom)
    with pytest.raises(DatabaseError, match="syntax"):
        await db.run(lambda c: c.execute("SELEKT 1"))
    with pytest.raises(DatabaseError, match="UNIQUE"):
        await db.run(
            lambda c: c.executemany("INSERT INTO settings VALUES (?, ?)", [("a", "1"), ("a", "2")])
        )
    assert await db.run(lambda c: c.execute("SELECT count(*) FROM settings").fetchone()[0]) == 0


async def test_failing_job_in_batch_does_not_roll_back_others(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = count_batches(db, monkeypatch)
    started, gate = threading.Event(), threading.Event()

    def blocker(conn: sqlite3.Connection) -> None:
        started.set()
        gate.wait(10)

    def insert(key: str, fail: bool = False) -> Callable[[sqlite3.Connection], str]:
        def fn(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT INTO settings VALUES (?, 'x')", (key,))
            if fail:
                raise RuntimeError(f"job {key} failed")
            return key

        return fn

    results: dict[str, object] = {}

    async def job(key: str, fail: bool = False) -> None:
        try:
            results[key] = await db.run(insert(key, fail))
        except Exception as exc:
            results[key] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.run, blocker)
        await trio.to_thread.run_sync(started.wait, 10)
        nursery.start_soon(job, "a")
        nursery.start_soon(job, "b", True)
        nursery.start_soon(job, "c")
        nursery.start_soon(job, "d", True)
        nursery.start_soon(job, "e")
        await trio.testing.wait_all_tasks_blocked()
        gate.set()

    assert sizes == [1, 5]  # the blocker, then all five jobs in one transaction
    assert results["a"] == "a" and results["c"] == "c" and results["e"] == "e"
    assert isinstance(results["b"], RuntimeError) and "job b failed" in str(results["b"])
    assert isinstance(results["d"], RuntimeError)
    keys = await db.run(lambda c: [r[0] for r in c.execute("SELECT key FROM settings ORDER BY 1")])
    assert keys == ["a", "c", "e"]


async def test_cancelled_caller_still_completes_write(store: Store) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.set_setting("k", "v")
    assert await store.get_setting("k") == "v"


async def test_concurrent_writes_group_commit(
    db: Database, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await friend(store)
    await friend(store, OTHER)
    sizes = count_batches(db, monkeypatch)
    seqs: dict[str, list[int]] = {PEER: [], OTHER: []}

    async def send(peer: str, n: int) -> None:
        record, _ = await store.add_outgoing(peer, mid(n), f"m{n}", now=n)
        seqs[peer].append(record.seq)

    async with trio.open_nursery() as nursery:
        for n in range(500):
            nursery.start_soon(send, PEER, n)
        for n in range(100):
            nursery.start_soon(send, OTHER, 1000 + n)

    assert sorted(seqs[PEER]) == list(range(1, 501))
    assert sorted(seqs[OTHER]) == list(range(1, 101))
    assert sum(sizes) == 600
    assert len(sizes) < 600, "expected several writes per commit"
    assert max(sizes) <= 512
    sizes_db = await store.outbox_sizes()
    assert sizes_db == {PEER: 500, OTHER: 100}


# --- disk full -------------------------------------------------------------------------------


async def _fill_up(db: Database) -> None:
    def fn(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await db.run(fn)


async def test_disk_full_keeps_committed_data(db_path: Path, db: Database, store: Store) -> None:
    await friend(store)
    first, _ = await store.add_outgoing(PEER, mid(1), "before", now=1)
    await _fill_up(db)
    for n in range(3):
        with pytest.raises(DatabaseError) as err:
            await store.add_outgoing(PEER, mid(100 + n), "x" * 200_000, now=2)
        assert str(err.value)
    assert [m.text for m in await store.history(PEER, 10)] == ["before"]
    # Nothing half-written: the sequence counter did not move either.
    await db.run(lambda c: c.execute("PRAGMA max_page_count = 1000000"))
    second, _ = await store.add_outgoing(PEER, mid(2), "after", now=3)
    assert second.seq == first.seq + 1
    await db.close()
    async with Store.open(db_path) as reopened:
        texts = [m.text for m in await Store(reopened).history(PEER, 10)]
    assert texts == ["before", "after"]


async def test_disk_full_on_message_insert_is_disk_full(db: Database, store: Store) -> None:
    await friend(store)
    await _fill_up(db)
    with pytest.raises(DiskFullError, match="disk is full"):
        await store.add_outgoing(PEER, mid(1), "x" * 200_000, now=2)


def _blob_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE blobs (b BLOB)")  # no index: inserts use no statement journal


async def _blob_db_full(db: Database) -> None:
    await db.run(lambda c: c.execute("INSERT INTO blobs VALUES (x'00')"))
    await _fill_up(db)


async def test_disk_full_whole_transaction_rollback_is_an_error(db_path: Path) -> None:
    async with Database(db_path, [_blob_table]) as db:
        await _blob_db_full(db)
        with pytest.raises(DatabaseError):
            await db.run(lambda c: c.execute("INSERT INTO blobs VALUES (randomblob(100000))"))
        assert await db.run(lambda c: c.execute("SELECT count(*) FROM blobs").fetchone()[0]) == 1
        await db.run(lambda c: c.execute("PRAGMA max_page_count = 1000000"))
        await db.run(lambda c: c.execute("INSERT INTO blobs VALUES (randomblob(100000))"))
    async with Database(db_path, [_blob_table]) as db:
        assert await db.run(lambda c: c.execute("SELECT count(*) FROM blobs").fetchone()[0]) == 2


async def test_disk_full_whole_transaction_rollback_is_reported_as_disk_full(
    db_path: Path,
) -> None:
    async with Database(db_path, [_blob_table]) as db:
        await _blob_db_full(db)
        with pytest.raises(DiskFullError, match="disk is full"):
            await db.run(lambda c: c.execute("INSERT INTO blobs VALUES (randomblob(100000))"))


# --- contacts --------------------------------------------------------------------------------


async def test_put_contact_create_and_read(store: Store) -> None:
    assert await store.contact(PEER) is None
    c = await store.put_contact(
        PEER,
        state=ContactState.OUTGOING,
        now=10,
        notice=Notice.REQUEST,
        name="Ann",
        their_name="ann@home",
        request_text="hi",
        addrs=["/ip4/1.2.3.4/tcp/1"],
    )
    assert c.peer_id == PEER
    assert c.state is ContactState.OUTGOING
    assert c.notice is Notice.REQUEST
    assert (c.name, c.their_name, c.request_text) == ("Ann", "ann@home", "hi")
    assert c.addrs == ("/ip4/1.2.3.4/tcp/1",)
    assert (c.created_at, c.updated_at) == (10, 10)
    assert c.display_name == "Ann"
    assert await store.contact(PEER) == c


async def test_put_contact_keeps_fields_when_none(store: Store) -> None:
    await store.put_contact(
        PEER,
        state=ContactState.INCOMING,
        now=10,
        name="Ann",
        their_name="ann",
        request_text="hello",
        addrs=["/a", "/b"],
    )
    c = await store.put_contact(PEER, state=ContactState.FRIEND, now=20, notice=Notice.ACCEPT)
    assert c.state is ContactState.FRIEND
    assert (c.name, c.their_name, c.request_text, c.addrs) == ("Ann", "ann", "hello", ("/a", "/b"))
    assert (c.created_at, c.updated_at) == (10, 20)
    assert c.notice is Notice.ACCEPT
    # Empty values are values, not "keep".
    c = await store.put_contact(PEER, state=ContactState.FRIEND, now=30, name="", addrs=[])
    assert (c.name, c.addrs, c.their_name) == ("", (), "ann")
    assert c.display_name == "ann"
    # ``notice`` is not kept: None means "owe nothing" (callers pass the current notice).
    assert c.notice is None


async def test_contacts_listing_and_counts(store: Store) -> None:
    await store.put_contact(OTHER, state=ContactState.FRIEND, now=2)
    await store.put_contact(PEER, state=ContactState.INCOMING, now=1)
    await store.put_contact("12D3KooWPeerC", state=ContactState.FRIEND, now=2)
    assert [c.peer_id for c in await store.contacts()] == [PEER, OTHER, "12D3KooWPeerC"]
    friends = await store.contacts([ContactState.FRIEND])
    assert [c.peer_id for c in friends] == [OTHER, "12D3KooWPeerC"]
    assert await store.contacts([]) == []
    assert await store.contacts([ContactState.BLOCKED]) == []
    await store.delete_contact(OTHER)
    await store.delete_contact("never-existed")
    assert len(await store.contacts([ContactState.FRIEND])) == 1


async def test_update_fields_and_clear_notice(store: Store) -> None:
    await store.put_contact(PEER, state=ContactState.OUTGOING, now=1, notice=Notice.REQUEST)
    updated = await store.update_fields(PEER, now=2, addrs=["/x"], their_name="p")
    assert updated is not None and updated.notice is Notice.REQUEST  # never touched
    assert updated.state is ContactState.OUTGOING and updated.updated_at == 2
    await store.clear_notice(PEER, Notice.ACCEPT)  # a different notice: kept
    c = await store.contact(PEER)
    assert c is not None and c.addrs == ("/x",) and c.notice is Notice.REQUEST
    await store.clear_notice(PEER, Notice.REQUEST)
    c = await store.contact(PEER)
    assert c is not None and c.notice is None
    assert await store.update_fields("unknown", now=3, addrs=["/y"]) is None  # no row
    assert await store.contact("unknown") is None


# --- messages --------------------------------------------------------------------------------


async def test_add_outgoing_assigns_increasing_seq_per_contact(store: Store) -> None:
    await friend(store)
    await friend(store, OTHER)
    a1, _ = await store.add_outgoing(PEER, mid(1), "one", now=100)
    a2, _ = await store.add_outgoing(PEER, mid(2), "two", now=101)
    b1, _ = await store.add_outgoing(OTHER, mid(3), "uno", now=102)
    a3, _ = await store.add_outgoing(PEER, mid(4), "three", now=103)
    assert [a1.seq, a2.seq, a3.seq, b1.seq] == [1, 2, 3, 1]
    assert a1.row < a2.row < b1.row < a3.row
    assert a1.outgoing and a1.state is MessageState.PENDING
    assert (a1.peer_id, a1.msg_id, a1.text, a1.sent_at, a1.stored_at) == (
        PEER,
        mid(1),
        "one",
        100,
        100,
    )
    assert a1.delivered_at is None


async def test_add_outgoing_retry_with_same_id_adds_nothing(store: Store) -> None:
    await friend(store)
    first, created = await store.add_outgoing(PEER, mid(1), "once", now=1)
    assert created
    again, created_again = await store.add_outgoing(PEER, mid(1), "once", now=2)
    assert not created_again
    assert again == first
    with pytest.raises(ValueError):
        await store.add_outgoing(PEER, mid(1), "different text", now=3)
    nxt, _ = await store.add_outgoing(PEER, mid(2), "next", now=4)
    assert nxt.seq == first.seq + 1  # the retries consumed no sequence number
    assert [m.text for m in await store.history(PEER, 10)] == ["once", "next"]


async def test_seq_is_never_reused_after_the_contact_is_recreated(store: Store) -> None:
    """block -> unblock -> add deletes and re-creates the contact row; the conversation's
    sequence must continue, or the receiver-side order and the hand-over queue break."""
    await friend(store)
    for n in range(3):
        await store.add_outgoing(PEER, mid(n), f"old {n}", now=n)
    await store.delete_contact(PEER)
    await friend(store)
    record, _ = await store.add_outgoing(PEER, mid(10), "new", now=10)
    assert record.seq == 4


async def test_v3_cleans_pending_texts_a_receiver_would_refuse(db_path: Path) -> None:
    async with Database(db_path, MIGRATIONS[:2]) as old:
        await Store(old).put_contact(PEER, state=ContactState.FRIEND, now=1)
        await Store(old).add_outgoing(PEER, mid(1), "pasted\r\nwith \x1b[1mbold\x1b[0m\tok", now=1)
        await Store(old).add_outgoing(PEER, mid(2), "fine\nline", now=2)
    async with Store.open(db_path) as db:
        texts = [m.text for m in await Store(db).history(PEER, 10)]
    assert texts == ["pasted\ufffd\nwith \ufffd[1mbold\ufffd[0m\tok", "fine\nline"]
    assert all(wire.text_problem(t, wire.MAX_TEXT_BYTES, multiline=True) is None for t in texts)


async def test_add_outgoing_unknown_contact(store: Store) -> None:
    with pytest.raises(KeyError):
        await store.add_outgoing("nobody", mid(1), "x", now=1)
    assert await store.history("nobody", 10) == []


async def test_add_outgoing_seq_survives_contact_update(store: Store) -> None:
    await friend(store)
    await store.add_outgoing(PEER, mid(1), "one", now=1)
    await store.put_contact(PEER, state=ContactState.FRIEND, now=2, name="x")
    assert (await store.add_outgoing(PEER, mid(2), "two", now=3))[0].seq == 2


async def test_add_incoming_is_idempotent(store: Store) -> None:
    msgs = [IncomingMessage(mid(1), 1, 50, "hello"), IncomingMessage(mid(2), 2, 51, "again")]
    first = await store.add_incoming(PEER, msgs, now=60)
    assert [(m.msg_id, m.seq, m.text, m.sent_at, m.stored_at) for m in first] == [
        (mid(1), 1, "hello", 50, 60),
        (mid(2), 2, "again", 51, 60),
    ]
    assert all(not m.outgoing and m.state is MessageState.RECEIVED for m in first)
    assert await store.add_incoming(PEER, msgs, now=70) == []
    third = await store.add_incoming(
        PEER, [IncomingMessage(mid(2), 2, 51, "again"), IncomingMessage(mid(3), 3, 52, "new")], 80
    )
    assert [m.msg_id for m in third] == [mid(3)]
    # Duplicates within one call are stored once too.
    dup = IncomingMessage(mid(9), 9, 1, "dup")
    assert len(await store.add_incoming(PEER, [dup, dup], now=90)) == 1
    history = await store.history(PEER, 100)
    assert [m.msg_id for m in history] == [mid(1), mid(2), mid(3), mid(9)]


async def test_same_msg_id_is_separate_per_peer_and_direction(store: Store) -> None:
    await friend(store)
    out, _ = await store.add_outgoing(PEER, mid(1), "mine", now=1)
    inc = await store.add_incoming(PEER, [IncomingMessage(mid(1), 1, 1, "theirs")], now=2)
    other = await store.add_incoming(OTHER, [IncomingMessage(mid(1), 1, 1, "other")], now=3)
    assert out.msg_id == inc[0].msg_id == other[0].msg_id
    assert len(await store.history(PEER, 10)) == 2


async def test_mark_delivered_changes_state_once(store: Store) -> None:
    await friend(store)
    m1, _ = await store.add_outgoing(PEER, mid(1), "one", now=1)
    await store.add_outgoing(PEER, mid(2), "two", now=1)
    await store.add_incoming(PEER, [IncomingMessage(mid(3), 1, 1, "in")], now=1)
    changed = await store.mark_delivered(PEER, [mid(1), mid(404), mid(3)], now=50)
    assert len(changed) == 1
    assert changed[0].row == m1.row
    assert changed[0].state is MessageState.DELIVERED
    assert changed[0].delivered_at == 50
    assert await store.mark_delivered(PEER, [mid(1)], now=60) == []
    assert await store.mark_delivered(OTHER, [mid(2)], now=60) == []  # wrong peer
    history = {m.msg_id: m for m in await store.history(PEER, 10)}
    assert history[mid(1)].delivered_at == 50
    assert history[mid(2)].state is MessageState.PENDING
    assert history[mid(3)].state is MessageState.RECEIVED


async def test_outbox_order_limit_and_after_seq(store: Store) -> None:
    await friend(store)
    await friend(store, OTHER)
    for n in range(1, 11):
        await store.add_outgoing(PEER, mid(n), f"m{n}", now=n)
    await store.add_outgoing(OTHER, mid(99), "other", now=1)
    await store.mark_delivered(PEER, [mid(2), mid(5)], now=20)
    box = await store.outbox(PEER, after_seq=0, limit=100)
    assert [m.seq for m in box] == [1, 3, 4, 6, 7, 8, 9, 10]
    assert all(m.peer_id == PEER and m.state is MessageState.PENDING for m in box)
    assert [m.seq for m in await store.outbox(PEER, after_seq=0, limit=3)] == [1, 3, 4]
    assert [m.seq for m in await store.outbox(PEER, after_seq=4, limit=3)] == [6, 7, 8]
    assert await store.outbox(PEER, after_seq=10, limit=3) == []
    assert await store.outbox_sizes() == {PEER: 8, OTHER: 1}


async def test_history_paging(store: Store) -> None:
    await friend(store)
    for n in range(1, 11):
        if n % 2:
            await store.add_outgoing(PEER, mid(n), f"m{n}", now=n)
        else:
            await store.add_incoming(PEER, [IncomingMessage(mid(n), n, n, f"m{n}")], now=n)
        await store.add_incoming(OTHER, [IncomingMessage(mid(n), n, n, "noise")], now=n)
    page = await store.history(PEER, 3)
    assert [m.text for m in page] == ["m8", "m9", "m10"]
    seen = [m.text for m in page]
    while page:
        page = await store.history(PEER, 3, before_row=page[0].row)
        seen = [m.text for m in page] + seen
    assert seen == [f"m{n}" for n in range(1, 11)]
    assert await store.history(PEER, 0) == []
    assert await store.history("nobody", 5) == []


async def test_unicode_and_binary_round_trip(store: Store) -> None:
    await friend(store)
    text = "héllo 🌍 \u202e ' \" ; DROP TABLE messages; --"
    msg_id = bytes(range(16))
    record, _ = await store.add_outgoing(PEER, msg_id, text, now=1)
    assert (record.text, record.msg_id) == (text, msg_id)
    assert (await store.history(PEER, 1))[0].text == text


# --- settings --------------------------------------------------------------------------------


async def test_settings(store: Store) -> None:
    assert await store.get_setting("name") is None
    await store.set_setting("name", "Ann")
    await store.set_setting("name", "Bea")
    await store.set_setting("other", "")
    assert await store.get_setting("name") == "Bea"
    assert await store.get_setting("other") == ""
