"""The SQLite worker (p2pchat.storage.database), the schema's migrations and the settings
table, on real files."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pchat import wire
from p2pchat.chat.friendship import ContactState
from p2pchat.chat.store import ChatStore, IncomingMessage
from p2pchat.storage import encryption
from p2pchat.storage.database import Database, DatabaseError, DiskFullError
from p2pchat.storage.schema import MIGRATIONS, open_database
from p2pchat.storage.settings import Settings

PEER = "12D3KooWPeerA"
OTHER = "12D3KooWPeerB"


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def raw(path: Path, key: bytes | None) -> sqlite3.Connection:
    """A second connection to the file, beside the worker's: plain or unlocked with ``key``."""
    if key is None:
        return sqlite3.connect(path)
    conn = encryption.connect_encrypted(path)
    conn.row_factory = None  # plain tuples, like sqlite3.connect's
    encryption.unlock(conn, key)
    return conn


def user_version(path: Path, key: bytes | None) -> int:
    conn = raw(path, key)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def store(db: Database) -> ChatStore:
    return ChatStore(db)


async def friend(store: ChatStore, peer: str = PEER, now: int = 1) -> None:
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


async def test_migrations_set_user_version_and_reopen_is_idempotent(
    db_path: Path, db_key: bytes | None
) -> None:
    async with open_database(db_path, key=db_key) as db:
        await ChatStore(db).put_contact(PEER, state=ContactState.FRIEND, now=5, name="Ann")
    assert user_version(db_path, db_key) == len(MIGRATIONS)
    for _ in range(2):
        async with open_database(db_path, key=db_key) as db:
            contact = await ChatStore(db).contact(PEER)
            assert contact is not None and contact.name == "Ann"
        assert user_version(db_path, db_key) == len(MIGRATIONS)


async def test_each_migration_runs_once(db_path: Path, db_key: bytes | None) -> None:
    calls: list[str] = []

    def m1(conn: sqlite3.Connection) -> None:
        calls.append("m1")
        conn.execute("CREATE TABLE one (x)")

    def m2(conn: sqlite3.Connection) -> None:
        calls.append("m2")
        conn.execute("CREATE TABLE two (x)")

    async with Database(db_path, [m1], key=db_key):
        pass
    assert calls == ["m1"] and user_version(db_path, db_key) == 1
    async with Database(db_path, [m1, m2], key=db_key):
        pass
    assert calls == ["m1", "m2"] and user_version(db_path, db_key) == 2
    async with Database(db_path, [m1, m2], key=db_key) as db:
        tables = await db.run(
            lambda c: sorted(r[0] for r in c.execute("SELECT name FROM sqlite_master"))
        )
    assert calls == ["m1", "m2"]
    assert tables == ["one", "two"]


async def test_failed_migration_rolls_back(db_path: Path, db_key: bytes | None) -> None:
    def m1(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE one (x)")

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x)")
        raise RuntimeError("migration exploded")

    with pytest.raises(DatabaseError, match="migration exploded"):
        async with Database(db_path, [m1, bad], key=db_key):
            pass  # pragma: no cover
    assert user_version(db_path, db_key) == 1
    conn = raw(db_path, db_key)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert names == {"one"}


async def test_newer_schema_is_refused(db_path: Path, db_key: bytes | None) -> None:
    conn = raw(db_path, db_key)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(DatabaseError, match="newer"):
        async with open_database(db_path, key=db_key):
            pass  # pragma: no cover
    assert user_version(db_path, db_key) == len(MIGRATIONS) + 1


async def test_unopenable_paths(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="cannot open"):
        async with open_database(tmp_path / "missing-dir" / "x.db"):
            pass  # pragma: no cover
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DatabaseError):
        async with open_database(garbage):
            pass  # pragma: no cover


async def test_pragmas(db: Database) -> None:
    def fn(conn: sqlite3.Connection) -> tuple[str, int, int]:
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA foreign_keys").fetchone()[0],
        )

    assert await db.run(fn) == ("wal", 2, 1)


async def test_file_is_in_wal_mode_on_disk(
    db_path: Path, db_key: bytes | None, store: ChatStore
) -> None:
    await friend(store)
    conn = raw(db_path, db_key)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


# --- Database.run semantics ------------------------------------------------------------------


async def test_run_after_close(db_path: Path, db_key: bytes | None) -> None:
    db = Database(db_path, MIGRATIONS, key=db_key)
    async with db:
        assert await db.run(lambda c: 42) == 42
    with pytest.raises(DatabaseError, match="closed"):
        await db.run(lambda c: 1)
    await db.close()  # closing twice is fine
    with pytest.raises(DatabaseError):
        await ChatStore(db).contacts()


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


