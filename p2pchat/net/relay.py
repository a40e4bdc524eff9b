"""Circuit relay v2 and hole punching (DCUtR): how daemons behind NATs reach each other.

- Every daemon accepts relayed connections (the relay protocol's STOP side) and can dial
  ``/p2p-circuit`` addresses (:attr:`p2pchat.net.host.Network.circuit_dialer`).
- A publicly reachable daemon also *is* a relay (the HOP side) for others, within limits:
  reservations, and bytes and seconds per relayed connection (config ``relay_*``).
- A daemon behind a NAT reserves a slot at up to ``MAX_RESERVATIONS`` relays among the peers
  it is connected to, and advertises the resulting circuit addresses in its address record.
- DCUtR runs on every daemon: once two peers share a relayed connection, it tries to replace
  it with a direct one (a TCP simultaneous open through both NATs).

Library workarounds (py-libp2p 0.8.1), covered by tests/net/test_relay.py (circuits and
reservations) and tests/daemons/test_nat.py (hole punching; needs root for network
namespaces):

- **One circuit's end closed another's** — the relay keys active circuits by peer, so when
  one circuit to a peer ended it closed the streams of any other live circuit to that peer.
  :class:`IsolatedCircuitRelay` gives each circuit its own key.
- **Hole punching from both sides at once** — DCUtR initiates from both peers at the same
  moment (their simultaneous dials collide) and gives up after three attempts;
  :meth:`Relays._punch_loop` lets one side initiate and retries with backoff.
- **Reservations per IP** — the relay caps reservations in all, not per source: one host
  with many IDs (or one connection claiming many IDs in RESERVE's ``peer`` field) could take
  every slot. :class:`IsolatedCircuitRelay` refuses a RESERVE for another ID than the
  connection's and caps reservations per remote IP (:class:`ReservationsPerIp`, config
  ``relay_max_reservations_per_ip``).
- **Reservations** — ``RelayDiscovery`` looks for relays once at start-up (before any
  connection exists) and does not renew; :meth:`Relays._reserve` makes and renews
  reservations itself through the transport's reservation call.

The patches and private py-libp2p calls these need, and the check that they still fit the
installed py-libp2p, are in :mod:`p2pchat.net.compat`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode, to_proto_status
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.relay.circuit_v2.utils import write_delimited_msg
from libp2p.tools.anyio_service import background_trio_service

from p2pchat.net import compat
from p2pchat.net.host import Network, is_circuit

log = logging.getLogger(__name__)

MAX_RESERVATIONS: Final = 2
"""Relays a NAT'd daemon keeps a slot at: two, so one relay going away is no outage."""
RESERVE_EVERY: Final = 600.0
"""Seconds between renewals (relays grant an hour)."""
CHECK_EVERY: Final = 5.0
RESERVE_TIMEOUT: Final = 10.0
PUNCH_CHECK_EVERY: Final = 0.5
PUNCH_FIRST_DELAY: Final = 1.0
"""Seconds after a relayed connection appears before the first hole punch (identify must
have told each side the other's observed address)."""
PUNCH_RETRY_MIN: Final = 8.0
PUNCH_RETRY_MAX: Final = 300.0
RETRY_MIN: Final = 30.0
RETRY_MAX: Final = 1800.0
"""Backoff for a relay that refused or failed a reservation."""
_RELAY_BASE = re.compile(r"^/ip[46]/[0-9a-fA-F.:]{2,45}/tcp/\d{1,5}$")


DEFAULT_RESERVATIONS_PER_IP: Final = 2
MAX_TRACKED_RESERVATIONS: Final = 4096
"""Above this many remembered reservation holders, the dead ones are forgotten at once."""


@dataclass(frozen=True, slots=True)
class RelayLimitsConfig:
    max_reservations: int
    max_circuit_bytes: int
    max_circuit_seconds: int
    max_reservations_per_ip: int = DEFAULT_RESERVATIONS_PER_IP


