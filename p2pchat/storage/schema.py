"""The database schema, as the list of migrations that build it.

The version is ``PRAGMA user_version``: migration *n* brings a database from version *n - 1*
to *n*, inside the worker's transaction (:mod:`.database`). To change the schema, append a
migration; never edit one, since databases out there have run it already. The tables belong
to their concerns, which keep their queries next to their code: ``contacts``, ``messages``,
``read_marks``, ``verified`` and ``olm_identity_keys`` (:mod:`p2pchat.chat.store`),
``olm_account`` and ``olm_sessions`` (:mod:`p2pchat.chat.sealing`), ``mailbox``,
``mailbox_deposits`` and ``mailbox_receipts`` (:mod:`p2pchat.mailbox.store`), ``transfers``
(:mod:`p2pchat.files.store`), ``groups`` and the ``group_*`` tables
(:mod:`p2pchat.groups.store`), ``settings`` (:mod:`.settings`).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from p2pchat.storage.database import Database, Migration


def open_database(path: Path, *, key: bytes | None = None) -> Database:
    """The identity's database at ``path``, migrated to the current schema when entered;
    encrypted at rest with ``key`` (:func:`.encryption.database_key`) if given."""
    return Database(path, MIGRATIONS, key=key)


def _execute_all(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and migrations must run inside our transaction.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _schema_v1(conn: sqlite3.Connection) -> None:
    _execute_all(
        conn,
        """
        CREATE TABLE contacts (
            peer_id      TEXT PRIMARY KEY,
            name         TEXT NOT NULL DEFAULT '',
            their_name   TEXT NOT NULL DEFAULT '',
            state        TEXT NOT NULL,
            request_text TEXT NOT NULL DEFAULT '',
            addrs        TEXT NOT NULL DEFAULT '[]',
            notice       TEXT,
            next_seq     INTEGER NOT NULL DEFAULT 1,
            created_at   INTEGER NOT NULL,
            updated_at   INTEGER NOT NULL
        );
        CREATE TABLE messages (
            id          INTEGER PRIMARY KEY,
            peer_id     TEXT NOT NULL,
            msg_id      BLOB NOT NULL,
            outgoing    INTEGER NOT NULL,
            seq         INTEGER NOT NULL,
            sent_at     INTEGER NOT NULL,
            stored_at   INTEGER NOT NULL,
            delivered_at INTEGER,
            text        TEXT NOT NULL,
            state       TEXT NOT NULL,
            UNIQUE (peer_id, outgoing, msg_id)
        );
        CREATE INDEX messages_by_peer ON messages (peer_id, id);
        CREATE INDEX messages_outbox ON messages (peer_id, seq)
            WHERE outgoing = 1 AND state = 'pending';
        CREATE TABLE settings (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """,
    )


def _schema_v2(conn: sqlite3.Connection) -> None:
    # Sequence numbers come from the messages themselves (v1 kept a counter in the contact
    # row, which restarted at 1 when a contact was deleted and re-created, e.g. by
    # block -> unblock -> add, and broke ordering). contacts.next_seq is no longer used.
    conn.execute("CREATE INDEX messages_by_seq ON messages (peer_id, outgoing, seq)")


def _schema_v3(conn: sqlite3.Connection) -> None:
    # Text rules tightened (no control characters but tab/newline, see wire.text_problem).
    # A pending message that breaks them would be refused by every upgraded receiver and hold
    # up the whole conversation behind it, so replace such characters with U+FFFD.
    rows = conn.execute(
        "SELECT id, text FROM messages WHERE outgoing = 1 AND state = ?",
        ("pending",),
    ).fetchall()
    for row in rows:
        clean = _FORBIDDEN_IN_TEXT.sub("\ufffd", row["text"])
        if clean != row["text"]:
            conn.execute("UPDATE messages SET text = ? WHERE id = ?", (clean, row["id"]))


_FORBIDDEN_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _schema_v4(conn: sqlite3.Connection) -> None:
    # File transfers (p2pchat.files.store). ``notice`` is what we owe the peer: 'offer'
    # for an undelivered outgoing offer, else a FileEnd outcome.
    _execute_all(
        conn,
        """
        CREATE TABLE transfers (
            tid          BLOB PRIMARY KEY,
            peer_id      TEXT NOT NULL,
            direction    TEXT NOT NULL CHECK (direction IN ('out', 'in')),
            name         TEXT NOT NULL,
            size         INTEGER NOT NULL,
            hash         BLOB NOT NULL,
            state        TEXT NOT NULL,
            source       TEXT,
            mtime_ns     INTEGER,
            part_path    TEXT,
            final_path   TEXT,
            done_bytes   INTEGER NOT NULL DEFAULT 0,
            data_path    TEXT,
            error        TEXT NOT NULL DEFAULT '',
            notice       TEXT,
            notice_reason TEXT NOT NULL DEFAULT '',
            created_at   INTEGER NOT NULL,
            updated_at   INTEGER NOT NULL
        );
        CREATE INDEX transfers_by_peer ON transfers (peer_id, created_at);
        CREATE INDEX transfers_owed ON transfers (peer_id) WHERE notice IS NOT NULL
        """,
    )


def _schema_v5(conn: sqlite3.Connection) -> None:
    # Unread counts (p2pchat.chat.unread): a conversation's read mark is the row (messages.id)
    # of the newest message the user has seen; its unread count is the incoming messages after
    # it. Kept per peer, apart from ``contacts``, because history outlives a contact (remove,
    # block -> unblock, add again): so does what was read of it. Every peer with incoming
    # messages has a row (0: nothing read), so the counts can be rebuilt from this table.
    # ``messages_incoming`` makes each count a scan of that peer's unread messages only, in
    # the index alone (it covers the query).
    # Messages stored before this version count as read: an upgrade must not greet the
    # user with every old conversation unread.
    _execute_all(
        conn,
        """
        CREATE TABLE read_marks (
            peer_id  TEXT PRIMARY KEY,
            read_row INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX messages_incoming ON messages (peer_id, outgoing, id) WHERE outgoing = 0;
        INSERT INTO read_marks (peer_id, read_row)
            SELECT peer_id, MAX(id) FROM messages GROUP BY peer_id
        """,
    )


def _schema_v6(conn: sqlite3.Connection) -> None:
    # Verified friends (p2pchat.chat.verified): the safety number the user confirmed, per
    # peer, apart from ``contacts`` like read marks: a friend removed and added again has
    # the same key, so what the user checked still holds.
    _execute_all(
        conn,
        """
        CREATE TABLE verified (
            peer_id       TEXT PRIMARY KEY,
            safety_number TEXT NOT NULL,
            verified_at   INTEGER NOT NULL
        )
        """,
    )


def _schema_v7(conn: sqlite3.Connection) -> None:
    # End-to-end Olm sessions (p2pchat.chat.sealing, PROTOCOL.md §5.4): our account (one row),
    # each friend's sessions (a few, newest used first), and the sealed form of each
    # outgoing message until it is delivered, so a resend repeats the very same ciphertext
    # (sealing it again would take the next message key, or after a crash the same one).
    _execute_all(
        conn,
        """
        CREATE TABLE olm_account (
            id     INTEGER PRIMARY KEY CHECK (id = 1),
            pickle TEXT NOT NULL
        );
        CREATE TABLE olm_sessions (
            peer_id    TEXT NOT NULL,
            session_id TEXT NOT NULL,
            pickle     TEXT NOT NULL,
            used_at    INTEGER NOT NULL,
            PRIMARY KEY (peer_id, session_id)
        );
        ALTER TABLE messages ADD COLUMN sealed BLOB
        """,
    )


def _schema_v8(conn: sqlite3.Connection) -> None:
    # Store and forward (p2pchat.mailbox, PROTOCOL.md §14): the envelopes this daemon holds
    # for its friends' friends while they are offline (or, ``via_dht``, for any peer whose ID
    # is near ours, within smaller limits), and, for our own pending messages,
    # which holders took them (an outgoing message held somewhere shows "stored for delivery").
    _execute_all(
        conn,
        """
        CREATE TABLE mailbox (
            envelope_id BLOB PRIMARY KEY,
            recipient   TEXT NOT NULL,
            depositor   TEXT NOT NULL,
            size        INTEGER NOT NULL,
            expires_at  INTEGER NOT NULL,
            stored_at   INTEGER NOT NULL,
            via_dht     INTEGER NOT NULL,
            envelope    BLOB NOT NULL
        );
        CREATE INDEX mailbox_by_recipient ON mailbox (recipient, stored_at);
        CREATE INDEX mailbox_by_depositor ON mailbox (depositor);
        CREATE INDEX mailbox_by_expiry ON mailbox (expires_at);
        CREATE TABLE mailbox_deposits (
            peer_id     TEXT NOT NULL,
            msg_id      BLOB NOT NULL,
            holder      TEXT NOT NULL,
            envelope_id BLOB NOT NULL,
            stored_at   INTEGER NOT NULL,
            PRIMARY KEY (peer_id, msg_id, holder)
        );
        CREATE TABLE mailbox_receipts (
            peer_id TEXT NOT NULL,
            msg_id  BLOB NOT NULL,
            PRIMARY KEY (peer_id, msg_id)
        )
        """,
    )


def _schema_v9(conn: sqlite3.Connection) -> None:
    # The Olm identity key each peer last presented (signed by its libp2p key, §13.1), and the
    # one a verification covered: a verified friend whose end-to-end keys change (a reinstall,
    # or someone holding its identity key) is flagged until the user compares again.
    _execute_all(
        conn,
        """
        ALTER TABLE verified ADD COLUMN olm_key BLOB;
        CREATE TABLE olm_identity_keys (
            peer_id      TEXT PRIMARY KEY,
            identity_key BLOB NOT NULL,
            first_seen   INTEGER NOT NULL,
            changed_at   INTEGER
        )
        """,
    )


def _schema_v10(conn: sqlite3.Connection) -> None:
    # Groups (PROTOCOL.md §15): each group's membership log, its messages (opened: held
    # sealed too, to pass on to members who lack them), messages waiting for their sender's
    # key, our sender keys and who still needs each, and the keys members gave us.
    _execute_all(
        conn,
        """
        CREATE TABLE groups (
            group_id   BLOB PRIMARY KEY,
            status     TEXT NOT NULL,
            inviter    TEXT NOT NULL DEFAULT '',
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE group_log (
            group_id BLOB NOT NULL,
            version  INTEGER NOT NULL,
            raw      BLOB NOT NULL,
            PRIMARY KEY (group_id, version)
        );
        CREATE TABLE group_messages (
            id         INTEGER PRIMARY KEY,
            group_id   BLOB NOT NULL,
            sender     TEXT NOT NULL,
            seq        INTEGER NOT NULL,
            clock      INTEGER NOT NULL,
            msg_id     BLOB NOT NULL,
            version    INTEGER NOT NULL,
            session_id TEXT NOT NULL,
            body       BLOB NOT NULL,
            text       TEXT NOT NULL,
            sent_at    INTEGER NOT NULL,
            stored_at  INTEGER NOT NULL,
            UNIQUE (group_id, sender, seq)
        );
        CREATE INDEX group_messages_order ON group_messages (group_id, clock, sender, seq);
        CREATE TABLE group_pending (
            group_id   BLOB NOT NULL,
            sender     TEXT NOT NULL,
            seq        INTEGER NOT NULL,
            digest     BLOB NOT NULL,
            session_id TEXT NOT NULL,
            frame      BLOB NOT NULL,
            stored_at  INTEGER NOT NULL,
            PRIMARY KEY (group_id, sender, seq, digest)
        );
        CREATE TABLE group_sender_keys (
            group_id   BLOB NOT NULL,
            session_id TEXT NOT NULL,
            pickle     TEXT NOT NULL,
            shared     BLOB NOT NULL,
            members    BLOB NOT NULL,
            first_seq  INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (group_id, session_id)
        );
        CREATE TABLE group_floors (
            group_id     BLOB NOT NULL,
            sender       TEXT NOT NULL,
            floor        INTEGER NOT NULL,
            join_version INTEGER NOT NULL,
            PRIMARY KEY (group_id, sender)
        );
        CREATE TABLE group_keys_owed (
            group_id   BLOB NOT NULL,
            session_id TEXT NOT NULL,
            member     TEXT NOT NULL,
            PRIMARY KEY (group_id, session_id, member)
        );
        CREATE TABLE group_received_keys (
            group_id   BLOB NOT NULL,
            sender     TEXT NOT NULL,
            session_id TEXT NOT NULL,
            pickle     TEXT NOT NULL,
            received_at INTEGER NOT NULL,
            PRIMARY KEY (group_id, sender, session_id)
        )
        """,
    )


MIGRATIONS: list[Migration] = [
    _schema_v1,
    _schema_v2,
    _schema_v3,
    _schema_v4,
    _schema_v5,
    _schema_v6,
    _schema_v7,
    _schema_v8,
    _schema_v9,
    _schema_v10,
]
