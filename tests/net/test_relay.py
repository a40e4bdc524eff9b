"""Circuit relay v2 through :class:`p2pchat.net.relay.Relays`, with real sockets on 127.0.0.1:
reservations and circuit addresses, relayed connections reaching ordinary handlers, one
circuit's end leaving another circuit to the same peer alone (a py-libp2p bug worked around
by ``IsolatedCircuitRelay``), the relay's byte limit and its cap on reservations per source IP
(peers dial it from 127.0.0.1 and, through a bound source address, from 127.0.0.2). Hole
punching is off here (on loopback DCUtR would upgrade at once); tests/daemons/test_nat.py
covers it behind real NATs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, PeerId
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
from multiaddr import Multiaddr

from p2pchat.identity import Identity
from p2pchat.net.host import Network
from p2pchat.net.relay import IsolatedCircuitRelay, RelayLimitsConfig, Relays, ReservationsPerIp
from p2pchat.net.streams import read_some

ECHO = "/test/echo/1.0.0"
LIMITS = RelayLimitsConfig(max_reservations=8, max_circuit_bytes=1 << 24, max_circuit_seconds=60)


@dataclass
class Peer:
    network: Network
    relays: Relays

    @property
    def id(self) -> str:
        return self.network.identity.peer_id


async def echo(stream: INetStream) -> None:
    try:
        while data := await read_some(stream):
            await stream.write(data)
    except Exception:
        pass
    finally:
        await stream.close()


@asynccontextmanager
async def peers(n: int, limits: RelayLimitsConfig = LIMITS) -> AsyncIterator[list[Peer]]:
    """``n`` hosts; the first is a relay, the second reserves a slot there."""
    async with trio.open_nursery() as nursery:
        out: list[Peer] = []
        for i in range(n):
            network = Network(Identity.generate())
            network.set_handler(ECHO, echo)
            await nursery.start(_run_host, network)
            relays = Relays(network, limits)
            relays.want_reservations = i == 1
            await nursery.start(relays.run, i == 0, False)
            out.append(Peer(network, relays))
        yield out
        nursery.cancel_scope.cancel()


async def _run_host(network: Network, *, task_status: trio.TaskStatus[None]) -> None:
    async with network.run(["/ip4/127.0.0.1/tcp/0"]):
        task_status.started()
        await trio.sleep_forever()


async def reserve(relay: Peer, target: Peer) -> str:
    assert await target.network.dial(relay.id, relay.network.listen_addrs())
    with trio.fail_after(10):
        while not target.relays.circuit_addrs():
            target.relays.poke()
            await trio.sleep(0.05)
    (circuit,) = target.relays.circuit_addrs()
    return circuit


async def round_trip(src: Peer, dst: Peer, payload: bytes = b"ping") -> bytes:
    with trio.fail_after(5):
        stream = await src.network.open_stream(dst.id, ECHO)
        await stream.write(payload)
        got = b""
        while len(got) < len(payload):
            chunk = await read_some(stream)
            if not chunk:
                break
            got += chunk
        await stream.close()
        return got


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_a_nat_peer_reserves_and_is_reached_through_its_circuit() -> None:
    async with peers(3) as (relay, target, dialer):
        circuit = await reserve(relay, target)
        assert circuit == f"{relay.network.listen_addrs()[0]}/p2p/{relay.id}/p2p-circuit"
        assert target.relays.relays() == [relay.id]
        assert await dialer.network.dial(target.id, [circuit])
        assert dialer.network.connection_kinds(target.id) == ["relayed"]
        assert await round_trip(dialer, target) == b"ping"


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_one_circuit_ending_leaves_another_circuit_to_the_same_peer_alone() -> None:
    async with peers(4) as (relay, target, first, second):
        circuit = await reserve(relay, target)
        for dialer in (first, second):
            assert await dialer.network.dial(target.id, [circuit])
            assert await round_trip(dialer, target) == b"ping"
        assert isinstance(relay.relays._protocol, IsolatedCircuitRelay)
        await first.network.disconnect(target.id)
        await trio.sleep(1.5)  # the stock relay closed the other circuit within ~1 s
        assert second.network.connection_kinds(target.id) == ["relayed"]
        assert await round_trip(second, target, b"still here") == b"still here"


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_the_relay_cuts_a_circuit_past_its_byte_limit() -> None:
    small = RelayLimitsConfig(max_reservations=8, max_circuit_bytes=200_000, max_circuit_seconds=60)
    async with peers(3, small) as (relay, target, dialer):
        circuit = await reserve(relay, target)
        assert await dialer.network.dial(target.id, [circuit])
        assert await round_trip(dialer, target) == b"ping"
        try:  # the echo cannot come back whole: reset, EOF or a short read, by timing
            got = await round_trip(dialer, target, b"x" * 400_000)
        except Exception:
            got = b""
        assert len(got) < 400_000
        with trio.fail_after(5):
            while dialer.network.connection_kinds(target.id):
                await trio.sleep(0.05)


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_a_lost_relay_drops_the_circuit_address() -> None:
    async with peers(2) as (relay, target):
        await reserve(relay, target)
        changes: list[int] = []
        target.relays.on_change(lambda: changes.append(1))
        await target.network.disconnect(relay.id)
        with trio.fail_after(10):
            while target.relays.circuit_addrs():
                target.relays.poke()
                await trio.sleep(0.05)
        assert changes


async def reserve_status(peer: Peer, relay: Peer, claim: bytes | None = None) -> StatusCode:
    """Send RESERVE (for ``claim``, else our own ID, as py-libp2p's client does) and return
    the relay's status code."""
    with trio.fail_after(10):
        stream = await peer.network.host.new_stream(
            ID.from_base58(relay.id), [TProtocol(HOP_PROTOCOL)]
        )
        try:
            own = ID.from_base58(peer.id).to_bytes()
            await write_delimited_msg(
                stream, HopMessage(type=HopMessage.RESERVE, peer=PeerId(id=claim or own))
            )
            reply = await read_delimited_msg(stream, HopMessage)
        finally:
            await stream.close()
    return StatusCode(reply.status)


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_the_relay_caps_reservations_per_source_ip() -> None:
    limits = RelayLimitsConfig(
        max_reservations=8,
        max_circuit_bytes=1 << 24,
        max_circuit_seconds=60,
        max_reservations_per_ip=2,
    )
    async with peers(5, limits) as (relay, a, b, c, other):
        for p in (a, b, c, other):
            p.relays.want_reservations = False  # reservations by hand, below
        for p in (a, b, c):
            assert await p.network.dial(relay.id, relay.network.listen_addrs())
        # The fifth host reaches the relay from another source address.
        with trio.fail_after(10):
            await other.network.host.get_network().dial_addr(
                Multiaddr(relay.network.listen_addrs()[0]),
                ID.from_base58(relay.id),
                source=("127.0.0.2", 0),
            )
        (conn,) = [x for x in relay.network.connections() if x["peer_id"] == other.id]
        assert conn["addr"].startswith("/ip4/127.0.0.2/"), conn

        assert await reserve_status(a, relay) == StatusCode.OK
        assert await reserve_status(b, relay) == StatusCode.OK
        assert await reserve_status(c, relay) == StatusCode.RESERVATION_REFUSED
        assert await reserve_status(a, relay) == StatusCode.OK  # a renewal still works
        assert await reserve_status(other, relay) == StatusCode.OK
        # One connection cannot reserve under made-up IDs (the library would allow it).
        made_up = ID.from_base58(Identity.generate().peer_id).to_bytes()
        assert await reserve_status(other, relay, made_up) == StatusCode.PERMISSION_DENIED
        # A holder that goes away frees its slot.
        await a.network.disconnect(relay.id)
        with trio.fail_after(10):
            while await reserve_status(c, relay) != StatusCode.OK:
                await trio.sleep(0.1)


def test_reservations_per_ip_count_only_live_holders() -> None:
    live = {"a", "b", "c"}
    cap = ReservationsPerIp(2)
    assert cap.admit("10.0.0.1", "a", live.__contains__)
    assert cap.admit("10.0.0.1", "b", live.__contains__)
    assert not cap.admit("10.0.0.1", "c", live.__contains__)
    assert cap.admit("10.0.0.1", "a", live.__contains__)  # renewal
    assert cap.admit("10.0.0.2", "c", live.__contains__)  # another IP
    live.discard("b")  # expired or disconnected
    assert cap.admit("10.0.0.1", "d", lambda p: p in live or p == "d")
    assert cap.held("10.0.0.1") == 2
    # A holder reconnecting from another IP counts there, not twice.
    assert cap.admit("10.0.0.2", "a", live.__contains__)
    assert cap.held("10.0.0.1") == 1 and cap.held("10.0.0.2") == 2
    assert ReservationsPerIp(0).admit("10.0.0.3", "z", live.__contains__) is False
