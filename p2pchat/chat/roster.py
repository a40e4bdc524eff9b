"""The roster: every contact of this identity, and the one place their state changes.

Files, calls and discovery ask the roster whether a peer is a friend (:meth:`Roster.is_friend`),
look contacts up (:meth:`Roster.get`, :meth:`Roster.resolve`) and subscribe to what they must
react to: a friendship that ends, a connection that opens or closes, a contact whose state or
addresses changed. Nobody else reads or writes the contact cache.

A state change runs under the peer's lock (:meth:`Roster.locked`) and writes the database
first, then the in-memory cache (:meth:`Roster.apply`), so the cache never shows what is not
stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from p2pchat.api import ApiError
from p2pchat.chat.friendship import DELETE, ContactState, Step
from p2pchat.chat.store import ChatStore, Contact
from p2pchat.chat.unread import UnreadCounts
from p2pchat.chat.verified import VerifiedMarks
from p2pchat.clock import now_ms
from p2pchat.events import EventBus
from p2pchat.identity import short
from p2pchat.locks import KeyedLocks

log = logging.getLogger(__name__)

PeerListener = Callable[[str], None]
ConnectionListener = Callable[[str, bool], None]


def contact_json(
    contact: Contact, *, online: bool, outbox: int = 0, unread: int = 0, verified: bool = False
) -> dict[str, Any]:
    return {
        "peer_id": contact.peer_id,
        "name": contact.name,
        "their_name": contact.their_name,
        "display_name": contact.display_name or short(contact.peer_id),
        "state": contact.state.value,
        "online": online,
        "request_text": contact.request_text,
        "addrs": list(contact.addrs),
        "outbox": outbox,
        "unread": unread,
        "verified": verified,
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
    }


class Roster:
    """The contacts of one identity: cache, lookups, state changes and who is online."""

    def __init__(self, store: ChatStore, events: EventBus, me: str = "") -> None:
        """``me``: our own ID, for safety numbers (tests of other parts may leave it out)."""
        self.store = store
        self.events = events
        self._contacts: dict[str, Contact] = {}
        self.unread = UnreadCounts(store)
        """Each conversation's unread count (kept apart from contacts: history, and what
        was read of it, outlive a contact)."""
        self.verified = VerifiedMarks(store, me)
        """The friends whose safety number the user confirmed (kept apart likewise)."""
        # Contacts keep their lock; strangers' locks are dropped when idle, so strangers
        # cannot grow this table.
        self._locks: KeyedLocks[str] = KeyedLocks(keep=lambda peer: peer in self._contacts)
        self._conn_count: dict[str, int] = {}
        self._connection_listeners: list[ConnectionListener] = []
        self._unfriend_listeners: list[PeerListener] = []
        self._change_listeners: list[PeerListener] = []

    async def load(self) -> None:
        for contact in await self.store.contacts():
            self._contacts[contact.peer_id] = contact
        await self.unread.load()
        await self.verified.load()

    # --- lookups -----------------------------------------------------------------------------

    def get(self, peer: str) -> Contact | None:
        return self._contacts.get(peer)

    def is_friend(self, peer: str) -> bool:
        contact = self._contacts.get(peer)
        return contact is not None and contact.state is ContactState.FRIEND

    def contacts(self) -> list[Contact]:
        return list(self._contacts.values())

    def is_online(self, peer: str) -> bool:
        return self._conn_count.get(peer, 0) > 0

    def contact_json(self, contact: Contact, outbox: int = 0) -> dict[str, Any]:
        peer = contact.peer_id
        return contact_json(
            contact,
            online=self.is_online(peer),
            outbox=outbox,
            unread=self.unread.count(peer),
            verified=self.verified.is_verified(peer),
        )

    def resolve(self, text: str) -> Contact:
        """Find a contact by full ID, name, or a unique beginning or end of an ID (API.md)."""
        query = text.strip()
        if not query:
            raise ApiError("invalid_params", "no friend given")
        visible = [c for c in self._contacts.values() if c.state is not ContactState.REMOVED]
        for c in visible:
            if c.peer_id == query:
                return c
        # Names the user chose first, then pieces of IDs, and only then names that peers chose
        # for themselves (never a blocked peer's): a peer must not be able to capture a name
        # or an ID fragment the user types for someone else. Two peers announcing the same
        # name make it ambiguous, never misdirected.
        folded = query.casefold()
        found = _only_one(
            [c for c in visible if c.name.casefold() == folded],
            f"contacts are called {query!r}; use an ID instead",
        )
        if found is None and len(query) >= 4:
            # Short IDs are shown as an ID's beginning or end, so both are accepted.
            matching = [
                c for c in visible if c.peer_id.startswith(query) or c.peer_id.endswith(query)
            ]
            found = _only_one(matching, f"contacts have IDs matching {query!r}; type more of it")
        if found is None:
            found = _only_one(
                [
                    c
                    for c in visible
                    if c.state is not ContactState.BLOCKED and c.their_name.casefold() == folded
                ],
                f"contacts call themselves {query!r}; use an ID or give them a name",
            )
        if found is not None:
            return found
        raise ApiError("not_found", f"no contact matches {query!r} (see: p2pchat friends list)")

    def resolve_friend(self, text: str, only: str) -> Contact:
        """:meth:`resolve`, and the contact must be a friend; ``only`` says what only
        friends may do, for the error."""
        contact = self.resolve(text)
        if contact.state is not ContactState.FRIEND:
            raise ApiError(
                "not_friend",
                f"{contact.display_name or short(contact.peer_id)} is not a friend "
                f"({contact.state.value}): {only}",
            )
        return contact

    # --- listeners ---------------------------------------------------------------------------

    def add_unfriend_listener(self, listener: PeerListener) -> None:
        """Tell ``listener`` (peer) whenever a friendship ends, by either side."""
        self._unfriend_listeners.append(listener)

    def add_connection_listener(self, listener: ConnectionListener) -> None:
        """Tell ``listener`` (peer, up) whenever a connection opens or closes, in the order
        the listeners were added."""
        self._connection_listeners.append(listener)

    def add_change_listener(self, listener: PeerListener) -> None:
        """Tell ``listener`` (peer) whenever a contact's state, owed notice or addresses
        changed, or the contact was deleted (so its link may have new work, or new places to
        dial, or none)."""
        self._change_listeners.append(listener)

    def connection_changed(self, peer: str, up: bool) -> None:
        """A connection to ``peer`` opened or closed (the network's callback)."""
        before = self._conn_count.get(peer, 0)
        after = before + 1 if up else max(0, before - 1)
        self._conn_count[peer] = after
        if after == 0:
            self._conn_count.pop(peer, None)
        contact = self._contacts.get(peer)
        if contact is not None and contact.state is ContactState.FRIEND:
            if before == 0 and after > 0:
                log.info("friend %s is online", short(peer))
                self.events.publish("friend.online", contact=self.contact_json(contact))
            elif before > 0 and after == 0:
                log.info("friend %s is offline", short(peer))
                self.events.publish("friend.offline", contact=self.contact_json(contact))
        for listener in self._connection_listeners:
            listener(peer, up)

    # --- state changes -----------------------------------------------------------------------

    def locked(self, peer: str) -> AbstractAsyncContextManager[None]:
        """Serialise state changes for one peer."""
        return self._locks.hold(peer)

    async def apply(self, peer: str, step: Step, **fields: Any) -> Contact | None:
        """Persist a transition's new state (caller holds the peer's lock). A step with
        neither state nor notice updates only the given descriptive fields."""
        current = self._contacts.get(peer)
        if step.state is None and step.notice is None:
            if current is not None and fields:
                # Only the given fields: state and owed notice stay as stored (the in-memory
                # copy may be a moment behind a notice the link just cleared).
                updated = await self.store.update_fields(peer, now=now_ms(), **fields)
                if updated is not None:
                    self._contacts[peer] = updated
                    if "addrs" in fields:
                        self._changed(peer)
                return updated
            return current
        was_friend = current is not None and current.state is ContactState.FRIEND
        if step.state == DELETE:
            await self.store.delete_contact(peer)
            self._contacts.pop(peer, None)
            if was_friend:
                self._friendship_ended(peer)
            self._changed(peer)
            return None
        state = step.state if isinstance(step.state, ContactState) else None
        if state is None:
            assert current is not None
            state = current.state
        contact = await self.store.put_contact(
            peer, state=state, notice=step.notice, now=now_ms(), **fields
        )
        self._contacts[peer] = contact
        if was_friend and state is not ContactState.FRIEND:
            self._friendship_ended(peer)
        if state is ContactState.FRIEND and not was_friend and self.is_online(peer):
            # Already connected when the friendship began: online from now on.
            self.events.publish("friend.online", contact=self.contact_json(contact))
        self._changed(peer)
        return contact

    async def learn_addrs(self, peer: str, addrs: tuple[str, ...]) -> None:
        """A contact told us (or its signed record says) where it can be reached. Callers
        pass only what :meth:`p2pchat.net.host.Network.admit` let through."""
        contact = self._contacts.get(peer)
        if contact is None or not addrs or tuple(addrs) == contact.addrs:
            return
        async with self.locked(peer):
            await self.apply(peer, Step(), addrs=list(addrs))

    async def refresh(self, peer: str) -> None:
        """Re-read one contact from the database (caller holds the peer's lock): after a
        store update made outside :meth:`apply`, such as clearing a delivered notice."""
        refreshed = await self.store.contact(peer)
        if refreshed is not None:
            self._contacts[peer] = refreshed

    def _friendship_ended(self, peer: str) -> None:
        for listener in self._unfriend_listeners:
            listener(peer)

    def _changed(self, peer: str) -> None:
        for listener in self._change_listeners:
            listener(peer)


def _only_one(matches: list[Contact], ambiguity: str) -> Contact | None:
    """The single match, None for no match, or an ``ambiguous`` error naming the candidates."""
    if len(matches) > 1:
        raise ApiError(
            "ambiguous",
            f"{len(matches)} {ambiguity}",
            {"candidates": [c.peer_id for c in matches]},
        )
    return matches[0] if matches else None
