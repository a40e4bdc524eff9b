"""Chat: the pieces of friendship and messaging for one identity, wired and run together.

The roster (contacts), reach (dialing contacts), the friend and message protocols and the
contacts' links. Files and calls build on :attr:`Chat.roster`, :attr:`Chat.reach` and
:attr:`Chat.inbound` (the inbound-stream budget all p2pchat protocols share).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

import trio

from p2pchat import wire
from p2pchat.chat.friends import Friends
from p2pchat.chat.links import ContactLinks
from p2pchat.chat.messages import Messages
from p2pchat.chat.quotas import FriendQuotas
from p2pchat.chat.reach import Reach
from p2pchat.chat.roster import Roster
from p2pchat.chat.sealing import Sealing
from p2pchat.chat.store import ChatStore
from p2pchat.config import QuotaConfig
from p2pchat.events import EventBus
from p2pchat.identity import short
from p2pchat.net.host import Network
from p2pchat.net.streams import InboundStreams

log = logging.getLogger(__name__)

DISCONNECT_GRACE_S: Final = 0.5
"""From a friend's cool-down starting to its connections being closed."""


class Chat:
    """Run with ``await chat.load()`` before the host listens, then ``nursery.start(chat.run)``."""

    def __init__(
        self,
        *,
        network: Network,
        store: ChatStore,
        events: EventBus,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        quotas: QuotaConfig | None = None,
    ) -> None:
        self.net = network
        self.roster = Roster(store, events, network.identity.peer_id)
        self.reach = Reach(network, self.roster)
        self.quotas = FriendQuotas(clock, quotas, on_cooldown=self._cool_down)
        """What each friend may make this daemon do (files' offers are checked here too)."""
        self._to_disconnect: set[str] = set()
        self._disconnect_wanted = trio.Event()
        self.friends = Friends(
            network=network, roster=self.roster, name=name, clock=clock, quotas=self.quotas
        )
        self.sealing = Sealing(store, network.identity)
        """Our Olm account and each friend's sessions (msg/2.0.0)."""
        self.messages = Messages(
            network=network,
            roster=self.roster,
            my_addrs=self.friends.my_addrs,
            quotas=self.quotas,
            sealing=self.sealing,
        )
        self.links = ContactLinks(self.roster, self.reach, self.friends, self.messages)
        self.messages.on_queued = self.links.queue
        self.inbound = InboundStreams(self.roster.is_friend)

    async def load(self) -> None:
        """Load contacts and install the stream handlers and connection callback. Call it
        before the host listens, so no early stream or connection goes unseen."""
        await self.roster.load()
        await self.sealing.load()
        self.net.set_handler(
            wire.FRIEND_PROTOCOL, self.inbound.handler("friend", self.friends.serve)
        )
        for protocol in (wire.MSG2_PROTOCOL, wire.MSG_PROTOCOL):
            self.net.set_handler(protocol, self.inbound.handler("message", self.messages.serve))
        self.roster.add_change_listener(self.links.contact_changed)
        # First connection listener: links react before files and discovery do.
        self.roster.add_connection_listener(self.links.connection_changed)
        self.roster.add_unfriend_listener(self.reach.forget)
        self.roster.add_change_listener(self._forget_deleted)
        self.net.on_connection_change(self.roster.connection_changed)

    def _forget_deleted(self, peer: str) -> None:
        if self.roster.get(peer) is None:
            self.reach.forget(peer)  # a contact added again starts with a fresh backoff

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep every contact that needs the network linked, and friends that are cooling
        down disconnected, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._disconnect_cooled)
            await nursery.start(self.links.run)
            task_status.started()

    def _cool_down(self, peer: str, seconds: float) -> None:
        """A friend drew too many refusals (:mod:`.quotas`): keep it away for ``seconds``."""
        log.warning(
            "friend %s was refused too often: disconnected and kept away for %g s "
            "(its daemon keeps what it queued and resends it then; see status.quotas)",
            short(peer),
            seconds,
        )
        self.net.keep_away(peer, seconds)
        self._to_disconnect.add(peer)
        self._disconnect_wanted.set()

    async def _disconnect_cooled(self) -> None:
        while True:
            await self._disconnect_wanted.wait()
            self._disconnect_wanted = trio.Event()
            # A moment for the refusal that says why to reach the friend (new connections
            # are refused already).
            await trio.sleep(DISCONNECT_GRACE_S)
            while self._to_disconnect:
                await self.net.disconnect(self._to_disconnect.pop())
