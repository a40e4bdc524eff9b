"""Chat's tables (p2pchat.chat.store): contacts and messages, on a real database file."""

from __future__ import annotations

import pytest

from p2pchat.chat.friendship import ContactState, Notice
from p2pchat.chat.store import ChatStore, IncomingMessage, MessageState
from p2pchat.storage.database import Database

PEER = "12D3KooWPeerA"
OTHER = "12D3KooWPeerB"


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


@pytest.fixture
def store(db: Database) -> ChatStore:
    return ChatStore(db)


async def friend(store: ChatStore, peer: str = PEER, now: int = 1) -> None:
    await store.put_contact(peer, state=ContactState.FRIEND, now=now)


# --- contacts --------------------------------------------------------------------------------


async def test_put_contact_create_and_read(store: ChatStore) -> None:
    assert await store.contact(PEER) is None
    c = await store.put_contact(
        PEER,
        state=ContactState.OUTGOING,
        now=10,
        notice=Notice.REQUEST,
        name="Ann",
        their_name="ann@home",
        request_text="hi",
        addrs=["/ip4/1.2.3.4/tcp/1"],
    )
    assert c.peer_id == PEER
    assert c.state is ContactState.OUTGOING
    assert c.notice is Notice.REQUEST
    assert (c.name, c.their_name, c.request_text) == ("Ann", "ann@home", "hi")
    assert c.addrs == ("/ip4/1.2.3.4/tcp/1",)
    assert (c.created_at, c.updated_at) == (10, 10)
    assert c.display_name == "Ann"
    assert await store.contact(PEER) == c


async def test_put_contact_keeps_fields_when_none(store: ChatStore) -> None:
    await store.put_contact(
        PEER,
        state=ContactState.INCOMING,
        now=10,
        name="Ann",
        their_name="ann",
        request_text="hello",
        addrs=["/a", "/b"],
    )
    c = await store.put_contact(PEER, state=ContactState.FRIEND, now=20, notice=Notice.ACCEPT)
    assert c.state is ContactState.FRIEND
    assert (c.name, c.their_name, c.request_text, c.addrs) == ("Ann", "ann", "hello", ("/a", "/b"))
    assert (c.created_at, c.updated_at) == (10, 20)
    assert c.notice is Notice.ACCEPT
    # Empty values are values, not "keep".
    c = await store.put_contact(PEER, state=ContactState.FRIEND, now=30, name="", addrs=[])
    assert (c.name, c.addrs, c.their_name) == ("", (), "ann")
    assert c.display_name == "ann"
    # ``notice`` is not kept: None means "owe nothing" (callers pass the current notice).
    assert c.notice is None


async def test_contacts_listing_and_counts(store: ChatStore) -> None:
    await store.put_contact(OTHER, state=ContactState.FRIEND, now=2)
    await store.put_contact(PEER, state=ContactState.INCOMING, now=1)
    await store.put_contact("12D3KooWPeerC", state=ContactState.FRIEND, now=2)
    assert [c.peer_id for c in await store.contacts()] == [PEER, OTHER, "12D3KooWPeerC"]
    friends = await store.contacts([ContactState.FRIEND])
    assert [c.peer_id for c in friends] == [OTHER, "12D3KooWPeerC"]
    assert await store.contacts([]) == []
    assert await store.contacts([ContactState.BLOCKED]) == []
    await store.delete_contact(OTHER)
    await store.delete_contact("never-existed")
    assert len(await store.contacts([ContactState.FRIEND])) == 1


async def test_update_fields_and_clear_notice(store: ChatStore) -> None:
    await store.put_contact(PEER, state=ContactState.OUTGOING, now=1, notice=Notice.REQUEST)
    updated = await store.update_fields(PEER, now=2, addrs=["/x"], their_name="p")
    assert updated is not None and updated.notice is Notice.REQUEST  # never touched
    assert updated.state is ContactState.OUTGOING and updated.updated_at == 2
    await store.clear_notice(PEER, Notice.ACCEPT)  # a different notice: kept
    c = await store.contact(PEER)
    assert c is not None and c.addrs == ("/x",) and c.notice is Notice.REQUEST
    await store.clear_notice(PEER, Notice.REQUEST)
    c = await store.contact(PEER)
    assert c is not None and c.notice is None
    assert await store.update_fields("unknown", now=3, addrs=["/y"]) is None  # no row
    assert await store.contact("unknown") is None


