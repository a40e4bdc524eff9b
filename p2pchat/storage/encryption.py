"""The database at rest: SQLCipher when the identity has a passphrase, plain SQLite when not.

Why SQLCipher (through ``sqlcipher3``, the maintained binding with manylinux wheels): it
encrypts whole pages, so every query, index and the WAL keep working unchanged, and it
hides what per-row sealing cannot (table sizes, which peer has how many rows, indexes).

The key is derived from the identity's secret seed (:func:`database_key`), not from the
passphrase: the seed is only readable with the passphrase, deriving from it costs no second
Argon2id run at startup, and the key survives a future passphrase change. It is passed to
SQLCipher as a raw key, which skips SQLCipher's own PBKDF2. Without a passphrase the key file
holds the seed in clear, so encrypting the database with a key derived from it would add
nothing: the database then stays plain SQLite and ``status`` says ``"at_rest": "plain"``.

Everything here blocks (SQLite, fsync) and runs on the database's worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, cast

import sqlcipher3.dbapi2 as sqlcipher

log = logging.getLogger(__name__)

KEY_BYTES: Final = 32
_PERSON: Final = b"p2pchat-db-v1"
_PLAIN_HEADER: Final = b"SQLite format 3\x00"
TMP_SUFFIX: Final = ".encrypting"
"""Beside the database during a migration; a leftover one is an unfinished copy."""

SQLITE_ERRORS: Final = (sqlite3.Error, sqlcipher.Error)
"""Both drivers' error classes: sqlcipher3's do not derive from sqlite3's."""
SQLITE_DATABASE_ERRORS: Final = (sqlite3.DatabaseError, sqlcipher.DatabaseError)
"""What SQLite itself reported (not misuse of the driver, e.g. a bad parameter type)."""


class WrongKeyError(Exception):
    """The database file cannot be read with the key given (or without one)."""


def database_key(seed: bytes) -> bytes:
    """The database key of an identity: a keyed BLAKE2b of its secret seed with a domain label
    (the seed also signs; the label keeps the two uses apart)."""
    return hashlib.blake2b(b"", key=seed, person=_PERSON, digest_size=KEY_BYTES).digest()


def file_state(path: Path) -> str:
    """``"missing"`` (absent or empty: SQLite creates it), ``"plain"`` (a SQLite header) or
    ``"encrypted"`` (anything else: SQLCipher's first 16 bytes are a random salt)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_PLAIN_HEADER))
    except FileNotFoundError:
        return "missing"
    if not head:
        return "missing"
    return "plain" if head == _PLAIN_HEADER else "encrypted"


def _key_pragma(key: bytes) -> str:
    if len(key) != KEY_BYTES:
        raise ValueError(f"database keys are {KEY_BYTES} bytes")
    return f"\"x'{key.hex()}'\""


def connect_encrypted(path: Path) -> sqlite3.Connection:
    """A SQLCipher connection, typed as the sqlite3 one it is call-compatible with (the one
    place where the two driver types meet)."""
    conn = sqlcipher.connect(str(path), isolation_level=None, check_same_thread=True)
    conn.row_factory = sqlcipher.Row
    return cast(sqlite3.Connection, conn)


def unlock(conn: sqlite3.Connection, key: bytes) -> None:
    """Give ``conn`` its key and prove it right by reading page 1; :class:`WrongKeyError` if
    it does not decrypt. Nothing is written before the proof."""
    # SQLCipher would also print "hmac check failed" lines on stderr: the error below says it.
    conn.execute("PRAGMA cipher_log_level = NONE")
    conn.execute(f"PRAGMA key = {_key_pragma(key)}")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except SQLITE_ERRORS as exc:
        if _is_not_a_database(exc):
            raise WrongKeyError(
                "the database is encrypted with a different key (or is not a p2pchat "
                "database); it was left untouched"
            ) from None
        raise
    # Sorts and temporary indexes stay in memory, never in an unencrypted temp file.
    conn.execute("PRAGMA temp_store = MEMORY")


def _is_not_a_database(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_NOTADB or "not a database" in str(exc)


def not_a_plain_database(exc: BaseException) -> WrongKeyError | None:
    """For a plain open that failed: the clear error if the file is (probably) encrypted."""
    if not _is_not_a_database(exc):
        return None
    return WrongKeyError(
        "the database is encrypted (or is not a p2pchat database), but this identity key has "
        "no passphrase; it was left untouched"
    )


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


StepHook = Callable[[str], Any]


def _no_hook(step: str) -> None:
    return None


step_hook: StepHook = _no_hook
"""Called after each migration step with its name; tests inject failures and kills here."""

MIGRATION_STEPS: Final = ("cleaned", "checkpointed", "exported", "verified", "synced", "renamed")


def remove_leftover(path: Path) -> None:
    """Delete an unfinished copy a crash mid-migration left (the original is intact)."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
        leftover.unlink(missing_ok=True)


def encrypt_in_place(path: Path, key: bytes) -> None:
    """Turn the plain database at ``path`` into an encrypted one with every row.

    The copy is built beside it and renamed over it, so a crash at any point leaves either
    the old plain database or the new encrypted one, never neither: the original is only
    changed by SQLite itself (a checkpoint) until the atomic rename.
    """
    remove_leftover(path)
    step_hook("cleaned")
    try:
        _encrypt_in_place(path, key)
    except BaseException:
        remove_leftover(path)  # e.g. the disk filled up: give its space back
        raise


def _encrypt_in_place(path: Path, key: bytes) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    plain = sqlcipher.connect(str(path), isolation_level=None)
    try:
        # Folds the WAL into the file and deletes it: the file alone then holds every row, and
        # no WAL of the plain database is left for SQLite to replay onto the encrypted one.
        mode = plain.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
        if str(mode).lower() != "delete":
            raise sqlcipher.OperationalError(f"cannot leave WAL mode (journal_mode={mode})")
        step_hook("checkpointed")
        version = int(plain.execute("PRAGMA user_version").fetchone()[0])
        plain.execute(f"ATTACH DATABASE ? AS encrypted KEY {_key_pragma(key)}", (str(tmp),))
        plain.execute("SELECT sqlcipher_export('encrypted')")
        # sqlcipher_export copies the schema and rows, not the header's user_version.
        plain.execute(f"PRAGMA encrypted.user_version = {version}")
        plain.execute("DETACH DATABASE encrypted")
    finally:
        plain.close()
    step_hook("exported")
    check = connect_encrypted(tmp)
    try:
        unlock(check, key)
        result = check.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok" or check.execute("PRAGMA user_version").fetchone()[0] != version:
            raise sqlcipher.DatabaseError(f"the encrypted copy failed its check: {result}")
    finally:
        check.close()
    step_hook("verified")
    _fsync_path(tmp)
    # The checkpoint already removed them; if one were left, SQLite would replay the plain
    # file's WAL onto the encrypted one. Removed before the rename: until then they are
    # empty (the plain file holds everything), after it they would be wrong.
    for side in ("-wal", "-shm"):
        path.with_name(path.name + side).unlink(missing_ok=True)
    step_hook("synced")
    os.replace(tmp, path)
    _fsync_path(path.parent, directory=True)
    step_hook("renamed")
    log.info("database encrypted at rest (migrated %s, schema version %d)", path.name, version)
