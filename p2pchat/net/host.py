"""The libp2p host: TCP, Noise only, Yamux only; dialing, streams and connection events.

Security baseline (docs/ARCHITECTURE.md): py-libp2p's ``new_host()`` offers plaintext, secio
and TLS unless told otherwise, so the host is always built with an explicit ``sec_opt`` that
holds Noise alone; a peer that offers only plaintext fails negotiation.

Dialing: py-libp2p 0.8.1's ``Swarm.dial_peer`` (used by ``host.connect()`` and by
``new_stream`` to a peer with no connection, so by the DHT) waits its whole 250 ms
happy-eyeballs delay after the last dial even when it succeeded, tries at most one TCP
address, and drops relay circuit addresses. :class:`Network` replaces it on its own swarm with
:meth:`Network.dial_known`: every known address, staggered (a new attempt every
``DIAL_STAGGER`` s until one connects), direct ones before relayed ones, circuits through
the relay transport. A successful connect then costs what the handshake costs.

Announced addresses (:mod:`p2pchat.net.addrpolicy`): :meth:`Network.admit` says which
addresses a peer announced may be dialed given how it was reached (the network notes the
remote address of every direct connection); peerstore addresses (DHT replies, identify) pass
through it on every :meth:`Network.dial_known`; and every dial skips a (peer, address) still
waiting out its failure backoff.

Every patch to the swarm is applied through :mod:`p2pchat.net.compat`, which
:func:`build_host` first has check that the py-libp2p internals involved are as expected.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, cast

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.connection_types import ConnectionType
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.utils.address_validation import get_available_interfaces

from p2pchat.identity import Identity
from p2pchat.net import compat
from p2pchat.net.addrpolicy import AddrPolicy
from p2pchat.net.keepaway import KeptAway
from p2pchat.net.noise_session import LeanNoiseTransport
from p2pchat.net.yamux.connection import LeanYamux

log = logging.getLogger(__name__)

DIAL_TIMEOUT: Final = 5.0
DIAL_STAGGER: Final = 0.3
"""Seconds to give one address before also trying the next (they then race)."""
MAX_DIAL_ADDRS: Final = 8
"""Addresses tried per dial: peerstore addresses come from strangers (DHT replies, mDNS), and
a peer listing a thousand must not make us knock on a thousand doors."""
LOCAL_IPS_TTL: Final = 30.0
"""Seconds this machine's interface addresses are cached for the address policy."""
NEW_STREAM_TIMEOUT: Final = 10.0
IDENTIFY_WAIT: Final = 3.0

StreamHandler = Callable[[INetStream], Awaitable[None]]
CircuitDialer = Callable[[multiaddr.Multiaddr], Awaitable[INetConn]]


def is_circuit(addr: str) -> bool:
    return "/p2p-circuit" in addr


def local_ips() -> frozenset[str]:
    """This machine's interface IPs (what an address "on this machine" can be)."""
    ips = {"127.0.0.1", "::1"}
    try:
        for addr in get_available_interfaces(0, "tcp"):
            parts = str(addr).strip("/").split("/")
            if len(parts) >= 2 and parts[0] in ("ip4", "ip6"):
                ips.add(parts[1])
    except Exception as exc:  # an odd interface must not stop dialing
        log.debug("could not list interfaces: %s", exc)
    return frozenset(ips)


def dial_order(addrs: Sequence[str]) -> list[str]:
    """Addresses in the order to try them: direct before relayed, first-listed first; no
    duplicates, no wildcard addresses (``0.0.0.0`` or ``::``, which mean "this machine"), at
    most ``MAX_DIAL_ADDRS`` of which up to 2 relayed."""
    unique = [a for a in dict.fromkeys(addrs) if "/ip4/0.0.0.0/" not in a and "/ip6/::/" not in a]
    relayed = [a for a in unique if is_circuit(a)][:2]
    direct = [a for a in unique if not is_circuit(a)][: MAX_DIAL_ADDRS - len(relayed)]
    return direct + relayed


def key_pair_of(identity: Identity) -> KeyPair:
    private = Ed25519PrivateKey.from_bytes(identity.seed)
    return KeyPair(private, private.get_public_key())


