"""Reaching a contact: its last known addresses first, then wherever the DHT says it is.

Every concern that needs a contact online (the contact's link for notices and messages, the
file link, a call) dials through :class:`Reach`, so they share one per-contact lookup backoff:
an offline friend costs at most one DHT lookup per backoff period (doubling from 30 s to
15 min), however many of them want it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from p2pchat.chat.roster import Roster
from p2pchat.chat.store import Contact
from p2pchat.identity import short
from p2pchat.net.host import Network

log = logging.getLogger(__name__)

LOOKUP_BACKOFF_MIN: Final = 30.0
LOOKUP_BACKOFF_MAX: Final = 900.0


class Located(Protocol):
    """Where a resolver found a peer."""

    @property
    def addrs(self) -> tuple[str, ...]: ...

    @property
    def source(self) -> str: ...


Resolver = Callable[[str], Awaitable[Located | None]]


@dataclass
class _Lookups:
    next_at: float = 0.0
    backoff: float = LOOKUP_BACKOFF_MIN


class Reach:
    """Dials contacts. ``resolver`` (the DHT, once discovery runs) finds contacts that are
    not at their known addresses."""

    def __init__(self, network: Network, roster: Roster) -> None:
        self.net = network
        self.roster = roster
        self.resolver: Resolver | None = None
        self._lookups: dict[str, _Lookups] = {}  # only contacts that were not found

    async def reach(self, peer: str, *, lookup: bool = False) -> bool:
        """Whether a connection to contact ``peer`` is up, dialing it if need be: its known
        addresses, then the resolver, at most once per lookup backoff; ``lookup`` (a user is
        waiting, e.g. for a call) asks the resolver now, outside the backoff."""
        if self.net.is_connected(peer):
            return True
        contact = self.roster.get(peer)
        if contact is None:
            return False
        if await self.dial_last_known(contact):
            return True
        if self.resolver is None:
            log.debug("could not reach %s at its known addresses", short(peer))
            return False
        if lookup:  # a user waits: look up now, and leave the links' backoff as it is
            return await self.dial_found(contact)
        lookups = self._lookups.setdefault(peer, _Lookups())
        now = trio.current_time()
        if now < lookups.next_at:
            return False
        lookups.next_at = now + lookups.backoff
        lookups.backoff = min(lookups.backoff * 2, LOOKUP_BACKOFF_MAX)
        if not await self.dial_found(contact):
            return False
        self._lookups.pop(peer, None)
        return True

    def network_changed(self, peer: str) -> None:
        """Something changed that may make a lookup find the contact: allow one now (the
        backoff itself keeps its length until a lookup succeeds)."""
        lookups = self._lookups.get(peer)
        if lookups is not None:
            lookups.next_at = 0.0

    def forget(self, peer: str) -> None:
        self._lookups.pop(peer, None)

    async def dial_last_known(self, contact: Contact) -> bool:
        return bool(contact.addrs) and await self.net.dial(contact.peer_id, contact.addrs)

    async def dial_found(self, contact: Contact) -> bool:
        """Ask the resolver (the DHT) where ``contact`` is and dial it there; addresses from
        its signed record become its known addresses."""
        peer = contact.peer_id
        if self.resolver is None:
            return False
        found = await self.resolver(peer)
        if found is None:
            log.debug("%s: not found in the DHT", short(peer))
            return False
        # A record is signed by the friend, but a friend may point anywhere: announced
        # addresses pass the address policy (p2pchat.net.addrpolicy), like a hello's.
        addrs = self.net.admit(peer, found.addrs)
        if not addrs:
            log.debug("%s: no dialable address in the DHT's answer", short(peer))
            return False
        fresh = [a for a in addrs if a not in contact.addrs] or addrs
        if not await self.net.dial(peer, fresh):
            log.debug("could not reach %s at %s", short(peer), ", ".join(addrs))
            return False
        log.info("found %s through the DHT (%s)", short(peer), found.source)
        if found.source == "record":
            # Signed by the friend. (Peer-routing answers are whatever strangers told the
            # DHT; the friend's own hello frame will tell us its addresses.)
            await self.roster.learn_addrs(peer, tuple(addrs))
        return True