# --- messages --------------------------------------------------------------------------------


async def test_add_outgoing_assigns_increasing_seq_per_contact(store: ChatStore) -> None:
    await friend(store)
    await friend(store, OTHER)
    a1, _ = await store.add_outgoing(PEER, mid(1), "one", now=100)
    a2, _ = await store.add_outgoing(PEER, mid(2), "two", now=101)
    b1, _ = await store.add_outgoing(OTHER, mid(3), "uno", now=102)
    a3, _ = await store.add_outgoing(PEER, mid(4), "three", now=103)
    assert [a1.seq, a2.seq, a3.seq, b1.seq] == [1, 2, 3, 1]
    assert a1.row < a2.row < b1.row < a3.row
    assert a1.outgoing and a1.state is MessageState.PENDING
    assert (a1.peer_id, a1.msg_id, a1.text, a1.sent_at, a1.stored_at) == (
        PEER,
        mid(1),
        "one",
        100,
        100,
    )
    assert a1.delivered_at is None


async def test_add_outgoing_retry_with_same_id_adds_nothing(store: ChatStore) -> None:
    await friend(store)
    first, created = await store.add_outgoing(PEER, mid(1), "once", now=1)
    assert created
    again, created_again = await store.add_outgoing(PEER, mid(1), "once", now=2)
    assert not created_again
    assert again == first
    with pytest.raises(ValueError):
        await store.add_outgoing(PEER, mid(1), "different text", now=3)
    nxt, _ = await store.add_outgoing(PEER, mid(2), "next", now=4)
    assert nxt.seq == first.seq + 1  # the retries consumed no sequence number
    assert [m.text for m in await store.history(PEER, 10)] == ["once", "next"]


async def test_seq_is_never_reused_after_the_contact_is_recreated(store: ChatStore) -> None:
    """block -> unblock -> add deletes and re-creates the contact row; the conversation's
    sequence must continue, or the receiver-side order and the hand-over queue break."""
    await friend(store)
    for n in range(3):
        await store.add_outgoing(PEER, mid(n), f"old {n}", now=n)
    await store.delete_contact(PEER)
    await friend(store)
    record, _ = await store.add_outgoing(PEER, mid(10), "new", now=10)
    assert record.seq == 4


async def test_add_outgoing_unknown_contact(store: ChatStore) -> None:
    with pytest.raises(KeyError):
        await store.add_outgoing("nobody", mid(1), "x", now=1)
    assert await store.history("nobody", 10) == []


async def test_add_outgoing_seq_survives_contact_update(store: ChatStore) -> None:
    await friend(store)
    await store.add_outgoing(PEER, mid(1), "one", now=1)
    await store.put_contact(PEER, state=ContactState.FRIEND, now=2, name="x")
    assert (await store.add_outgoing(PEER, mid(2), "two", now=3))[0].seq == 2


async def test_add_incoming_is_idempotent(store: ChatStore) -> None:
    msgs = [IncomingMessage(mid(1), 1, 50, "hello"), IncomingMessage(mid(2), 2, 51, "again")]
    first = await store.add_incoming(PEER, msgs, now=60)
    assert [(m.msg_id, m.seq, m.text, m.sent_at, m.stored_at) for m in first] == [
        (mid(1), 1, "hello", 50, 60),
        (mid(2), 2, "again", 51, 60),
    ]
    assert all(not m.outgoing and m.state is MessageState.RECEIVED for m in first)
    assert await store.add_incoming(PEER, msgs, now=70) == []
    third = await store.add_incoming(
        PEER, [IncomingMessage(mid(2), 2, 51, "again"), IncomingMessage(mid(3), 3, 52, "new")], 80
    )
    assert [m.msg_id for m in third] == [mid(3)]
    # Duplicates within one call are stored once too.
    dup = IncomingMessage(mid(9), 9, 1, "dup")
    assert len(await store.add_incoming(PEER, [dup, dup], now=90)) == 1
    history = await store.history(PEER, 100)
    assert [m.msg_id for m in history] == [mid(1), mid(2), mid(3), mid(9)]


