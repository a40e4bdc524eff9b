"""Groups in the identity's database (schema v10): each group's membership log and status,
its messages, messages waiting for their sender's key, our sender keys (and which member
still needs each), and the keys members gave us.

Every change to a sender key's state happens in the job that stores the message it sealed,
so a crash never leaves the key's ratchet and the messages apart. Keys are pickled encrypted
with the identity's Olm pickle key (:func:`p2pchat.ratchet.pair.pickle_key`); a key's export
waiting to be given to members is kept sealed with the same key.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeVar

import cbor2
import nacl.secret

from p2pchat.groups import frames
from p2pchat.groups.timeline import MessageRef
from p2pchat.ratchet.megolm import ReceivedKey, SenderKey
from p2pchat.storage.database import Database

T = TypeVar("T")

MAX_KEYS_PER_SENDER: Final = 64
"""Sessions kept per member and group (a new one per membership change or 1000 messages)."""
MAX_PENDING_PER_GROUP: Final = 5000
"""Messages held for a sender key we do not have yet; past this the oldest go (sync brings
them again once the key is here)."""


class GroupStatus(Enum):
    INVITED = "invited"
    """A friend added us; we have not joined (we take part in nothing yet)."""
    JOINED = "joined"
    DECLINED = "declined"
    LEFT = "left"
    REMOVED = "removed"


@dataclass(frozen=True)
class StoredGroup:
    group_id: bytes
    status: GroupStatus
    inviter: str
    entries: list[bytes]
    refs: list[MessageRef]


@dataclass(frozen=True)
class GroupMessage:
    group_id: bytes
    row: int
    sender: str
    seq: int
    clock: int
    msg_id: bytes
    text: str
    sent_at: int
    stored_at: int


@dataclass(frozen=True)
class OurKey:
    key: SenderKey
    made_for: frozenset[str]


class GroupStore:
    def __init__(self, db: Database, pickle_key: bytes) -> None:
        self.db = db
        self._key = pickle_key
        self._box = nacl.secret.SecretBox(pickle_key)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.db.run(fn)

    # --- groups and logs ----------------------------------------------------------------------

    async def load_all(self) -> list[StoredGroup]:
        def fn(conn: sqlite3.Connection) -> list[StoredGroup]:
            out = []
            for gid, status, inviter in conn.execute(
                "SELECT group_id, status, inviter FROM groups ORDER BY created_at"
            ).fetchall():
                entries = [
                    bytes(r[0])
                    for r in conn.execute(
                        "SELECT raw FROM group_log WHERE group_id = ? ORDER BY version", (gid,)
                    )
                ]
                refs = [
                    MessageRef(r[0], r[1], r[2], bytes(r[3]))
                    for r in conn.execute(
                        "SELECT sender, seq, clock, msg_id FROM group_messages WHERE group_id = ?",
                        (gid,),
                    )
                ]
                out.append(StoredGroup(bytes(gid), GroupStatus(status), inviter, entries, refs))
            return out

        return await self.db.run(fn)

    async def add_group(
        self, group_id: bytes, status: GroupStatus, inviter: str, entries: Sequence[bytes]
    ) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            now = int(time.time() * 1000)
            conn.execute(
                "INSERT INTO groups (group_id, status, inviter, created_at, updated_at) "
                "VALUES (?,?,?,?,?)",
                (group_id, status.value, inviter, now, now),
            )
            self._write_log(conn, group_id, 0, entries)

        await self.db.run(fn)

    async def save_log(self, group_id: bytes, first: int, entries: Sequence[bytes]) -> None:
        """The log's entries from version ``first`` on are now ``entries`` (appended, or a
        fork's winning branch replacing ours)."""
        await self.db.run(lambda conn: self._write_log(conn, group_id, first, entries))

    @staticmethod
    def _write_log(
        conn: sqlite3.Connection, group_id: bytes, first: int, entries: Sequence[bytes]
    ) -> None:
        conn.execute("DELETE FROM group_log WHERE group_id = ? AND version >= ?", (group_id, first))
        conn.executemany(
            "INSERT INTO group_log (group_id, version, raw) VALUES (?,?,?)",
            [(group_id, first + i, raw) for i, raw in enumerate(entries)],
        )

    async def set_status(
        self, group_id: bytes, status: GroupStatus, *, inviter: str | None = None
    ) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE groups SET status = ?, updated_at = ? WHERE group_id = ?",
                (status.value, int(time.time() * 1000), group_id),
            )
            if inviter is not None:
                conn.execute(
                    "UPDATE groups SET inviter = ? WHERE group_id = ?", (inviter, group_id)
                )
            if status in (GroupStatus.LEFT, GroupStatus.REMOVED, GroupStatus.DECLINED):
                # Nothing more is sealed with our keys or opened with theirs.
                for table in ("group_keys_owed", "group_pending"):
                    conn.execute(f"DELETE FROM {table} WHERE group_id = ?", (group_id,))

        await self.db.run(fn)

    # --- our messages -------------------------------------------------------------------------

    def our_key(self, conn: sqlite3.Connection, group_id: bytes) -> OurKey | None:
        row = conn.execute(
            "SELECT pickle, members, created_at FROM group_sender_keys WHERE group_id = ? "
            "ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (group_id,),
        ).fetchone()
        if row is None:
            return None
        key = SenderKey.from_pickle(row[0], self._key, row[2] / 1000)
        return OurKey(key, frozenset(cbor2.loads(row[1])))

    def new_key(
        self,
        conn: sqlite3.Connection,
        group_id: bytes,
        made_for: frozenset[str],
        me: str,
        first_seq: int,
    ) -> OurKey:
        """A new sender key for ``made_for``, first sealing our message ``first_seq``; each
        of them but us is owed its export."""
        key = SenderKey.create(time.time())
        conn.execute(
            "INSERT INTO group_sender_keys (group_id, session_id, pickle, shared, members, "
            "first_seq, created_at) VALUES (?,?,?,?,?,?,?)",
            (
                group_id,
                key.session_id,
                key.pickle(self._key),
                bytes(self._box.encrypt(key.share())),
                cbor2.dumps(sorted(made_for)),
                first_seq,
                int(key.created_at * 1000),
            ),
        )
        conn.executemany(
            "INSERT INTO group_keys_owed (group_id, session_id, member) VALUES (?,?,?)",
            [(group_id, key.session_id, m) for m in sorted(made_for - {me})],
        )
        return OurKey(key, made_for)

    def save_key(self, conn: sqlite3.Connection, group_id: bytes, key: SenderKey) -> None:
        conn.execute(
            "UPDATE group_sender_keys SET pickle = ? WHERE group_id = ? AND session_id = ?",
            (key.pickle(self._key), group_id, key.session_id),
        )

    def insert_message(
        self,
        conn: sqlite3.Connection,
        frame: frames.Message,
        sender: str,
        text: str,
        sent_at: int,
    ) -> GroupMessage:
        now = int(time.time() * 1000)
        cur = conn.execute(
            "INSERT INTO group_messages (group_id, sender, seq, clock, msg_id, version, "
            "session_id, body, text, sent_at, stored_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                frame.group_id,
                sender,
                frame.seq,
                frame.clock,
                frame.msg_id,
                frame.version,
                frame.session_id,
                frame.body,
                text,
                sent_at,
                now,
            ),
        )
        assert cur.lastrowid is not None
        return GroupMessage(
            frame.group_id,
            cur.lastrowid,
            sender,
            frame.seq,
            frame.clock,
            frame.msg_id,
            text,
            sent_at,
            now,
        )

    # --- keys owed and received ---------------------------------------------------------------

    async def owed_to(self, group_id: bytes, member: str) -> list[tuple[str, bytes, int]]:
        """(session ID, export, first seq) of our keys ``member`` is owed, oldest first."""

        def fn(conn: sqlite3.Connection) -> list[tuple[str, bytes, int]]:
            rows = conn.execute(
                "SELECT k.session_id, k.shared, k.first_seq FROM group_keys_owed o "
                "JOIN group_sender_keys k "
                "ON k.group_id = o.group_id AND k.session_id = o.session_id "
                "WHERE o.group_id = ? AND o.member = ? ORDER BY k.created_at",
                (group_id, member),
            ).fetchall()
            return [(r[0], bytes(self._box.decrypt(bytes(r[1]))), int(r[2])) for r in rows]

        return await self.db.run(fn)

    async def key_given(self, group_id: bytes, session_id: str, member: str) -> None:
        await self.db.run(
            lambda conn: conn.execute(
                "DELETE FROM group_keys_owed WHERE group_id = ? AND session_id = ? AND member = ?",
                (group_id, session_id, member),
            )
        )

    async def drop_owed(self, group_id: bytes, members: frozenset[str]) -> None:
        """Those no longer members are owed nothing."""

        def fn(conn: sqlite3.Connection) -> None:
            for member in members:
                conn.execute(
                    "DELETE FROM group_keys_owed WHERE group_id = ? AND member = ?",
                    (group_id, member),
                )

        await self.db.run(fn)

    async def received_keys(self, group_id: bytes) -> dict[tuple[str, str], ReceivedKey]:
        """(sender, session ID) → the key that member gave us."""

        def fn(conn: sqlite3.Connection) -> dict[tuple[str, str], ReceivedKey]:
            return {
                (r[0], r[1]): ReceivedKey.from_pickle(r[2], self._key)
                for r in conn.execute(
                    "SELECT sender, session_id, pickle FROM group_received_keys WHERE group_id = ?",
                    (group_id,),
                )
            }

        return await self.db.run(fn)

    async def add_received_key(
        self, group_id: bytes, sender: str, session_id: str, key: ReceivedKey
    ) -> list[str]:
        """Store a member's key (kept per member: a member who passes another's key off as
        its own only gets a key that opens nothing in its name); the sessions of that member
        dropped to stay within ``MAX_KEYS_PER_SENDER``, oldest first."""

        def fn(conn: sqlite3.Connection) -> list[str]:
            conn.execute(
                "INSERT OR IGNORE INTO group_received_keys (group_id, sender, session_id, "
                "pickle, received_at) VALUES (?,?,?,?,?)",
                (group_id, sender, session_id, key.pickle(self._key), time.time_ns()),
            )
            old = [
                r[0]
                for r in conn.execute(
                    "SELECT session_id FROM group_received_keys WHERE group_id = ? AND "
                    "sender = ? ORDER BY received_at DESC LIMIT -1 OFFSET ?",
                    (group_id, sender, MAX_KEYS_PER_SENDER),
                )
            ]
            for session in old:
                conn.execute(
                    "DELETE FROM group_received_keys WHERE group_id = ? AND sender = ? AND "
                    "session_id = ?",
                    (group_id, sender, session),
                )
            return old

        return await self.db.run(fn)

    async def floors(self, group_id: bytes) -> dict[str, tuple[int, int]]:
        """sender → (floor, the join version it was set for)."""

        def fn(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
            return {
                r[0]: (int(r[1]), int(r[2]))
                for r in conn.execute(
                    "SELECT sender, floor, join_version FROM group_floors WHERE group_id = ?",
                    (group_id,),
                )
            }

        return await self.db.run(fn)

    async def set_floor(self, group_id: bytes, sender: str, floor: int, join_version: int) -> None:
        """Record ``sender``'s floor; what we held aside of its messages below it goes (we
        can never open those)."""

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO group_floors (group_id, sender, floor, join_version) "
                "VALUES (?,?,?,?) ON CONFLICT (group_id, sender) DO UPDATE SET "
                "floor = excluded.floor, join_version = excluded.join_version",
                (group_id, sender, floor, join_version),
            )
            conn.execute(
                "DELETE FROM group_pending WHERE group_id = ? AND sender = ? AND seq <= ?",
                (group_id, sender, floor),
            )

        await self.db.run(fn)

    # --- messages in and out ------------------------------------------------------------------

    async def hold_pending(self, frame: frames.Message, sender: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            raw = frames.encode(frame)
            # Keyed by the whole frame's digest: a forged copy with a genuine message's ID
            # and seq does not keep the genuine one out.
            conn.execute(
                "INSERT OR IGNORE INTO group_pending (group_id, sender, seq, digest, session_id, "
                "frame, stored_at) VALUES (?,?,?,?,?,?,?)",
                (
                    frame.group_id,
                    sender,
                    frame.seq,
                    hashlib.blake2b(raw, digest_size=16).digest(),
                    frame.session_id,
                    raw,
                    time.time_ns(),
                ),
            )
            conn.execute(
                "DELETE FROM group_pending WHERE group_id = ? AND rowid NOT IN (SELECT rowid "
                "FROM group_pending WHERE group_id = ? ORDER BY stored_at DESC LIMIT ?)",
                (frame.group_id, frame.group_id, MAX_PENDING_PER_GROUP),
            )

        await self.db.run(fn)

    async def take_pending(
        self, group_id: bytes, sender: str, session_id: str
    ) -> list[frames.Message]:
        """The held messages of one member's session (removed: the caller opens them now)."""

        def fn(conn: sqlite3.Connection) -> list[bytes]:
            where = "WHERE group_id = ? AND sender = ? AND session_id = ?"
            args = (group_id, sender, session_id)
            rows = conn.execute(
                f"SELECT frame FROM group_pending {where} ORDER BY seq", args
            ).fetchall()
            conn.execute(f"DELETE FROM group_pending {where}", args)
            return [bytes(r[0]) for r in rows]

        out = []
        for raw in await self.db.run(fn):
            decoded = frames.GroupDecoder().feed(raw)
            if len(decoded) == 1 and isinstance(decoded[0], frames.Message):
                out.append(decoded[0])
        return out

    async def pending_count(self, group_id: bytes) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT COUNT(*) FROM group_pending WHERE group_id = ?", (group_id,)
            ).fetchone()
            return int(row[0])

        return await self.db.run(fn)

    async def frames_of(
        self, group_id: bytes, wanted: Sequence[tuple[str, int]], sender_key: Callable[[str], bytes]
    ) -> list[frames.Message]:
        """The stored messages ``wanted`` ((sender, seq)), as frames to pass on."""

        def fn(conn: sqlite3.Connection) -> list[frames.Message]:
            out = []
            for sender, seq in wanted:
                row = conn.execute(
                    "SELECT msg_id, clock, version, session_id, body FROM group_messages "
                    "WHERE group_id = ? AND sender = ? AND seq = ?",
                    (group_id, sender, seq),
                ).fetchone()
                if row is not None:
                    out.append(
                        frames.Message(
                            group_id,
                            bytes(row[0]),
                            sender_key(sender),
                            seq,
                            row[1],
                            row[2],
                            row[3],
                            bytes(row[4]),
                        )
                    )
            return out

        return await self.db.run(fn)

    async def history(self, group_id: bytes, limit: int) -> list[GroupMessage]:
        """The newest ``limit`` messages, in the order every member shows them."""

        def fn(conn: sqlite3.Connection) -> list[GroupMessage]:
            rows = conn.execute(
                "SELECT id, sender, seq, clock, msg_id, text, sent_at, stored_at FROM "
                "group_messages WHERE group_id = ? ORDER BY clock DESC, sender DESC, seq DESC "
                "LIMIT ?",
                (group_id, limit),
            ).fetchall()
            return [
                GroupMessage(group_id, r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7])
                for r in reversed(rows)
            ]

        return await self.db.run(fn)
