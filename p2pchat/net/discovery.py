"""Finding peers by ID alone: the DHT overlay, address records, bootstrap, mDNS, reachability.

One :class:`Discovery` per daemon, run in the Node's nursery. It:

- runs the Kademlia DHT (:mod:`p2pchat.net.kad`) as a *server* when the daemon is publicly
  reachable and as a *client* behind a NAT (config ``dht_mode``: auto, server, client);
- joins the network through the configured bootstrap daemons and the DHT peers it saved
  last time, and keeps joining (with backoff and jitter) while its routing table is small;
- publishes this identity's signed address record (:mod:`.publishing`) and answers
  :meth:`find_addrs` for friends;
- finds daemons on the local network segment with mDNS, with no configuration (:mod:`.lan`);
- owns :class:`p2pchat.net.relay.Relays`: it tells it whether to serve as a relay and whether
  to reserve slots, from what it learns about reachability.

Reachability (``auto``, decided in :mod:`.reachability`): a daemon whose every non-loopback
listen address is private starts as a DHT client that reserves relay slots; others start as
servers that offer relaying. A server that peers observe under an IP it does not listen on is
behind a NAT after all: it becomes a client and reserves relay slots.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Final

import trio
from libp2p.kad_dht.kad_dht import DHTMode
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service

from p2pchat.identity import Identity
from p2pchat.net import compat, kad, records
from p2pchat.net.host import IDENTIFY_WAIT, Network, dial_order, is_circuit
from p2pchat.net.lan import LanDiscovery
from p2pchat.net.publishing import RecordPublisher
from p2pchat.net.reachability import advertised_addrs, behind_nat, foreign_ips, initial_mode
from p2pchat.net.relay import RelayLimitsConfig, Relays
from p2pchat.storage.settings import Settings

log = logging.getLogger(__name__)

MIN_ROUTING_TABLE: Final = 5
"""Below this many DHT peers the daemon keeps trying to join (the library also uses every
connected peer for lookups until then)."""
JOIN_BACKOFF_MIN: Final = 0.5
JOIN_BACKOFF_MAX: Final = 120.0
JOIN_TIMEOUT: Final = 30.0
CHECK_TABLE_EVERY: Final = 30.0
LOOKUP_TIMEOUT: Final = 15.0
JOIN_WAIT: Final = 10.0
"""How long a lookup asked for before the daemon has any DHT peer waits for the first one
(a friend link or a user's lookup right after start-up would otherwise fail at once)."""
SAVE_PEERS_EVERY: Final = 300.0
SAVED_PEERS_MAX: Final = 50
NAT_CHECK_EVERY: Final = 5.0
NAT_MIN_OBSERVERS: Final = 2
"""Distinct peers that must see us under a foreign IP before we believe we are behind a NAT:
one peer's say-so must not turn a public daemon into a client."""
JOIN_BACKOFF_SMALL_NET: Final = 600.0
"""Backoff cap once some DHT peers are known but no more are to be found (a small overlay,
e.g. a group of friends): re-joining every two minutes would be pure traffic."""
SETTING_PEERS: Final = "dht_peers"


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    protocol: str
    mode: str  # auto, server or client
    bootstrap: tuple[str, ...]
    mdns: bool
    relay_service: str  # auto, on or off
    relay_limits: RelayLimitsConfig


@dataclass(frozen=True, slots=True)
class Lookup:
    peer_id: str
    addrs: tuple[str, ...]
    source: str  # "record" or "peer-routing"
    seq: int | None
    elapsed_s: float


class Discovery:
    def __init__(
        self,
        network: Network,
        settings: Settings,
        identity: Identity,
        config: DiscoveryConfig,
    ) -> None:
        self.network = network
        self.settings = settings
        self.identity = identity
        self.config = config
        self.relays = Relays(network, config.relay_limits)
        self.relays.preferred = tuple(a.rsplit("/p2p/", 1)[-1] for a in config.bootstrap)
        self.relays.on_change(self.addresses_changed)
        self.dht: kad.OverlayDHT | None = None
        self.public = True
        self.started_at = time.monotonic()
        self.ready_after: float | None = None
        """Seconds from start to the first routing table of at least one peer."""
        self._joined = trio.Event()
        self.publisher: RecordPublisher | None = None
        self._connected_send, self._connected_recv = trio.open_memory_channel[str](256)

    # --- views ----------------------------------------------------------------------------

    def routing_table_size(self) -> int:
        return self.dht.get_routing_table_size() if self.dht is not None else 0

    def status(self) -> dict[str, Any]:
        return {
            "reachability": "public" if self.public else "private",
            "dht_mode": "server" if self.public else "client",
            "dht_protocol": self.config.protocol,
            "dht_peers": self.routing_table_size(),
            "dht_ready_s": round(self.ready_after, 3) if self.ready_after is not None else None,
            "record_seq": self.publisher.published_seq if self.publisher else None,
            "relay_service": self.relays.hop_enabled,
            "relays": self.relays.relays(),
            "mdns": self.config.mdns,
            "public_ips": self.public_ips(),
        }

    def advertised(self) -> tuple[str, ...]:
        return advertised_addrs(
            self.network.listen_addrs(), self.relays.circuit_addrs(), public=self.public
        )

    # --- events from elsewhere ------------------------------------------------------------

    def addresses_changed(self) -> None:
        if self.publisher is not None:
            self.publisher.addresses_changed()

    def peer_connected(self, peer: str) -> None:
        """A connection came up: a possible DHT peer or relay (checked once identified)."""
        # On a burst of connections some are dropped: the next refresh finds them anyway.
        with contextlib.suppress(trio.WouldBlock):
            self._connected_send.send_nowait(peer)

    # --- running --------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        kad.use_protocol(self.config.protocol)
        mode = self.config.mode
        dht_mode = (
            initial_mode(self.network.listen_addrs())
            if mode == "auto"
            else (DHTMode.SERVER if mode == "server" else DHTMode.CLIENT)
        )
        self.public = dht_mode is DHTMode.SERVER
        hop = self.config.relay_service == "on" or (
            self.config.relay_service == "auto" and self.public
        )
        self.relays.want_reservations = not self.public
        dht = kad.OverlayDHT(self.network.host, dht_mode)
        self.dht = dht
        self.publisher = RecordPublisher(
            dht,
            self.settings,
            self.identity,
            advertised=self.advertised,
            table_size=self.routing_table_size,
            started_at=self.started_at,
        )
        log.info(
            "DHT %s on %s; %s; relay service %s",
            "server" if self.public else "client",
            self.config.protocol,
            "publicly reachable" if self.public else "behind NAT: will reserve relay slots",
            "on" if hop else "off",
        )
        try:
            async with background_trio_service(dht), trio.open_nursery() as nursery:
                await nursery.start(self.relays.run, hop)
                nursery.start_soon(self._join_loop)
                nursery.start_soon(self.publisher.run)
                nursery.start_soon(self._connected_loop)
                nursery.start_soon(self._save_peers_loop)
                if mode == "auto" and self.public:
                    nursery.start_soon(self._nat_watch_loop)
                if self.config.mdns:
                    lan = LanDiscovery(self.network, self.identity.peer_id, self._found_on_lan)
                    await nursery.start(lan.run)
                task_status.started()
        finally:
            self.network.host.remove_stream_handler(kad.current_protocol())  # type: ignore[arg-type]
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self._save_peers()

    # --- joining the network --------------------------------------------------------------

    async def _candidates(self) -> list[tuple[str, list[str]]]:
        """Bootstrap daemons, then the DHT peers saved last time: (peer, addrs)."""
        out: dict[str, list[str]] = {}
        for addr in self.config.bootstrap:
            peer = addr.rsplit("/p2p/", 1)[-1]
            out.setdefault(peer, []).append(addr.rsplit("/p2p/", 1)[0])
        try:
            saved = json.loads(await self.settings.get(SETTING_PEERS) or "[]")
        except ValueError:
            saved = []
        for entry in saved if isinstance(saved, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("peer"), str):
                addrs = [a for a in entry.get("addrs", []) if isinstance(a, str)]
                out.setdefault(entry["peer"], []).extend(addrs)
        out.pop(self.identity.peer_id, None)
        return list(out.items())

    async def _join_loop(self) -> None:
        backoff = JOIN_BACKOFF_MIN
        while True:
            size = self.routing_table_size()
            candidates = await self._candidates() if size < MIN_ROUTING_TABLE else []
            if size < MIN_ROUTING_TABLE and (candidates or size > 0):
                await self._join(candidates)
                after = self.routing_table_size()
                if after >= MIN_ROUTING_TABLE:
                    backoff = JOIN_BACKOFF_MIN
                else:
                    # Many daemons joining through one bootstrap at once overflow its
                    # inbound DHT limit; jittered retries spread them out. A small overlay
                    # that stopped growing is simply small: back off further.
                    cap = JOIN_BACKOFF_SMALL_NET if 0 < after <= size else JOIN_BACKOFF_MAX
                    await trio.sleep(backoff * (0.5 + random.random()))
                    backoff = min(backoff * 2, cap)
                    continue
            await trio.sleep(CHECK_TABLE_EVERY)

    async def _join(self, candidates: list[tuple[str, list[str]]]) -> None:
        assert self.dht is not None
        dht = self.dht

        async def add(peer: str, addrs: list[str]) -> None:
            if not await self.network.dial(peer, addrs):
                return
            await self._admit(peer)

        with trio.move_on_after(JOIN_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for peer, addrs in candidates:
                    nursery.start_soon(add, peer, addrs)
            if self.routing_table_size() > 0:
                try:
                    await dht.refresh_routing_table()
                except Exception as exc:  # the library raises many types on dead peers
                    log.debug("routing table refresh failed: %s", exc)
        self._note_ready()

    def _note_ready(self) -> None:
        size = self.routing_table_size()
        if size > 0 and self.ready_after is None:
            self.ready_after = time.monotonic() - self.started_at
            self._joined.set()
            log.info("joined the DHT: %d peers after %.2f s", size, self.ready_after)
            self.addresses_changed()  # publish now that someone can store it

    async def _admit(self, peer: str) -> bool:
        """Add a connected peer to the routing table once identify says it serves the DHT."""
        assert self.dht is not None
        peer_id = ID.from_base58(peer)
        with trio.move_on_after(IDENTIFY_WAIT):
            while not self.network.protocols(peer):
                await trio.sleep(0.02)
        self.relays.poke()
        return await self.dht.add_peer(peer_id)

    async def _found_on_lan(self, peer: str, addrs: list[str]) -> None:
        if await self.network.dial(peer, addrs):
            await self._admit(peer)

    async def _connected_loop(self) -> None:
        """Admit new connections to the routing table, at most 8 at a time (each may wait
        for identify); a peer already waiting is not queued twice."""
        slots = trio.Semaphore(8)
        waiting: set[str] = set()

        async def admit(peer: str) -> None:
            try:
                if self.network.is_connected(peer):
                    await self._admit(peer)
                    self._note_ready()
            finally:
                waiting.discard(peer)
                slots.release()

        async with trio.open_nursery() as nursery:
            async for peer in self._connected_recv:
                if peer in waiting:
                    continue
                await slots.acquire()
                waiting.add(peer)
                nursery.start_soon(admit, peer)

    # --- our record -----------------------------------------------------------------------

    # --- finding others -------------------------------------------------------------------

    async def find_addrs(self, peer: str) -> Lookup | None:
        """Where ``peer`` can be reached: its signed record, else DHT peer routing."""
        if self.dht is None:
            return None  # not started yet
        started = time.monotonic()
        key = records.record_key(peer)
        if self.routing_table_size() == 0:
            with trio.move_on_after(JOIN_WAIT):
                await self._joined.wait()
        with trio.move_on_after(LOOKUP_TIMEOUT):
            value = await self.dht.get_newest(key)
            if value is not None:
                try:
                    record = records.parse_record(key, value, time.time())
                except records.RecordError as exc:  # get_newest validated it; expired since?
                    log.info("record for %s unusable: %s", peer, exc)
                else:
                    addrs = record.addrs_of(peer) or record.all_addrs()
                    if addrs:
                        return Lookup(peer, addrs, "record", record.seq, time.monotonic() - started)
            info = await self._find_peer(peer)
            if info:
                return Lookup(peer, info, "peer-routing", None, time.monotonic() - started)
        return None

    async def closest_servers(self, key_peer: str, count: int) -> list[str]:
        """The DHT servers closest to ``key_peer``'s ID that a network lookup finds (our
        own ID excluded; empty before the DHT is up). Their addresses are left in the
        peerstore, so a stream to them dials. For holders of a peer's envelopes."""
        if self.dht is None:
            return []
        if self.routing_table_size() == 0:
            with trio.move_on_after(JOIN_WAIT):
                await self._joined.wait()
        me = self.identity.peer_id
        found: list[ID] = []
        with trio.move_on_after(LOOKUP_TIMEOUT):
            try:
                found = await self.dht.peer_routing.find_closest_peers_network(
                    ID.from_base58(key_peer).to_bytes()
                )
            except Exception as exc:  # the library raises many types on dead peers
                log.debug("closest-peers lookup for %s failed: %s", key_peer, exc)
        if not found:
            found = self.dht.routing_table.find_local_closest_peers(
                ID.from_base58(key_peer).to_bytes(), count + 2
            )
        closest = [p.to_base58() for p in found]
        return [p for p in closest if p not in (me, key_peer)][:count]

    async def _find_peer(self, peer: str) -> tuple[str, ...]:
        assert self.dht is not None
        try:
            info = await self.dht.find_peer(ID.from_base58(peer))
        except Exception as exc:
            log.debug("peer routing for %s failed: %s", peer, exc)
            return ()
        if info is None:
            return ()
        # Peer routing returns addresses ending in /p2p/<peer>; report them as records do.
        suffix = f"/p2p/{peer}"
        return tuple(dial_order([str(a).removesuffix(suffix) for a in info.addrs]))

    # --- reachability ---------------------------------------------------------------------

    async def _nat_watch_loop(self) -> None:
        while self.public:
            await trio.sleep(NAT_CHECK_EVERY)
            observed = self._observed_addrs()
            if behind_nat(self.network.listen_addrs(), observed):
                log.info(
                    "peers see this daemon at %s: behind a NAT; switching to DHT client mode "
                    "and reserving relay slots",
                    ", ".join(observed),
                )
                assert self.dht is not None
                await self.dht.switch_mode(DHTMode.CLIENT)
                self.public = False
                if self.config.relay_service == "auto":
                    self.relays.stop_serving()
                self.relays.want_reservations = True
                self.relays.poke()
                self.addresses_changed()

    def public_ips(self) -> list[str]:
        """IPs that peers observe us at (identify), loopback and our own listen IPs aside:
        our NAT's public side, offered as call candidates instead of asking a STUN server."""
        return foreign_ips(self.network.listen_addrs(), self._observed_addrs(min_observers=1))

    def _observed_addrs(self, min_observers: int = NAT_MIN_OBSERVERS) -> list[str]:
        """Our addresses as at least ``min_observers`` peers reported them (identify)."""
        manager = compat.observed_addr_manager(self.network.host)
        if manager is None:
            return []
        try:
            return [str(a) for a in manager.addrs(min_observers=min_observers)]
        except Exception:
            return []

    # --- saved peers ----------------------------------------------------------------------

    async def _save_peers_loop(self) -> None:
        while True:
            await trio.sleep(SAVE_PEERS_EVERY)
            await self._save_peers()

    async def _save_peers(self) -> None:
        if self.dht is None:
            return
        peerstore = self.network.host.get_peerstore()
        saved: list[dict[str, Any]] = []
        for peer_id in self.dht.routing_table.get_peer_ids():
            if len(saved) >= SAVED_PEERS_MAX:
                break
            if not self.dht.serves_dht(peer_id):
                continue  # only peers identify vouched for, not names from DHT replies
            try:
                addrs = [str(a) for a in peerstore.addrs(peer_id) if not is_circuit(str(a))]
            except Exception:
                continue
            # Saved peers are dialed as given on the next start: save only what the
            # address policy admits for how the peer was reached (net/addrpolicy.py).
            addrs = self.network.admit(str(peer_id), addrs)
            if addrs:
                saved.append({"peer": str(peer_id), "addrs": dial_order(addrs)[:4]})
        if saved:
            try:
                await self.settings.set(SETTING_PEERS, json.dumps(saved))
            except Exception as exc:
                log.info("could not save DHT peers: %s", exc)
