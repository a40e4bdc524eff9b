"""One link task per contact that needs the network: a friend (its outbox), or anyone we
owe a friend notice. The link reaches the contact (known addresses, then the DHT), delivers
an owed notice first, then drains the outbox while connected; a failed round waits out a
growing backoff, cut short when the network changes (:class:`~p2pchat.net.link.Link`).

A link is created at start-up, when a contact enters such a state, when a message is queued,
and when such a contact connects; it ends by itself when the contact no longer needs it.
Queued messages wake a draining link but never cut a reconnect backoff short: a burst of
messages to an offline friend does not turn into a burst of dials.
"""

from __future__ import annotations

from typing import Any

import trio

from p2pchat.chat.friends import Friends
from p2pchat.chat.friendship import ContactState
from p2pchat.chat.messages import Messages, Outbox
from p2pchat.chat.reach import Reach
from p2pchat.chat.roster import Roster
from p2pchat.chat.store import Contact, MessageRecord
from p2pchat.net.link import Link, Links


def wants_link(contact: Contact) -> bool:
    if contact.state is ContactState.BLOCKED:
        return False
    return contact.notice is not None or contact.state is ContactState.FRIEND


class ContactLink(Link):
    """Keeps one contact reachable: connect with backoff, deliver notices, drain the outbox."""

    kind = "peer-link"

    def __init__(
        self, peer: str, *, roster: Roster, reach: Reach, friends: Friends, messages: Messages
    ) -> None:
        super().__init__(peer)
        self.roster = roster
        self.reach = reach
        self.friends = friends
        self.messages = messages
        self.outbox = Outbox()

    def wanted(self) -> bool:
        contact = self.roster.get(self.peer)
        return contact is not None and wants_link(contact)

    def wake(self) -> None:
        """New work (a message, an owed notice). Does not cut a reconnect backoff short."""
        self.outbox.work.set()

    def network_changed(self) -> None:
        super().network_changed()
        self.reach.network_changed(self.peer)
        self.outbox.work.set()

    async def step(self) -> bool:
        contact = self.roster.get(self.peer)
        if contact is None or not await self.reach.reach(self.peer):
            return False
        if contact.notice is not None:
            await self.friends.deliver_notice(contact)
            return True
        if contact.state is ContactState.FRIEND:
            await self.messages.drain(self.peer, self.outbox)
        return False


class ContactLinks:
    """The running :class:`ContactLink` of every contact that needs one."""

    def __init__(self, roster: Roster, reach: Reach, friends: Friends, messages: Messages) -> None:
        self.roster = roster
        self._links: Links[ContactLink] = Links(
            lambda peer: ContactLink(
                peer, roster=roster, reach=reach, friends=friends, messages=messages
            )
        )

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        def start() -> None:
            for contact in self.roster.contacts():
                self._wake(contact.peer_id)

        await self._links.run(start, task_status=task_status)

    def _wake(self, peer: str) -> ContactLink | None:
        link = self._links.ensure(peer)
        if link is not None:
            link.wake()
        return link

    def contact_changed(self, peer: str) -> None:
        """The contact's state, notice or addresses changed (a roster listener)."""
        link = self._links.ensure(peer)
        if link is not None:
            link.network_changed()  # wakes a draining loop too

    def connection_changed(self, peer: str, up: bool) -> None:
        """A roster connection listener."""
        link = self._links.get(peer)
        if link is not None:
            link.network_changed()
        elif up and self.roster.get(peer) is not None:
            self._wake(peer)

    def queue(self, record: MessageRecord) -> None:
        """A message was committed to the outbox: hand it to the friend's link."""
        link = self._links.get(record.peer_id)
        if link is not None:
            link.outbox.queue(record)
        else:
            self._wake(record.peer_id)
