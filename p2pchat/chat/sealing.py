"""1:1 message bodies sealed with each friend's Olm session (msg/2.0.0, PROTOCOL.md §5.4).

Every change to Olm state happens inside a database job (the worker thread runs one at a
time) together with what it is for: the sealed bytes of outgoing messages, or the plaintext
of incoming ones, so a crash at any point leaves the ratchet and the messages in step. A
session is read from its pickle at the start of each job and written back before it ends:
there is no copy in memory that a failed transaction could leave ahead of the database.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence

import cbor2

from p2pchat import wire
from p2pchat.chat.store import ChatStore, IncomingMessage, MessageRecord, MessageState, Opener
from p2pchat.identity import Identity, short
from p2pchat.ratchet.bundle import KeyBundle, parse_bundle
from p2pchat.ratchet.pair import (
    OlmAccount,
    PairSession,
    Sealed,
    SealError,
    pickle_key,
)
from p2pchat.wire import FrameError, strict_cbor_decode

log = logging.getLogger(__name__)

MAX_SESSIONS_PER_PEER = 4
"""Kept per friend (both sides starting one at once makes two); the least recently used go."""


class SealFailed(Exception):
    """A sealed message did not open (or we have no session to seal with): the reason."""


def _plaintext(msg_id: bytes, text: str) -> bytes:
    # The ID inside the seal: a sealed body cannot be replayed under another message's ID.
    return cbor2.dumps({"id": msg_id, "text": text}, canonical=True)


def _text_of(msg_id: bytes, plaintext: bytes) -> str:
    try:
        m = strict_cbor_decode(plaintext, max_depth=1)
    except FrameError as exc:
        raise SealFailed(f"the opened message is not valid: {exc}") from None
    if not isinstance(m, dict) or set(m) != {"id", "text"} or m["id"] != msg_id:
        raise SealFailed("the opened message is not the one its frame names")
    text = m["text"]
    problem = (
        wire.text_problem(text, wire.MAX_TEXT_BYTES, multiline=True, allow_empty=False)
        if isinstance(text, str)
        else "is not text"
    )
    if problem is not None:
        raise SealFailed(f"the opened message text {problem}")
    return str(text)


class Sealing:
    """Our Olm account and each friend's sessions, in the identity's database."""

    def __init__(self, store: ChatStore, identity: Identity) -> None:
        self._db = store.db
        self._identity = identity
        self._key = pickle_key(identity)
        self.hello_keys = b""
        """Our bundle without one-time keys (the identity key, signed): sent in every hello."""

    async def load(self) -> None:
        """Create the account on first use; sign the hello bundle."""

        def fn(conn: sqlite3.Connection) -> bytes:
            account = self._account(conn, create=True)
            keys = account.bundle(self._identity, 0, int(time.time()))
            self._save_account(conn, account)
            return keys

        self.hello_keys = await self._db.run(fn)

    # --- sender side --------------------------------------------------------------------------

    async def has_session(self, peer: str) -> bool:
        def fn(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT 1 FROM olm_sessions WHERE peer_id = ?", (peer,))
            return row.fetchone() is not None

        return await self._db.run(fn)

    async def start(self, peer: str, raw_bundle: bytes) -> KeyBundle:
        """A new session to ``peer`` from the bundle it sent (checked: signed by ``peer``,
        with a one-time key), and that bundle; raises :class:`SealFailed` otherwise."""
        try:
            bundle = parse_bundle(peer, raw_bundle, time.time())
        except ValueError as exc:
            raise SealFailed(f"its key bundle is refused: {exc}") from None
        if not bundle.one_time_keys:
            raise SealFailed("its key bundle has no one-time key")

        def fn(conn: sqlite3.Connection) -> None:
            account = self._account(conn)
            session = PairSession.start(account, bundle, bundle.one_time_keys[0][0])
            self._save_session(conn, peer, session, used=True)

        try:
            await self._db.run(fn)
        except SealError as exc:
            raise SealFailed(str(exc)) from None
        log.info("started an end-to-end session with %s", short(peer))
        return bundle

    async def seal(self, peer: str, records: Sequence[MessageRecord]) -> list[wire.SealedMessage]:
        """The sealed frames of ``records`` (outgoing, pending): the stored sealed form of
        those sealed before (a resend), the others sealed now with the newest session and
        stored with it in one transaction."""

        def fn(conn: sqlite3.Connection) -> list[wire.SealedMessage]:
            session: PairSession | None = None
            frames: list[wire.SealedMessage] = []
            for m in records:
                row = conn.execute("SELECT sealed FROM messages WHERE id = ?", (m.row,)).fetchone()
                stored = bytes(row[0]) if row is not None and row[0] is not None else None
                if stored is None:
                    if session is None:
                        session = self._newest_session(conn, peer)
                        if session is None:
                            raise SealFailed("no end-to-end session with this friend yet")
                    sealed = session.seal(_plaintext(m.msg_id, m.text))
                    stored = bytes([sealed.kind]) + sealed.body
                    conn.execute(
                        "UPDATE messages SET sealed = ? WHERE id = ? AND state = ?",
                        (stored, m.row, MessageState.PENDING.value),
                    )
                frames.append(wire.SealedMessage(m.msg_id, m.seq, m.sent_at, stored[0], stored[1:]))
            if session is not None:
                self._save_session(conn, peer, session, used=False)
            return frames

        return await self._db.run(fn)

    async def seal_bytes(self, peer: str, plaintext: bytes) -> Sealed:
        """``plaintext`` sealed with our newest session with ``peer`` (group keys, §15.2);
        :class:`SealFailed` if there is none yet."""

        def fn(conn: sqlite3.Connection) -> Sealed:
            session = self._newest_session(conn, peer)
            if session is None:
                raise SealFailed("no end-to-end session with this member yet")
            sealed = session.seal(plaintext)
            self._save_session(conn, peer, session, used=False)
            return sealed

        return await self._db.run(fn)

    async def open_bytes(self, peer: str, their_identity_key: bytes, sealed: Sealed) -> bytes:
        """Open what ``peer`` sealed with :meth:`seal_bytes` (a pre-key message starts our
        side of the session); :class:`SealFailed` says why not."""

        def fn(conn: sqlite3.Connection) -> bytes:
            sessions = self._sessions(conn, peer)
            plaintext, session = self._open_one(sessions, sealed)
            if session is None:
                account = self._account(conn)
                try:
                    session, plaintext = account.accept(their_identity_key, sealed)
                except SealError as exc:
                    raise SealFailed(str(exc)) from None
                self._save_account(conn, account)
            self._save_session(conn, peer, session, used=True)
            return plaintext

        return await self._db.run(fn)

    async def forget(self, peer: str) -> None:
        """Drop our sessions with ``peer`` and the sealed form of what we owe it: the next
        stream starts a new session and seals those messages again (after ``undecryptable``,
        or when the friendship ends)."""

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM olm_sessions WHERE peer_id = ?", (peer,))
            conn.execute(
                "UPDATE messages SET sealed = NULL WHERE peer_id = ? AND outgoing = 1 "
                "AND sealed IS NOT NULL",
                (peer,),
            )

        await self._db.run(fn)

    # --- receiver side ------------------------------------------------------------------------

    async def fresh_bundle(self) -> bytes:
        """Our bundle with one new one-time key (stored before it is handed out)."""

        def fn(conn: sqlite3.Connection) -> bytes:
            account = self._account(conn)
            raw = account.bundle(self._identity, 1, int(time.time()))
            self._save_account(conn, account)
            return raw

        return await self._db.run(fn)

    def check_hello_keys(self, peer: str, raw: bytes | None) -> KeyBundle:
        """The bundle a friend's hello carries, checked (raises :class:`SealFailed`)."""
        if raw is None:
            raise SealFailed("its hello carries no key bundle")
        try:
            return parse_bundle(peer, raw, time.time())
        except ValueError as exc:
            raise SealFailed(f"its key bundle is refused: {exc}") from None

    def opener(self, peer: str, their_identity_key: bytes) -> Opener:
        """What opens ``peer``'s sealed messages inside the job that stores them."""

        def open_all(
            conn: sqlite3.Connection, messages: list[IncomingMessage]
        ) -> list[IncomingMessage]:
            sessions = self._sessions(conn, peer)
            account: OlmAccount | None = None
            opened: list[IncomingMessage] = []
            touched: dict[str, PairSession] = {}
            for m in messages:
                if m.sealed is None:
                    raise SealFailed("a plain message on a sealed stream")
                sealed = Sealed(*m.sealed)
                plaintext, session = self._open_one(sessions, sealed)
                if session is None:
                    if account is None:
                        account = self._account(conn)
                    try:
                        session, plaintext = account.accept(their_identity_key, sealed)
                    except SealError as exc:
                        raise SealFailed(str(exc)) from None
                    sessions.insert(0, session)
                    log.info("%s started an end-to-end session with us", short(peer))
                touched[session.session_id] = session
                opened.append(
                    IncomingMessage(m.msg_id, m.seq, m.sent_at, _text_of(m.msg_id, plaintext))
                )
            if account is not None:
                self._save_account(conn, account)  # a one-time key is used up
            for session in touched.values():
                self._save_session(conn, peer, session, used=True)
            return opened

        return open_all

    @staticmethod
    def _open_one(sessions: list[PairSession], sealed: Sealed) -> tuple[bytes, PairSession | None]:
        if sealed.kind == 0:
            # A first message: it belongs to a session we have (resent before our answer)
            # or starts a new one.
            for session in sessions:
                if session.matches(sealed):
                    try:
                        return session.open(sealed), session
                    except SealError as exc:
                        raise SealFailed(str(exc)) from None
            return b"", None
        for session in sessions:
            try:
                return session.open(sealed), session
            except SealError:
                continue
        raise SealFailed("no session of ours opens it")

    # --- state in the database ----------------------------------------------------------------

    def _account(self, conn: sqlite3.Connection, create: bool = False) -> OlmAccount:
        row = conn.execute("SELECT pickle FROM olm_account WHERE id = 1").fetchone()
        if row is not None:
            return OlmAccount.from_pickle(row[0], self._key)
        if not create:
            raise SealFailed("no Olm account (the daemon has not finished starting)")
        account = OlmAccount.create()
        self._save_account(conn, account)
        return account

    def _save_account(self, conn: sqlite3.Connection, account: OlmAccount) -> None:
        conn.execute(
            "INSERT INTO olm_account (id, pickle) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET pickle = excluded.pickle",
            (account.pickle(self._key),),
        )

    def _sessions(self, conn: sqlite3.Connection, peer: str) -> list[PairSession]:
        rows = conn.execute(
            "SELECT pickle FROM olm_sessions WHERE peer_id = ? ORDER BY used_at DESC, rowid DESC",
            (peer,),
        ).fetchall()
        return [PairSession.from_pickle(r[0], self._key) for r in rows]

    def _newest_session(self, conn: sqlite3.Connection, peer: str) -> PairSession | None:
        sessions = self._sessions(conn, peer)
        return sessions[0] if sessions else None

    def _save_session(
        self, conn: sqlite3.Connection, peer: str, session: PairSession, *, used: bool
    ) -> None:
        now = time.time_ns()
        conn.execute(
            "INSERT INTO olm_sessions (peer_id, session_id, pickle, used_at) VALUES (?,?,?,?) "
            "ON CONFLICT (peer_id, session_id) DO UPDATE SET pickle = excluded.pickle"
            + (", used_at = excluded.used_at" if used else ""),
            (peer, session.session_id, session.pickle(self._key), now),
        )
        conn.execute(
            "DELETE FROM olm_sessions WHERE peer_id = ? AND session_id NOT IN (SELECT "
            "session_id FROM olm_sessions WHERE peer_id = ? ORDER BY used_at DESC LIMIT ?)",
            (peer, peer, MAX_SESSIONS_PER_PEER),
        )
