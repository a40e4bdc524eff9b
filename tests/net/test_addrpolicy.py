"""The announced-address dial policy (p2pchat.net.addrpolicy): classes, admission, caps and
backoff as plain functions; then, on real sockets, a friend that announces the address of an
internal service on this machine, which the daemon must never connect to."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol

from p2pchat import wire
from p2pchat.chat.friendship import ContactState, Step
from p2pchat.chat.messages import Messages
from p2pchat.chat.reach import Reach
from p2pchat.chat.roster import Roster
from p2pchat.chat.store import ChatStore
from p2pchat.events import EventBus
from p2pchat.identity import Identity
from p2pchat.net import compat
from p2pchat.net.addrpolicy import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    MAX_CIRCUITS,
    MAX_DIRECT,
    AddrPolicy,
    DialBackoff,
    Scope,
    Target,
    admit,
    classify,
    may_dial,
)
from p2pchat.net.host import DialFailed, Network, local_ips
from p2pchat.net.lan import LanDiscovery
from p2pchat.storage.schema import open_database

PEER = "12D3KooWAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnnAnn1"
OTHER = "12D3KooWBobBobBobBobBobBobBobBobBobBobBobBobBobBob2"
RELAY = "12D3KooWRelRelRelRelRelRelRelRelRelRelRelRelRelRel3"


# --- classes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "target"),
    [
        ("/ip4/127.0.0.1/tcp/6379", Target.LOOPBACK),
        ("/ip4/127.255.0.9/tcp/1", Target.LOOPBACK),
        ("/ip6/::1/tcp/1", Target.LOOPBACK),
        ("/ip6/::ffff:127.0.0.1/tcp/1", Target.LOOPBACK),  # IPv4-mapped
        ("/ip6/64:ff9b::7f00:1/tcp/1", Target.LOOPBACK),  # NAT64 of 127.0.0.1
        ("/ip6/2002:7f00:1::/tcp/1", Target.LOOPBACK),  # 6to4 of 127.0.0.1
        ("/ip6/::127.0.0.1/tcp/1", Target.LOOPBACK),  # IPv4-compatible
        ("/ip6/2001:0:4136:e378:8000:63bf:80ff:fffe/tcp/1", Target.LOOPBACK),  # Teredo
        ("/ip6/100::1/tcp/1", Target.RESERVED),
        ("/ip4/0.0.0.0/tcp/1", Target.UNSPECIFIED),  # Linux dials it to localhost
        ("/ip4/0.1.2.3/tcp/1", Target.UNSPECIFIED),
        ("/ip6/::/tcp/1", Target.UNSPECIFIED),
        ("/ip4/10.1.2.3/tcp/1", Target.LAN),
        ("/ip4/172.16.0.1/tcp/1", Target.LAN),
        ("/ip4/172.31.255.254/tcp/1", Target.LAN),
        ("/ip4/192.168.1.1/tcp/80", Target.LAN),
        ("/ip4/100.64.0.1/tcp/1", Target.LAN),  # CGNAT
        ("/ip4/100.127.255.254/tcp/1", Target.LAN),
        ("/ip4/169.254.169.254/tcp/80", Target.LAN),  # cloud metadata service: link-local
        ("/ip6/fe80::1/tcp/1", Target.LAN),
        ("/ip6zone/eth0/ip6/fe80::1/tcp/1", Target.LAN),
        ("/ip6/fc00::1/tcp/1", Target.LAN),
        ("/ip6/fd12:3456::1/tcp/1", Target.LAN),
        ("/ip6/fec0::1/tcp/1", Target.LAN),  # site-local (deprecated)
        ("/ip6/::ffff:192.168.0.1/tcp/1", Target.LAN),
        ("/ip4/224.0.0.251/tcp/1", Target.MULTICAST),
        ("/ip6/ff02::1/tcp/1", Target.MULTICAST),
        ("/ip4/255.255.255.255/tcp/1", Target.RESERVED),
        ("/ip4/240.0.0.1/tcp/1", Target.RESERVED),
        ("/ip4/192.0.0.8/tcp/1", Target.RESERVED),  # IETF protocol assignments
        ("/ip4/192.0.2.2/tcp/1", Target.DOCUMENTATION),
        ("/ip4/198.51.100.10/tcp/1", Target.DOCUMENTATION),
        ("/ip4/203.0.113.5/tcp/1", Target.DOCUMENTATION),
        ("/ip4/198.18.0.1/tcp/1", Target.DOCUMENTATION),
        ("/ip6/2001:db8::1/tcp/1", Target.DOCUMENTATION),
        ("/ip4/8.8.8.8/tcp/4001", Target.PUBLIC),
        ("/ip4/172.32.0.1/tcp/1", Target.PUBLIC),
        ("/ip4/100.128.0.1/tcp/1", Target.PUBLIC),
        ("/ip6/2606:4700::1111/tcp/1", Target.PUBLIC),
        ("/dns4/localhost/tcp/1", Target.NAME),
        ("/dns/example.com/tcp/1", Target.NAME),
        ("/dnsaddr/bootstrap.example", Target.NAME),
        ("/ip4/999.1.1.1/tcp/1", Target.INVALID),
        ("/unix/tmp/sock", Target.INVALID),
        ("", Target.INVALID),
        ("garbage", Target.INVALID),
        # A circuit is what dialing its relay reaches.
        (f"/ip4/127.0.0.1/tcp/6379/p2p/{RELAY}/p2p-circuit", Target.LOOPBACK),
        (f"/ip4/8.8.8.8/tcp/4001/p2p/{RELAY}/p2p-circuit", Target.PUBLIC),
        (f"/dns4/localhost/tcp/1/p2p/{RELAY}/p2p-circuit", Target.NAME),
    ],
)
def test_classify(addr: str, target: Target) -> None:
    assert classify(addr) is target


def test_this_machines_own_addresses_are_self_but_loopback_stays_loopback() -> None:
    mine = ["192.0.2.2", "10.0.0.5", "fd00::2", "127.0.0.1", "not an ip"]
    assert classify("/ip4/192.0.2.2/tcp/6379", mine) is Target.SELF
    assert classify("/ip4/10.0.0.5/tcp/6379", mine) is Target.SELF
    assert classify("/ip6/fd00::2/tcp/1", mine) is Target.SELF
    assert classify("/ip6/::ffff:10.0.0.5/tcp/1", mine) is Target.SELF
    assert classify("/ip4/10.0.0.6/tcp/1", mine) is Target.LAN
    assert classify("/ip4/127.0.0.1/tcp/1", mine) is Target.LOOPBACK


# --- admission ----------------------------------------------------------------------------------

ALL_SCOPES = [frozenset(), *({s} for s in Scope), frozenset(Scope)]


@pytest.mark.parametrize("scopes", ALL_SCOPES, ids=lambda s: "+".join(x.value for x in s) or "-")
def test_may_dial_matrix(scopes: frozenset[Scope]) -> None:
    """Public always; loopback only from loopback; this machine from this machine or the LAN;
    the LAN only from the LAN; the rest never."""
    expected = {
        Target.PUBLIC: True,
        Target.DOCUMENTATION: True,
        Target.LOOPBACK: Scope.LOOPBACK in scopes,
        Target.SELF: bool(scopes & {Scope.LOOPBACK, Scope.SELF, Scope.LAN}),
        Target.LAN: Scope.LAN in scopes,
        Target.UNSPECIFIED: False,
        Target.MULTICAST: False,
        Target.RESERVED: False,
        Target.NAME: False,
        Target.INVALID: False,
    }
    assert {t: may_dial(t, scopes) for t in Target} == expected


def test_admit_filters_by_how_the_peer_was_reached() -> None:
    announced = [
        "/ip4/127.0.0.1/tcp/6379",
        "/ip4/192.168.1.1/tcp/80",
        "/ip4/8.8.8.8/tcp/4001",
        "/ip4/0.0.0.0/tcp/4001",
        "/dns4/localhost/tcp/1",
        "/ip4/224.0.0.1/tcp/1",
    ]
    assert admit(announced, set()) == ["/ip4/8.8.8.8/tcp/4001"]
    assert admit(announced, {Scope.PUBLIC}) == ["/ip4/8.8.8.8/tcp/4001"]
    # Reached on the LAN: LAN addresses first (how we reached it), then the public one.
    assert admit(announced, {Scope.LAN}) == ["/ip4/192.168.1.1/tcp/80", "/ip4/8.8.8.8/tcp/4001"]
    assert admit(announced, {Scope.LOOPBACK}) == [
        "/ip4/127.0.0.1/tcp/6379",
        "/ip4/8.8.8.8/tcp/4001",
    ]


def test_admit_caps_direct_and_circuit_addresses_and_drops_duplicates() -> None:
    direct = [f"/ip4/8.8.8.{i}/tcp/4001" for i in range(1, 20)]
    circuits = [f"/ip4/8.8.4.{i}/tcp/4001/p2p/{RELAY}/p2p-circuit" for i in range(1, 6)]
    lan = "/ip4/10.0.0.7/tcp/4001"
    got = admit([*circuits, *direct, *direct, lan], {Scope.LAN})
    assert got == [lan, *direct[: MAX_DIRECT - 1], *circuits[:MAX_CIRCUITS]]
    assert len(got) == MAX_DIRECT + MAX_CIRCUITS
    # A circuit through a loopback relay is a loopback dial.
    bad_relay = f"/ip4/127.0.0.1/tcp/6379/p2p/{RELAY}/p2p-circuit"
    assert admit([bad_relay], {Scope.PUBLIC}) == []
    assert admit([bad_relay], {Scope.LOOPBACK}) == [bad_relay]


def test_policy_remembers_how_each_peer_was_reached() -> None:
    policy = AddrPolicy()
    policy.local_ips = frozenset({"192.0.2.2", "127.0.0.1"})
    svc = "/ip4/127.0.0.1/tcp/6379"
    router = "/ip4/192.168.1.1/tcp/80"
    own = "/ip4/192.0.2.2/tcp/6379"
    assert policy.admit(PEER, [svc, router, own]) == []  # never reached, no connections

    policy.connection_opened(PEER, "/ip4/8.8.8.8/tcp/50000")  # reached on the internet
    assert policy.scopes(PEER) == {Scope.PUBLIC}
    assert policy.admit(PEER, [svc, router, own]) == []

    policy.connection_opened(OTHER, "/ip4/192.0.2.2/tcp/4001")  # on this machine
    assert policy.scopes(OTHER) == {Scope.SELF}
    assert policy.admit(OTHER, [svc, router, own]) == [own]

    policy.connection_opened(OTHER, "/ip4/127.0.0.1/tcp/4001")
    assert policy.admit(OTHER, [svc, router, own]) == [svc, own]

    # Relayed connections say nothing about where a peer is.
    third = "12D3KooWThirdThirdThirdThirdThirdThirdThirdThird4"
    policy.connection_opened(third, "/p2p-circuit")
    assert third not in policy._reached


def test_never_reached_peers_get_the_scopes_of_our_open_connections() -> None:
    """A DHT reply names a stranger on our one-machine test network: its loopback address
    may be dialed while we hold loopback connections, and not once they are closed."""
    policy = AddrPolicy()
    stranger = "/ip4/127.0.0.1/tcp/4005"
    policy.connection_opened(OTHER, "/ip4/127.0.0.1/tcp/4001")
    assert policy.admit(PEER, [stranger]) == [stranger]
    policy.connection_closed(OTHER, "/ip4/127.0.0.1/tcp/4001")
    policy.connection_closed(OTHER, "/ip4/127.0.0.1/tcp/4001")  # no negative counts
    assert policy.admit(PEER, [stranger]) == []
    policy.connection_opened(OTHER, "/ip4/127.0.0.1/tcp/4001")
    assert policy.admit(PEER, [stranger]) == [stranger]


def test_heard_on_lan_admits_lan_never_loopback_and_is_not_remembered() -> None:
    policy = AddrPolicy()
    addrs = ["/ip4/127.0.0.1/tcp/22", "/ip4/10.0.9.3/tcp/4001"]
    assert policy.admit(PEER, addrs, on_lan=True) == ["/ip4/10.0.9.3/tcp/4001"]
    assert policy.admit(PEER, addrs) == []  # a spoofed mDNS answer grants nothing later
    policy.connection_opened(PEER, "/ip4/10.0.9.3/tcp/4001")  # reached on the LAN
    assert policy.admit(PEER, addrs) == ["/ip4/10.0.9.3/tcp/4001"]


def test_policy_tables_are_bounded() -> None:
    policy = AddrPolicy(max_peers=3)
    for i in range(10):
        policy.connection_opened(f"peer{i}", "/ip4/10.0.0.1/tcp/1")
        for j in range(5):
            policy.backoff.failed(f"peer{i}", f"/ip4/8.8.8.{j}/tcp/1", 0.0)
    assert len(policy._reached) == 3 and len(policy.backoff) == 12
    assert list(policy._reached) == ["peer7", "peer8", "peer9"]


# --- backoff ------------------------------------------------------------------------------------


def test_backoff_doubles_is_capped_and_clears() -> None:
    backoff = DialBackoff()
    addr = "/ip4/8.8.8.8/tcp/4001"
    waits = [backoff.failed(PEER, addr, 100.0) for _ in range(10)]
    assert waits[:4] == [BACKOFF_MIN, 2 * BACKOFF_MIN, 4 * BACKOFF_MIN, 8 * BACKOFF_MIN]
    assert waits[-1] == BACKOFF_MAX and max(waits) == BACKOFF_MAX
    assert backoff.ready(PEER, [addr], 100.0 + BACKOFF_MAX - 0.01) == []
    assert backoff.next_try(PEER, [addr]) == 100.0 + BACKOFF_MAX
    assert backoff.ready(PEER, [addr], 100.0 + BACKOFF_MAX) == [addr]
    assert backoff.ready(OTHER, [addr], 100.0) == [addr]  # per peer
    backoff.succeeded(PEER, addr)
    assert backoff.ready(PEER, [addr], 100.0) == [addr]
    assert backoff.failed(PEER, addr, 0.0) == BACKOFF_MIN  # starts over
    backoff.clear(PEER)
    assert len(backoff) == 0 and backoff.next_try(PEER, [addr]) is None


def test_a_connection_from_the_peer_clears_its_backoff() -> None:
    policy = AddrPolicy()
    policy.backoff.failed(PEER, "/ip4/8.8.8.8/tcp/1", 0.0)
    policy.connection_opened(PEER, "/ip4/8.8.8.8/tcp/50000")
    assert policy.backoff.ready(PEER, ["/ip4/8.8.8.8/tcp/1"], 0.0) == ["/ip4/8.8.8.8/tcp/1"]


# --- on real sockets ----------------------------------------------------------------------------


def _outside_ip() -> str | None:
    """A non-loopback IPv4 address of this machine (peers reached on it are not reached
    over loopback), or None."""
    ips = sorted(ip for ip in local_ips() if ":" not in ip and not ip.startswith("127."))
    return ips[0] if ips else None


@dataclass
class Service:
    """An internal service: a TCP listener on loopback that counts who connects."""

    addr: str
    accepted: int = 0


@contextlib.asynccontextmanager
async def internal_service() -> AsyncIterator[Service]:
    service: Service
    async with trio.open_nursery() as nursery:

        async def handle(stream: trio.SocketStream) -> None:
            service.accepted += 1
            await stream.aclose()

        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, host="127.0.0.1"), handle, 0
        )
        port = listeners[0].socket.getsockname()[1]
        service = Service(f"/ip4/127.0.0.1/tcp/{port}")
        yield service
        nursery.cancel_scope.cancel()


async def _say_hello(friend: Network, me: str, addrs: tuple[str, ...]) -> None:
    """The friend sends a hello frame on a real message stream and waits for us to close."""
    stream = await friend.open_stream(me, wire.MSG_PROTOCOL)
    await stream.write(wire.encode(wire.Hello(addrs)))
    await stream.close()
    with contextlib.suppress(Exception):
        while await stream.read(4096):
            pass


async def _disconnect(net: Network, peer: str) -> None:
    await net.disconnect(peer)
    while net.is_connected(peer):
        await trio.sleep(0.01)


@pytest.mark.skipif(_outside_ip() is None, reason="needs a non-loopback IPv4 interface")
@pytest.mark.parametrize("path", ["hello", "record", "peerstore"])
async def test_a_friend_cannot_make_us_dial_an_internal_service(path: str, tmp_path: Path) -> None:
    """A friend reached on this machine's non-loopback address (so not over loopback)
    announces a loopback service's address in a hello frame, a signed DHT record, or the
    peerstore (identify, DHT replies): nothing ever connects to the service, and the friend
    stays reachable at its real address."""
    ip = _outside_ip()
    me, friend = Network(Identity.generate()), Network(Identity.generate())
    fid = friend.identity.peer_id
    async with open_database(tmp_path / "db") as db:
        roster = Roster(ChatStore(db), EventBus())
        await roster.load()
        reach = Reach(me, roster)
        messages = Messages(network=me, roster=roster, my_addrs=lambda: ())

        async def serve(stream: INetStream) -> None:
            await messages.serve(stream, str(stream.muxed_conn.peer_id))

        me.set_handler(wire.MSG_PROTOCOL, serve)
        with trio.fail_after(60):
            async with (
                internal_service() as svc,
                me.run(["/ip4/127.0.0.1/tcp/0"]),
                friend.run([f"/ip4/{ip}/tcp/0"]),
            ):
                real = friend.listen_addrs()
                assert real and all(f"/ip4/{ip}/" in a for a in real)
                async with roster.locked(fid):  # added by friend code: the user's addresses
                    await roster.apply(fid, Step(state=ContactState.FRIEND), addrs=real)
                assert await reach.reach(fid)
                assert me.policy.scopes(fid) == {Scope.SELF}
                announced = (svc.addr, *real)

                if path == "hello":  # a message stream's hello frame, then a redial
                    await _say_hello(friend, me.identity.peer_id, announced)
                    await _disconnect(me, fid)
                    assert await reach.reach(fid)
                elif path == "record":  # the friend's signed DHT record

                    @dataclass
                    class Found:
                        addrs: tuple[str, ...]
                        source: str = "record"

                    async def resolve(peer: str) -> Found:
                        return Found(announced)

                    reach.resolver = resolve
                    await _disconnect(me, fid)
                    contact = roster.get(fid)
                    assert contact is not None and await reach.dial_found(contact)
                else:  # the peerstore, dialed by peer ID (DHT lookups, new streams)
                    await _disconnect(me, fid)
                    store = me.host.get_peerstore()
                    store.clear_addrs(ID.from_base58(fid))
                    store.add_addrs(ID.from_base58(fid), [multiaddr.Multiaddr(svc.addr)], 3600)
                    with pytest.raises(DialFailed, match="no usable address"):
                        await me.dial_known(ID.from_base58(fid))
                    assert await reach.reach(fid)

                await trio.sleep(0.2)  # a dial under way would have landed by now
                assert svc.accepted == 0
                assert roster.get(fid).addrs == tuple(real)  # type: ignore[union-attr]
                assert me.is_connected(fid)


async def test_a_failing_address_waits_out_its_backoff() -> None:
    """An address whose dial failed is not dialed again until its backoff has passed."""
    me = Network(Identity.generate())
    peer = Identity.generate().peer_id
    with trio.fail_after(30):
        async with internal_service() as svc, me.run(["/ip4/127.0.0.1/tcp/0"]):
            # Not libp2p: the listener accepts and hangs up, so the handshake fails.
            assert not await me.dial(peer, [svc.addr])
            assert svc.accepted == 1
            assert not await me.dial(peer, [svc.addr])
            with pytest.raises(DialFailed, match="failed recently"):
                await me._dial_any(ID.from_base58(peer), [svc.addr])
            assert svc.accepted == 1
            await trio.sleep(BACKOFF_MIN + 0.1)
            assert not await me.dial(peer, [svc.addr])
            assert svc.accepted == 2


async def test_mdns_announcements_never_admit_loopback() -> None:
    """Anyone on the segment can multicast an mDNS answer: it makes a peer's LAN addresses
    dialable, never an address on this machine's loopback."""
    me = Network(Identity.generate())
    found: list[tuple[str, list[str]]] = []

    async def on_found(peer: str, addrs: list[str]) -> None:
        found.append((peer, addrs))

    lan = LanDiscovery(me, me.identity.peer_id, on_found)
    other = Identity.generate().peer_id
    addrs = ["/ip4/127.0.0.1/tcp/6379", "/ip4/10.0.9.3/tcp/4001", "/ip4/0.0.0.0/tcp/1"]
    await lan._heard(PeerInfo(ID.from_base58(other), [multiaddr.Multiaddr(a) for a in addrs]))
    assert found == [(other, ["/ip4/10.0.9.3/tcp/4001"])]
    stored = [str(a) for a in me.host.get_peerstore().addrs(ID.from_base58(other))]
    assert stored == ["/ip4/10.0.9.3/tcp/4001"]