class ReservationsPerIp:
    """Which peers hold a reservation from which remote IP, to cap reservations per IP.

    Sans-IO: ``live(peer)`` tells whether the relay still holds ``peer``'s reservation (it
    lapses when it expires or the peer disconnects), so a slot is counted only while it is
    held. A renewal by a holder is always admitted.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._ip_of: dict[str, str] = {}
        self._by_ip: dict[str, set[str]] = {}

    def admit(self, ip: str, peer: str, live: Callable[[str], bool]) -> bool:
        if len(self._ip_of) > MAX_TRACKED_RESERVATIONS:
            for held in [p for p in self._ip_of if not live(p)]:
                self._forget(held)
        for held in [p for p in self._by_ip.get(ip, ()) if not live(p)]:
            self._forget(held)
        if self._ip_of.get(peer) == ip:
            return True
        if len(self._by_ip.get(ip, ())) >= self.limit:
            return False
        self._forget(peer)  # a holder that moved to another IP counts there now
        self._ip_of[peer] = ip
        self._by_ip.setdefault(ip, set()).add(peer)
        return True

    def held(self, ip: str) -> int:
        return len(self._by_ip.get(ip, ()))

    def _forget(self, peer: str) -> None:
        ip = self._ip_of.pop(peer, None)
        if ip is None:
            return
        peers = self._by_ip[ip]
        peers.discard(peer)
        if not peers:
            del self._by_ip[ip]


def remote_ip(stream: INetStream) -> str | None:
    """The IP address the stream's connection comes from (``None`` if unknown)."""
    try:
        remote = stream.get_remote_address()
    except Exception:
        return None
    return str(remote[0]) if remote else None


class IsolatedCircuitRelay(CircuitV2Protocol):
    """The relay protocol with each circuit's cleanup confined to its own streams, and
    reservations capped per remote IP (the base class's ``_relay_data``, ``_handle_reserve``
    and ``_active_relays`` are declared in :mod:`p2pchat.net.compat`)."""

    def __init__(
        self,
        host: IHost,
        *,
        limits: RelayLimits,
        allow_hop: bool,
        max_reservations_per_ip: int = DEFAULT_RESERVATIONS_PER_IP,
    ) -> None:
        super().__init__(host, limits=limits, allow_hop=allow_hop)
        self.per_ip = ReservationsPerIp(max_reservations_per_ip)

    async def _handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        peer = stream.muxed_conn.peer_id
        if msg.HasField("peer") and msg.peer.id and msg.peer.id != peer.to_bytes():
            # The library would reserve for whatever ID the message names: one connection
            # could take every slot under made-up IDs.
            log.info("refused a reservation by %s for another peer ID", peer)
            await self._refuse_reservation(stream, StatusCode.PERMISSION_DENIED)
            return
        ip = remote_ip(stream)
        manager = self.resource_manager
        if ip is None or not self.per_ip.admit(
            ip, str(peer), lambda held: manager.has_reservation(ID.from_base58(held))
        ):
            log.info("refused a reservation by %s: %s already holds the most", peer, ip)
            await self._refuse_reservation(stream, StatusCode.RESERVATION_REFUSED)
            return
        await super()._handle_reserve(stream, msg)

    async def _refuse_reservation(self, stream: INetStream, code: StatusCode) -> None:
        with trio.move_on_after(RESERVE_TIMEOUT):
            try:
                status = HopMessage(type=HopMessage.STATUS, status=to_proto_status(code))
                await write_delimited_msg(stream, status)
            except Exception as exc:
                log.debug("could not send a reservation refusal: %s", exc)

    async def _relay_data(
        self,
        src_stream: INetStream,
        dst_stream: INetStream,
        peer_id: ID,
        deadline: float | None = None,
        circuit_data_limit: list[int] | None = None,
    ) -> None:
        key: Any = object()  # unique to this direction of this circuit
        self._active_relays[key] = (src_stream, dst_stream)
        try:
            await super()._relay_data(src_stream, dst_stream, key, deadline, circuit_data_limit)
        finally:
            self._active_relays.pop(key, None)
            held = self._active_relays.get(peer_id)
            if held is not None and {src_stream, dst_stream} & {held[0], held[1]}:
                del self._active_relays[peer_id]


