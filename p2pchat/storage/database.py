"""A SQLite connection owned by one worker thread, with group commit, driven from trio.

SQLite calls block, so none may run on the trio thread (a blocked loop stalls every peer).
All work goes through :meth:`Database.run`, which queues a function for the worker thread.
The worker drains whatever is queued and runs it in *one* transaction, each job in its own
savepoint, then commits once (``synchronous=FULL``: the commit is on disk when it returns)
and only then reports results. A burst of N writes therefore costs one fsync, not N, and no
caller ever hears "stored" before the data is durable.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar, cast

import trio

from p2pchat.storage import encryption
from p2pchat.storage.encryption import SQLITE_DATABASE_ERRORS, SQLITE_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_BATCH: Final = 512


class DatabaseError(Exception):
    """The database could not do what was asked (disk full, corrupt file, closed...)."""


class DiskFullError(DatabaseError):
    """SQLite reported that the disk (or quota) is full; the failing write was not stored."""


class _BatchAborted(Exception):
    """SQLite rolled the whole transaction back; every job of the batch failed."""


@dataclass
class _Job(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    done: Callable[[_Job[T]], None]
    durable: bool = True
    result: T | None = None
    error: BaseException | None = None


Migration = Callable[[sqlite3.Connection], None]


class Database:
    """One SQLite file, one worker thread. Use as ``async with Database(path, migrations)``.

    With a ``key`` (32 bytes) the file is SQLCipher-encrypted (:mod:`.encryption`); a plain
    file found there is migrated to an encrypted one first. Without, it is plain SQLite.
    """

    def __init__(
        self, path: Path, migrations: list[Migration], *, key: bytes | None = None
    ) -> None:
        if key is not None and len(key) != encryption.KEY_BYTES:
            raise ValueError(f"database keys are {encryption.KEY_BYTES} bytes")
        self._path = path
        self._migrations = migrations
        self._key = key
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._synchronous_full = True

    async def __aenter__(self) -> Database:
        ready: trio.Event = trio.Event()
        token = trio.lowlevel.current_trio_token()
        failure: list[BaseException] = []

        def started(exc: BaseException | None) -> None:
            if exc is not None:
                failure.append(exc)
            token.run_sync_soon(ready.set)

        self._thread = threading.Thread(
            target=self._worker, args=(started,), name="p2pchat-db", daemon=True
        )
        self._thread.start()
        await ready.wait()
        if failure:
            # The worker is on its way out but may still be alive: mark the database closed
            # now, or a run() in that window would queue a job nobody will ever take.
            self._closed = True
            raise DatabaseError(f"cannot open database {self._path}: {failure[0]}")
        return self

    @property
    def encrypted(self) -> bool:
        """Whether the file is encrypted at rest (what ``status`` reports as ``at_rest``)."""
        return self._key is not None

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._thread is not None:
            # Shielded: on shutdown the worker must finish the queued jobs and close the file
            # before the process lets go of its data directory.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._thread.join)

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn(connection)`` in the worker, inside a transaction committed before return.

        ``durable=False`` is for writes that may be lost in a power cut (not in a crash of the
        process) because they can be redone, e.g. marking a message delivered: the receiver
        deduplicates the resend. A batch made only of such jobs commits without an fsync
        (``synchronous=NORMAL``, still crash-safe in WAL mode); any durable job in the batch
        makes the whole commit durable.

        If the calling task is cancelled the job still runs to completion (its result is
        dropped): a write is never half-done.
        """
        if self._closed or self._thread is None or not self._thread.is_alive():
            raise DatabaseError("database is closed")
        token = trio.lowlevel.current_trio_token()
        finished = trio.Event()

        def done(job: _Job[T]) -> None:
            token.run_sync_soon(finished.set)

        job: _Job[T] = _Job(fn=fn, done=done, durable=durable)
        self._queue.put(job)
        with trio.CancelScope(shield=True):
            await finished.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    # --- worker thread ---------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self._key is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
        else:
            encryption.remove_leftover(self._path)
            if encryption.file_state(self._path) == "plain":
                encryption.encrypt_in_place(self._path, self._key)
            conn = encryption.connect_encrypted(self._path)
        try:
            if self._key is not None:
                encryption.unlock(conn, self._key)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except SQLITE_ERRORS as exc:
                clear = encryption.not_a_plain_database(exc) if self._key is None else None
                if clear is not None:
                    raise clear from None
                raise
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(self._migrations):
            raise DatabaseError(
                f"database schema version {version} is newer than this p2pchat understands "
                f"({len(self._migrations)}); upgrade p2pchat"
            )
        for number in range(version, len(self._migrations)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._migrations[number](conn)
                conn.execute(f"PRAGMA user_version={number + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("database migrated to schema version %d", number + 1)

    def _worker(self, started: Callable[[BaseException | None], None]) -> None:
        try:
            conn = self._open()
        except BaseException as exc:
            started(exc)
            return
        started(None)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch: list[_Job[Any]] = [first]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job[Any]]) -> None:
        try:
            durable = any(job.durable for job in batch)
            if durable != self._synchronous_full:
                conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._synchronous_full = durable
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    job.result = job.fn(conn)
                    conn.execute("RELEASE job")
                except BaseException as exc:
                    if not conn.in_transaction:
                        # e.g. SQLITE_FULL can roll back the whole transaction, not just
                        # the statement: the earlier jobs' writes are gone too.
                        raise _BatchAborted() from exc
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    job.error = _translate(exc)
            conn.execute("COMMIT")
        except BaseException as exc:
            # _BatchAborted is only ever raised ``from exc``, so its __cause__ is set.
            err = _translate(
                cast(BaseException, exc.__cause__) if isinstance(exc, _BatchAborted) else exc
            )
            log.error("database commit failed: %s", err)
            if conn.in_transaction:
                with contextlib.suppress(*SQLITE_ERRORS):
                    conn.execute("ROLLBACK")
            for job in batch:
                job.result = None
                job.error = err
        for job in batch:
            job.done(job)


def _translate(exc: BaseException) -> BaseException:
    # Both drivers' classes (sqlcipher3's do not derive from sqlite3's); the codes are SQLite's.
    if isinstance(exc, SQLITE_DATABASE_ERRORS):
        text = str(exc)
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL or "full" in text.lower():
            return DiskFullError("the disk is full: nothing was stored")
        return DatabaseError(f"database error: {text}")
    return exc
