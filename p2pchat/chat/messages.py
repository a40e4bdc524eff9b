"""Friends and messages: the trio adapter around the wire format, the friendship state table
and the store.

Two stream protocols (docs/PROTOCOL.md):

* ``/p2pchat/friend/1.0.0`` carries one *notice* per stream (request, accept or remove) and
  its reply. Strangers may use it only for requests, rate-limited and size-limited.
* ``/p2pchat/msg/1.0.0`` is a long-lived stream from sender to receiver carrying chat messages;
  the receiver answers with acks, each sent only after the messages it names are committed to
  disk. Friends only.

One :class:`PeerLink` task per contact that needs the network (a friend, or anyone we owe a
notice) keeps a connection up with backoff, delivers owed notices and drains the outbox in
order. Its failures are contained: a dead stream ends in a retry, never a crashed daemon.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Protocol

import trio
from libp2p.abc import INetStream
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.net_stream import NetStream

from p2pchat import wire
from p2pchat.api import ApiError
from p2pchat.chat.friendship import (
    DELETE,
    Emit,
    PeerFrame,
    Reply,
    Step,
    UserAction,
    on_peer,
    on_user,
)
from p2pchat.chat.ratelimit import RequestLimiter
from p2pchat.chat.store import (
    Contact,
    ContactState,
    IncomingMessage,
    MessageRecord,
    Notice,
    Store,
)
from p2pchat.events import EventBus
from p2pchat.identity import IdentityError, parse_id_or_code
from p2pchat.locks import KeyedLocks
from p2pchat.net.host import Network, read_some, remote_peer
from p2pchat.storage.database import DatabaseError, DiskFullError

log = logging.getLogger(__name__)

SEND_WINDOW: Final = 512
"""Messages in flight (sent, not yet acked) per friend."""

OUTBOX_BATCH: Final = 128
FRIEND_STREAM_TIMEOUT: Final = 10.0


class Located(Protocol):
    """Where a resolver found a peer."""

    @property
    def addrs(self) -> tuple[str, ...]: ...

    @property
    def source(self) -> str: ...


Resolver = Callable[[str], Awaitable[Located | None]]

LOOKUP_BACKOFF_MIN: Final = 30.0
LOOKUP_BACKOFF_MAX: Final = 900.0
"""DHT lookups for an unreachable contact: at most one per backoff period (doubling from 30 s
to 15 min), so offline friends do not turn into a steady stream of DHT queries."""
BACKOFF_MIN: Final = 0.5
BACKOFF_MAX: Final = 60.0
MAX_PENDING_REQUESTS: Final = 200
MAX_INBOUND_STREAMS_PER_PEER: Final = 8
MAX_STRANGER_STREAMS: Final = 256
FINISH_GRACE: Final = 2.0


def short(peer: str) -> str:
    return peer[-8:]


def now_ms() -> int:
    return int(time.time() * 1000)


class Wakeup:
    """A level-triggered wake-up flag for one waiting task."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> None:
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            await self._event.wait()
        self._event = trio.Event()


class StreamBudget:
    """How many inbound p2pchat streams may be handled at once: a per-peer cap for everyone,
    and a shared cap for non-friends only, so that strangers (whose IDs cost nothing) can
    never crowd out friends' streams. Extra streams are reset at once."""

    def __init__(self, per_peer: int, strangers_total: int) -> None:
        self._per_peer = per_peer
        self._strangers_total = strangers_total
        self._active: dict[str, int] = {}
        self._strangers = 0

    def try_acquire(self, peer: str, *, friend: bool) -> bool:
        mine = self._active.get(peer, 0)
        if mine >= self._per_peer:
            return False
        if not friend:
            if self._strangers >= self._strangers_total:
                return False
            self._strangers += 1
        self._active[peer] = mine + 1
        return True

    def release(self, peer: str, *, friend: bool) -> None:
        if not friend:
            self._strangers -= 1
        left = self._active.get(peer, 0) - 1
        if left > 0:
            self._active[peer] = left
        else:
            self._active.pop(peer, None)


def contact_json(contact: Contact, *, online: bool, outbox: int = 0) -> dict[str, Any]:
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
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
    }


