"""The mailbox's tables (schema v8): envelopes held for others, our deposits, receipts owed.

Like :mod:`p2pchat.chat.store`, each method is one job in the database's worker thread and
transaction. A holder's quota is checked in the same transaction that stores the envelope,
so two deposits at once cannot both take the last of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from p2pchat.mailbox.envelope import Envelope
from p2pchat.storage.database import Database


@dataclass(frozen=True, slots=True)
class Limits:
    """What one daemon holds for others (config ``mailbox_max_bytes``, ``mailbox_max_days``)."""

    max_bytes: int = 64 * 1024 * 1024
    max_seconds: int = 7 * 24 * 3600
    depositor_share: float = 0.25
    """The part of ``max_bytes`` one depositor may fill (a friend cannot take it all)."""
    recipient_share: float = 0.5
    """The part of ``max_bytes`` held for one recipient."""
    dht_share: float = 1 / 8
    """The part of ``max_bytes`` held for peers that are not both our friends (as a DHT
    node near the recipient's ID)..."""
    dht_depositor_share: float = 1 / 64
    dht_recipient_share: float = 1 / 32
    """...of which one depositor may fill this part, and one recipient have this part."""


class QuotaFull(Exception):
    """The envelope would take the holder past one of its limits: the reason."""


@dataclass(frozen=True, slots=True)
class HeldEnvelope:
    envelope_id: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class Holding:
    """What a holder holds, for ``status``."""

    envelopes: int
    bytes: int
    recipients: int


class MailboxStore:
    def __init__(self, db: Database, limits: Limits | None = None) -> None:
        self._db = db
        self.limits = limits or Limits()

    # --- holder side --------------------------------------------------------------------------

    async def hold(
        self, envelope: Envelope, raw: bytes, depositor: str, now: int, *, via_dht: bool = False
    ) -> bool:
        """Store ``raw`` (parsed as ``envelope``) for its recipient within the limits
        (raises :class:`QuotaFull`); False if it was held already (a retried deposit).
        ``via_dht``: neither depositor nor recipient need be a friend; smaller limits."""
        limits = self.limits
        size = len(raw)

        def fn(conn: sqlite3.Connection) -> bool:
            if conn.execute(
                "SELECT 1 FROM mailbox WHERE envelope_id = ?", (envelope.envelope_id,)
            ).fetchone():
                return False
            # The depositor's and recipient's use is counted within the same kind of
            # holding (friends', or the DHT's) as this envelope.
            total, dht, by_depositor, for_recipient = conn.execute(
                "SELECT COALESCE(SUM(size), 0), COALESCE(SUM(CASE WHEN via_dht THEN size END), 0),"
                " COALESCE(SUM(CASE WHEN depositor = ? AND via_dht = ? THEN size END), 0), "
                "COALESCE(SUM(CASE WHEN recipient = ? AND via_dht = ? THEN size END), 0) "
                "FROM mailbox",
                (depositor, int(via_dht), envelope.to, int(via_dht)),
            ).fetchone()
            if total + size > limits.max_bytes:
                raise QuotaFull(f"this holder is full ({limits.max_bytes} bytes)")
            if via_dht:
                if dht + size > limits.max_bytes * limits.dht_share:
                    raise QuotaFull("this holder holds all it holds for strangers already")
                depositor_cap = limits.max_bytes * limits.dht_depositor_share
                recipient_cap = limits.max_bytes * limits.dht_recipient_share
            else:
                depositor_cap = limits.max_bytes * limits.depositor_share
                recipient_cap = limits.max_bytes * limits.recipient_share
            if by_depositor + size > depositor_cap:
                raise QuotaFull("you hold your share of this holder's space already")
            if for_recipient + size > recipient_cap:
                raise QuotaFull("this holder holds its most for that recipient already")
            conn.execute(
                "INSERT INTO mailbox (envelope_id, recipient, depositor, size, expires_at,"
                " stored_at, via_dht, envelope) VALUES (?,?,?,?,?,?,?,?)",
                (
                    envelope.envelope_id,
                    envelope.to,
                    depositor,
                    size,
                    envelope.expires,
                    now,
                    int(via_dht),
                    raw,
                ),
            )
            return True

        return await self._db.run(fn)

    async def held_for(self, recipient: str, now: int, limit: int) -> list[HeldEnvelope]:
        """The oldest ``limit`` unexpired envelopes held for ``recipient``."""

        def fn(conn: sqlite3.Connection) -> list[HeldEnvelope]:
            rows = conn.execute(
                "SELECT envelope_id, envelope FROM mailbox WHERE recipient = ? AND expires_at > ?"
                " ORDER BY stored_at, rowid LIMIT ?",
                (recipient, now, limit),
            ).fetchall()
            return [HeldEnvelope(bytes(r[0]), bytes(r[1])) for r in rows]

        return await self._db.run(fn)

    async def delete_taken(self, recipient: str, envelope_ids: Sequence[bytes]) -> int:
        """Delete what ``recipient`` took (only envelopes held for it); returns how many."""

        def fn(conn: sqlite3.Connection) -> int:
            deleted = 0
            for envelope_id in envelope_ids:
                cur = conn.execute(
                    "DELETE FROM mailbox WHERE envelope_id = ? AND recipient = ?",
                    (envelope_id, recipient),
                )
                deleted += cur.rowcount
            return deleted

        return await self._db.run(fn)

    async def purge_expired(self, now: int) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM mailbox WHERE expires_at <= ?", (now,)).rowcount

        return await self._db.run(fn)

    async def holding(self) -> Holding:
        def fn(conn: sqlite3.Connection) -> Holding:
            n, size, recipients = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(DISTINCT recipient) FROM mailbox"
            ).fetchone()
            return Holding(int(n), int(size), int(recipients))

        return await self._db.run(fn)

    # --- depositor side -----------------------------------------------------------------------

    async def holders_of(self, peer_id: str, msg_ids: Sequence[bytes]) -> dict[bytes, set[str]]:
        """For each of our messages to ``peer_id``, the holders that took it."""

        def fn(conn: sqlite3.Connection) -> dict[bytes, set[str]]:
            found: dict[bytes, set[str]] = {m: set() for m in msg_ids}
            for msg_id in msg_ids:
                for row in conn.execute(
                    "SELECT holder FROM mailbox_deposits WHERE peer_id = ? AND msg_id = ?",
                    (peer_id, msg_id),
                ):
                    found[msg_id].add(row[0])
            return found

        return await self._db.run(fn)

    async def record_deposits(
        self, peer_id: str, holder: str, taken: Sequence[tuple[bytes, bytes]], now: int
    ) -> dict[bytes, int]:
        """The holder took these (message ID, envelope ID) of ours; returns how many holders
        hold each message now. Nothing is recorded for a message no longer pending
        (delivered meanwhile)."""

        def fn(conn: sqlite3.Connection) -> dict[bytes, int]:
            counts: dict[bytes, int] = {}
            for msg_id, envelope_id in taken:
                conn.execute(
                    "INSERT INTO mailbox_deposits (peer_id, msg_id, holder, envelope_id,"
                    " stored_at) SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM messages"
                    " WHERE peer_id = ? AND outgoing = 1 AND msg_id = ? AND state = 'pending')"
                    " ON CONFLICT DO UPDATE SET envelope_id = excluded.envelope_id",
                    (peer_id, msg_id, holder, envelope_id, now, peer_id, msg_id),
                )
                row = conn.execute(
                    "SELECT COUNT(*) FROM mailbox_deposits WHERE peer_id = ? AND msg_id = ?",
                    (peer_id, msg_id),
                ).fetchone()
                counts[msg_id] = int(row[0])
            return counts

        # Lost in a power cut, a deposit is only made again (and deduplicated on arrival).
        return await self._db.run(fn, durable=False)

    # --- receipts owed (we got messages from holders: their senders should learn it) ---------

    async def owe_receipts(self, peer_id: str, msg_ids: Sequence[bytes]) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO mailbox_receipts (peer_id, msg_id) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                [(peer_id, m) for m in msg_ids],
            )

        await self._db.run(fn)

    async def receipts_owed(self, limit: int) -> dict[str, list[bytes]]:
        def fn(conn: sqlite3.Connection) -> dict[str, list[bytes]]:
            owed: dict[str, list[bytes]] = {}
            for peer_id, msg_id in conn.execute(
                "SELECT peer_id, msg_id FROM mailbox_receipts ORDER BY rowid LIMIT ?", (limit,)
            ):
                owed.setdefault(peer_id, []).append(bytes(msg_id))
            return owed

        return await self._db.run(fn)

    async def receipts_sent(self, peer_id: str, msg_ids: Sequence[bytes]) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM mailbox_receipts WHERE peer_id = ? AND msg_id = ?",
                [(peer_id, m) for m in msg_ids],
            )

        await self._db.run(fn, durable=False)