class Relays:
    """Owns the relay protocol, the circuit transport, DCUtR and this daemon's reservations."""

    def __init__(self, network: Network, limits: RelayLimitsConfig) -> None:
        self.network = network
        self.limits = limits
        self.hop_enabled = False
        self.want_reservations = False
        self._reserved: dict[str, str] = {}  # relay peer -> our circuit address through it
        self._renewed_at: dict[str, float] = {}
        self._changed: list[Any] = []
        self._failed_until: dict[str, float] = {}
        self._retry_after: dict[str, float] = {}
        self.preferred: tuple[str, ...] = ()
        """Peers to try as relays first (the bootstrap daemons): chosen by the user, unlike
        any peer that happens to be connected."""
        self._wakeup = trio.Event()
        self._protocol: IsolatedCircuitRelay | None = None
        self._transport: CircuitV2Transport | None = None

    # --- what others see ------------------------------------------------------------------

    def circuit_addrs(self) -> list[str]:
        """Our addresses through relays that hold a reservation for us."""
        return sorted(self._reserved.values())

    def relays(self) -> list[str]:
        return sorted(self._reserved)

    def on_change(self, callback: Any) -> None:
        """Call ``callback()`` whenever :meth:`circuit_addrs` changes."""
        self._changed.append(callback)

    def stop_serving(self) -> None:
        """Stop relaying for others (this daemon turned out to be behind a NAT)."""
        if self._protocol is not None and self._protocol.allow_hop:
            self.network.host.remove_stream_handler(TProtocol(HOP_PROTOCOL))
            compat.disable_hop(self._protocol)
        self.hop_enabled = False

    def poke(self) -> None:
        """Connections changed: look for relays now rather than at the next check."""
        self._wakeup.set()

    # --- running --------------------------------------------------------------------------

    async def run(
        self, hop: bool, punch: bool = True, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve as a relay if ``hop``; run DCUtR hole punching if ``punch``."""
        host = self.network.host
        limits = RelayLimits(
            duration=self.limits.max_circuit_seconds,
            data=self.limits.max_circuit_bytes,
            max_circuit_conns=8,
            max_reservations=self.limits.max_reservations,
        )
        self.hop_enabled = hop
        protocol = IsolatedCircuitRelay(
            host,
            limits=limits,
            allow_hop=hop,
            max_reservations_per_ip=self.limits.max_reservations_per_ip,
        )
        self._protocol = protocol
        # STOP only: dialing a circuit must not take a reservation slot at the relay.
        self._transport = CircuitV2Transport(host, protocol, RelayConfig(roles=RelayRole.STOP))
        self.network.circuit_dialer = self._dial_circuit
        try:
            async with (
                background_trio_service(protocol),
                contextlib.AsyncExitStack() as stack,
                trio.open_nursery() as nursery,
            ):
                if punch:
                    dcutr = DCUtRProtocol(host)
                    # Our _punch_loop decides who initiates (see there).
                    compat.disable_dcutr_auto_drive(dcutr)
                    compat.police_hole_punch_dials(dcutr, self._may_punch_to)
                    await stack.enter_async_context(background_trio_service(dcutr))
                    nursery.start_soon(self._punch_loop, dcutr)
                nursery.start_soon(self._reservation_loop)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.network.circuit_dialer = None

    async def _punch_loop(self, dcutr: DCUtRProtocol) -> None:
        """Replace relayed connections with direct ones (DCUtR), with one initiator per pair.

        The library drives hole punches from *both* sides every 2 s: two daemons that came up
        together start their sessions in the same instant, and the two simultaneous dials
        from one listen port to one address collide, so both fail (measured: about one run
        in five in the NAT lab); after three attempts it never tries again while the relayed
        connection lasts. Here only the side with the smaller peer ID initiates (the other
        answers), soon after the relayed connection appears and then with backoff."""
        next_try: dict[str, float] = {}
        delay: dict[str, float] = {}
        while True:
            await trio.sleep(PUNCH_CHECK_EVERY)
            now = trio.current_time()
            relayed_only = [
                p
                for p in self.network.connected_peers()
                if set(self.network.connection_kinds(p)) == {"relayed"}
            ]
            for peer in list(next_try):
                if peer not in relayed_only:
                    next_try.pop(peer, None)
                    delay.pop(peer, None)
            for peer in relayed_only:
                if peer < self.network.identity.peer_id:
                    continue  # the friend initiates
                if now < next_try.setdefault(peer, now + PUNCH_FIRST_DELAY):
                    continue
                delay[peer] = min(delay.get(peer, PUNCH_RETRY_MIN / 2) * 2, PUNCH_RETRY_MAX)
                next_try[peer] = now + delay[peer]
                peer_id = ID.from_base58(peer)
                compat.reset_hole_punch_budget(dcutr, peer_id)  # a fresh budget
                try:
                    with trio.move_on_after(30):
                        if await dcutr.initiate_hole_punch(peer_id):
                            log.info("hole punched: direct connection to %s", peer)
                except Exception as exc:
                    log.debug("hole punch to %s failed: %s", peer, exc)

    async def _dial_circuit(self, addr: multiaddr.Multiaddr) -> INetConn:
        assert self._transport is not None
        relay_part = str(addr).split("/p2p-circuit")[0]
        relay_id = relay_part.rsplit("/p2p/", 1)[-1]
        # Connect to the relay ourselves first (the transport would use host.connect, with
        # its fixed 250 ms delay).
        if not self.network.is_connected(relay_id):
            await self.network.dial(relay_id, [relay_part])
        conn: INetConn = await self._transport.dial(addr)
        return conn

    def _may_punch_to(self, peer_id: ID, addr: multiaddr.Multiaddr) -> bool:
        """Whether a hole punch may dial ``addr`` for ``peer_id``: the address policy, as for
        any address a peer announces (the peer's CONNECT message names them)."""
        return bool(self.network.admit(str(peer_id), [str(addr)]))

    async def _reservation_loop(self) -> None:
        while True:
            if self.want_reservations:
                await self._maintain_reservations()
            elif self._reserved:
                self._reserved.clear()
                self._renewed_at.clear()
                self._notify()
            self._wakeup = trio.Event()
            with trio.move_on_after(CHECK_EVERY):
                await self._wakeup.wait()

    async def _maintain_reservations(self) -> None:
        network = self.network
        lost = [r for r in self._reserved if not network.is_connected(r)]
        for relay in lost:
            log.info("lost relay %s", relay)
            del self._reserved[relay]
            self._renewed_at.pop(relay, None)
        if lost:
            self._notify()
        now = time.monotonic()
        for relay in list(self._reserved):
            if now - self._renewed_at.get(relay, 0) > RESERVE_EVERY:
                await self._reserve(relay)
        if len(self._reserved) >= MAX_RESERVATIONS:
            return
        connected = network.connected_peers()
        candidates = [p for p in self.preferred if p in connected]
        candidates += [p for p in connected if p not in candidates]
        for peer in candidates:
            if len(self._reserved) >= MAX_RESERVATIONS:
                break
            if peer in self._reserved or now < self._failed_until.get(peer, 0):
                continue
            if self._offers_relay(peer):
                await self._reserve(peer)

    def _offers_relay(self, peer: str) -> bool:
        if "direct" not in self.network.connection_kinds(peer):
            return False  # a relay reached through a relay is no use
        return str(HOP_PROTOCOL) in self.network.protocols(peer)

    async def _reserve(self, relay: str) -> None:
        assert self._transport is not None
        base = self._relay_addr(relay)
        if base is None:
            return
        try:
            with trio.fail_after(RESERVE_TIMEOUT):
                stream = await self.network.host.new_stream(
                    ID.from_base58(relay), [TProtocol(HOP_PROTOCOL)]
                )
                try:
                    ok = await compat.make_reservation(
                        self._transport, stream, ID.from_base58(relay)
                    )
                finally:
                    await stream.close()
        except Exception as exc:
            log.info("reservation at relay %s failed: %s", relay, exc)
            ok = False
        if not ok:
            delay = min(self._retry_after.get(relay, RETRY_MIN / 2) * 2, RETRY_MAX)
            self._retry_after[relay] = delay
            self._failed_until[relay] = time.monotonic() + delay
            if self._reserved.pop(relay, None) is not None:
                self._notify()
            return
        self._retry_after.pop(relay, None)
        self._renewed_at[relay] = time.monotonic()
        circuit = f"{base}/p2p/{relay}/p2p-circuit"
        if self._reserved.get(relay) != circuit:
            self._reserved[relay] = circuit
            log.info("reserved a slot at relay %s: reachable at %s", relay, circuit)
            self._notify()

    def _relay_addr(self, relay: str) -> str | None:
        """The relay's listen address on the IP we reach it at (what friends will dial)."""
        remote = ""
        for conn in self.network.connections():
            if conn["peer_id"] == relay and conn["kind"] == "direct" and conn["addr"]:
                remote = str(conn["addr"]).split("/p2p/")[0]
        if not remote or is_circuit(remote):
            return None
        ip_part = "/".join(remote.split("/")[:3])  # /ip4/A.B.C.D
        try:
            listed = self.network.host.get_peerstore().addrs(ID.from_base58(relay))
        except Exception:
            listed = []
        # Only a plain /ipX/IP/tcp/PORT: the relay chooses what it advertises, and a long or
        # odd address would end up in our record and in every frame that carries our addrs.
        for addr in (str(a).split("/p2p/")[0] for a in listed):
            if addr.startswith(ip_part + "/tcp/") and _RELAY_BASE.match(addr):
                return addr
        return remote if _RELAY_BASE.match(remote) else None

    def _notify(self) -> None:
        for callback in self._changed:
            callback()
