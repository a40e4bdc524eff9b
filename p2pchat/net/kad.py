"""py-libp2p's Kademlia DHT, made into the p2pchat overlay, with its known bugs worked around.

Each workaround is small, named after the bug it covers, and tested in
tests/net/test_discovery_unit.py and tests/daemons/test_discovery.py (docs/ARCHITECTURE.md
§8):

- **Protocol ID** — py-libp2p 0.8.1 hard-codes ``/ipfs/kad/1.0.0`` as a module constant read
  by five modules. :func:`use_protocol` sets it in all of them before the DHT is built, so
  daemons form their own overlay (``/p2pchat/kad/1.0.0`` by default) and never answer IPFS.
- **Clients in routing tables** — a server adds *every* peer that opens a DHT stream to its
  routing table, including client-mode peers that cannot be queried; lookups then waste
  their time on them. :class:`OverlayDHT` admits a peer only once identify shows it serves
  our DHT protocol.
- **Stale cached values** — ``get_value`` answers from the local store without asking the
  network whenever it holds any copy, and caches every result for 24 h, so a friend's new
  address record would never be seen; it also waits for its "entry correction" stores (up
  to 10 s each) before returning. :meth:`OverlayDHT.get_newest` asks the closest peers
  itself, counts our own stored copy as one answer among others, and returns the newest
  valid record as soon as enough answers are in.

The py-libp2p internals these rely on (module constants, ``add_peer``'s signature, the
value store's one-peer GET) are patched and checked in :mod:`p2pchat.net.compat`.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.common import BUCKET_SIZE
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.records.utils import InvalidRecordType
from libp2p.records.validator import NamespacedValidator, Validator

from p2pchat.net import compat, records
from p2pchat.net.host import peer_protocols

log = logging.getLogger(__name__)

MAX_STORED_RECORDS: Final = 10_000
"""Records a server holds for others (each at most 8 KiB, typically ~300 bytes); the library
default, 50,000, lets strangers fill memory with records of made-up identities."""
GET_ANSWERS: Final = 3
"""Values to collect before choosing: a few, since a stale holder may answer first."""
GET_QUERY_TIMEOUT: Final = 5.0


def use_protocol(protocol_id: str) -> None:
    """Make every DHT in this process speak ``protocol_id`` (call before building one)."""
    compat.set_dht_protocol(protocol_id)


def current_protocol() -> str:
    return compat.dht_protocol()


class AddressRecordValidator(Validator):
    """Plugs :mod:`p2pchat.net.records` into the DHT: servers refuse to store, and clients to
    believe, anything :func:`records.parse_record` refuses; the newest record wins."""

    def validate(self, key: str, value: bytes) -> None:
        try:
            records.parse_record(key, value, time.time())
        except records.RecordError as exc:
            raise InvalidRecordType(str(exc)) from None

    def select(self, key: str, values: list[bytes]) -> int:
        try:
            return records.select_record(key, values, time.time())
        except records.RecordError as exc:
            raise InvalidRecordType(str(exc)) from None


class OverlayDHT(KadDHT):
    """KadDHT with the workarounds above; use :func:`use_protocol` before constructing."""

    def __init__(self, host: IHost, mode: DHTMode) -> None:
        # Strict: a server stores nothing but valid p2pchat address records (the library's
        # default stores any non-namespaced key unchecked, up to 1 MB each).
        validator = NamespacedValidator(
            {records.NAMESPACE: AddressRecordValidator()}, strict_validation=True
        )
        super().__init__(
            host, mode, validator=validator, validator_changed=True, strict_validation=True
        )
        compat.limit_value_store(MAX_STORED_RECORDS)

    def serves_dht(self, peer_id: ID) -> bool:
        """Whether identify says ``peer_id`` answers our DHT protocol."""
        return current_protocol() in peer_protocols(self.host, peer_id)

    async def add_peer(self, peer_id: ID, *, skip_server_mode_check: bool = False) -> bool:
        # The library calls this with skip_server_mode_check=True for every peer that opens a
        # DHT stream to us, clients included. Only servers belong in a routing table.
        if not self.serves_dht(peer_id):
            return False
        return await super().add_peer(peer_id, skip_server_mode_check=False)

    async def get_newest(self, key: str) -> bytes | None:
        """The newest valid value for ``key`` among our copy and the closest peers' (None if
        nobody has one). Returns once ``GET_ANSWERS`` peers have answered with a value, all
        have answered, or ``GET_QUERY_TIMEOUT`` has passed."""
        key_bytes = key.encode()
        validator = AddressRecordValidator()
        found: list[bytes] = []
        local = self.value_store.get(key_bytes)
        if local is not None:
            found.append(local.value)
        closest: list[ID] = []
        with trio.move_on_after(GET_QUERY_TIMEOUT):
            closest = await self.peer_routing.find_closest_peers_network(key_bytes)
        peers = [p for p in closest if p != self.local_peer_id][:BUCKET_SIZE]
        done = trio.Event()  # enough answers, or every peer has answered
        outstanding = len(peers)
        with_value = 0

        async def ask(peer: ID) -> None:
            nonlocal outstanding, with_value
            try:
                result = await compat.get_value_from_peer(self.value_store, peer, key_bytes)
                if result is not None:
                    validator.validate(key, result)
                    found.append(result)
                    with_value += 1
            except InvalidRecordType as exc:
                log.info("peer %s returned an invalid record for %s: %s", peer, key, exc)
            except Exception as exc:  # the library raises many types on dead peers
                log.debug("GET_VALUE from %s failed: %s", peer, exc)
            finally:
                outstanding -= 1
                if outstanding == 0 or with_value >= GET_ANSWERS:
                    done.set()

        if peers:
            with trio.move_on_after(GET_QUERY_TIMEOUT):
                async with trio.open_nursery() as nursery:
                    for peer in peers:
                        nursery.start_soon(ask, peer)
                    await done.wait()
                    nursery.cancel_scope.cancel()
        if not found:
            return None
        try:
            return found[validator.select(key, found)]
        except InvalidRecordType:
            return None
