"""Sealed messages (p2pchat.chat.sealing) between two identities, each with its own real
database file: sealed once and resent as is, opened once inside the job that stores them,
and in step with the messages across crashes at every point."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pchat import wire
from p2pchat.chat.friendship import ContactState
from p2pchat.chat.sealing import SealFailed, Sealing
from p2pchat.chat.store import ChatStore, IncomingMessage
from p2pchat.identity import Identity
from p2pchat.storage.schema import open_database


class Side:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.identity = Identity.generate()

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[tuple[ChatStore, Sealing]]:
        """The database as after a (re)start: nothing kept from before but the file."""
        async with open_database(self.home / "p2pchat.db") as db:
            store = ChatStore(db)
            sealing = Sealing(store, self.identity)
            await sealing.load()
            yield store, sealing


async def pair(tmp_path: Path) -> tuple[Side, Side]:
    alice, bob = Side(tmp_path / "a"), Side(tmp_path / "b")
    for me, other in ((alice, bob), (bob, alice)):
        me.home.mkdir()
        async with me.opened() as (store, _):
            await store.put_contact(other.identity.peer_id, state=ContactState.FRIEND, now=1)
    return alice, bob


def incoming(frames: list[wire.SealedMessage]) -> list[IncomingMessage]:
    return [IncomingMessage(f.msg_id, f.seq, f.sent_at_ms, "", (f.kind, f.body)) for f in frames]


async def queue(store: ChatStore, peer: str, *texts: str) -> list[int]:
    rows = []
    for i, text in enumerate(texts):
        record, _ = await store.add_outgoing(peer, bytes([i + 1]) * 16, text, now=10 + i)
        rows.append(record.row)
    return rows


async def test_sealed_once_resent_as_is_and_opened_once(tmp_path: Path) -> None:
    alice, bob = await pair(tmp_path)
    a_id, b_id = alice.identity.peer_id, bob.identity.peer_id
    async with bob.opened() as (_, b_seal):
        bundle = await b_seal.fresh_bundle()
    async with alice.opened() as (a_store, a_seal):
        assert not await a_seal.has_session(b_id)
        await a_seal.start(b_id, bundle)
        await queue(a_store, b_id, "one", "two")
        first = await a_seal.seal(b_id, await a_store.outbox(b_id, 0, 10))
        a_keys = a_seal.hello_keys
    assert all(f.kind == 0 for f in first)  # pre-key messages until bob answers
    assert b"one" not in b"".join(f.body for f in first)
    # Alice "crashes" after sealing, before sending: the restarted daemon sends the very same
    # bytes (sealing again would use new message keys for the same messages).
    async with alice.opened() as (a_store, a_seal):
        again = await a_seal.seal(b_id, await a_store.outbox(b_id, 0, 10))
    assert again == first

    async with bob.opened() as (b_store, b_seal):
        alice_ik = b_seal.check_hello_keys(a_id, a_keys).identity_key
        stored = await b_store.add_incoming(
            a_id, incoming(first), now=20, opener=b_seal.opener(a_id, alice_ik)
        )
        assert [m.text for m in stored] == ["one", "two"]
        # The resend after a lost ack: left out before opening (its keys are gone), no error.
        assert (
            await b_store.add_incoming(
                a_id, incoming(first), now=21, opener=b_seal.opener(a_id, alice_ik)
            )
            == []
        )
        assert [m.text for m in await b_store.history(a_id, 10)] == ["one", "two"]
        # Bob answers on the session alice started: normal messages from the start.
        await queue(b_store, a_id, "back")
        reply = await b_seal.seal(a_id, await b_store.outbox(a_id, 0, 10))
        b_keys = b_seal.hello_keys
    assert [f.kind for f in reply] == [1]
    async with alice.opened() as (a_store, a_seal):
        bob_ik = a_seal.check_hello_keys(b_id, b_keys).identity_key
        got = await a_store.add_incoming(
            b_id, incoming(reply), now=30, opener=a_seal.opener(b_id, bob_ik)
        )
        assert [m.text for m in got] == ["back"]
        # Delivered: the sealed form is not kept.
        await a_store.mark_delivered(b_id, [f.msg_id for f in first], now=31)
        left = await a_store.db.run(
            lambda c: c.execute("SELECT COUNT(*) FROM messages WHERE sealed IS NOT NULL").fetchone()
        )
        assert left[0] == 0


async def test_a_crash_between_receiving_and_storing_opens_it_again_after(
    tmp_path: Path,
) -> None:
    alice, bob = await pair(tmp_path)
    a_id, b_id = alice.identity.peer_id, bob.identity.peer_id
    async with bob.opened() as (_, b_seal):
        bundle = await b_seal.fresh_bundle()
    async with alice.opened() as (a_store, a_seal):
        await a_seal.start(b_id, bundle)
        await queue(a_store, b_id, "kept")
        frames = await a_seal.seal(b_id, await a_store.outbox(b_id, 0, 10))
        a_keys = a_seal.hello_keys

    class Crash(Exception):
        pass

    async with bob.opened() as (b_store, b_seal):
        ik = b_seal.check_hello_keys(a_id, a_keys).identity_key
        real = b_seal.opener(a_id, ik)

        def opens_then_dies(conn: sqlite3.Connection, ms: list[IncomingMessage]) -> list:  # type: ignore[type-arg]
            assert [m.text for m in real(conn, ms)] == ["kept"]  # opened, keys used...
            raise Crash  # ...and the process dies before the commit

        with pytest.raises(Crash):
            await b_store.add_incoming(a_id, incoming(frames), now=5, opener=opens_then_dies)
        assert await b_store.history(a_id, 10) == []
    # Nothing was committed, the one-time key and the ratchet included: the resend opens.
    async with bob.opened() as (b_store, b_seal):
        stored = await b_store.add_incoming(
            a_id, incoming(frames), now=6, opener=b_seal.opener(a_id, ik)
        )
        assert [m.text for m in stored] == ["kept"]


async def test_tampered_swapped_and_strangers_messages_do_not_open(tmp_path: Path) -> None:
    alice, bob = await pair(tmp_path)
    a_id, b_id = alice.identity.peer_id, bob.identity.peer_id
    async with bob.opened() as (_, b_seal):
        bundle = await b_seal.fresh_bundle()
    async with alice.opened() as (a_store, a_seal):
        await a_seal.start(b_id, bundle)
        await queue(a_store, b_id, "first", "second")
        f1, f2 = await a_seal.seal(b_id, await a_store.outbox(b_id, 0, 10))
        a_keys = a_seal.hello_keys
    mallory = Identity.generate()
    async with bob.opened() as (b_store, b_seal):
        ik = b_seal.check_hello_keys(a_id, a_keys).identity_key
        # A bundle signed by someone else is not taken as alice's.
        with pytest.raises(SealFailed, match="signed by another identity"):
            b_seal.check_hello_keys(mallory.peer_id, a_keys)
        with pytest.raises(SealFailed, match="no key bundle"):
            b_seal.check_hello_keys(a_id, None)
        opener = b_seal.opener(a_id, ik)
        bad = bytearray(f1.body)
        bad[-3] ^= 1
        tampered = wire.SealedMessage(f1.msg_id, f1.seq, f1.sent_at_ms, f1.kind, bytes(bad))
        with pytest.raises(SealFailed):
            await b_store.add_incoming(a_id, incoming([tampered]), now=5, opener=opener)
        # The second message's seal under the first's ID: refused (the ID is sealed in).
        swapped = wire.SealedMessage(f1.msg_id, f1.seq, f1.sent_at_ms, f2.kind, f2.body)
        with pytest.raises(SealFailed, match="not the one its frame names"):
            await b_store.add_incoming(a_id, incoming([swapped]), now=5, opener=opener)
        # A first message checked against another identity key than alice's: refused.
        other_ik = bytes(32)
        with pytest.raises(SealFailed):
            await b_store.add_incoming(
                a_id, incoming([f1]), now=5, opener=b_seal.opener(a_id, other_ik)
            )
        assert await b_store.history(a_id, 10) == []
        # After all that, the genuine messages open.
        stored = await b_store.add_incoming(a_id, incoming([f1, f2]), now=6, opener=opener)
        assert [m.text for m in stored] == ["first", "second"]


async def test_after_undecryptable_the_sender_starts_over_and_reseals(tmp_path: Path) -> None:
    alice, bob = await pair(tmp_path)
    a_id, b_id = alice.identity.peer_id, bob.identity.peer_id
    async with bob.opened() as (_, b_seal):
        bundle = await b_seal.fresh_bundle()
    async with alice.opened() as (a_store, a_seal):
        await a_seal.start(b_id, bundle)
        await queue(a_store, b_id, "lost")
        old = await a_seal.seal(b_id, await a_store.outbox(b_id, 0, 10))
        await a_seal.forget(b_id)  # bob said undecryptable
        assert not await a_seal.has_session(b_id)
        with pytest.raises(SealFailed, match="no end-to-end session"):
            await a_seal.seal(b_id, await a_store.outbox(b_id, 0, 10))
    async with bob.opened() as (_, b_seal):
        bundle = await b_seal.fresh_bundle()
    async with alice.opened() as (a_store, a_seal):
        await a_seal.start(b_id, bundle)
        new = await a_seal.seal(b_id, await a_store.outbox(b_id, 0, 10))
        a_keys = a_seal.hello_keys
    assert new[0].body != old[0].body
    async with bob.opened() as (b_store, b_seal):
        ik = b_seal.check_hello_keys(a_id, a_keys).identity_key
        stored = await b_store.add_incoming(
            a_id, incoming(new), now=5, opener=b_seal.opener(a_id, ik)
        )
        assert [m.text for m in stored] == ["lost"]


async def test_a_bundle_without_a_one_time_key_or_from_another_peer_starts_nothing(
    tmp_path: Path,
) -> None:
    alice, bob = await pair(tmp_path)
    b_id = bob.identity.peer_id
    async with bob.opened() as (_, b_seal):
        keyless = b_seal.hello_keys
        bundle = await b_seal.fresh_bundle()
    async with alice.opened() as (_, a_seal):
        with pytest.raises(SealFailed, match="no one-time key"):
            await a_seal.start(b_id, keyless)
        with pytest.raises(SealFailed, match="signed by another identity"):
            await a_seal.start(Identity.generate().peer_id, bundle)
        with pytest.raises(SealFailed, match="refused"):
            await a_seal.start(b_id, b"garbage")
        assert not await a_seal.has_session(b_id)
