"""The roster (p2pchat.chat.roster) and reaching contacts (p2pchat.chat.reach) on a real
database, with a recording stand-in for the libp2p network and the DHT resolver."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pchat.api import ApiError
from p2pchat.chat.friendship import DELETE, ContactState, Notice, Step
from p2pchat.chat.reach import LOOKUP_BACKOFF_MAX, LOOKUP_BACKOFF_MIN, Reach
from p2pchat.chat.roster import Roster
from p2pchat.chat.store import ChatStore
from p2pchat.events import EventBus
from p2pchat.storage.database import Database, DatabaseError
from p2pchat.storage.schema import open_database

ANN = "12D3KooWAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnn1"
BOB = "12D3KooWBobBobBobBobBobBobBobBobBobBobBobBobBobBob2"


@pytest.fixture
async def roster(db: Database) -> Roster:
    r = Roster(ChatStore(db), EventBus())
    await r.load()
    return r


async def befriend(roster: Roster, peer: str, **fields: object) -> None:
    async with roster.locked(peer):
        await roster.apply(peer, Step(state=ContactState.FRIEND), **fields)


# --- roster ------------------------------------------------------------------------------------


async def test_apply_writes_the_database_before_the_cache_and_tells_listeners(
    roster: Roster,
) -> None:
    changed: list[str] = []
    ended: list[str] = []
    roster.add_change_listener(changed.append)
    roster.add_unfriend_listener(ended.append)
    await befriend(roster, ANN, name="ann", addrs=["/ip4/127.0.0.1/tcp/1"])
    stored = await roster.store.contact(ANN)
    assert stored is not None and roster.get(ANN) == stored
    assert roster.is_friend(ANN) and changed == [ANN] and ended == []

    async with roster.locked(ANN):
        await roster.apply(ANN, Step(state=ContactState.REMOVED, notice=Notice.REMOVE))
    assert not roster.is_friend(ANN) and ended == [ANN] and changed == [ANN, ANN]
    async with roster.locked(ANN):
        assert await roster.apply(ANN, Step(state=DELETE)) is None
    assert roster.get(ANN) is None and await roster.store.contact(ANN) is None
    assert ended == [ANN]  # ended once: it was no longer a friend when deleted
    assert changed == [ANN, ANN, ANN]  # the deletion is a change too


async def test_a_failed_write_leaves_the_cache_as_it_was(roster: Roster, db: Database) -> None:
    await befriend(roster, ANN, name="ann")
    before = roster.get(ANN)
    await db.close()  # every later write fails
    with pytest.raises(DatabaseError):
        async with roster.locked(ANN):
            await roster.apply(ANN, Step(state=ContactState.BLOCKED))
    assert roster.get(ANN) == before and roster.is_friend(ANN)


async def test_field_updates_keep_state_and_only_addresses_count_as_a_change(
    roster: Roster,
) -> None:
    await befriend(roster, ANN)
    changed: list[str] = []
    roster.add_change_listener(changed.append)
    async with roster.locked(ANN):
        await roster.apply(ANN, Step(), name="ann")
    assert changed == [] and roster.get(ANN).name == "ann"  # type: ignore[union-attr]
    await roster.learn_addrs(ANN, ("/ip4/10.0.0.1/tcp/4001",))
    await roster.learn_addrs(ANN, ("/ip4/10.0.0.1/tcp/4001",))  # the same: no write
    assert changed == [ANN]
    contact = roster.get(ANN)
    assert contact is not None and contact.state is ContactState.FRIEND
    assert contact.addrs == ("/ip4/10.0.0.1/tcp/4001",)
    await roster.learn_addrs(BOB, ("/ip4/10.0.0.2/tcp/4001",))  # a stranger: nothing stored
    assert roster.get(BOB) is None


async def test_online_counts_connections_and_announces_friends_only(roster: Roster) -> None:
    await befriend(roster, ANN)
    seen: list[tuple[str, bool]] = []
    roster.add_connection_listener(lambda peer, up: seen.append((peer, up)))
    events = roster.events.subscribe()
    roster.connection_changed(ANN, True)
    roster.connection_changed(ANN, True)  # a second connection: still one "online"
    roster.connection_changed(BOB, True)  # a stranger: no event
    roster.connection_changed(ANN, False)
    assert roster.is_online(ANN)
    roster.connection_changed(ANN, False)
    assert not roster.is_online(ANN) and roster.is_online(BOB)
    names = []
    while True:
        try:
            names.append(events.receive_nowait()["type"])
        except trio.WouldBlock:
            break
    assert names == ["friend.online", "friend.offline"]
    assert seen == [(ANN, True), (ANN, True), (BOB, True), (ANN, False), (ANN, False)]


async def test_resolve_prefers_our_names_and_refuses_ambiguity(roster: Roster) -> None:
    await befriend(roster, ANN, name="ann")
    await befriend(roster, BOB, their_name="ann")  # Bob calls himself "ann"
    assert roster.resolve("ann").peer_id == ANN  # the user's name for Ann wins
    assert roster.resolve(BOB).peer_id == BOB
    assert roster.resolve(BOB[-6:]).peer_id == BOB
    with pytest.raises(ApiError) as exc:
        roster.resolve("12D3KooW")  # the start of both IDs
    assert exc.value.name == "ambiguous"
    with pytest.raises(ApiError) as exc:
        roster.resolve("carol")
    assert exc.value.name == "not_found"


async def test_resolve_friend_refuses_contacts_that_are_not_friends(roster: Roster) -> None:
    await befriend(roster, ANN, name="ann")
    async with roster.locked(BOB):
        await roster.apply(BOB, Step(state=ContactState.OUTGOING, notice=Notice.REQUEST))
    assert roster.resolve_friend("ann", "only friends may").peer_id == ANN
    with pytest.raises(ApiError) as exc:
        roster.resolve_friend(BOB, "files can only go to accepted friends")
    assert exc.value.name == "not_friend"
    assert exc.value.message.endswith(
        "is not a friend (outgoing): files can only go to accepted friends"
    )


# --- reach -------------------------------------------------------------------------------------


@dataclass
class Found:
    addrs: tuple[str, ...]
    source: str = "record"


class FakeNetwork:
    """Records dials; a dial succeeds when the address is in ``reachable``."""

    def __init__(self) -> None:
        self.connected: set[str] = set()
        self.reachable: set[str] = set()
        self.dials: list[tuple[str, tuple[str, ...]]] = []

    def is_connected(self, peer: str) -> bool:
        return peer in self.connected

    def admit(self, peer: str, addrs: Sequence[str]) -> list[str]:
        return list(addrs)  # the address policy has its own tests (tests/net)

    async def dial(self, peer: str, addrs: Sequence[str]) -> bool:
        self.dials.append((peer, tuple(addrs)))
        if self.reachable & set(addrs):
            self.connected.add(peer)
            return True
        return False


class FakeResolver:
    def __init__(self) -> None:
        self.answer: Found | None = None
        self.lookups: list[tuple[float, str]] = []

    async def __call__(self, peer: str) -> Found | None:
        self.lookups.append((trio.current_time(), peer))
        return self.answer


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
def reach(roster: Roster, network: FakeNetwork, resolver: FakeResolver) -> Reach:
    r = Reach(network, roster)  # type: ignore[arg-type]
    r.resolver = resolver
    return r


OLD = "/ip4/127.0.0.1/tcp/1"
NEW = "/ip4/127.0.0.1/tcp/2"


async def test_known_addresses_first_then_the_dht_whose_record_is_learnt(
    roster: Roster, network: FakeNetwork, resolver: FakeResolver, reach: Reach
) -> None:
    await befriend(roster, ANN, addrs=[OLD])
    network.reachable = {NEW}
    resolver.answer = Found((NEW,))
    assert await reach.reach(ANN)
    assert network.dials == [(ANN, (OLD,)), (ANN, (NEW,))]
    assert roster.get(ANN).addrs == (NEW,)  # type: ignore[union-attr]
    assert await reach.reach(ANN)  # connected now: no dial
    assert len(network.dials) == 2


async def test_peer_routing_answers_are_dialed_but_not_stored(
    roster: Roster, network: FakeNetwork, resolver: FakeResolver, reach: Reach
) -> None:
    await befriend(roster, ANN, addrs=[OLD])
    network.reachable = {NEW}
    resolver.answer = Found((NEW,), source="peer-routing")
    assert await reach.reach(ANN)
    assert roster.get(ANN).addrs == (OLD,)  # type: ignore[union-attr]


def test_one_lookup_per_backoff_shared_by_all_callers(tmp_path: Path) -> None:
    async def body(roster: Roster, network: FakeNetwork, resolver: FakeResolver) -> None:
        reach = Reach(network, roster)  # type: ignore[arg-type]
        reach.resolver = resolver
        await befriend(roster, ANN, addrs=[OLD])
        for _ in range(3):  # the contact's link, the file link, ... at the same moment
            assert not await reach.reach(ANN)
        assert len(resolver.lookups) == 1
        await trio.sleep(LOOKUP_BACKOFF_MIN)
        assert not await reach.reach(ANN)
        assert not await reach.reach(ANN, lookup=True)  # a user waits: look up now
        assert not await reach.reach(ANN, lookup=True)  # ... as often as they ask
        # ... without pushing the links' backoff back: it is still the second period
        assert not await reach.reach(ANN)
        await trio.sleep(2 * LOOKUP_BACKOFF_MIN)
        assert not await reach.reach(ANN)
        await trio.sleep(10 * LOOKUP_BACKOFF_MAX)
        for _ in range(8):
            assert not await reach.reach(ANN)
            await trio.sleep(LOOKUP_BACKOFF_MAX)
        times = [t for t, _ in resolver.lookups]
        gaps = [round(b - a) for a, b in itertools.pairwise(times)]
        assert gaps[:4] == [LOOKUP_BACKOFF_MIN, 0, 0, 2 * LOOKUP_BACKOFF_MIN]
        assert max(gaps[2:]) <= 10 * LOOKUP_BACKOFF_MAX + LOOKUP_BACKOFF_MAX
        assert gaps[-1] == LOOKUP_BACKOFF_MAX  # capped at 15 min
        # a change of network allows one lookup at once
        reach.network_changed(ANN)
        assert not await reach.reach(ANN)
        assert len(resolver.lookups) == len(times) + 1
        # found: the backoff starts again from the minimum
        network.reachable = {NEW}
        resolver.answer = Found((NEW,))
        reach.network_changed(ANN)
        assert await reach.reach(ANN)
        network.connected.clear()
        network.reachable = set()
        assert not await reach.reach(ANN)
        await trio.sleep(LOOKUP_BACKOFF_MIN)
        before = len(resolver.lookups)
        assert not await reach.reach(ANN)
        assert len(resolver.lookups) == before + 1

    async def main(tmp: Path) -> None:
        async with open_database(tmp / "p2pchat.db") as db:
            roster = Roster(ChatStore(db), EventBus())
            await roster.load()
            await body(roster, FakeNetwork(), FakeResolver())

    # Virtual time: the backoff runs up to 15 min. The database worker is a real thread, so
    # the clock jumps only once every task has been blocked for 10 ms of real time.
    trio.run(main, tmp_path, clock=trio.testing.MockClock(autojump_threshold=0.01))


async def test_strangers_and_unknown_peers_are_not_dialed(
    network: FakeNetwork, resolver: FakeResolver, reach: Reach
) -> None:
    assert not await reach.reach(BOB)
    assert network.dials == [] and resolver.lookups == []
