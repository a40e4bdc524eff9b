"""A holder facing a hostile friend, with a real daemon (carol) and a scripted friend
(mallory) who sees every byte: malformed deposits, envelopes for strangers and for carol
herself, a full quota, fetching and deleting someone else's envelopes. Each gets a clear
refusal and nothing held for anyone else is lost; bob, who never befriended mallory, drops
what she left for him."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial

import cbor2
import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2pchat import wire
from p2pchat.identity import Identity
from p2pchat.mailbox import frames
from p2pchat.mailbox.envelope import HeldReceipt, seal_envelope
from tests.harness import Daemon, befriend, wait_for
from tests.peers import FakeFriend, call, connect, running

pytestmark = pytest.mark.daemons


async def session(mallory: FakeFriend, d: Daemon, *sent: frames.MailboxFrame) -> list[object]:
    """One mailbox stream to ``d``: ``sent``, then every answer until one per frame."""
    stream = await mallory.host.new_stream(
        ID.from_base58(d.peer_id), [TProtocol(frames.MAILBOX_PROTOCOL)]
    )
    await stream.write(b"".join(frames.encode(f) for f in sent))
    decoder = frames.MailboxDecoder()
    answers: list[object] = []
    wanted = len(sent)  # one answer each (a fetch's is its ``end``)
    with trio.fail_after(10):
        while sum(1 for a in answers if not isinstance(a, frames.Held)) < wanted:
            try:
                answers += decoder.feed(await stream.read(65536))
            except Exception:
                break
    await stream.reset()
    return answers


def code(answer: object) -> str:
    assert isinstance(answer, wire.Refused), answer
    return answer.code


async def test_a_holder_refuses_what_it_should_and_keeps_the_rest(
    make_daemon: Callable[..., Daemon],
) -> None:
    carol = await trio.to_thread.run_sync(partial(make_daemon, "carol", start=False))
    carol.configure(mailbox_max_bytes=8 * 1200)  # a depositor's share: 2 envelopes
    await trio.to_thread.run_sync(carol.start)
    bob = await trio.to_thread.run_sync(partial(make_daemon, "bob"))
    await trio.to_thread.run_sync(befriend, bob, carol)
    await trio.to_thread.run_sync(bob.stop)
    mallory = FakeFriend()
    async with running(mallory.host):
        await mallory.befriend(carol)
        me = mallory.identity
        later = int(time.time()) + 3600

        def for_(to: str) -> bytes:
            return seal_envelope(me, to, HeldReceipt((os.urandom(16),)), later).encode()

        kept = for_(bob.peer_id)
        kept_id = cbor2.loads(kept)["id"]
        answers = await session(
            mallory,
            carol,
            frames.Deposit(b"\xa0"),  # not an envelope
            frames.Deposit(cbor2.dumps({**cbor2.loads(kept), "exp": 5})),  # expired
            frames.Deposit(for_(carol.peer_id)),  # for carol herself
            frames.Deposit(for_(me.peer_id)),  # for mallory herself
            frames.Deposit(kept),
            frames.Deposit(kept),  # a retry: held once
            frames.Deposit(for_(bob.peer_id)),
            frames.Deposit(for_(bob.peer_id)),  # past mallory's share
        )
        assert [code(a) for a in answers[:4]] == [
            "bad_frame",
            "bad_frame",
            "not_friend",
            "not_friend",
        ]
        assert isinstance(answers[2], wire.Refused) and "directly" in answers[2].reason
        assert answers[4] == answers[5] == frames.Stored(kept_id)
        assert isinstance(answers[6], frames.Stored)
        assert code(answers[7]) == "quota" and "share" in str(answers[7])
        status = (await call(carol, "status"))["mailbox"]
        assert (status["held_envelopes"], status["held_for"]) == (2, 1)

        # Mallory fetches: nothing is hers. She names bob's envelope as taken: not deleted.
        answers = await session(mallory, carol, frames.Fetch(), frames.Taken((kept_id,)))
        assert answers == [frames.End(False), frames.Deleted(0)]
        assert (await call(carol, "status"))["mailbox"]["held_envelopes"] == 2

        # A broken frame ends the stream with the reason; the holder carries on.
        stream = await mallory.host.new_stream(
            ID.from_base58(carol.peer_id), [TProtocol(frames.MAILBOX_PROTOCOL)]
        )
        await stream.write(wire.encode_varint(3) + cbor2.dumps({"t": "fetch!"})[:3])
        with trio.fail_after(10):
            reply = frames.MailboxDecoder().feed(await stream.read(65536))
        assert code(reply[0]) == "bad_frame"
        await stream.reset()

        # Bob never befriended mallory: what she left him is dropped, not shown.
        await trio.to_thread.run_sync(bob.start)
        await trio.to_thread.run_sync(
            partial(
                wait_for,
                lambda: carol.call("status")["mailbox"]["held_envelopes"] == 0,
                what="bob to take (and drop) mallory's envelopes",
            )
        )
        assert "its sender is not a friend" in bob.log_text()
        assert (await call(bob, "messages.history", friend=carol.peer_id))["messages"] == []
        assert (await call(bob, "status"))["mailbox"]["fetched"] == 0


async def test_a_stranger_gets_dht_limits_and_nothing_of_anyone_else(
    make_daemon: Callable[..., Daemon],
) -> None:
    """As a DHT node, carol holds for peers that are not her friends: at most 100 deposits
    in a burst from one of them, and it can never fetch or delete what is held for others."""
    carol = await trio.to_thread.run_sync(partial(make_daemon, "carol"))
    stranger = FakeFriend()
    someone = Identity.generate()
    async with running(stranger.host):
        await connect(stranger.host, carol)
        me = stranger.identity
        later = int(time.time()) + 3600
        envelopes = [
            seal_envelope(me, someone.peer_id, HeldReceipt((os.urandom(16),)), later).encode()
            for _ in range(101)
        ]
        answers = await session(stranger, carol, *(frames.Deposit(e) for e in envelopes))
        assert all(isinstance(a, frames.Stored) for a in answers[:100]), answers[:100]
        assert code(answers[100]) == "rate_limited"
        # Someone else (here: the stranger again, on behalf of nobody) fetches: nothing.
        other = FakeFriend()
        async with running(other.host):
            await connect(other.host, carol)
            taken = tuple(cbor2.loads(e)["id"] for e in envelopes[:3])
            answers = await session(other, carol, frames.Fetch(), frames.Taken(taken))
            assert answers == [frames.End(False), frames.Deleted(0)]
        status = (await call(carol, "status"))["mailbox"]
        assert (status["held_envelopes"], status["held_for"]) == (100, 1)
