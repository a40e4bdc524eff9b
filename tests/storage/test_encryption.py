"""History and transfer metadata at rest (p2pchat.storage.encryption), on real files: what is on
disk, a wrong key, the migration of a plain database and crashes in the middle of it (real
processes killed with SIGKILL at each step)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from p2pchat.chat.friendship import ContactState
from p2pchat.chat.store import ChatStore, IncomingMessage
from p2pchat.storage import encryption
from p2pchat.storage.database import Database, DatabaseError
from p2pchat.storage.schema import MIGRATIONS, open_database
from p2pchat.storage.settings import Settings
from tests.conftest import DB_TEST_KEY
from tests.harness import REPO

PEER = "12D3KooWPeerA"
MARKER = "zebra-marker-7f3a"
FILE_MARKER = "secret-plans-9c1e.pdf"
OTHER_KEY = bytes(32)


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def on_disk(path: Path) -> bytes:
    """Every byte SQLite keeps for the database: the file, its WAL and shared memory."""
    out = b""
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        if (path.parent / name).exists():
            out += (path.parent / name).read_bytes()
    return out


def _insert_transfer(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO transfers (tid, peer_id, direction, name, size, hash, state, created_at,"
        " updated_at) VALUES (?, ?, 'in', ?, 10, ?, 'done', 1, 1)",
        (b"t" * 16, PEER, FILE_MARKER, b"h" * 32),
    )


async def _fill(db: Database) -> None:
    """A contact, messages both ways, a setting and a transfer, each naming the markers."""
    store = ChatStore(db)
    await store.put_contact(PEER, state=ContactState.FRIEND, now=1, name=f"Ann {MARKER}")
    await store.add_outgoing(PEER, mid(1), f"out {MARKER}", now=1)
    await store.add_incoming(PEER, [IncomingMessage(mid(2), 1, 2, f"in {MARKER}")], now=2)
    await Settings(db).set("name", MARKER)
    await db.run(_insert_transfer)


def _dump(conn: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {t: sorted(tuple(r) for r in conn.execute(f"SELECT * FROM {t}")) for t in sorted(tables)}


async def _dump_db(db: Database) -> dict[str, list[tuple[object, ...]]]:
    return await db.run(_dump)


def _plain_with_hot_wal(tmp_path: Path) -> tuple[Path, dict[str, list[tuple[object, ...]]]]:
    """A plain database as a crash of today's daemon leaves it: the newest rows only in the
    WAL (copied while a writer still has it open, so nothing was checkpointed)."""
    live = tmp_path / "live" / "p2pchat.db"
    live.parent.mkdir()
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    for n, migrate in enumerate(MIGRATIONS):
        conn.execute("BEGIN")
        migrate(conn)
        conn.execute(f"PRAGMA user_version={n + 1}")
        conn.execute("COMMIT")
    conn.execute(
        "INSERT INTO contacts (peer_id, name, state, created_at, updated_at)"
        " VALUES (?, ?, 'friend', 1, 1)",
        (PEER, f"Ann {MARKER}"),
    )
    for n in range(50):
        conn.execute(
            "INSERT INTO messages (peer_id, msg_id, outgoing, seq, sent_at, stored_at, text,"
            " state) VALUES (?, ?, 1, ?, 1, 1, ?, 'pending')",
            (PEER, mid(n), n + 1, f"m{n} {MARKER}"),
        )
    _insert_transfer(conn)
    conn.row_factory = sqlite3.Row
    expected = _dump(conn)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in os.listdir(live.parent):
        shutil.copy(live.parent / name, crashed / name)
    conn.close()
    path = crashed / "p2pchat.db"
    assert (crashed / "p2pchat.db-wal").stat().st_size > 0
    assert encryption.file_state(path) == "plain"
    return path, expected


# --- what is on disk ------------------------------------------------------------------------


async def test_no_plaintext_on_disk(db_path: Path, db_key: bytes | None) -> None:
    """Encrypted: neither the file nor its WAL holds a message, a name or a file name; plain
    (the same test on the other store): they do, which shows the test can see them."""
    async with open_database(db_path, key=db_key) as db:
        await _fill(db)
        assert (db_path.parent / (db_path.name + "-wal")).stat().st_size > 0
        live = on_disk(db_path)
        temp_store = await db.run(lambda c: c.execute("PRAGMA temp_store").fetchone()[0])
    closed = on_disk(db_path)  # after the checkpoint of the close
    for data in (live, closed):
        for marker in (MARKER, FILE_MARKER):
            assert (marker.encode() in data) is (db_key is None)
    if db_key is not None:
        assert encryption.file_state(db_path) == "encrypted"
        assert temp_store == 2  # MEMORY: no temporary file either
    else:
        assert encryption.file_state(db_path) == "plain"


async def test_wrong_key_is_refused_clearly_and_changes_nothing(db_path: Path) -> None:
    async with open_database(db_path, key=DB_TEST_KEY) as db:
        await _fill(db)
    before = hashlib.sha256(on_disk(db_path)).digest()
    with pytest.raises(DatabaseError, match="encrypted with a different key") as wrong:
        async with open_database(db_path, key=OTHER_KEY):
            pass  # pragma: no cover
    assert "file is not a database" not in str(wrong.value)
    with pytest.raises(DatabaseError, match=r"encrypted .* no passphrase") as plain:
        async with open_database(db_path):
            pass  # pragma: no cover
    assert "file is not a database" not in str(plain.value)
    assert hashlib.sha256(on_disk(db_path)).digest() == before
    assert sorted(os.listdir(db_path.parent)) == [db_path.name]
    async with open_database(db_path, key=DB_TEST_KEY) as db:
        texts = [m.text for m in await ChatStore(db).history(PEER, 10)]
    assert texts == [f"out {MARKER}", f"in {MARKER}"]


# --- migration ------------------------------------------------------------------------------


async def test_migration_keeps_every_row_and_leaves_no_plaintext(tmp_path: Path) -> None:
    path, expected = _plain_with_hot_wal(tmp_path)
    async with open_database(path, key=DB_TEST_KEY) as db:
        assert db.encrypted
        assert await _dump_db(db) == expected
        assert await db.run(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == len(
            MIGRATIONS
        )
        assert await db.run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
        await ChatStore(db).add_outgoing(PEER, mid(99), "after", now=5)
    assert encryption.file_state(path) == "encrypted"
    # The old file is gone: no plain copy, WAL or unfinished copy is left beside it.
    assert sorted(os.listdir(path.parent)) == [path.name]
    assert MARKER.encode() not in on_disk(path)
    async with open_database(path, key=DB_TEST_KEY) as db:
        history = await ChatStore(db).history(PEER, 100)
    assert len(history) == 51 and history[-1].text == "after"


@pytest.mark.parametrize("step", encryption.MIGRATION_STEPS)
async def test_failed_migration_keeps_the_plain_database(
    tmp_path: Path, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error at any step (e.g. the disk fills up) leaves the plain database whole, or the
    encrypted one once renamed, and a later start finishes the job."""
    path, expected = _plain_with_hot_wal(tmp_path)

    def fail(at: str) -> None:
        if at == step:
            raise OSError(28, f"No space left on device (injected at {at})")

    monkeypatch.setattr(encryption, "step_hook", fail)
    with pytest.raises(DatabaseError, match="injected"):
        async with open_database(path, key=DB_TEST_KEY):
            pass  # pragma: no cover
    renamed = step == "renamed"
    assert encryption.file_state(path) == ("encrypted" if renamed else "plain")
    assert not path.with_name(path.name + encryption.TMP_SUFFIX).exists()
    if not renamed:
        async with open_database(path) as db:
            assert await _dump_db(db) == expected
    monkeypatch.setattr(encryption, "step_hook", lambda at: None)
    async with open_database(path, key=DB_TEST_KEY) as db:
        assert await _dump_db(db) == expected