async def test_same_msg_id_is_separate_per_peer_and_direction(store: ChatStore) -> None:
    await friend(store)
    out, _ = await store.add_outgoing(PEER, mid(1), "mine", now=1)
    inc = await store.add_incoming(PEER, [IncomingMessage(mid(1), 1, 1, "theirs")], now=2)
    other = await store.add_incoming(OTHER, [IncomingMessage(mid(1), 1, 1, "other")], now=3)
    assert out.msg_id == inc[0].msg_id == other[0].msg_id
    assert len(await store.history(PEER, 10)) == 2


async def test_mark_delivered_changes_state_once(store: ChatStore) -> None:
    await friend(store)
    m1, _ = await store.add_outgoing(PEER, mid(1), "one", now=1)
    await store.add_outgoing(PEER, mid(2), "two", now=1)
    await store.add_incoming(PEER, [IncomingMessage(mid(3), 1, 1, "in")], now=1)
    changed = await store.mark_delivered(PEER, [mid(1), mid(404), mid(3)], now=50)
    assert len(changed) == 1
    assert changed[0].row == m1.row
    assert changed[0].state is MessageState.DELIVERED
    assert changed[0].delivered_at == 50
    assert await store.mark_delivered(PEER, [mid(1)], now=60) == []
    assert await store.mark_delivered(OTHER, [mid(2)], now=60) == []  # wrong peer
    history = {m.msg_id: m for m in await store.history(PEER, 10)}
    assert history[mid(1)].delivered_at == 50
    assert history[mid(2)].state is MessageState.PENDING
    assert history[mid(3)].state is MessageState.RECEIVED


async def test_outbox_order_limit_and_after_seq(store: ChatStore) -> None:
    await friend(store)
    await friend(store, OTHER)
    for n in range(1, 11):
        await store.add_outgoing(PEER, mid(n), f"m{n}", now=n)
    await store.add_outgoing(OTHER, mid(99), "other", now=1)
    await store.mark_delivered(PEER, [mid(2), mid(5)], now=20)
    box = await store.outbox(PEER, after_seq=0, limit=100)
    assert [m.seq for m in box] == [1, 3, 4, 6, 7, 8, 9, 10]
    assert all(m.peer_id == PEER and m.state is MessageState.PENDING for m in box)
    assert [m.seq for m in await store.outbox(PEER, after_seq=0, limit=3)] == [1, 3, 4]
    assert [m.seq for m in await store.outbox(PEER, after_seq=4, limit=3)] == [6, 7, 8]
    assert await store.outbox(PEER, after_seq=10, limit=3) == []
    assert await store.outbox_sizes() == {PEER: 8, OTHER: 1}


async def test_history_paging(store: ChatStore) -> None:
    await friend(store)
    for n in range(1, 11):
        if n % 2:
            await store.add_outgoing(PEER, mid(n), f"m{n}", now=n)
        else:
            await store.add_incoming(PEER, [IncomingMessage(mid(n), n, n, f"m{n}")], now=n)
        await store.add_incoming(OTHER, [IncomingMessage(mid(n), n, n, "noise")], now=n)
    page = await store.history(PEER, 3)
    assert [m.text for m in page] == ["m8", "m9", "m10"]
    seen = [m.text for m in page]
    while page:
        page = await store.history(PEER, 3, before_row=page[0].row)
        seen = [m.text for m in page] + seen
    assert seen == [f"m{n}" for n in range(1, 11)]
    assert await store.history(PEER, 0) == []
    assert await store.history("nobody", 5) == []


async def test_unicode_and_binary_round_trip(store: ChatStore) -> None:
    await friend(store)
    text = "héllo 🌍 \u202e ' \" ; DROP TABLE messages; --"
    msg_id = bytes(range(16))
    record, _ = await store.add_outgoing(PEER, msg_id, text, now=1)
    assert (record.text, record.msg_id) == (text, msg_id)
    assert (await store.history(PEER, 1))[0].text == text