def build_host(identity: Identity) -> IHost:
    """A libp2p host that speaks only Noise and Yamux (never plaintext, secio or TLS), with
    p2pchat's own Yamux (:mod:`p2pchat.net.yamux`), which enforces its receive limits.

    Raises :class:`p2pchat.net.compat.LibraryMismatch` when the installed py-libp2p lacks an
    internal that p2pchat patches or relies on (checked before anything is patched)."""
    compat.check()
    compat.install_lean_yamux()
    compat.install_tcp_tuning()
    key_pair = key_pair_of(identity)
    noise = LeanNoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): LeanYamux},
    )


def peer_protocols(host: IHost, peer_id: ID) -> list[str]:
    """The protocols identify says ``peer_id`` speaks (none until identify has run)."""
    try:
        return [str(p) for p in host.get_peerstore().get_protocols(peer_id) or []]
    except Exception:  # the peerstore raises for peers it does not know
        return []


class ConnectionEvents(INotifee):
    """Forwards libp2p connection open/close to a callback with the peer's ID string.

    A connection that ``kept_away`` (given the peer and the connection's remote address)
    refuses is closed as it opens, unseen by the callbacks (they hear neither its opening nor
    its closing)."""

    def __init__(
        self,
        on_change: Callable[[str, bool], None],
        on_conn: Callable[[str, str, bool], None] = lambda peer, remote, up: None,
        kept_away: Callable[[str, str], bool] = lambda peer, remote: False,
    ) -> None:
        self._on_change = on_change
        self._on_conn = on_conn
        self._kept_away = kept_away
        self._closed_at_open: set[int] = set()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer = str(conn.muxed_conn.peer_id)
        if self._kept_away(peer, _remote_for_policy(conn)):
            self._closed_at_open.add(id(conn))
            try:
                with trio.move_on_after(2):
                    await conn.close()
            except Exception:
                pass
            return
        self._on_conn(peer, _remote_for_policy(conn), True)
        self._on_change(peer, True)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        if id(conn) in self._closed_at_open:
            self._closed_at_open.discard(id(conn))
            return
        peer = str(conn.muxed_conn.peer_id)
        self._on_conn(peer, _remote_for_policy(conn), False)
        self._on_change(peer, False)

    async def listen(self, network: INetwork, multiaddr: Any) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Any) -> None:
        return None