_KILLER = """
import os, signal, sys
from pathlib import Path
from p2pchat.storage import encryption

def hook(at):
    if at == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)

encryption.step_hook = hook
encryption.encrypt_in_place(Path(sys.argv[1]), bytes.fromhex(sys.argv[3]))
"""


@pytest.mark.parametrize("step", encryption.MIGRATION_STEPS)
async def test_sigkill_mid_migration_recovers(tmp_path: Path, step: str) -> None:
    """A process killed with SIGKILL right after each step of the migration leaves a
    database that opens with every row: the plain one before the rename, the encrypted one
    after it; the next start completes the migration and removes the unfinished copy."""
    path, expected = _plain_with_hot_wal(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, str(path), step, DB_TEST_KEY.hex()],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert encryption.file_state(path) == ("encrypted" if step == "renamed" else "plain")
    async with open_database(path, key=DB_TEST_KEY) as db:
        assert await _dump_db(db) == expected
    assert encryption.file_state(path) == "encrypted"
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_database_key_is_per_identity_and_not_the_seed() -> None:
    a, b = encryption.database_key(bytes(32)), encryption.database_key(b"\x01" * 32)
    assert len(a) == encryption.KEY_BYTES and a != b and a != bytes(32)
    assert encryption.database_key(bytes(32)) == a  # the same identity opens its database


async def test_migration_refuses_while_another_connection_has_the_file(tmp_path: Path) -> None:
    """Someone else (say the sqlite3 shell) has the plain file open and could still write to
    its WAL after the copy is made: the migration refuses instead of losing those rows."""
    path, expected = _plain_with_hot_wal(tmp_path)
    other = sqlite3.connect(path)
    try:
        other.execute("SELECT count(*) FROM messages").fetchone()
        proc = subprocess.run(
            [sys.executable, "-c", _KILLER, str(path), "renamed", DB_TEST_KEY.hex()],
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 1 and b"locked" in proc.stderr, proc.stderr.decode()
        assert encryption.file_state(path) == "plain"
        other.row_factory = sqlite3.Row
        assert _dump(other) == expected
    finally:
        other.close()
    assert not path.with_name(path.name + encryption.TMP_SUFFIX).exists()
