"""Chat's tables: contacts, messages (the outbox is the undelivered outgoing ones) and each
conversation's read mark.

Each method builds a small function run by :class:`~p2pchat.storage.database.Database` in its
worker thread and transaction; nothing here touches SQLite on the trio thread. The tables are
created by :mod:`p2pchat.storage.schema`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from p2pchat.chat.friendship import ContactState, Notice
from p2pchat.storage.database import Database


class MessageState(StrEnum):
    PENDING = "pending"  # outgoing, not yet acknowledged
    DELIVERED = "delivered"  # outgoing, the friend's daemon stored it
    RECEIVED = "received"  # incoming, stored here


@dataclass(frozen=True, slots=True)
class Contact:
    peer_id: str
    name: str
    their_name: str
    state: ContactState
    request_text: str
    addrs: tuple[str, ...]
    notice: Notice | None
    created_at: int
    updated_at: int

    @property
    def display_name(self) -> str:
        return self.name or self.their_name


@dataclass(frozen=True, slots=True)
class MessageRecord:
    row: int
    peer_id: str
    msg_id: bytes
    outgoing: bool
    seq: int
    sent_at: int
    stored_at: int
    delivered_at: int | None
    text: str
    state: MessageState
    holders: int = 0
    """Outgoing and pending: how many friends hold it for the offline recipient
    (:mod:`p2pchat.mailbox`); only :meth:`ChatStore.history` reads it."""


def _contact(row: sqlite3.Row) -> Contact:
    return Contact(
        peer_id=row["peer_id"],
        name=row["name"],
        their_name=row["their_name"],
        state=ContactState(row["state"]),
        request_text=row["request_text"],
        addrs=tuple(json.loads(row["addrs"])),
        notice=Notice(row["notice"]) if row["notice"] else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _message(row: sqlite3.Row) -> MessageRecord:
    return MessageRecord(
        row=row["id"],
        peer_id=row["peer_id"],
        msg_id=bytes(row["msg_id"]),
        outgoing=bool(row["outgoing"]),
        seq=row["seq"],
        sent_at=row["sent_at"],
        stored_at=row["stored_at"],
        delivered_at=row["delivered_at"],
        text=row["text"],
        state=MessageState(row["state"]),
        holders=int(row["holders"]) if "holders" in row.keys() else 0,  # noqa: SIM118
    )


def _descriptive(
    now: int,
    name: str | None,
    their_name: str | None,
    request_text: str | None,
    addrs: Sequence[str] | None,
) -> dict[str, Any]:
    """Column values for a contact update: the given (non-None) fields and the timestamp."""
    fields: dict[str, Any] = {"updated_at": now}
    if name is not None:
        fields["name"] = name
    if their_name is not None:
        fields["their_name"] = their_name
    if request_text is not None:
        fields["request_text"] = request_text
    if addrs is not None:
        fields["addrs"] = json.dumps(list(addrs))
    return fields


def _read_row(conn: sqlite3.Connection, peer_id: str) -> int:
    row = conn.execute("SELECT read_row FROM read_marks WHERE peer_id = ?", (peer_id,)).fetchone()
    return int(row[0]) if row else 0


def _unread_after(conn: sqlite3.Connection, peer_id: str, read_row: int) -> int:
    # Counted in the covering partial index messages_incoming: only the unread entries.
    row = conn.execute(
        "SELECT COUNT(*) FROM messages INDEXED BY messages_incoming "
        "WHERE peer_id = ? AND outgoing = 0 AND id > ?",
        (peer_id, read_row),
    ).fetchone()
    return int(row[0])


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    msg_id: bytes
    seq: int
    sent_at: int
    text: str
    sealed: tuple[int, bytes] | None = None
    """msg/2.0.0: the Olm message (kind, body) ``text`` is still to be opened from."""


Opener = Callable[[sqlite3.Connection, list[IncomingMessage]], list[IncomingMessage]]
"""Opens sealed messages inside the job that stores them (:mod:`p2pchat.chat.sealing`)."""


class ChatStore:
    """Contacts and messages, over the identity's :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def db(self) -> Database:
        """The database, for the concerns that keep their own tables in it (sealing)."""
        return self._db

    # --- contacts ----------------------------------------------------------------------------

    async def contact(self, peer_id: str) -> Contact | None:
        def fn(conn: sqlite3.Connection) -> Contact | None:
            row = conn.execute("SELECT * FROM contacts WHERE peer_id = ?", (peer_id,)).fetchone()
            return _contact(row) if row else None

        return await self._db.run(fn)

    async def contacts(self, states: Iterable[ContactState] | None = None) -> list[Contact]:
        wanted = [s.value for s in states] if states is not None else None

        def fn(conn: sqlite3.Connection) -> list[Contact]:
            rows = conn.execute("SELECT * FROM contacts ORDER BY created_at, peer_id").fetchall()
            found = [_contact(r) for r in rows]
            return [c for c in found if wanted is None or c.state.value in wanted]

        return await self._db.run(fn)

    async def put_contact(
        self,
        peer_id: str,
        *,
        state: ContactState,
        now: int,
        notice: Notice | None = None,
        name: str | None = None,
        their_name: str | None = None,
        request_text: str | None = None,
        addrs: Sequence[str] | None = None,
    ) -> Contact:
        """Create or update a contact. ``None`` keeps the stored value for the text fields;
        ``notice`` is always written (``None`` clears it)."""

        def fn(conn: sqlite3.Connection) -> Contact:
            conn.execute(
                "INSERT INTO contacts (peer_id, state, created_at, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT (peer_id) DO NOTHING",
                (peer_id, state.value, now, now),
            )
            fields = {
                "state": state.value,
                "notice": notice.value if notice else None,
                **_descriptive(now, name, their_name, request_text, addrs),
            }
            sets = ", ".join(f"{k} = ?" for k in fields)
            conn.execute(
                f"UPDATE contacts SET {sets} WHERE peer_id = ?", (*fields.values(), peer_id)
            )
            row = conn.execute("SELECT * FROM contacts WHERE peer_id = ?", (peer_id,)).fetchone()
            return _contact(row)

        return await self._db.run(fn)

    async def update_fields(
        self,
        peer_id: str,
        *,
        now: int,
        name: str | None = None,
        their_name: str | None = None,
        request_text: str | None = None,
        addrs: Sequence[str] | None = None,
    ) -> Contact | None:
        """Update the given descriptive fields only (never state or notice)."""

        def fn(conn: sqlite3.Connection) -> Contact | None:
            fields = _descriptive(now, name, their_name, request_text, addrs)
            sets = ", ".join(f"{k} = ?" for k in fields)
            row = conn.execute(
                f"UPDATE contacts SET {sets} WHERE peer_id = ? RETURNING *",
                (*fields.values(), peer_id),
            ).fetchone()
            return _contact(row) if row else None

        return await self._db.run(fn)

    async def clear_notice(self, peer_id: str, notice: Notice) -> None:
        """The peer confirmed ``notice``; stop owing it (unless it changed meanwhile)."""

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE contacts SET notice = NULL WHERE peer_id = ? AND notice = ?",
                (peer_id, notice.value),
            )

        await self._db.run(fn)

    async def delete_contact(self, peer_id: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM contacts WHERE peer_id = ?", (peer_id,))

        await self._db.run(fn)

    # --- messages ----------------------------------------------------------------------------

    async def add_outgoing(
        self, peer_id: str, msg_id: bytes, text: str, now: int
    ) -> tuple[MessageRecord, bool]:
        """Put a message in the outbox with the conversation's next sequence number.

        Returns (record, created). If a message with ``msg_id`` to this peer already exists
        (a client retrying), that one is returned unchanged and nothing is added; a reused ID
        with different text raises :class:`ValueError`.
        """

        def fn(conn: sqlite3.Connection) -> tuple[MessageRecord, bool]:
            existing = conn.execute(
                "SELECT * FROM messages WHERE peer_id = ? AND outgoing = 1 AND msg_id = ?",
                (peer_id, msg_id),
            ).fetchone()
            if existing is not None:
                if existing["text"] != text:
                    raise ValueError("message id already used for a different text")
                return _message(existing), False
            if (
                conn.execute("SELECT 1 FROM contacts WHERE peer_id = ?", (peer_id,)).fetchone()
                is None
            ):
                raise KeyError(peer_id)
            # Never reused, even across the contact being deleted and re-created.
            row = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE peer_id = ? AND outgoing = 1",
                (peer_id,),
            ).fetchone()
            cur = conn.execute(
                "INSERT INTO messages (peer_id, msg_id, outgoing, seq, sent_at, stored_at, text,"
                " state) VALUES (?,?,1,?,?,?,?,?) RETURNING *",
                (peer_id, msg_id, row[0], now, now, text, MessageState.PENDING.value),
            )
            return _message(cur.fetchone()), True

        return await self._db.run(fn)

    async def add_incoming(
        self,
        peer_id: str,
        messages: Sequence[IncomingMessage],
        now: int,
        opener: Opener | None = None,
    ) -> list[MessageRecord]:
        """Store received messages; returns only the ones not seen before (idempotent).
        Sealed ones are opened by ``opener`` in the same transaction, after the duplicates
        are left out (a message key opens once: a resend must not be opened again); if it
        raises, nothing is stored."""

        def fn(conn: sqlite3.Connection) -> list[MessageRecord]:
            stored: list[MessageRecord] = []
            fresh = [
                m
                for m in messages
                if conn.execute(
                    "SELECT 1 FROM messages WHERE peer_id = ? AND outgoing = 0 AND msg_id = ?",
                    (peer_id, m.msg_id),
                ).fetchone()
                is None
            ]
            if opener is not None and any(m.sealed for m in fresh):
                fresh = opener(conn, fresh)
            for m in fresh:
                row = conn.execute(
                    "INSERT INTO messages (peer_id, msg_id, outgoing, seq, sent_at, stored_at,"
                    " text, state) VALUES (?,?,0,?,?,?,?,?) ON CONFLICT DO NOTHING RETURNING *",
                    (peer_id, m.msg_id, m.seq, m.sent_at, now, m.text, MessageState.RECEIVED.value),
                ).fetchone()
                if row is not None:
                    stored.append(_message(row))
            if stored:
                # Every peer with incoming messages has a read mark (0 until read), so the
                # unread counts can be rebuilt from read_marks alone (unread_counts).
                conn.execute(
                    "INSERT INTO read_marks (peer_id, read_row) VALUES (?, 0) "
                    "ON CONFLICT (peer_id) DO NOTHING",
                    (peer_id,),
                )
            return stored

        return await self._db.run(fn)

    async def mark_delivered(
        self, peer_id: str, msg_ids: Sequence[bytes], now: int
    ) -> list[MessageRecord]:
        """Mark outbox messages delivered; returns those that changed state."""

        def fn(conn: sqlite3.Connection) -> list[MessageRecord]:
            changed: list[MessageRecord] = []
            for msg_id in msg_ids:
                row = conn.execute(
                    "UPDATE messages SET state = ?, delivered_at = ?, sealed = NULL WHERE "
                    "peer_id = ? AND outgoing = 1 AND msg_id = ? AND state = ? RETURNING *",
                    (
                        MessageState.DELIVERED.value,
                        now,
                        peer_id,
                        msg_id,
                        MessageState.PENDING.value,
                    ),
                ).fetchone()
                if row is not None:
                    changed.append(_message(row))
                    # Whoever holds it for the friend need not be remembered any more.
                    conn.execute(
                        "DELETE FROM mailbox_deposits WHERE peer_id = ? AND msg_id = ?",
                        (peer_id, msg_id),
                    )
            return changed

        # Losing this in a power cut only means the message is sent again and deduplicated.
        return await self._db.run(fn, durable=False)

    async def outbox(self, peer_id: str, after_seq: int, limit: int) -> list[MessageRecord]:
        def fn(conn: sqlite3.Connection) -> list[MessageRecord]:
            rows = conn.execute(
                "SELECT * FROM messages WHERE peer_id = ? AND outgoing = 1 AND state = ? "
                "AND seq > ? ORDER BY seq LIMIT ?",
                (peer_id, MessageState.PENDING.value, after_seq, limit),
            ).fetchall()
            return [_message(r) for r in rows]

        return await self._db.run(fn)

    async def outbox_sizes(self) -> dict[str, int]:
        def fn(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT peer_id, COUNT(*) FROM messages WHERE outgoing = 1 AND state = ? "
                "GROUP BY peer_id",
                (MessageState.PENDING.value,),
            ).fetchall()
            return {r[0]: int(r[1]) for r in rows}

        return await self._db.run(fn)

    async def outbox_size(self, peer_id: str) -> int:
        """One conversation's undelivered outgoing messages (a range of the outbox index)."""

        def fn(conn: sqlite3.Connection) -> int:
            # The partial index messages_outbox holds only pending messages (left to itself,
            # SQLite picks messages_by_seq and walks every outgoing message); the literal
            # 'pending' is what lets it use the partial index.
            row = conn.execute(
                "SELECT COUNT(*) FROM messages INDEXED BY messages_outbox "
                "WHERE peer_id = ? AND outgoing = 1 AND state = 'pending'",
                (peer_id,),
            ).fetchone()
            return int(row[0])

        return await self._db.run(fn)

    # --- read marks --------------------------------------------------------------------------

    async def mark_read(self, peer_id: str) -> int:
        """Move the conversation's read mark to its newest message (never backwards);
        returns the mark (a message ``row``; 0 for a conversation with no messages)."""

        def fn(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "INSERT INTO read_marks (peer_id, read_row) VALUES (?, "
                "(SELECT COALESCE(MAX(id), 0) FROM messages WHERE peer_id = ?)) "
                "ON CONFLICT (peer_id) DO UPDATE SET read_row = MAX(read_row, excluded.read_row) "
                "RETURNING read_row",
                (peer_id, peer_id),
            ).fetchone()
            return int(row[0])

        # Lost in a power cut (not in a crash), the conversation only shows unread again.
        return await self._db.run(fn, durable=False)

    async def read_mark(self, peer_id: str) -> int:
        return await self._db.run(lambda conn: _read_row(conn, peer_id))

    async def unread_count(self, peer_id: str) -> int:
        """Incoming messages after the conversation's read mark, counted in the database."""

        def fn(conn: sqlite3.Connection) -> int:
            return _unread_after(conn, peer_id, _read_row(conn, peer_id))

        return await self._db.run(fn)

    async def unread_counts(self) -> dict[str, int]:
        """Every conversation's unread count (peers with none are left out). Costs one index
        range per peer over its unread messages only, however long the history."""

        def fn(conn: sqlite3.Connection) -> dict[str, int]:
            marks = conn.execute("SELECT peer_id, read_row FROM read_marks").fetchall()
            counts = {r[0]: _unread_after(conn, r[0], int(r[1])) for r in marks}
            return {peer: n for peer, n in counts.items() if n}

        return await self._db.run(fn)

    # --- verified friends (p2pchat.chat.verified) --------------------------------------------

    async def verified_marks(self) -> dict[str, tuple[str, int, bytes | None]]:
        """Every verified peer: (the safety number confirmed, when, the Olm identity key it
        had then; ``None`` for a mark older than schema 9 until the key is next seen)."""

        def fn(conn: sqlite3.Connection) -> dict[str, tuple[str, int, bytes | None]]:
            rows = conn.execute("SELECT peer_id, safety_number, verified_at, olm_key FROM verified")
            return {
                r[0]: (str(r[1]), int(r[2]), bytes(r[3]) if r[3] is not None else None)
                for r in rows
            }

        return await self._db.run(fn)

    async def set_verified(
        self, peer_id: str, safety_number: str, now: int, olm_key: bytes | None = None
    ) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO verified (peer_id, safety_number, verified_at, olm_key) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (peer_id) DO UPDATE SET "
                "safety_number = excluded.safety_number, verified_at = excluded.verified_at, "
                "olm_key = excluded.olm_key",
                (peer_id, safety_number, now, olm_key),
            )

        await self._db.run(fn)

    async def olm_identity_keys(self) -> dict[str, bytes]:
        """The Olm identity key each peer last presented."""

        def fn(conn: sqlite3.Connection) -> dict[str, bytes]:
            rows = conn.execute("SELECT peer_id, identity_key FROM olm_identity_keys")
            return {r[0]: bytes(r[1]) for r in rows}

        return await self._db.run(fn)

    async def note_olm_key(self, peer_id: str, key: bytes, now: int) -> bytes | None:
        """Record the Olm identity key ``peer_id`` presents; the previous one if it changed.
        A verification stored before keys were recorded takes the first key seen after."""

        def fn(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT identity_key FROM olm_identity_keys WHERE peer_id = ?", (peer_id,)
            ).fetchone()
            previous = bytes(row[0]) if row is not None else None
            if previous is None:
                conn.execute(
                    "INSERT INTO olm_identity_keys (peer_id, identity_key, first_seen) "
                    "VALUES (?, ?, ?)",
                    (peer_id, key, now),
                )
            elif previous != key:
                conn.execute(
                    "UPDATE olm_identity_keys SET identity_key = ?, changed_at = ? "
                    "WHERE peer_id = ?",
                    (key, now, peer_id),
                )
            conn.execute(
                "UPDATE verified SET olm_key = ? WHERE peer_id = ? AND olm_key IS NULL",
                (previous if previous is not None else key, peer_id),
            )
            return previous if previous is not None and previous != key else None

        return await self._db.run(fn)

    async def clear_verified(self, peer_id: str) -> None:
        await self._db.run(
            lambda conn: conn.execute("DELETE FROM verified WHERE peer_id = ?", (peer_id,))
        )

    async def history(
        self, peer_id: str, limit: int, before_row: int | None = None
    ) -> list[MessageRecord]:
        """The newest ``limit`` messages (before ``before_row``), oldest first."""

        def fn(conn: sqlite3.Connection) -> list[MessageRecord]:
            rows = conn.execute(
                "SELECT *, CASE WHEN state = 'pending' THEN (SELECT COUNT(*) FROM"
                " mailbox_deposits d WHERE d.peer_id = messages.peer_id AND d.msg_id ="
                " messages.msg_id) ELSE 0 END AS holders FROM messages"
                " WHERE peer_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (peer_id, before_row if before_row is not None else 2**62, limit),
            ).fetchall()
            return [_message(r) for r in reversed(rows)]

        return await self._db.run(fn)
