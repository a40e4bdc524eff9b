"""Per-friend quotas (p2pchat.chat.quotas): the sans-IO class on a virtual clock, then its
checks where they apply (message stream, friend requests, file offers, ended transfer records)
on a real SQLite file."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from libp2p.abc import INetStream

from p2pchat import wire
from p2pchat.chat.friends import Friends
from p2pchat.chat.friendship import ContactState, Step
from p2pchat.chat.messages import Messages
from p2pchat.chat.quotas import (
    CONTENTION_WINDOW_S,
    PACE_CHUNK,
    REPORT_WINDOW_S,
    FriendQuotas,
    MessageAdmission,
)
from p2pchat.chat.ratelimit import MAX_TRACKED_PEERS, TokenBucket
from p2pchat.chat.roster import Roster
from p2pchat.chat.store import ChatStore
from p2pchat.config import ConfigError, QuotaConfig, load_config
from p2pchat.events import EventBus
from p2pchat.files.notices import Notices
from p2pchat.files.state import Direction, TEvent, TState
from p2pchat.files.store import Transfer, TransferStore
from p2pchat.files.table import TransferTable
from p2pchat.net.host import Network
from p2pchat.storage.database import Database
from tests.harness import FakeClock, FakeStream

ANN = "12D3KooWAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnn1"
BOB = "12D3KooWBobBobBobBobBobBobBobBobBobBobBobBobBobBob2"
ME = "12D3KooWMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMe3"


def quotas(clock: FakeClock, **limits: float) -> FriendQuotas:
    return FriendQuotas(clock, QuotaConfig.from_json(limits))


# --- the sans-IO class -----------------------------------------------------------------------


def test_take_up_to_takes_whole_tokens_only() -> None:
    b = TokenBucket(5, 2.0, 5, 0.0)
    assert b.take_up_to(3, 0.0) == 3
    assert b.take_up_to(3, 0.0) == 2
    assert b.take_up_to(3, 0.0) == 0
    assert b.take_up_to(3, 0.75) == 1  # 1.5 tokens refilled: one whole
    assert b.take_up_to(3, 100.0) == 3  # refilled to capacity, not beyond
    assert b.take_up_to(0, 100.0) == 0


def test_seconds_until_counts_refill_and_caps_at_capacity() -> None:
    b = TokenBucket(5, 2.0, 0, 0.0)
    assert b.seconds_until(1, 0.0) == 0.5
    assert b.seconds_until(3, 0.5) == 1.0  # one token refilled, two to go
    assert b.seconds_until(50, 0.0) == 2.5  # never waits for more than the capacity
    assert b.seconds_until(1, 10.0) == 0.0


def test_message_burst_then_rate_paces_instead_of_refusing() -> None:
    clock = FakeClock()
    q = quotas(clock, message_burst=10, messages_per_s=2)
    assert q.admit_messages(ANN, 6, unread=0) == MessageAdmission(6)
    first = q.admit_messages(ANN, 6, unread=6)
    assert first.taken == 4 and first.refused is None
    assert first.wait_s == 1.0  # two more at 2/s
    again = q.admit_messages(ANN, 2, unread=10, retry=True)
    assert again.taken == 0 and again.wait_s == 1.0
    clock.advance(1.0)
    assert q.admit_messages(ANN, 2, unread=10, retry=True) == MessageAdmission(2)
    # Another friend has a bucket of its own.
    assert q.admit_messages(BOB, 10, unread=0) == MessageAdmission(10)
    [ann] = q.status()
    assert ann["code"] == "paced" and ann["paced_messages"] == 2  # counted once
    assert ann["refused"]["messages"] == 0


def test_while_another_friend_sends_a_flooder_gets_the_shared_rate() -> None:
    clock = FakeClock()
    q = quotas(
        clock,
        message_burst=10_000,
        messages_per_s=5_000,
        shared_message_burst=10,
        shared_messages_per_s=5,
    )
    assert q.admit_messages(ANN, 1000, unread=0) == MessageAdmission(1000)  # alone: full speed
    assert q.admit_messages(BOB, 1, unread=0) == MessageAdmission(1)  # BOB is now sending too
    shared = q.admit_messages(ANN, 1000, unread=1000)
    assert shared.taken == 10 and shared.refused is None
    assert shared.wait_s == 10 / 5  # a chunk (at most the bucket) at the shared rate
    assert q.admit_messages(BOB, 1, unread=1) == MessageAdmission(1)  # BOB is not held up
    [ann] = [e for e in q.status() if e["peer_id"] == ANN]
    assert "5 messages/s" in ann["reason"]
    clock.advance(CONTENTION_WINDOW_S + 0.1)  # BOB quiet again: ANN has its own rate back
    assert q.admit_messages(ANN, 1000, unread=1010, retry=True) == MessageAdmission(1000)


def test_a_paced_wait_is_for_a_chunk_not_one_message() -> None:
    clock = FakeClock()
    q = quotas(clock, message_burst=100, messages_per_s=10)
    assert q.admit_messages(ANN, 100, unread=0) == MessageAdmission(100)
    assert q.admit_messages(ANN, 500, unread=100).wait_s == PACE_CHUNK / 10
    assert q.admit_messages(ANN, 3, unread=100, retry=True).wait_s == 0.3


def test_unread_cap_refuses_with_quota_and_reading_frees_it() -> None:
    clock = FakeClock()
    q = quotas(clock, max_unread_messages=100)
    capped = q.admit_messages(ANN, 30, unread=80)
    assert capped.taken == 20 and capped.wait_s == 0
    refused = capped.refused
    assert refused is not None and refused.code == wire.REFUSED_QUOTA
    assert "100" in refused.reason
    assert q.admit_messages(ANN, 1, unread=100).refused is not None
    assert q.admit_messages(ANN, 30, unread=0) == MessageAdmission(30)  # the user read them
    assert q.admit_messages(BOB, 30, unread=99).taken == 1


def test_unread_cap_does_not_spend_rate_tokens() -> None:
    clock = FakeClock()
    q = quotas(clock, message_burst=10, messages_per_s=0.001, max_unread_messages=5)
    assert q.admit_messages(ANN, 8, unread=0).taken == 5
    assert q.admit_messages(ANN, 8, unread=5).taken == 0
    assert q.admit_messages(ANN, 8, unread=0).taken == 5  # 5 tokens were left


def test_hellos_requests_offers() -> None:
    clock = FakeClock()
    q = quotas(clock, hello_burst=3, hellos_per_s=0.5, request_burst=2, requests_per_s=0.1)
    assert [q.admit_hello(ANN) is None for _ in range(4)] == [True, True, True, False]
    clock.advance(2.0)
    assert q.admit_hello(ANN) is None
    assert q.admit_hello(BOB) is None
    assert [q.admit_request(ANN) is None for _ in range(3)] == [True, True, False]
    refused = q.admit_request(ANN)
    assert refused is not None and refused.code == wire.REFUSED_RATE_LIMITED
    clock.advance(10.0)
    assert q.admit_request(ANN) is None
    assert q.admit_offer(ANN, 19) is None
    offer = q.admit_offer(ANN, 20)
    assert offer is not None and offer.code == wire.REFUSED_FULL  # retried by every sender


def test_status_reports_who_is_refused_for_what_and_forgets_after_the_window() -> None:
    clock = FakeClock()
    q = quotas(clock, max_unread_messages=5, hello_burst=1)
    assert q.status() == []
    q.admit_messages(ANN, 8, unread=0)
    q.admit_hello(ANN)
    q.admit_hello(ANN)
    q.admit_messages(BOB, 5, unread=0)  # all accepted: not reported
    clock.advance(1.0)
    [ann] = q.status()
    assert ann["peer_id"] == ANN
    assert ann["refused"] == {"messages": 3, "hellos": 1, "requests": 0, "offers": 0, "streams": 0}
    assert ann["accepted_messages"] == 5
    assert ann["code"] == wire.REFUSED_RATE_LIMITED and "hello" in ann["reason"]
    assert ann["refused_s_ago"] == 1.0
    clock.advance(REPORT_WINDOW_S)
    assert q.status() == []


def test_tracked_friends_are_bounded() -> None:
    clock = FakeClock()
    q = quotas(clock, hello_burst=1)
    for i in range(MAX_TRACKED_PEERS + 10):
        q.admit_hello(f"peer{i}")
    assert len(q._friends) == MAX_TRACKED_PEERS


def test_config_section_is_validated(tmp_path: Path) -> None:
    home_path = tmp_path
    (home_path / "config.json").write_text('{"quotas": {"max_open_offers": 5}}')
    cfg = load_config(home_path)
    assert cfg.quotas.max_open_offers == 5 and cfg.quotas.max_ended_transfers == 1000
    assert cfg.to_json()["quotas"]["max_open_offers"] == 5
    for bad in ('{"max_open_offers": 0}', '{"max_open_offers": 2.5}', '{"nope": 1}', "[]"):
        (home_path / "config.json").write_text(f'{{"quotas": {bad}}}')
        with pytest.raises(ConfigError, match="quotas"):
            load_config(home_path)


# --- where they apply, on a real database ----------------------------------------------------


def msgs(*ns: int) -> list[wire.Frame]:
    return [wire.ChatMessage(n.to_bytes(16, "big"), n, 1000 + n, f"message {n}") for n in ns]


@pytest.fixture
async def roster(db: Database) -> Roster:
    r = Roster(ChatStore(db), EventBus())
    await r.load()
    for peer in (ANN, BOB):
        async with r.locked(peer):
            await r.apply(peer, Step(state=ContactState.FRIEND))
    return r


async def receive(messages: Messages, peer: str, *reads: list[wire.Frame]) -> FakeStream:
    stream = FakeStream(*reads)
    with trio.fail_after(10):
        await messages.serve(cast(INetStream, stream), peer)
    return stream


async def test_unread_cap_refuses_the_rest_unacked_other_friend_unaffected(
    roster: Roster,
) -> None:
    clock = FakeClock()
    m = Messages(
        network=cast(Network, None),
        roster=roster,
        my_addrs=lambda: (),
        quotas=quotas(clock, max_unread_messages=5),
    )
    s = await receive(m, ANN, [wire.Hello(()), *msgs(1, 2, 3)], msgs(4, 5, 6, 7, 8))
    assert s.acked() == [1, 2, 3, 4, 5]
    assert s.refused() == wire.REFUSED_QUOTA
    assert await roster.store.unread_count(ANN) == 5  # 6..8 neither stored nor acked

    s = await receive(m, BOB, msgs(1, 2, 3))
    assert s.acked() == [1, 2, 3] and s.refused() is None

    s = await receive(m, ANN, msgs(6, 7, 8))  # the sender resends: still refused
    assert s.acked() == [] and s.refused() == wire.REFUSED_QUOTA
    assert [q["peer_id"] for q in m.quotas.status()] == [ANN]

    await m.mark_read(ANN)
    s = await receive(m, ANN, msgs(6, 7, 8))
    assert s.acked() == [6, 7, 8] and s.refused() is None
    history = await roster.store.history(ANN, limit=100)
    assert sorted(r.seq for r in history) == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_over_the_rate_a_friend_is_paced_not_refused(roster: Roster) -> None:
    m = Messages(
        network=cast(Network, None),
        roster=roster,
        my_addrs=lambda: (),
        quotas=FriendQuotas(time.monotonic, QuotaConfig(message_burst=4, messages_per_s=50)),
    )
    s = await receive(m, ANN, [wire.Hello(()), *msgs(1, 2, 3, 4, 5, 6)])
    # All stored and acked, nothing refused: the first four at once, the rest after a wait.
    acks = [len(f.msg_ids) for f in s.written if isinstance(f, wire.Ack)]
    assert acks == [4, 2] and s.refused() is None
    assert await roster.store.unread_count(ANN) == 6
    [ann] = m.quotas.status()
    assert ann["code"] == "paced" and ann["paced_messages"] == 2


async def test_a_paced_friend_does_not_hold_up_another(roster: Roster) -> None:
    m = Messages(
        network=cast(Network, None),
        roster=roster,
        my_addrs=lambda: (),
        quotas=FriendQuotas(time.monotonic, QuotaConfig(message_burst=2, messages_per_s=0.1)),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive, m, ANN, [wire.Hello(()), *msgs(1, 2, 3, 4)])
        with trio.fail_after(5):
            while await roster.store.unread_count(ANN) < 2:
                await trio.sleep(0.01)
        s = await receive(m, BOB, [wire.Hello(()), *msgs(1, 2)])  # while ANN waits ~10 s
        assert s.acked() == [1, 2]
        assert await roster.store.unread_count(ANN) == 2  # ANN's 3 and 4 still paced
        nursery.cancel_scope.cancel()


async def test_a_friend_may_hold_two_message_streams_at_once_not_more(roster: Roster) -> None:
    m = Messages(
        network=cast(Network, None),
        roster=roster,
        my_addrs=lambda: (),
        quotas=FriendQuotas(time.monotonic, QuotaConfig(message_burst=1, messages_per_s=0.1)),
    )
    async with trio.open_nursery() as nursery:
        for first in (1, 3):  # two streams, each paced after its first message
            nursery.start_soon(receive, m, ANN, [wire.Hello(()), *msgs(first, first + 1)])
        with trio.fail_after(5):
            while m._inbound.get(ANN) != 2:
                await trio.sleep(0.01)
        s = await receive(m, ANN, [wire.Hello(()), *msgs(5)])
        assert s.acked() == [] and s.refused() == wire.REFUSED_FULL
        [ann] = m.quotas.status()
        assert ann["refused"]["streams"] == 1 and "2 message streams" in ann["reason"]
        s = await receive(m, BOB, [wire.Hello(()), *msgs(1)])  # another friend: its own count
        assert s.acked() == [1]
        nursery.cancel_scope.cancel()
    assert ANN not in m._inbound  # both streams counted off when they ended


async def test_hello_rate_on_the_message_stream(roster: Roster) -> None:
    clock = FakeClock()
    m = Messages(
        network=cast(Network, None),
        roster=roster,
        my_addrs=lambda: (),
        quotas=quotas(clock, hello_burst=2),
    )
    s = await receive(m, ANN, [wire.Hello(()), *msgs(1, 2)])
    s = await receive(m, ANN, [wire.Hello(()), *msgs(3)])
    s = await receive(m, ANN, [wire.Hello(()), *msgs(4)])  # third hello at once
    assert s.acked() == [] and s.refused() == wire.REFUSED_RATE_LIMITED
    assert await roster.store.unread_count(ANN) == 3
    s = await receive(m, BOB, [wire.Hello(()), *msgs(1, 2, 3, 4)])
    assert s.acked() == [1, 2, 3, 4]


async def test_friend_re_requests_are_rate_limited(roster: Roster) -> None:
    clock = FakeClock()
    net = SimpleNamespace(identity=SimpleNamespace(peer_id=ME), listen_addrs=lambda: [])
    friends = Friends(
        network=cast(Network, net),
        roster=roster,
        clock=clock,
        quotas=quotas(clock, request_burst=2, requests_per_s=0.01),
    )
    request = wire.FriendRequest("ann", "", ())
    replies = [await friends.on_frame(ANN, request) for _ in range(3)]
    assert [type(r).__name__ for r in replies] == ["Received", "Received", "Refused"]
    assert isinstance(replies[2], wire.Refused) and replies[2].code == wire.REFUSED_RATE_LIMITED
    assert isinstance(await friends.on_frame(BOB, request), wire.Received)
    clock.advance(100.0)
    assert isinstance(await friends.on_frame(ANN, request), wire.Received)


def offer(n: int) -> wire.FileOffer:
    return wire.FileOffer(n.to_bytes(16, "big"), f"f{n}.txt", 10, bytes(32))


async def test_open_offers_capped_and_ended_records_pruned(db: Database) -> None:
    async def nothing(t: Transfer) -> None:
        pass

    table = TransferTable(TransferStore(db), EventBus(), lambda t: None)
    clock = FakeClock()
    notices = Notices(
        table=table,
        net=cast(Network, None),
        events=EventBus(),
        on_offered=nothing,
        quotas=quotas(clock, max_open_offers=2, max_ended_transfers=3),
    )
    assert isinstance(await notices.answer(ANN, offer(1)), wire.Received)
    assert isinstance(await notices.answer(ANN, offer(2)), wire.Received)
    refused = await notices.answer(ANN, offer(3))
    assert isinstance(refused, wire.Refused) and refused.code == wire.REFUSED_FULL
    assert isinstance(await notices.answer(BOB, offer(4)), wire.Received)
    assert isinstance(await notices.answer(ANN, offer(2)), wire.Received)  # a repeat

    # Five ended transfers of ANN's (one still owing a notice), oldest first.
    for n in range(10, 15):
        t = Transfer(
            tid=n.to_bytes(16, "big"),
            peer_id=ANN,
            direction=Direction.IN,
            name=f"old{n}",
            size=1,
            hash=bytes(32),
            state=TState.COMPLETED,
            created_at=n,
            updated_at=n,
            notice="file-end" if n == 10 else None,
        )
        assert await table.add(t)
    for tid in (1, 2):  # free the two open slots
        await table.apply(tid.to_bytes(16, "big"), TEvent.PEER_CANCELLED)
    assert isinstance(await notices.answer(ANN, offer(5)), wire.Received)
    # 7 ended records for a quota of 3: the 4 oldest not owing a notice (11..14) went; 10
    # still owes the friend a notice; 1 and 2 are the newest; 5 is open.
    kept = {int.from_bytes(t.tid, "big") for t in await table.store.all() if t.peer_id == ANN}
    assert kept == {1, 2, 5, 10}
    assert kept == {int.from_bytes(t.tid, "big") for t in table.of_peer(ANN)}
    assert {int.from_bytes(t.tid, "big") for t in table.of_peer(BOB)} == {4}


# --- cool-downs --------------------------------------------------------------------------


def cooled(clock: FakeClock, **limits: float) -> tuple[FriendQuotas, list[tuple[str, float]]]:
    started: list[tuple[str, float]] = []
    q = FriendQuotas(
        clock,
        QuotaConfig.from_json(limits),
        on_cooldown=lambda peer, seconds: started.append((peer, seconds)),
    )
    return q, started


def test_a_friend_that_keeps_drawing_refusals_is_cooled_down() -> None:
    clock = FakeClock()
    q, started = cooled(clock, refusal_burst=5, refusals_per_s=1, cooldown_s=30)
    for _ in range(5):
        refused = q.admit_stream(ANN, 2)
        assert refused is not None and "disconnected" not in refused.reason
    assert started == [] and q.cooling_down(ANN) == 0
    refused = q.admit_stream(ANN, 2)  # the sixth, with the budget spent
    assert refused is not None and refused.code == wire.REFUSED_FULL
    assert "refused too often: disconnected for 30 s" in refused.reason
    assert started == [(ANN, 30.0)]
    assert q.cooling_down(ANN) == 30.0 and q.cooling_down(BOB) == 0
    # Refusals still drawn while it is being disconnected start no second cool-down.
    for _ in range(20):
        assert q.admit_offer(ANN, 20) is not None
    assert started == [(ANN, 30.0)]
    [ann] = q.status()
    assert ann["cooldown_s"] == 30.0 and ann["cooldowns"] == 1
    assert ann["refused"]["streams"] == 6 and ann["refused"]["offers"] == 20
    # Reported for as long as it lasts, beyond the report window of its last refusal.
    clock.advance(29.0)
    assert q.cooling_down(ANN) == 1.0
    assert [entry["cooldown_s"] for entry in q.status()] == [1.0]
    clock.advance(1.0)
    assert q.cooling_down(ANN) == 0


def test_refusals_at_the_refill_rate_never_cool_a_friend_down() -> None:
    """An honest daemon retrying after a backoff draws a refusal now and then."""
    clock = FakeClock()
    q, started = cooled(clock, refusal_burst=5, refusals_per_s=1)
    for _ in range(1000):
        assert q.admit_offer(ANN, 20) is not None
        clock.advance(1.0)
    assert started == []
    # Being paced is not a refusal: any number of paced messages cool nothing down.
    for _ in range(100):
        q.admit_messages(BOB, 100_000, unread=0)
    assert started == []


def test_a_repeat_offender_waits_twice_as_long_each_time_up_to_ten_minutes() -> None:
    clock = FakeClock()
    q, started = cooled(clock, refusal_burst=4, refusals_per_s=1, cooldown_s=30)
    for _ in range(7):
        while q.cooling_down(ANN) == 0:
            q.admit_stream(ANN, 2)
        clock.advance(q.cooling_down(ANN))
    assert [seconds for _, seconds in started] == [30, 60, 120, 240, 480, 600, 600]
    # Back after the last one, it has half its budget (refilling from the end of it)...
    assert [q.admit_stream(ANN, 2) is not None for _ in range(2)] == [True, True]
    assert len(started) == 7
    # ...and an hour of good behaviour forgives the record.
    clock.advance(3601.0)
    while q.cooling_down(ANN) == 0:
        q.admit_stream(ANN, 2)
    assert started[-1] == (ANN, 30.0)


async def test_a_sender_refused_full_waits_with_its_other_offers() -> None:
    """An honest daemon sending many files draws one refusal per try while the friend is
    full, not one per file (which would cool it down); other notices still go."""
    from p2pchat.files.manager import FileLink
    from p2pchat.files.notices import RefusedForNow
    from p2pchat.files.store import OFFER_NOTICE

    owed = [SimpleNamespace(notice=OFFER_NOTICE, n=i) for i in range(30)]
    owed.insert(25, SimpleNamespace(notice="canceled", n=99))
    tried: list[int] = []

    async def deliver(t: SimpleNamespace) -> None:
        tried.append(t.n)
        if t.notice == OFFER_NOTICE and t.n >= 20:
            raise RefusedForNow("offer refused for now: 20 of your file offers are open")

    async def reach(peer: str) -> bool:
        return True

    link = FileLink(
        ANN,
        roster=cast(Roster, SimpleNamespace(is_friend=lambda peer: True)),
        reach=cast(Any, SimpleNamespace(reach=reach)),
        notices=cast(Notices, SimpleNamespace(owed=lambda peer: owed, deliver=deliver)),
        receiver=cast(Any, SimpleNamespace(to_receive=lambda peer: [], start=None)),
    )
    with trio.fail_after(5):
        assert await link.step()  # 20 offers and the end notice delivered
    assert tried == [*range(21), 99]
