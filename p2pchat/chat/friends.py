"""The friend protocol ``/p2pchat/friend/1.0.0`` and the user's friendship actions.

A stream carries one *notice* (request, accept or remove) and its reply (PROTOCOL.md §4).
Strangers may use it only for requests, rate-limited and size-limited; a request quoting the
invite secret from our friend code goes through its own budget (:mod:`.invites`). What a notice or a
user action does to a contact is decided by the sans-IO table in :mod:`.friendship`; this
module feeds it and applies its steps through the :class:`~.roster.Roster`. Owed notices are
delivered by the contact's link (:mod:`.links`) through :meth:`Friends.deliver_notice`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import trio
from libp2p.abc import INetStream

from p2pchat import wire
from p2pchat.api import ApiError
from p2pchat.chat.friendship import (
    ContactState,
    Emit,
    Notice,
    PeerFrame,
    Reply,
    Step,
    UserAction,
    on_peer,
    on_user,
)
from p2pchat.chat.invites import Refusal, RequestGate
from p2pchat.chat.quotas import FriendQuotas
from p2pchat.chat.roster import Roster
from p2pchat.chat.store import Contact
from p2pchat.identity import IdentityError, parse_id_or_code, short
from p2pchat.net.host import Network
from p2pchat.net.streams import end_failed_stream, finish, read_one_frame, reset
from p2pchat.storage.database import DatabaseError, DiskFullError

log = logging.getLogger(__name__)

FRIEND_STREAM_TIMEOUT: Final = 10.0
MAX_OUTGOING_INVITES: Final = 1024
"""Invite secrets remembered for requests we still owe (from the codes the user added)."""


def storage_error(exc: DatabaseError) -> ApiError:
    """The API error for a write that did not happen."""
    if isinstance(exc, DiskFullError):
        return ApiError("disk_full", str(exc))
    return ApiError("storage_error", str(exc))


def check_text(text: str, limit: int, what: str, *, multiline: bool = False) -> None:
    """Refuse through the API exactly what a peer's daemon would refuse on the wire."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ApiError(
            "too_long", f"the {what} is {size} bytes; the limit is {limit}", {"limit": limit}
        )
    problem = wire.text_problem(text, limit, multiline=multiline)
    if problem is not None:
        raise ApiError("invalid_params", f"the {what} {problem}")


