"""The mailbox's tables on a real SQLite file (p2pchat.mailbox.store): a holder's limits,
what each recipient may take, expiry, and a sender's record of who holds what."""

from __future__ import annotations

import os

import pytest

from p2pchat.chat.friendship import ContactState
from p2pchat.chat.store import ChatStore
from p2pchat.identity import Identity
from p2pchat.mailbox.envelope import Envelope, HeldReceipt, seal_envelope
from p2pchat.mailbox.store import Limits, MailboxStore, QuotaFull
from p2pchat.storage.database import Database

pytestmark = pytest.mark.trio

NOW = 1_800_000_000
ALICE, BOB, CAROL, DAVE = (Identity.generate() for _ in range(4))


def envelope(sender: Identity, to: Identity, expires: int = NOW + 3600) -> tuple[Envelope, bytes]:
    e = seal_envelope(sender, to.peer_id, HeldReceipt((os.urandom(16),)), expires)
    return e, e.encode()


async def test_a_holder_keeps_within_its_limits(db: Database) -> None:
    size = len(envelope(ALICE, BOB)[1])
    # Room for 8 envelopes: a depositor may fill 2, one recipient 4.
    store = MailboxStore(db, Limits(max_bytes=8 * size))
    for _ in range(2):
        assert await store.hold(*envelope(ALICE, BOB), ALICE.peer_id, NOW)
    with pytest.raises(QuotaFull, match="your share"):
        await store.hold(*envelope(ALICE, CAROL), ALICE.peer_id, NOW)
    for depositor in (CAROL, DAVE):
        await store.hold(*envelope(depositor, BOB), depositor.peer_id, NOW)
    with pytest.raises(QuotaFull, match="most for that recipient"):
        await store.hold(*envelope(Identity.generate(), BOB), "someone", NOW)
    for depositor in (Identity.generate() for _ in range(4)):
        await store.hold(*envelope(depositor, CAROL), depositor.peer_id, NOW)
    with pytest.raises(QuotaFull, match="holder is full"):
        await store.hold(*envelope(Identity.generate(), DAVE), "another", NOW)
    holding = await store.holding()
    assert (holding.envelopes, holding.bytes, holding.recipients) == (8, 8 * size, 2)


async def test_a_retried_deposit_is_held_once(db: Database) -> None:
    store = MailboxStore(db)
    e, raw = envelope(ALICE, BOB)
    assert await store.hold(e, raw, ALICE.peer_id, NOW)
    assert not await store.hold(e, raw, ALICE.peer_id, NOW)
    assert (await store.holding()).envelopes == 1


async def test_each_recipient_takes_only_its_own(db: Database) -> None:
    store = MailboxStore(db)
    for_bob = [envelope(ALICE, BOB) for _ in range(3)]
    for_carol = envelope(ALICE, CAROL)
    for e, raw in [*for_bob, for_carol]:
        await store.hold(e, raw, ALICE.peer_id, NOW)
    held = await store.held_for(BOB.peer_id, NOW, 10)
    assert [h.raw for h in held] == [raw for _, raw in for_bob]  # oldest first
    assert len(await store.held_for(BOB.peer_id, NOW, 2)) == 2
    # Carol names bob's envelopes: nothing of bob's is deleted.
    assert await store.delete_taken(CAROL.peer_id, [h.envelope_id for h in held]) == 0
    assert await store.delete_taken(BOB.peer_id, [held[0].envelope_id, os.urandom(16)]) == 1
    assert len(await store.held_for(BOB.peer_id, NOW, 10)) == 2
    assert [h.raw for h in await store.held_for(CAROL.peer_id, NOW, 10)] == [for_carol[1]]


async def test_expired_envelopes_are_neither_handed_over_nor_kept(db: Database) -> None:
    store = MailboxStore(db)
    soon, later = envelope(ALICE, BOB, NOW + 10), envelope(ALICE, BOB, NOW + 1000)
    for e, raw in (soon, later):
        await store.hold(e, raw, ALICE.peer_id, NOW)
    assert [h.raw for h in await store.held_for(BOB.peer_id, NOW + 10, 10)] == [later[1]]
    assert await store.purge_expired(NOW + 10) == 1
    assert (await store.holding()).envelopes == 1
    assert await store.purge_expired(NOW + 1000) == 1
    assert (await store.holding()).envelopes == 0


async def test_deposits_are_counted_while_pending_and_forgotten_once_delivered(
    db: Database,
) -> None:
    chat, store = ChatStore(db), MailboxStore(db)
    await chat.put_contact(BOB.peer_id, state=ContactState.FRIEND, now=1)
    record, _ = await chat.add_outgoing(BOB.peer_id, b"\x07" * 16, "hi", 1)
    assert (await store.record_deposits(BOB.peer_id, "carol", [(record.msg_id, b"\x01" * 16)], 2))[
        record.msg_id
    ] == 1
    assert (await store.record_deposits(BOB.peer_id, "dave", [(record.msg_id, b"\x02" * 16)], 2))[
        record.msg_id
    ] == 2
    assert (await store.record_deposits(BOB.peer_id, "dave", [(record.msg_id, b"\x03" * 16)], 2))[
        record.msg_id
    ] == 2
    assert (await chat.history(BOB.peer_id, 10))[0].holders == 2
    assert await store.holders_of(BOB.peer_id, [record.msg_id]) == {
        record.msg_id: {"carol", "dave"}
    }
    await chat.mark_delivered(BOB.peer_id, [record.msg_id], 3)
    shown = (await chat.history(BOB.peer_id, 10))[0]
    assert (shown.state.value, shown.holders) == ("delivered", 0)
    assert await store.holders_of(BOB.peer_id, [record.msg_id]) == {record.msg_id: set()}
    # A deposit answered after the delivery is not recorded.
    assert (await store.record_deposits(BOB.peer_id, "erin", [(record.msg_id, b"\x04" * 16)], 4))[
        record.msg_id
    ] == 0


async def test_receipts_owed_until_sent(db: Database) -> None:
    store = MailboxStore(db)
    ids = [os.urandom(16) for _ in range(3)]
    await store.owe_receipts(ALICE.peer_id, ids)
    await store.owe_receipts(ALICE.peer_id, ids[:1])  # owed once
    await store.owe_receipts(CAROL.peer_id, ids[:1])
    assert await store.receipts_owed(10) == {ALICE.peer_id: ids, CAROL.peer_id: ids[:1]}
    await store.receipts_sent(ALICE.peer_id, ids[:2])
    assert await store.receipts_owed(10) == {ALICE.peer_id: ids[2:], CAROL.peer_id: ids[:1]}