async def test_result_is_committed_when_run_returns(
    db_path: Path, db_key: bytes | None, db: Database
) -> None:
    await Settings(db).set("k", "v1")
    reader = raw(db_path, db_key)
    try:
        assert reader.execute("SELECT value FROM settings WHERE key='k'").fetchone() == ("v1",)
    finally:
        reader.close()


async def test_non_durable_batches_commit_and_switch_sync_mode_back(
    db_path: Path, db_key: bytes | None
) -> None:
    """A batch of only ``durable=False`` jobs commits with synchronous=NORMAL; the next durable
    job gets synchronous=FULL again. Both survive a close and reopen."""

    def sync_mode(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    async with open_database(db_path, key=db_key) as db:
        await db.run(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
        await db.run(lambda c: c.execute("INSERT INTO t VALUES (1)"), durable=False)
        assert await db.run(sync_mode, durable=False) == 1  # NORMAL
        await db.run(lambda c: c.execute("INSERT INTO t VALUES (2)"))
        assert await db.run(sync_mode) == 2  # FULL
    async with open_database(db_path, key=db_key) as db:
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


async def test_cancelled_caller_still_completes_write(db: Database) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await Settings(db).set("k", "v")
    assert await Settings(db).get("k") == "v"


async def test_concurrent_writes_group_commit(
    db: Database, store: ChatStore, monkeypatch: pytest.MonkeyPatch
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


async def test_disk_full_keeps_committed_data(
    db_path: Path, db_key: bytes | None, db: Database, store: ChatStore
) -> None:
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
    async with open_database(db_path, key=db_key) as reopened:
        texts = [m.text for m in await ChatStore(reopened).history(PEER, 10)]
    assert texts == ["before", "after"]


async def test_disk_full_on_message_insert_is_disk_full(db: Database, store: ChatStore) -> None:
    await friend(store)
    await _fill_up(db)
    with pytest.raises(DiskFullError, match="disk is full"):
        await store.add_outgoing(PEER, mid(1), "x" * 200_000, now=2)


def _blob_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE blobs (b BLOB)")  # no index: inserts use no statement journal


async def _blob_db_full(db: Database) -> None:
    await db.run(lambda c: c.execute("INSERT INTO blobs VALUES (x'00')"))
    await _fill_up(db)


async def test_disk_full_whole_transaction_rollback_is_an_error(
    db_path: Path, db_key: bytes | None
) -> None:
    async with Database(db_path, [_blob_table], key=db_key) as db:
        await _blob_db_full(db)
        with pytest.raises(DatabaseError):
            await db.run(lambda c: c.execute("INSERT INTO blobs VALUES (randomblob(100000))"))
        assert await db.run(lambda c: c.execute("SELECT count(*) FROM blobs").fetchone()[0]) == 1
        await db.run(lambda c: c.execute("PRAGMA max_page_count = 1000000"))
        await db.run(lambda c: c.execute("INSERT INTO blobs VALUES (randomblob(100000))"))
    async with Database(db_path, [_blob_table], key=db_key) as db:
        assert await db.run(lambda c: c.execute("SELECT count(*) FROM blobs").fetchone()[0]) == 2


async def test_disk_full_whole_transaction_rollback_is_reported_as_disk_full(
    db_path: Path, db_key: bytes | None
) -> None:
    async with Database(db_path, [_blob_table], key=db_key) as db:
        await _blob_db_full(db)
        with pytest.raises(DiskFullError, match="disk is full"):
            await db.run(lambda c: c.execute("INSERT INTO blobs VALUES (randomblob(100000))"))


async def test_v3_cleans_pending_texts_a_receiver_would_refuse(
    db_path: Path, db_key: bytes | None
) -> None:
    async with Database(db_path, MIGRATIONS[:2], key=db_key) as old:
        old_store = ChatStore(old)
        await old_store.put_contact(PEER, state=ContactState.FRIEND, now=1)
        await old_store.add_outgoing(PEER, mid(1), "pasted\r\nwith \x1b[1mbold\x1b[0m\tok", now=1)
        await old_store.add_outgoing(PEER, mid(2), "fine\nline", now=2)
    async with open_database(db_path, key=db_key) as db:
        texts = [m.text for m in await ChatStore(db).history(PEER, 10)]
    assert texts == ["pasted\ufffd\nwith \ufffd[1mbold\ufffd[0m\tok", "fine\nline"]
    assert all(wire.text_problem(t, wire.MAX_TEXT_BYTES, multiline=True) is None for t in texts)


async def _v4_database(path: Path, key: bytes | None) -> dict[str, int]:
    """A database as schema version 4 left it: contacts, both directions of messages (one
    conversation whose contact is gone) and a transfer; returns each peer's newest row."""
    gone = "12D3KooWPeerGone"
    async with Database(path, MIGRATIONS[:4], key=key) as old:
        old_store = ChatStore(old)
        await old_store.put_contact(PEER, state=ContactState.FRIEND, now=1)
        await old_store.put_contact(OTHER, state=ContactState.FRIEND, now=1)
        await old_store.add_outgoing(PEER, mid(1), "hello", now=1)

        def incoming(conn: sqlite3.Connection) -> dict[str, int]:
            # ChatStore.add_incoming of version 4 (today's also writes a read mark).
            for peer, n in [(PEER, 1), (PEER, 2), (OTHER, 1), (gone, 1), (gone, 2)]:
                conn.execute(
                    "INSERT INTO messages (peer_id, msg_id, outgoing, seq, sent_at, stored_at,"
                    " text, state) VALUES (?,?,0,?,2,2,'hi','received')",
                    (peer, mid(n), n),
                )
            rows = conn.execute("SELECT peer_id, MAX(id) FROM messages GROUP BY peer_id")
            return {r[0]: r[1] for r in rows}

        newest = await old.run(incoming)
        await old_store.add_outgoing(OTHER, mid(9), "newest is ours", now=3)
        newest[OTHER] = await old.run(
            lambda c: c.execute(
                "SELECT MAX(id) FROM messages WHERE peer_id = ?", (OTHER,)
            ).fetchone()[0]
        )
    assert user_version(path, key) == 4
    return newest


async def test_v5_read_marks_from_a_v4_database(db_path: Path, db_key: bytes | None) -> None:
    """Upgrading counts what was stored before as read (a user is not greeted with every
    old conversation unread); from then on, new messages count."""
    newest = await _v4_database(db_path, db_key)
    async with open_database(db_path, key=db_key) as db:
        assert user_version(db_path, db_key) == len(MIGRATIONS)
        store = ChatStore(db)
        marks = await db.run(
            lambda c: {r[0]: r[1] for r in c.execute("SELECT peer_id, read_row FROM read_marks")}
        )
        assert marks == newest
        assert await store.unread_counts() == {}
        for peer in newest:
            assert await store.unread_count(peer) == 0
        # Everything else is as it was, and works on.
        assert [m.text for m in await store.history(PEER, 10)] == ["hello", "hi", "hi"]
        assert await store.outbox_size(PEER) == 1
        stored = await store.add_incoming(PEER, [IncomingMessage(mid(3), 3, 4, "new")], now=4)
        assert len(stored) == 1
        assert await store.unread_counts() == {PEER: 1}
        assert await store.mark_read(PEER) == stored[0].row
        indexes = await db.run(
            lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        )
        assert "messages_incoming" in indexes
    # Reopening runs no migration again: marks and counts stay.
    async with open_database(db_path, key=db_key) as db:
        assert await ChatStore(db).unread_counts() == {}
        assert await ChatStore(db).read_mark(PEER) == stored[0].row


async def test_v6_verified_marks_from_a_v5_database(db_path: Path, db_key: bytes | None) -> None:
    """Upgrading adds an empty ``verified`` table; contacts and history are untouched."""
    async with Database(db_path, MIGRATIONS[:5], key=db_key) as old:
        old_store = ChatStore(old)
        await old_store.put_contact(PEER, state=ContactState.FRIEND, now=1)
        await old_store.add_incoming(PEER, [IncomingMessage(mid(1), 1, 1, "before")], now=1)
    assert user_version(db_path, db_key) == 5
    async with open_database(db_path, key=db_key) as db:
        assert user_version(db_path, db_key) == len(MIGRATIONS)
        store = ChatStore(db)
        assert await store.verified_marks() == {}
        assert [m.text for m in await store.history(PEER, 10)] == ["before"]
        await store.set_verified(PEER, "12345 " * 11 + "12345", now=7)
        await store.set_verified(PEER, "54321", now=8)  # confirmed again: the latest wins
        assert await store.verified_marks() == {PEER: ("54321", 8, None)}
    async with open_database(db_path, key=db_key) as db:
        store = ChatStore(db)
        assert await store.verified_marks() == {PEER: ("54321", 8, None)}
        await store.clear_verified(PEER)
        assert await store.verified_marks() == {}


async def test_v5_on_an_empty_v4_database(db_path: Path, db_key: bytes | None) -> None:
    async with Database(db_path, MIGRATIONS[:4], key=db_key):
        pass
    async with open_database(db_path, key=db_key) as db:
        store = ChatStore(db)
        assert await store.unread_counts() == {}
        await store.put_contact(PEER, state=ContactState.FRIEND, now=1)
        await store.add_incoming(PEER, [IncomingMessage(mid(1), 1, 1, "first")], now=1)
        assert await store.unread_counts() == {PEER: 1}


# --- settings --------------------------------------------------------------------------------


async def test_settings(db: Database) -> None:
    settings = Settings(db)
    assert await settings.get("name") is None
    await settings.set("name", "Ann")
    await settings.set("name", "Bea")
    await settings.set("other", "")
    assert await settings.get("name") == "Bea"
    assert await settings.get("other") == ""