class Friends:
    """Friend requests, accepts, removals and blocks, from the user and from peers."""

    def __init__(
        self,
        *,
        network: Network,
        roster: Roster,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        quotas: FriendQuotas | None = None,
    ) -> None:
        self.net = network
        self.roster = roster
        self.events = roster.events
        self.name = name
        self.me = network.identity.peer_id
        self.gate = RequestGate(clock)
        """Admission of strangers' requests; the node sets ``gate.secret`` (our invite)."""
        self._invites: dict[str, bytes] = {}
        """peer -> the invite from the code the user added them with, quoted in our request
        (in memory: after a restart an owed request goes without it, the stranger path)."""
        self._quotas = quotas or FriendQuotas(clock)
        self.addr_source: Callable[[], Sequence[str]] = network.listen_addrs
        """The addresses we tell friends about (listen addresses, relay circuits)."""

    def my_addrs(self) -> tuple[str, ...]:
        return tuple(self.addr_source()[: wire.MAX_ADDRS])

    # --- user actions (the control API calls these) ---------------------------------------

    async def add(self, id_or_code: str, name: str | None, message: str) -> Contact:
        try:
            code = parse_id_or_code(id_or_code)
        except IdentityError as exc:
            raise ApiError("invalid_id", str(exc)) from None
        peer = code.peer_id
        if peer == self.me:
            raise ApiError("self", "that is your own ID")
        check_text(message, wire.MAX_REQUEST_TEXT_BYTES, "message", multiline=True)
        if name is not None:
            check_text(name, wire.MAX_NAME_BYTES, "name")
        async with self.roster.locked(peer):
            current = self.roster.get(peer)
            step = on_user(current.state if current else None, UserAction.ADD)
            if step.error:
                raise ApiError(step.error, f"{short(peer)} is blocked: unblock them first")
            fields: dict[str, Any] = {}
            if name is not None:
                fields["name"] = name
            if step.notice is Notice.REQUEST:
                fields["request_text"] = message
                self._remember_invite(peer, code.invite)
            if code.addrs:
                known = list(current.addrs) if current else []
                fields["addrs"] = list(dict.fromkeys([*code.addrs, *known]))[: wire.MAX_ADDRS]
            try:
                contact = await self.roster.apply(peer, step, **fields)
            except DatabaseError as exc:
                raise storage_error(exc) from None
        assert contact is not None
        if step.emit:
            self.events.publish(step.emit.value, contact=self.roster.contact_json(contact))
        log.info("friends add %s -> %s", short(peer), contact.state.value)
        return contact

    async def act(self, friend: str, action: UserAction) -> Contact | None:
        """Accept, decline, remove, block or unblock the contact ``friend`` names."""
        contact = self.roster.resolve(friend)
        peer = contact.peer_id
        async with self.roster.locked(peer):
            current = self.roster.get(peer)
            step = on_user(current.state if current else None, action)
            if step.error:
                raise ApiError(step.error, _action_error_text(action, contact))
            try:
                updated = await self.roster.apply(peer, step)
            except DatabaseError as exc:
                raise storage_error(exc) from None
        if step.emit and updated is not None:
            self.events.publish(step.emit.value, contact=self.roster.contact_json(updated))
        if action is UserAction.BLOCK:
            await self.net.disconnect(peer)
        log.info("%s %s", action.value, short(peer))
        return updated

    async def block_id(self, id_or_code: str) -> Contact:
        """Block an ID that need not be a contact yet."""
        try:
            peer = parse_id_or_code(id_or_code).peer_id
        except IdentityError as exc:
            raise ApiError("invalid_id", str(exc)) from None
        if peer == self.me:
            raise ApiError("self", "that is your own ID")
        async with self.roster.locked(peer):
            contact = await self.roster.apply(peer, on_user(None, UserAction.BLOCK))
        assert contact is not None
        await self.net.disconnect(peer)
        return contact

    async def rename(self, friend: str, name: str) -> Contact:
        check_text(name, wire.MAX_NAME_BYTES, "name")
        contact = self.roster.resolve(friend)
        async with self.roster.locked(contact.peer_id):
            updated = await self.roster.apply(contact.peer_id, Step(), name=name)
        assert updated is not None
        return updated

    # --- server side -------------------------------------------------------------------------

    async def serve(self, stream: INetStream, peer: str) -> None:
        try:
            with trio.fail_after(FRIEND_STREAM_TIMEOUT):
                frame = await read_one_frame(stream)
                reply = await self.on_frame(peer, frame)
                await stream.write(wire.encode(reply))
            await finish(stream)
        except Exception as exc:
            await end_failed_stream(stream, exc, "friend", peer)

    async def on_frame(self, peer: str, frame: wire.Frame) -> wire.Frame:
        """Apply a peer's notice; the frame to answer it with."""
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
        async with self.roster.locked(peer):
            current = self.roster.get(peer)
            state = current.state if current else None
            # Anyone not yet a friend (or asking again while pending) spends rate budget.
            unaccepted = state in (None, ContactState.REMOVED, ContactState.INCOMING)
            if kind is PeerFrame.REQUEST and unaccepted:
                assert isinstance(frame, wire.FriendRequest)
                pending = sum(1 for c in self.roster.contacts() if c.state is ContactState.INCOMING)
                admission = self.gate.admit(
                    peer, frame.invite, pending, repeat=state is ContactState.INCOMING
                )
                # The same answers on both paths: a requester cannot tell whether its
                # invite was right.
                if admission.refused is Refusal.RATE_LIMITED:
                    log.info("rate-limited a friend request from %s", short(peer))
                    return wire.Refused(wire.REFUSED_RATE_LIMITED, "too many requests; try later")
                if admission.refused is Refusal.FULL:
                    log.warning("refused a friend request from %s: too many pending", short(peer))
                    return wire.Refused(wire.REFUSED_FULL, "too many pending requests")
                log.debug("friend request from %s: %s path", short(peer), admission.path.value)
            elif kind is PeerFrame.REQUEST and state is not ContactState.BLOCKED:
                # A friend (or a peer we asked) re-requesting: each one rewrites the contact.
                refused = self._quotas.admit_request(peer)
                if refused is not None:
                    log.info("rate-limited a friend request from friend %s", short(peer))
                    return refused
            step = on_peer(state, kind)
            if state is ContactState.BLOCKED:
                log.info("dropped a %s from blocked peer %s", kind.value, short(peer))
                return wire.Received()
            fields: dict[str, Any] = {}
            if isinstance(frame, wire.FriendRequest | wire.FriendAccept):
                fields["their_name"] = frame.name
                # Announced: only what the address policy admits (p2pchat.net.addrpolicy).
                if frame.addrs and (admitted := self.net.admit(peer, frame.addrs)):
                    fields["addrs"] = admitted
            if isinstance(frame, wire.FriendRequest) and step.state is ContactState.INCOMING:
                fields["request_text"] = frame.text
            if step.reply is Reply.REFUSED:
                return wire.Refused(wire.REFUSED_NOT_FRIEND, "no pending request")
            contact = await self.roster.apply(peer, step, **fields)
        if step.emit is Emit.REMOVED:
            self.events.publish("friend.removed", peer_id=peer)
        elif step.emit and contact is not None:
            self.events.publish(step.emit.value, contact=self.roster.contact_json(contact))
        log.info("friend %s from %s", kind.value, short(peer))
        return wire.Received()

    # --- client side (the contact's link calls this) ---------------------------------------

    def notice_frame(self, contact: Contact) -> wire.Frame:
        match contact.notice:
            case Notice.REQUEST:
                return wire.FriendRequest(
                    self.name,
                    contact.request_text,
                    self.my_addrs(),
                    invite=self._invites.get(contact.peer_id),
                )
            case Notice.ACCEPT:
                return wire.FriendAccept(self.name, self.my_addrs())
            case Notice.REMOVE:
                return wire.FriendRemove()
        raise AssertionError(contact.notice)  # pragma: no cover

    async def deliver_notice(self, contact: Contact) -> None:
        """Send the notice ``contact`` is owed and stop owing it once the peer answered (a
        refusal "for now" raises, so the link retries later)."""
        assert contact.notice is not None
        notice = contact.notice
        peer = contact.peer_id
        stream = await self.net.open_stream(peer, wire.FRIEND_PROTOCOL)
        try:
            with trio.fail_after(FRIEND_STREAM_TIMEOUT):
                await stream.write(wire.encode(self.notice_frame(contact)))
                reply = await read_one_frame(stream)
        finally:
            await reset(stream)
        if isinstance(reply, wire.Refused) and reply.code in (
            wire.REFUSED_RATE_LIMITED,
            wire.REFUSED_FULL,
        ):
            raise trio.TooSlowError(f"{notice.value} refused for now: {reply.reason}")
        if isinstance(reply, wire.Refused):
            log.info("%s to %s refused: %s", notice.value, short(peer), reply.reason)
        async with self.roster.locked(peer):
            await self.roster.store.clear_notice(peer, notice)
            await self.roster.refresh(peer)
        if notice is Notice.REQUEST:
            self._invites.pop(peer, None)
        log.info("delivered %s to %s", notice.value, short(peer))

    def _remember_invite(self, peer: str, invite: bytes | None) -> None:
        """Quote ``invite`` in the request owed to ``peer`` (adding by bare ID clears it)."""
        self._invites.pop(peer, None)
        if invite is not None:
            self._invites[peer] = invite
            while len(self._invites) > MAX_OUTGOING_INVITES:
                del self._invites[next(iter(self._invites))]


def _action_error_text(action: UserAction, contact: Contact) -> str:
    who = contact.display_name or short(contact.peer_id)
    if action in (UserAction.ACCEPT, UserAction.DECLINE):
        return f"there is no pending friend request from {who}"
    return f"cannot {action.value} {who} ({contact.state.value})"