class Network:
    """Owns the libp2p host for the lifetime of :meth:`run`."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.host = build_host(identity)
        # new_host() always builds a Swarm, but get_network() is typed as the interface,
        # which lacks retry_config.
        swarm = cast(Swarm, self.host.get_network())
        # Retries belong to our own reconnect loop (with backoff), not to each dial.
        compat.disable_dial_retries(swarm)
        self._on_connection_change: Callable[[str, bool], None] = lambda peer, up: None
        self.policy = AddrPolicy()
        """How each peer was reached, which announced addresses may be dialed, and the
        per-address dial backoff (:mod:`p2pchat.net.addrpolicy`)."""
        self._local_ips_at = -LOCAL_IPS_TTL
        self.kept = KeptAway()
        """Peers refused for a while, and the inbound throttle on their addresses
        (:meth:`keep_away`)."""
        compat.gate_inbound(swarm, self._admit_inbound)
        swarm.register_notifee(
            ConnectionEvents(self._connection_changed, self._conn_noted, self._is_kept_away)
        )
        self.circuit_dialer: CircuitDialer | None = None
        """Set by :class:`p2pchat.net.relay.Relays`: how to dial a ``/p2p-circuit`` address."""
        # Workaround (module docstring): every dial by peer ID goes through our dialer.
        compat.replace_dial_peer(swarm, self.dial_known)
        # py-libp2p's AutoConnector dials peers from the peerstore every 30 s until it holds
        # ~150 connections: strangers contacted for no purpose, and traffic. We connect only
        # with a purpose (friends, DHT lookups, relays).
        compat.disable_auto_connector(swarm)
        self._dialing: dict[str, trio.Event] = {}

    def on_connection_change(self, callback: Callable[[str, bool], None]) -> None:
        self._on_connection_change = callback

    def _connection_changed(self, peer: str, up: bool) -> None:
        self._on_connection_change(peer, up)

    def _conn_noted(self, peer: str, remote: str, up: bool) -> None:
        self._refresh_local_ips()
        if up:
            self.policy.connection_opened(peer, remote)
        else:
            self.policy.connection_closed(peer, remote)

    def _refresh_local_ips(self) -> None:
        now = trio.current_time()
        if now - self._local_ips_at >= LOCAL_IPS_TTL:
            self._local_ips_at = now
            self.policy.local_ips = local_ips()

    def admit(self, peer: str, addrs: Sequence[str], *, on_lan: bool = False) -> list[str]:
        """The addresses ``peer`` announced (hello, friend request, DHT record, mDNS with
        ``on_lan``) that may be dialed, given how it was reached
        (:mod:`p2pchat.net.addrpolicy`). User-given addresses (friend codes, bootstrap)
        skip this."""
        self._refresh_local_ips()
        return self.policy.admit(peer, addrs, on_lan=on_lan)

    def set_handler(self, protocol: str, handler: StreamHandler) -> None:
        self.host.set_stream_handler(TProtocol(protocol), handler)

    def run(self, listen: Sequence[str]) -> Any:
        """Async context manager: listen on ``listen`` until exit."""
        return self.host.run([multiaddr.Multiaddr(a) for a in listen])

    # --- addresses -----------------------------------------------------------------------

    def listen_addrs(self) -> list[str]:
        """Addresses we can be dialed on, with wildcard binds expanded to interfaces."""
        out: list[str] = []
        for addr in self.host.get_transport_addrs():
            text = str(addr)
            if text.startswith("/ip4/0.0.0.0/tcp/"):
                port = int(addr.value_for_protocol("tcp"))
                expanded = [str(a) for a in get_available_interfaces(port, "tcp")]
                out.extend(a for a in expanded if a.startswith("/ip4/") and "0.0.0.0" not in a)
            else:
                out.append(text)
        # Loopback last: useful on this machine only.
        out.sort(key=lambda a: a.startswith("/ip4/127."))
        return list(dict.fromkeys(out))

    def bound_ports(self) -> list[int]:
        ports: list[int] = []
        for addr in self.host.get_transport_addrs():
            try:
                ports.append(int(addr.value_for_protocol("tcp")))
            except Exception:
                continue
        return ports

    # --- peers kept away --------------------------------------------------------------------

    def keep_away(self, peer: str, seconds: float) -> None:
        """Have no connection with ``peer`` for ``seconds`` (a friend's cool-down,
        :mod:`p2pchat.chat.quotas`): its new connections are closed as soon as they open,
        the addresses it connected from are throttled (:mod:`p2pchat.net.keepaway`), and we
        dial it no more; :meth:`disconnect` closes the open ones."""
        ips: set[str] = set()
        try:
            for conn in self.host.get_network().get_connections(ID.from_base58(peer)):
                ip = _ip_of(_remote_for_policy(conn))
                if ip:
                    ips.add(ip)
        except Exception:
            pass
        self.kept.keep_away(peer, seconds, ips, trio.current_time())

    def kept_away(self, peer: str) -> float:
        """Seconds ``peer`` is still kept away (0: it is not)."""
        return self.kept.remaining(peer, trio.current_time())

    def _is_kept_away(self, peer: str, remote: str) -> bool:
        closed = self.kept.refuse_connection(peer, _ip_of(remote), trio.current_time())
        if closed == 1 or closed % 100 == 0:  # a log line, not one per attempt
            log.info(
                "closed a connection from %s: kept away for %.0f more s (%d so far)",
                peer,
                self.kept_away(peer),
                closed,
            )
        return closed > 0

    def _admit_inbound(self, ip: str) -> bool:
        return self.kept.admit_inbound(ip, trio.current_time())

    # --- connections ---------------------------------------------------------------------

    def is_connected(self, peer: str) -> bool:
        try:
            return bool(self.host.get_network().get_connections(ID.from_base58(peer)))
        except Exception:
            return False

    def connected_peers(self) -> list[str]:
        return [str(p) for p in self.host.get_network().get_connections_map()]

    def protocols(self, peer: str) -> list[str]:
        return peer_protocols(self.host, ID.from_base58(peer))

    def connection_kinds(self, peer: str) -> list[str]:
        """``direct`` or ``relayed`` for each open connection to ``peer``."""
        try:
            conns = self.host.get_network().get_connections(ID.from_base58(peer))
        except Exception:
            return []
        return [_kind(conn) for conn in conns]

    def connections(self) -> list[dict[str, Any]]:
        """Every open connection: peer, ``direct``/``relayed`` and the remote address."""
        out: list[dict[str, Any]] = []
        for peer_id, conns in self.host.get_network().get_connections_map().items():
            for conn in conns:
                out.append({"peer_id": str(peer_id), "kind": _kind(conn), "addr": _remote(conn)})
        out.sort(key=lambda c: (c["peer_id"], c["kind"]))
        return out

    async def dial(self, peer: str, addrs: Sequence[str]) -> bool:
        """Connect to ``peer`` through any of ``addrs``; True once a connection is up.

        ``addrs`` are dialed as given (the user's, or already through :meth:`admit`); only
        the per-address failure backoff applies."""
        if self.is_connected(peer):
            return True
        try:
            await self._dial_any(ID.from_base58(peer), addrs)
        except DialFailed as exc:
            log.debug("%s", exc)
        return self.is_connected(peer)

    async def dial_known(self, peer_id: ID) -> list[INetConn]:
        """Swarm.dial_peer replacement: the open connections to ``peer_id``, else a new one
        through the addresses in the peerstore. Raises :class:`DialFailed`."""
        existing = self._open_connections(peer_id)
        if existing:
            return existing
        try:
            addrs = [str(a) for a in self.host.get_peerstore().addrs(peer_id)]
        except Exception:
            addrs = []
        # Peerstore addresses are what strangers (DHT replies) and the peer (identify) said.
        return [await self._dial_any(peer_id, self.admit(str(peer_id), addrs))]

    def _open_connections(self, peer_id: ID) -> list[INetConn]:
        conns = self.host.get_network().get_connections(peer_id)
        return [c for c in conns if not c.is_closed]

    async def _dial_any(self, peer_id: ID, addrs: Sequence[str]) -> INetConn:
        """One dial per peer at a time: a caller that finds a dial to the same peer under way
        waits for it and shares its connection instead of opening a second one."""
        key = str(peer_id)
        if self.kept_away(key) > 0:
            raise DialFailed(f"{key} is kept away for {self.kept_away(key):.0f} more s")
        while (ongoing := self._dialing.get(key)) is not None:
            await ongoing.wait()
            existing = self._open_connections(peer_id)
            if existing:
                return existing[0]
        done = self._dialing[key] = trio.Event()
        try:
            return await self._race(peer_id, addrs)
        finally:
            del self._dialing[key]
            done.set()

    async def _race(self, peer_id: ID, addrs: Sequence[str]) -> INetConn:
        """Race ``addrs`` (in :func:`dial_order`, staggered); the first connection wins, the
        other attempts are cancelled and any that connected anyway are closed."""
        candidates = dial_order(addrs)
        order = self.policy.backoff.ready(str(peer_id), candidates, trio.current_time())
        if not order:
            if candidates:
                wait = (self.policy.backoff.next_try(str(peer_id), candidates) or 0.0) - (
                    trio.current_time()
                )
                raise DialFailed(
                    f"every address of {peer_id} failed recently; next try in {wait:.1f} s"
                )
            raise DialFailed(f"no usable address known for {peer_id}")
        winner: list[INetConn] = []
        errors: list[str] = []
        with trio.move_on_after(DIAL_TIMEOUT + DIAL_STAGGER * len(order)):
            async with trio.open_nursery() as nursery:
                for text in order:
                    failed = trio.Event()
                    nursery.start_soon(
                        self._dial_one, peer_id, text, winner, errors, failed, nursery.cancel_scope
                    )
                    with trio.move_on_after(DIAL_STAGGER):
                        await failed.wait()
                    if winner:
                        break
        for extra in winner[1:]:
            with trio.move_on_after(2):
                await extra.close()
        if winner:
            return winner[0]
        raise DialFailed(f"could not connect to {peer_id}: {'; '.join(errors) or 'timed out'}")

    async def _dial_one(
        self,
        peer_id: ID,
        text: str,
        winner: list[INetConn],
        errors: list[str],
        failed: trio.Event,
        race: trio.CancelScope,
    ) -> None:
        try:
            addr = multiaddr.Multiaddr(text)
            with trio.fail_after(DIAL_TIMEOUT):
                if is_circuit(text):
                    if self.circuit_dialer is None:
                        raise DialFailed("relayed addresses are not supported here")
                    if not text.endswith(f"/p2p/{peer_id}"):
                        addr = multiaddr.Multiaddr(f"{text}/p2p/{peer_id}")
                    conn = await self.circuit_dialer(addr)
                else:
                    if "p2p" in [p.name for p in addr.protocols()]:
                        addr = addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id}"))
                    conn = await self.host.get_network().dial_addr(addr, peer_id)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise  # cancelled: another address won
            errors.append(f"{text}: {exc}")
            self.policy.backoff.failed(str(peer_id), text, trio.current_time())
            failed.set()
            return
        self.policy.backoff.succeeded(str(peer_id), text)
        log.debug("connected to %s via %s", peer_id, text)
        winner.append(conn)
        race.cancel()  # the other attempts are no longer needed

    async def connect_addr(self, addr_text: str) -> tuple[str, float]:
        """Dial a full address (``.../p2p/<ID>``); returns the peer and the seconds it took.

        Raises :class:`p2pchat.api.ApiError` with a reason a person can act on."""
        from p2pchat.api import ApiError

        try:
            addr = multiaddr.Multiaddr(addr_text)
            peer = str(addr.value_for_protocol("p2p"))
            peer_id = ID.from_base58(peer)
        except Exception:
            raise ApiError(
                "invalid_params", f"not a multiaddr ending in /p2p/<ID>: {addr_text!r}"
            ) from None
        if peer == self.identity.peer_id:
            raise ApiError("self", "that address is this daemon's own")
        transport_addr = addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer}"))
        started = trio.current_time()
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                await self.host.get_network().dial_addr(transport_addr, peer_id)
        except Exception as exc:
            raise ApiError("unreachable", f"could not connect to {addr_text}: {exc}") from None
        return peer, trio.current_time() - started

    async def disconnect(self, peer: str) -> None:
        """Close every connection to ``peer`` (best effort: it may already be gone)."""
        try:
            await self.host.disconnect(ID.from_base58(peer))
        except Exception as exc:
            log.debug("disconnect %s: %s", peer, exc)

    async def open_stream(self, peer: str, *protocols: str) -> INetStream:
        """A stream to ``peer`` speaking the first of ``protocols`` it supports (the newest
        first; ``stream.get_protocol()`` says which)."""
        with trio.fail_after(NEW_STREAM_TIMEOUT):
            return await self.host.new_stream(
                ID.from_base58(peer), [TProtocol(p) for p in protocols]
            )


class DialFailed(ConnectionError):
    """No address of a peer led to a connection; the message lists what each attempt hit."""


def _kind(conn: INetConn) -> str:
    try:
        relayed = conn.get_connection_type() is ConnectionType.RELAYED
    except Exception:
        relayed = "/p2p-circuit" in _remote(conn)
    return "relayed" if relayed else "direct"


def _remote_for_policy(conn: INetConn) -> str:
    """The remote address of a direct connection (from its socket: the swarm connection's
    own answer falls back to peerstore addresses, which the peer announced), or a circuit
    marker for a relayed one."""
    if _kind(conn) == "relayed":
        return "/p2p-circuit"
    try:
        addrs = conn.muxed_conn.get_transport_addresses()
        return str(addrs[0]) if addrs else ""
    except Exception:
        return ""


def _ip_of(addr: str) -> str:
    """The IP of a ``/ip4/…`` or ``/ip6/…`` multiaddr; empty for anything else."""
    parts = addr.split("/")
    return parts[2] if len(parts) > 2 and parts[1] in ("ip4", "ip6") else ""


def _remote(conn: INetConn) -> str:
    try:
        addrs = conn.get_transport_addresses()
        return str(addrs[0]) if addrs else ""
    except Exception:
        return ""


__all__ = ["Network", "StreamError"]
