"""Durable state of file transfers (table ``transfers``, schema v4 in
:mod:`p2pchat.storage.schema`).

Every state change is committed before it is acted on or announced, so a daemon killed at any
point restarts knowing each transfer's state, how many bytes of an incoming file are verified
and on disk, and which outcome it still owes the peer.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from p2pchat.files.state import Direction, TState
from p2pchat.storage.database import Database

OFFER_NOTICE = "offer"


@dataclass(frozen=True, slots=True)
class Transfer:
    tid: bytes
    peer_id: str
    direction: Direction
    name: str
    size: int
    hash: bytes
    state: TState
    created_at: int
    updated_at: int
    source: str | None = None  # out: the file being sent
    mtime_ns: int | None = None  # out: its modification time when offered
    part_path: str | None = None  # in: partial file while active
    final_path: str | None = None  # in: the finished file
    done_bytes: int = 0  # in: verified bytes on disk; out: bytes sent in the latest session
    data_path: str | None = None  # "tcp" or "stream": how bytes last flowed
    error: str = ""
    notice: str | None = None  # owed to the peer: OFFER_NOTICE or a file-end outcome
    notice_reason: str = ""

    @property
    def id_hex(self) -> str:
        return self.tid.hex()


def _transfer(row: sqlite3.Row) -> Transfer:
    return Transfer(
        tid=bytes(row["tid"]),
        peer_id=row["peer_id"],
        direction=Direction(row["direction"]),
        name=row["name"],
        size=row["size"],
        hash=bytes(row["hash"]),
        state=TState(row["state"]),
        source=row["source"],
        mtime_ns=row["mtime_ns"],
        part_path=row["part_path"],
        final_path=row["final_path"],
        done_bytes=row["done_bytes"],
        data_path=row["data_path"],
        error=row["error"],
        notice=row["notice"],
        notice_reason=row["notice_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_UPDATABLE = frozenset(
    {
        "state",
        "part_path",
        "final_path",
        "done_bytes",
        "data_path",
        "error",
        "notice",
        "notice_reason",
    }
)


class TransferStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, t: Transfer) -> tuple[Transfer, bool]:
        """Insert ``t``; if its ID exists already (a repeated offer), return the stored one
        and False."""

        def fn(conn: sqlite3.Connection) -> tuple[Transfer, bool]:
            row = conn.execute("SELECT * FROM transfers WHERE tid = ?", (t.tid,)).fetchone()
            if row is not None:
                return _transfer(row), False
            conn.execute(
                "INSERT INTO transfers (tid, peer_id, direction, name, size, hash, state, source,"
                " mtime_ns, part_path, final_path, done_bytes, data_path, error, notice,"
                " notice_reason, created_at, updated_at) VALUES"
                " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    t.tid,
                    t.peer_id,
                    t.direction.value,
                    t.name,
                    t.size,
                    t.hash,
                    t.state.value,
                    t.source,
                    t.mtime_ns,
                    t.part_path,
                    t.final_path,
                    t.done_bytes,
                    t.data_path,
                    t.error,
                    t.notice,
                    t.notice_reason,
                    t.created_at,
                    t.updated_at,
                ),
            )
            return t, True

        return await self._db.run(fn)

    async def get(self, tid: bytes) -> Transfer | None:
        def fn(conn: sqlite3.Connection) -> Transfer | None:
            row = conn.execute("SELECT * FROM transfers WHERE tid = ?", (tid,)).fetchone()
            return _transfer(row) if row else None

        return await self._db.run(fn)

    async def all(self) -> list[Transfer]:
        def fn(conn: sqlite3.Connection) -> list[Transfer]:
            rows = conn.execute("SELECT * FROM transfers ORDER BY created_at, tid").fetchall()
            return [_transfer(r) for r in rows]

        return await self._db.run(fn)

    async def update(
        self, tid: bytes, now: int, *, durable: bool = True, **fields: Any
    ) -> Transfer | None:
        """Set ``fields`` (states as :class:`TState`). Progress updates may pass
        ``durable=False``: losing one only means re-receiving a little."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = {k: (v.value if isinstance(v, TState) else v) for k, v in fields.items()}

        def fn(conn: sqlite3.Connection) -> Transfer | None:
            sets = ", ".join(f"{k} = ?" for k in values)
            row = conn.execute(
                f"UPDATE transfers SET {sets}, updated_at = ? WHERE tid = ? RETURNING *",
                (*values.values(), now, tid),
            ).fetchone()
            return _transfer(row) if row else None

        return await self._db.run(fn, durable=durable)

    async def delete(self, tids: list[bytes]) -> None:
        """Forget these transfers' records (ended ones pruned by a per-friend quota)."""

        def fn(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM transfers WHERE tid = ?", [(tid,) for tid in tids])

        await self._db.run(fn)

    async def clear_notice(self, tid: bytes, notice: str) -> None:
        """The peer confirmed ``notice``; stop owing it (unless it changed meanwhile)."""

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE transfers SET notice = NULL WHERE tid = ? AND notice = ?", (tid, notice)
            )

        await self._db.run(fn)
