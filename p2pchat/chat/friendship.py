"""The friend handshake as an explicit state table, with no I/O.

A contact is in one :class:`ContactState` (or absent: a stranger). Local user
actions and frames from the peer move it along; each step may owe the peer a *notice* (a
friend-protocol frame delivered, and retried, until the peer confirms it) and may produce an
event for API subscribers. :func:`on_user` and :func:`on_peer` are pure functions of the
current state, so every transition is unit-tested without sockets or databases.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ContactState(StrEnum):
    OUTGOING = "outgoing"  # we asked them to be friends
    INCOMING = "incoming"  # they asked us; waiting for the user
    FRIEND = "friend"
    BLOCKED = "blocked"
    REMOVED = "removed"  # we removed them; they are a stranger again


class Notice(StrEnum):
    """A friend-protocol frame owed to a peer, kept until the peer confirms receipt."""

    REQUEST = "request"
    ACCEPT = "accept"
    REMOVE = "remove"


class UserAction(StrEnum):
    ADD = "add"
    ACCEPT = "accept"
    DECLINE = "decline"
    REMOVE = "remove"
    BLOCK = "block"
    UNBLOCK = "unblock"


class PeerFrame(StrEnum):
    REQUEST = "request"
    ACCEPT = "accept"
    REMOVE = "remove"


class Reply(StrEnum):
    """How we answer a peer's friend frame."""

    RECEIVED = "received"
    REFUSED = "refused"


class Emit(StrEnum):
    REQUEST = "friend.request"
    ACCEPTED = "friend.accepted"
    REMOVED = "friend.removed"


DELETE = "delete"
"""Pseudo-state: forget the contact row entirely."""


@dataclass(frozen=True, slots=True)
class Step:
    """Result of a transition. ``state`` None means unchanged; ``error`` means refused."""

    state: ContactState | str | None = None
    notice: Notice | None = None
    emit: Emit | None = None
    reply: Reply = Reply.RECEIVED
    error: str | None = None


_STRANGER = (None, ContactState.REMOVED)


def on_user(state: ContactState | None, action: UserAction) -> Step:
    """Transition for a local user action; ``error`` names an API error."""
    match action:
        case UserAction.ADD:
            if state in _STRANGER or state is ContactState.OUTGOING:
                return Step(ContactState.OUTGOING, notice=Notice.REQUEST)
            if state is ContactState.INCOMING:
                return Step(ContactState.FRIEND, notice=Notice.ACCEPT, emit=Emit.ACCEPTED)
            if state is ContactState.FRIEND:
                return Step()  # nothing to do; an owed notice stays owed
            return Step(error="blocked")
        case UserAction.ACCEPT:
            if state is ContactState.INCOMING:
                return Step(ContactState.FRIEND, notice=Notice.ACCEPT, emit=Emit.ACCEPTED)
            return Step(error="no_request")
        case UserAction.DECLINE:
            if state is ContactState.INCOMING:
                return Step(DELETE)
            return Step(error="no_request")
        case UserAction.REMOVE:
            if state in (ContactState.FRIEND, ContactState.OUTGOING):
                return Step(ContactState.REMOVED, notice=Notice.REMOVE)
            if state is ContactState.INCOMING:
                return Step(DELETE)
            if state is ContactState.BLOCKED:
                return Step(error="blocked")  # unblock forgets them; removing must not
            return Step(error="not_found")
        case UserAction.BLOCK:
            return Step(ContactState.BLOCKED)
        case UserAction.UNBLOCK:
            if state is ContactState.BLOCKED:
                return Step(DELETE)
            return Step()
    raise AssertionError(action)  # pragma: no cover


def on_peer(state: ContactState | None, frame: PeerFrame) -> Step:
    """Transition for a friend-protocol frame from the peer."""
    if state is ContactState.BLOCKED:
        # Dropped without telling them: a blocked peer learns nothing.
        return Step()
    match frame:
        case PeerFrame.REQUEST:
            if state in _STRANGER:
                return Step(ContactState.INCOMING, emit=Emit.REQUEST)
            if state is ContactState.OUTGOING:
                # Both asked: that is agreement.
                return Step(ContactState.FRIEND, notice=Notice.ACCEPT, emit=Emit.ACCEPTED)
            if state is ContactState.FRIEND:
                # They lost their state and asked again; we already agreed.
                return Step(ContactState.FRIEND, notice=Notice.ACCEPT)
            return Step(ContactState.INCOMING)  # a repeated request updates the pending one
        case PeerFrame.ACCEPT:
            if state is ContactState.OUTGOING:
                return Step(ContactState.FRIEND, emit=Emit.ACCEPTED)
            if state is ContactState.FRIEND:
                return Step()
            return Step(reply=Reply.REFUSED, error="not_friend")
        case PeerFrame.REMOVE:
            if state is ContactState.FRIEND:
                return Step(ContactState.REMOVED, emit=Emit.REMOVED)
            if state is ContactState.OUTGOING:
                return Step(ContactState.REMOVED)
            if state is ContactState.INCOMING:
                # A stranger withdrawing a request leaves nothing behind: request-then-remove
                # must not be a way to grow our contacts table.
                return Step(DELETE)
            return Step()
    raise AssertionError(frame)  # pragma: no cover