@pytest.mark.skipif(_outside_ip() is None, reason="needs a non-loopback IPv4 interface")
async def test_hole_punch_dials_pass_the_policy() -> None:
    """DCUtR dials what a peer's CONNECT message and the peerstore name (the unilateral
    upgrade, then the punch itself, both through ``_dial_peer``): with the policy wired in as
    the relay wires it, a peer reached outside loopback cannot make it dial a loopback
    service; unpoliced, the same dial reaches the service (so the check can fail)."""
    ip = _outside_ip()
    me, friend = Network(Identity.generate()), Network(Identity.generate())
    fid = ID.from_base58(friend.identity.peer_id)
    with trio.fail_after(60):
        async with (
            internal_service() as svc,
            me.run(["/ip4/127.0.0.1/tcp/0"]),
            friend.run([f"/ip4/{ip}/tcp/0"]),
        ):
            assert await me.dial(str(fid), friend.listen_addrs())
            assert me.policy.scopes(str(fid)) == {Scope.SELF}
            policed = DCUtRProtocol(me.host)
            compat.police_hole_punch_dials(policed, lambda p, a: bool(me.admit(str(p), [str(a)])))
            await policed._dial_peer(fid, multiaddr.Multiaddr(svc.addr))
            await _disconnect(me, str(fid))
            store = me.host.get_peerstore()
            store.add_addrs(fid, [multiaddr.Multiaddr(svc.addr)], 3600)
            await policed._try_unilateral_upgrade(fid)
            await trio.sleep(0.2)  # a dial under way would have landed by now
            assert svc.accepted == 0

            await DCUtRProtocol(me.host)._dial_peer(fid, multiaddr.Multiaddr(svc.addr))
            with trio.fail_after(5):
                while svc.accepted == 0:
                    await trio.sleep(0.01)