def message_json(m: MessageRecord) -> dict[str, Any]:
    return {
        "id": m.msg_id.hex(),
        "row": m.row,
        "peer_id": m.peer_id,
        "direction": "out" if m.outgoing else "in",
        "seq": m.seq,
        "text": m.text,
        "state": m.state.value,
        "sent_at": m.sent_at,
        "stored_at": m.stored_at,
        "delivered_at": m.delivered_at,
    }


def _storage_error(exc: DatabaseError) -> ApiError:
    if isinstance(exc, DiskFullError):
        return ApiError("disk_full", str(exc))
    return ApiError("storage_error", str(exc))


class Chat:
    """Friendship and messaging for one identity. Run with ``nursery.start(chat.run)``."""

    def __init__(
        self,
        *,
        network: Network,
        store: Store,
        events: EventBus,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.net = network
        self.store = store
        self.events = events
        self.name = name
        self.me = network.identity.peer_id
        self._contacts: dict[str, Contact] = {}
        # Contacts keep their lock; strangers' locks are dropped when idle, so strangers
        # cannot grow this table.
        self._locks: KeyedLocks[str] = KeyedLocks(keep=lambda peer: peer in self._contacts)
        self._links: dict[str, PeerLink] = {}
        self._conn_count: dict[str, int] = {}
        self._limiter = RequestLimiter(clock)
        self._inbound = StreamBudget(MAX_INBOUND_STREAMS_PER_PEER, MAX_STRANGER_STREAMS)
        self._nursery: trio.Nursery | None = None
        self._connection_listeners: list[Callable[[str, bool], None]] = []
        self._unfriend_listeners: list[Callable[[str], None]] = []
        self.resolver: Resolver | None = None
        """Finds a contact's addresses when the known ones fail (the DHT, when running)."""
        self.addr_source: Callable[[], Sequence[str]] = network.listen_addrs
        """The addresses we tell friends about (listen addresses, relay circuits)."""

    # --- lifecycle -------------------------------------------------------------------------

    async def load(self) -> None:
        """Load contacts and install the stream handlers and connection callback. Call it
        before the host listens, so no early stream or connection goes unseen."""
        for contact in await self.store.contacts():
            self._contacts[contact.peer_id] = contact
        self.net.set_handler(
            wire.FRIEND_PROTOCOL, self._budgeted("friend", self._serve_friend_stream)
        )
        self.net.set_handler(wire.MSG_PROTOCOL, self._budgeted("message", self._serve_msg_stream))
        self.net.on_connection_change(self._connection_changed)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep every contact that needs the network linked, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for contact in list(self._contacts.values()):
                self._ensure_link(contact.peer_id)
            task_status.started()
            await trio.sleep_forever()

    def _ensure_link(self, peer: str) -> None:
        contact = self._contacts.get(peer)
        if contact is None or not _wants_link(contact) or self._nursery is None:
            return
        link = self._links.get(peer)
        if link is None:
            link = PeerLink(self, peer)
            self._links[peer] = link
            self._nursery.start_soon(link.run, name=f"peer-link-{short(peer)}")
        link.wake()

    def add_unfriend_listener(self, listener: Callable[[str], None]) -> None:
        """Also tell ``listener`` (peer) whenever a friendship ends, by either side."""
        self._unfriend_listeners.append(listener)

    def _friendship_ended(self, peer: str) -> None:
        for listener in self._unfriend_listeners:
            listener(peer)

    def add_connection_listener(self, listener: Callable[[str, bool], None]) -> None:
        """Also tell ``listener`` (peer, up) whenever a connection opens or closes."""
        self._connection_listeners.append(listener)

    def _link_finished(self, peer: str) -> None:
        self._links.pop(peer, None)

    def is_online(self, peer: str) -> bool:
        return self._conn_count.get(peer, 0) > 0

    def _connection_changed(self, peer: str, up: bool) -> None:
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
        link = self._links.get(peer)
        if link is not None:
            link.network_changed()
        elif up and contact is not None:
            self._ensure_link(peer)
        for listener in self._connection_listeners:
            listener(peer, up)

    def contact_json(self, contact: Contact, outbox: int = 0) -> dict[str, Any]:
        return contact_json(contact, online=self.is_online(contact.peer_id), outbox=outbox)

    def contacts(self) -> list[Contact]:
        return list(self._contacts.values())

    # --- applying transitions --------------------------------------------------------------

    def _locked(self, peer: str) -> AbstractAsyncContextManager[None]:
        """Serialise state changes for one peer."""
        return self._locks.hold(peer)

    async def _apply(self, peer: str, step: Step, **fields: Any) -> Contact | None:
        """Persist a transition's new state (caller holds the peer's lock)."""
        current = self._contacts.get(peer)
        if step.state is None and step.notice is None:
            if current is not None and fields:
                # Only the given fields: state and owed notice stay as stored (the in-memory
                # copy may be a moment behind a notice the PeerLink just cleared).
                updated = await self.store.update_fields(peer, now=now_ms(), **fields)
                if updated is not None:
                    self._contacts[peer] = updated
                    link = self._links.get(peer)
                    if link is not None and "addrs" in fields:
                        link.network_changed()
                return updated
            return current
        was_friend = current is not None and current.state is ContactState.FRIEND
        if step.state == DELETE:
            await self.store.delete_contact(peer)
            self._contacts.pop(peer, None)
            if was_friend:
                self._friendship_ended(peer)
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
        self._ensure_link(peer)
        link = self._links.get(peer)
        if link is not None:
            link.network_changed()
        return contact

    # --- user actions (the control API calls these) ---------------------------------------

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

    async def add_friend(self, id_or_code: str, name: str | None, message: str) -> Contact:
        try:
            code = parse_id_or_code(id_or_code)
        except IdentityError as exc:
            raise ApiError("invalid_id", str(exc)) from None
        peer = code.peer_id
        if peer == self.me:
            raise ApiError("self", "that is your own ID")
        _check_text(message, wire.MAX_REQUEST_TEXT_BYTES, "message", multiline=True)
        if name is not None:
            _check_text(name, wire.MAX_NAME_BYTES, "name")
        async with self._locked(peer):
            current = self._contacts.get(peer)
            step = on_user(current.state if current else None, UserAction.ADD)
            if step.error:
                raise ApiError(step.error, f"{short(peer)} is blocked: unblock them first")
            fields: dict[str, Any] = {}
            if name is not None:
                fields["name"] = name
            if step.notice is Notice.REQUEST:
                fields["request_text"] = message
            if code.addrs:
                known = list(current.addrs) if current else []
                fields["addrs"] = list(dict.fromkeys([*code.addrs, *known]))[: wire.MAX_ADDRS]
            try:
                contact = await self._apply(peer, step, **fields)
            except DatabaseError as exc:
                raise _storage_error(exc) from None
        assert contact is not None
        if step.emit:
            self.events.publish(step.emit.value, contact=self.contact_json(contact))
        log.info("friends add %s -> %s", short(peer), contact.state.value)
        return contact

    async def user_action(self, friend: str, action: UserAction) -> Contact | None:
        contact = self.resolve(friend)
        peer = contact.peer_id
        async with self._locked(peer):
            current = self._contacts.get(peer)
            step = on_user(current.state if current else None, action)
            if step.error:
                raise ApiError(step.error, _action_error_text(action, contact))
            try:
                updated = await self._apply(peer, step)
            except DatabaseError as exc:
                raise _storage_error(exc) from None
        if step.emit and updated is not None:
            self.events.publish(step.emit.value, contact=self.contact_json(updated))
        if action is UserAction.BLOCK:
            await self.net.disconnect(peer)
        log.info("%s %s", action.value, short(peer))
        return updated

    async def block_id(self, id_or_code: str) -> Contact:
        try:
            peer = parse_id_or_code(id_or_code).peer_id
        except IdentityError as exc:
            raise ApiError("invalid_id", str(exc)) from None
        if peer == self.me:
            raise ApiError("self", "that is your own ID")
        async with self._locked(peer):
            contact = await self._apply(peer, on_user(None, UserAction.BLOCK))
        assert contact is not None
        await self.net.disconnect(peer)
        return contact

    async def rename(self, friend: str, name: str) -> Contact:
        _check_text(name, wire.MAX_NAME_BYTES, "name")
        contact = self.resolve(friend)
        async with self._locked(contact.peer_id):
            updated = await self._apply(contact.peer_id, Step(), name=name)
        assert updated is not None
        return updated

    async def send_message(
        self, friend: str, text: str, msg_id: bytes | None = None
    ) -> MessageRecord:
        """Queue ``text`` for ``friend``. A client-chosen ``msg_id`` makes the call safe to
        retry: the same ID is stored (and delivered) once."""
        contact = self.resolve(friend)
        if contact.state is not ContactState.FRIEND:
            raise ApiError(
                "not_friend",
                f"{contact.display_name or short(contact.peer_id)} is not a friend "
                f"({contact.state.value}): messages can only go to accepted friends",
            )
        if not text:
            raise ApiError("invalid_params", "the message is empty")
        _check_text(text, wire.MAX_TEXT_BYTES, "message", multiline=True)
        try:
            record, created = await self.store.add_outgoing(
                contact.peer_id, msg_id or os.urandom(wire.MSG_ID_BYTES), text, now_ms()
            )
        except ValueError as exc:
            raise ApiError("invalid_params", str(exc)) from None
        except DatabaseError as exc:
            raise _storage_error(exc) from None
        if not created:
            return record
        link = self._links.get(contact.peer_id)
        if link is not None:
            link.queue(record)
        else:
            self._ensure_link(contact.peer_id)
        return record

    # --- friend protocol: server side ------------------------------------------------------

    def _budgeted(
        self, kind: str, serve: Callable[[INetStream, str], Awaitable[None]]
    ) -> Callable[[INetStream], Awaitable[None]]:
        """A stream handler that serves within the inbound-stream budget (else resets)."""

        async def handler(stream: INetStream) -> None:
            peer = remote_peer(stream)
            friend = self._is_friend(peer)  # fixed for this stream: acquire and release agree
            if not self._inbound.try_acquire(peer, friend=friend):
                log.info("reset a %s stream from %s: too many open at once", kind, short(peer))
                await _reset(stream)
                return
            try:
                await serve(stream, peer)
            finally:
                self._inbound.release(peer, friend=friend)

        return handler

    async def _serve_friend_stream(self, stream: INetStream, peer: str) -> None:
        try:
            with trio.fail_after(FRIEND_STREAM_TIMEOUT):
                frame = await _read_one_frame(stream)
                reply = await self._on_friend_frame(peer, frame)
                await stream.write(wire.encode(reply))
            await _finish(stream)
        except Exception as exc:
            await end_failed_stream(stream, exc, "friend", peer)

    async def _on_friend_frame(self, peer: str, frame: wire.Frame) -> wire.Frame:
        if peer == self.me:
            raise wire.FrameError("frame from ourselves")
        kinds: dict[type, PeerFrame] = {
            wire.FriendRequest: PeerFrame.REQUEST,
            wire.FriendAccept: PeerFrame.ACCEPT,
            wire.FriendRemove: PeerFrame.REMOVE,
        }
        kind = kinds.get(type(frame))
        if kind is None:
            raise wire.FrameError(f"unexpected {type(frame).__name__} on friend stream")
        async with self._locked(peer):
            current = self._contacts.get(peer)
            state = current.state if current else None
            # Anyone not yet a friend (or asking again while pending) spends rate budget.
            unaccepted = state in (None, ContactState.REMOVED, ContactState.INCOMING)
            if kind is PeerFrame.REQUEST and unaccepted:
                if not self._limiter.allow(peer):
                    log.info("rate-limited a friend request from %s", short(peer))
                    return wire.Refused(wire.REFUSED_RATE_LIMITED, "too many requests; try later")
                pending = sum(
                    1 for c in self._contacts.values() if c.state is ContactState.INCOMING
                )
                if pending >= MAX_PENDING_REQUESTS and state is not ContactState.INCOMING:
                    log.warning("refused a friend request from %s: too many pending", short(peer))
                    return wire.Refused(wire.REFUSED_FULL, "too many pending requests")
            step = on_peer(state, kind)
            if state is ContactState.BLOCKED:
                log.info("dropped a %s from blocked peer %s", kind.value, short(peer))
                return wire.Received()
            fields: dict[str, Any] = {}
            if isinstance(frame, wire.FriendRequest | wire.FriendAccept):
                fields["their_name"] = frame.name
                if frame.addrs:
                    fields["addrs"] = list(frame.addrs)
            if isinstance(frame, wire.FriendRequest) and step.state is ContactState.INCOMING:
                fields["request_text"] = frame.text
            if step.reply is Reply.REFUSED:
                return wire.Refused(wire.REFUSED_NOT_FRIEND, "no pending request")
            contact = await self._apply(peer, step, **fields)
        if step.emit is Emit.REMOVED:
            self.events.publish("friend.removed", peer_id=peer)
        elif step.emit and contact is not None:
            self.events.publish(step.emit.value, contact=self.contact_json(contact))
        log.info("friend %s from %s", kind.value, short(peer))
        return wire.Received()

    # --- msg protocol: receiver side -------------------------------------------------------

    def _is_friend(self, peer: str) -> bool:
        contact = self._contacts.get(peer)
        return contact is not None and contact.state is ContactState.FRIEND

    async def _serve_msg_stream(self, stream: INetStream, peer: str) -> None:
        if not self._is_friend(peer):
            log.info("refused a message stream from %s: not a friend", short(peer))
            await _refuse(stream, wire.REFUSED_NOT_FRIEND, "you are not a friend of this peer")
            return
        decoder = wire.FrameDecoder()
        try:
            while True:
                data = await read_some(stream)
                if not data:
                    break
                frames = decoder.feed(data)
                batch: list[IncomingMessage] = []
                for frame in frames:
                    if isinstance(frame, wire.ChatMessage):
                        batch.append(
                            IncomingMessage(frame.msg_id, frame.seq, frame.sent_at_ms, frame.text)
                        )
                    elif isinstance(frame, wire.Hello):
                        await self._learn_addrs(peer, frame.addrs)
                    else:
                        raise wire.FrameError(f"unexpected {type(frame).__name__} on msg stream")
                if batch:
                    if not self._is_friend(peer):
                        log.info("closing message stream from %s: no longer a friend", short(peer))
                        await _refuse(stream, wire.REFUSED_NOT_FRIEND, "not a friend")
                        return
                    await self._store_and_ack(stream, peer, batch)
            await stream.close()
        except wire.FrameError as exc:
            log.warning("closing message stream from %s: %s", short(peer), exc)
            await _refuse(stream, wire.REFUSED_BAD_FRAME, str(exc))
        except DatabaseError as exc:
            # Not acked, so the sender keeps the messages and retries later.
            log.error("could not store messages from %s (not acked): %s", short(peer), exc)
            await _reset(stream)
        except Exception as exc:
            _log_stream_failure(exc, "message stream from %s ended", peer)
            await _reset(stream)

    async def _store_and_ack(
        self, stream: INetStream, peer: str, batch: list[IncomingMessage]
    ) -> None:
        stored = await self.store.add_incoming(peer, batch, now_ms())
        # Announce before acking: if the ack is lost, the resend is a no-op insert and would
        # never produce the event.
        contact = self._contacts.get(peer)
        for record in stored:
            self.events.publish(
                "message.received",
                message=message_json(record),
                contact=self.contact_json(contact) if contact else None,
            )
        ids = [m.msg_id for m in batch]
        for start in range(0, len(ids), wire.MAX_ACK_IDS):
            await stream.write(wire.encode(wire.Ack(tuple(ids[start : start + wire.MAX_ACK_IDS]))))

    async def _learn_addrs(self, peer: str, addrs: tuple[str, ...]) -> None:
        contact = self._contacts.get(peer)
        if contact is None or not addrs or tuple(addrs) == contact.addrs:
            return
        async with self._locked(peer):
            await self._apply(peer, Step(), addrs=list(addrs))

    # --- used by PeerLink --------------------------------------------------------------------

    async def reach(self, peer: str) -> bool:
        """Whether a connection to contact ``peer`` is up, dialing it if need be (its known
        addresses, then the resolver)."""
        if self.net.is_connected(peer):
            return True
        contact = self._contacts.get(peer)
        if contact is None:
            return False
        return await self.dial_last_known(contact) or await self.dial_found(contact)

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
        fresh = [a for a in found.addrs if a not in contact.addrs] or list(found.addrs)
        if not await self.net.dial(peer, fresh):
            log.debug("could not reach %s at %s", short(peer), ", ".join(found.addrs))
            return False
        log.info("found %s through the DHT (%s)", short(peer), found.source)
        if found.source == "record":
            # Signed by the friend. (Peer-routing answers are whatever strangers told the
            # DHT; the friend's own hello frame will tell us its addresses.)
            await self._learn_addrs(peer, found.addrs)
        return True

    def my_addrs(self) -> tuple[str, ...]:
        return tuple(self.addr_source()[: wire.MAX_ADDRS])

    def notice_frame(self, contact: Contact) -> wire.Frame:
        match contact.notice:
            case Notice.REQUEST:
                return wire.FriendRequest(self.name, contact.request_text, self.my_addrs())
            case Notice.ACCEPT:
                return wire.FriendAccept(self.name, self.my_addrs())
            case Notice.REMOVE:
                return wire.FriendRemove()
        raise AssertionError(contact.notice)  # pragma: no cover


_EXPECTED_ERRORS = (
    wire.FrameError,
    DatabaseError,
    BaseLibp2pError,
    OSError,
    EOFError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)


def _is_expected_error(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):  # errors from inside a nursery arrive grouped
        return all(_is_expected_error(inner) for inner in exc.exceptions)
    return isinstance(exc, _EXPECTED_ERRORS)


def _log_stream_failure(
    exc: Exception, what: str, peer: str, *, level: int = logging.DEBUG
) -> None:
    """Network failures, bad frames and storage errors are expected (logged at ``level``;
    each has its own handling); anything else is a bug in our code and is logged loudly with
    its traceback instead of becoming a silent retry loop."""
    if _is_expected_error(exc):
        log.log(level, what + ": %s", short(peer), exc)
    else:
        log.error(what + ": unexpected error", short(peer), exc_info=exc)


def _only_one(matches: list[Contact], ambiguity: str) -> Contact | None:
    """The single match, None for no match, or an ``ambiguous`` error naming the candidates."""
    if len(matches) > 1:
        raise ApiError(
            "ambiguous",
            f"{len(matches)} {ambiguity}",
            {"candidates": [c.peer_id for c in matches]},
        )
    return matches[0] if matches else None


def _wants_link(contact: Contact) -> bool:
    if contact.state is ContactState.BLOCKED:
        return False
    return contact.notice is not None or contact.state is ContactState.FRIEND


def _check_text(text: str, limit: int, what: str, *, multiline: bool = False) -> None:
    """Refuse through the API exactly what a peer's daemon would refuse on the wire."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ApiError(
            "too_long", f"the {what} is {size} bytes; the limit is {limit}", {"limit": limit}
        )
    problem = wire.text_problem(text, limit, multiline=multiline)
    if problem is not None:
        raise ApiError("invalid_params", f"the {what} {problem}")


def _action_error_text(action: UserAction, contact: Contact) -> str:
    who = contact.display_name or short(contact.peer_id)
    if action in (UserAction.ACCEPT, UserAction.DECLINE):
        return f"there is no pending friend request from {who}"
    return f"cannot {action.value} {who} ({contact.state.value})"


async def end_failed_stream(stream: INetStream, exc: Exception, kind: str, peer: str) -> None:
    """End a one-frame (notice) stream that failed: a bad frame is answered
    ``refused``/``bad_frame``; a timeout, a storage error (the peer retries) or anything else
    resets it. Each is logged at its own level."""
    if isinstance(exc, wire.FrameError):
        log.warning("closing %s stream from %s: %s", kind, short(peer), exc)
        await _refuse(stream, wire.REFUSED_BAD_FRAME, str(exc))
        return
    if isinstance(exc, trio.TooSlowError):
        log.info("%s stream from %s timed out", kind, short(peer))
    elif isinstance(exc, DatabaseError):
        log.error("could not store %s frame from %s: %s", kind, short(peer), exc)
    else:
        _log_stream_failure(exc, f"{kind} stream from %s failed", peer)
    await _reset(stream)


async def _read_one_frame(stream: INetStream) -> wire.Frame:
    decoder = wire.FrameDecoder()
    while True:
        data = await read_some(stream)
        if not data:
            raise wire.FrameError("stream ended before a complete frame")
        frames = decoder.feed(data)
        if frames:
            if len(frames) > 1 or decoder.buffered:
                raise wire.FrameError("more than one frame where one was expected")
            return frames[0]


async def _refuse(stream: INetStream, code: str, reason: str) -> None:
    try:
        with trio.move_on_after(FINISH_GRACE):
            clipped = reason.encode()[: wire.MAX_REASON_BYTES].decode(errors="ignore")
            await stream.write(wire.encode(wire.Refused(code, clipped)))
    except Exception:
        pass
    await _finish(stream)


async def _finish(stream: INetStream) -> None:
    """End a stream we answered: send our FIN, give the peer a moment to read the answer and
    close its side (discarding at most a few KiB it still sends), then reset, so that nothing
    it sends later is buffered for a stream nobody reads."""
    try:
        with trio.move_on_after(FINISH_GRACE):
            if isinstance(stream, NetStream):
                await stream.close_write()
            else:
                await stream.close()
            discarded = 0
            while discarded <= 4096:
                data = await read_some(stream, 4096)
                if not data:
                    break
                discarded += len(data)
    except Exception:
        pass
    await _reset(stream)


async def _reset(stream: INetStream) -> None:
    try:
        with trio.move_on_after(2):
            await stream.reset()
    except Exception:
        pass


class PeerLink:
    """Keeps one contact reachable: connect with backoff, deliver notices, drain the outbox."""

    def __init__(self, chat: Chat, peer: str) -> None:
        self.chat = chat
        self.peer = peer
        self._work = Wakeup()  # new outbox messages, acks, owed notices
        self._net = Wakeup()  # connection up/down, new addresses, user actions
        self._backoff = BACKOFF_MIN
        # Messages committed since the outbox was last read from disk, so a live stream need
        # not query the database for each one. Only a hint: the database stays the truth.
        self._fresh: deque[MessageRecord] = deque()
        self._fresh_dropped = False
        self._next_lookup = 0.0
        self._lookup_backoff = LOOKUP_BACKOFF_MIN

    def queue(self, record: MessageRecord) -> None:
        """A message was just committed to the outbox: hand it over and wake up."""
        self._fresh.append(record)
        if len(self._fresh) > 4 * SEND_WINDOW:
            # Nobody is draining: drop the hints; the database has them all.
            self._fresh.clear()
            self._fresh_dropped = True
        self._work.set()

    def _take_fresh(self, last_seq: int, limit: int) -> list[MessageRecord] | None:
        """The next messages after ``last_seq`` from the hand-over queue, or None if it cannot
        tell (a gap: then read the database)."""
        if self._fresh_dropped:
            self._fresh_dropped = False
            return None
        fresh = self._fresh
        while fresh and fresh[0].seq <= last_seq:
            fresh.popleft()
        if not fresh:
            return []
        if fresh[0].seq != last_seq + 1:
            return None
        batch: list[MessageRecord] = []
        while fresh and len(batch) < limit and fresh[0].seq == last_seq + 1 + len(batch):
            batch.append(fresh.popleft())
        return batch

    def wake(self) -> None:
        """New work to do. Does not cut a reconnect backoff short: a burst of messages to an
        offline friend must not turn into a burst of dials."""
        self._work.set()

    def network_changed(self) -> None:
        """Something that may let a dial succeed changed: retry now, from a short backoff."""
        self._backoff = BACKOFF_MIN
        self._next_lookup = 0.0
        self._net.set()
        self._work.set()

    async def run(self) -> None:
        try:
            while True:
                contact = self.chat._contacts.get(self.peer)
                if contact is None or not _wants_link(contact):
                    return
                try:
                    progressed = await self._step(contact)
                except Exception as exc:  # libp2p raises many types on dead connections
                    _log_stream_failure(exc, "link to %s", self.peer, level=logging.INFO)
                    progressed = False
                if progressed:
                    self._backoff = BACKOFF_MIN
                    continue
                await self._net.wait(self._backoff)
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        finally:
            self.chat._link_finished(self.peer)

    async def _step(self, contact: Contact) -> bool:
        """One round; True if it made progress (so the next round starts at once)."""
        if not self.chat.net.is_connected(self.peer) and not await self._connect(contact):
            return False
        if contact.notice is not None:
            await self._deliver_notice(contact)
            return True
        if contact.state is ContactState.FRIEND:
            await self._drain_outbox()
            return False
        return False

    async def _connect(self, contact: Contact) -> bool:
        """Dial the last known addresses, then (at most once per lookup backoff) wherever
        the resolver says."""
        if await self.chat.dial_last_known(contact):
            return True
        now = trio.current_time()
        if self.chat.resolver is None or now < self._next_lookup:
            log.debug("could not reach %s at its known addresses", short(self.peer))
            return False
        self._next_lookup = now + self._lookup_backoff
        self._lookup_backoff = min(self._lookup_backoff * 2, LOOKUP_BACKOFF_MAX)
        if not await self.chat.dial_found(contact):
            return False
        self._next_lookup, self._lookup_backoff = 0.0, LOOKUP_BACKOFF_MIN
        return True

    async def _deliver_notice(self, contact: Contact) -> None:
        assert contact.notice is not None
        notice = contact.notice
        stream = await self.chat.net.open_stream(self.peer, wire.FRIEND_PROTOCOL)
        try:
            with trio.fail_after(FRIEND_STREAM_TIMEOUT):
                await stream.write(wire.encode(self.chat.notice_frame(contact)))
                reply = await _read_one_frame(stream)
        finally:
            await _reset(stream)
        if isinstance(reply, wire.Refused) and reply.code in (
            wire.REFUSED_RATE_LIMITED,
            wire.REFUSED_FULL,
        ):
            raise trio.TooSlowError(f"{notice.value} refused for now: {reply.reason}")
        if isinstance(reply, wire.Refused):
            log.info("%s to %s refused: %s", notice.value, short(self.peer), reply.reason)
        async with self.chat._locked(self.peer):
            await self.chat.store.clear_notice(self.peer, notice)
            refreshed = await self.chat.store.contact(self.peer)
            if refreshed is not None:
                self.chat._contacts[self.peer] = refreshed
        log.info("delivered %s to %s", notice.value, short(self.peer))

    async def _drain_outbox(self) -> None:
        """Run one message stream until the connection or stream fails.

        Sends every pending message in sequence order with up to ``SEND_WINDOW`` unacked,
        then waits for more. After any failure, the next stream resends everything still
        pending from the start; the receiver's idempotent store drops the duplicates.
        """
        chat = self.chat
        stream = await chat.net.open_stream(self.peer, wire.MSG_PROTOCOL)
        in_flight: set[bytes] = set()  # sent, not yet acked
        try:
            await stream.write(wire.encode(wire.Hello(chat.my_addrs())))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_acks, stream, in_flight, nursery.cancel_scope)
                last_seq = 0
                caught_up = False  # read the database until it has nothing newer
                while True:
                    contact = chat._contacts.get(self.peer)
                    if contact is None or contact.state is not ContactState.FRIEND:
                        break
                    if not chat.net.is_connected(self.peer):
                        break
                    room = min(SEND_WINDOW - len(in_flight), OUTBOX_BATCH)
                    if room <= 0:
                        await self._work.wait(30.0)
                        continue
                    batch = self._take_fresh(last_seq, room) if caught_up else None
                    if batch is None:
                        batch = await chat.store.outbox(self.peer, last_seq, room)
                        caught_up = len(batch) < room
                    if not batch:
                        await self._work.wait(30.0)
                        continue
                    payload = b"".join(
                        wire.encode(wire.ChatMessage(m.msg_id, m.seq, m.sent_at, m.text))
                        for m in batch
                    )
                    in_flight.update(m.msg_id for m in batch)
                    await stream.write(payload)
                    last_seq = batch[-1].seq
                nursery.cancel_scope.cancel()
        finally:
            await _reset(stream)

    async def _read_acks(
        self, stream: INetStream, in_flight: set[bytes], scope: trio.CancelScope
    ) -> None:
        chat = self.chat
        decoder = wire.FrameDecoder()
        try:
            while True:
                data = await read_some(stream)
                if not data:
                    return
                for frame in decoder.feed(data):
                    if isinstance(frame, wire.Ack):
                        changed = await chat.store.mark_delivered(
                            self.peer, frame.msg_ids, now_ms()
                        )
                        in_flight.difference_update(frame.msg_ids)
                        for record in changed:
                            chat.events.publish("message.delivered", message=message_json(record))
                        self.wake()
                    elif isinstance(frame, wire.Refused):
                        log.info("%s refused our messages: %s", short(self.peer), frame.reason)
                        return
                    else:
                        raise wire.FrameError(f"unexpected {type(frame).__name__} on msg stream")
        except wire.FrameError as exc:
            log.warning("closing message stream to %s: %s", short(self.peer), exc)
        except Exception as exc:
            _log_stream_failure(exc, "message stream to %s ended", self.peer)
        finally:
            scope.cancel()
