"""Contacts: ``friends.*`` and ``requests.*``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from daemon.params import Handler, Params, bool_param, str_param
from p2pchat.api import ApiError
from p2pchat.chat.friendship import ContactState, UserAction
from p2pchat.clock import now_ms
from p2pchat.identity import short

if TYPE_CHECKING:
    from daemon.control import Session
    from p2pchat.chat.verified import Verification


async def friends_list(s: Session, p: Params) -> Any:
    chat = s.server.chat
    outbox = await chat.messages.store.outbox_sizes()
    shown = (ContactState.FRIEND, ContactState.OUTGOING, ContactState.BLOCKED)
    return {
        "contacts": [
            chat.roster.contact_json(c, outbox.get(c.peer_id, 0))
            for c in chat.roster.contacts()
            if c.state in shown
        ]
    }


async def friends_add(s: Session, p: Params) -> Any:
    name = str_param(p, "name", required=False, default="") if p.get("name") is not None else None
    chat = s.server.chat
    contact = await chat.friends.add(
        str_param(p, "id"), name, str_param(p, "message", required=False)
    )
    return {"contact": chat.roster.contact_json(contact)}


async def friends_rename(s: Session, p: Params) -> Any:
    chat = s.server.chat
    contact = await chat.friends.rename(str_param(p, "friend"), str_param(p, "name"))
    return {"contact": chat.roster.contact_json(contact)}


def verification_json(v: Verification) -> dict[str, Any]:
    return {
        "peer_id": v.peer_id,
        "safety_number": v.safety_number,
        "verified": v.verified,
        "verified_at": v.verified_at,
        "changed": v.changed,
    }


def _verifiable(s: Session, p: Params) -> str:
    contact = s.server.chat.roster.resolve(str_param(p, "friend"))
    if contact.state not in (ContactState.FRIEND, ContactState.OUTGOING):
        raise ApiError(
            "not_friend",
            f"{contact.display_name or short(contact.peer_id)} is not a friend "
            f"({contact.state.value}): only friends, and those you asked, can be verified",
        )
    return contact.peer_id


async def friends_verification(s: Session, p: Params) -> Any:
    roster = s.server.chat.roster
    peer = _verifiable(s, p)
    return {
        "verification": verification_json(await roster.verified.get(peer)),
        "contact": roster.contact_json(roster.resolve(peer)),
    }


async def friends_verify(s: Session, p: Params) -> Any:
    chat = s.server.chat
    peer = _verifiable(s, p)
    if bool_param(p, "verified", True):
        v = await chat.roster.verified.mark(peer, now_ms())
    else:
        v = await chat.roster.verified.unmark(peer)
    contact = chat.roster.contact_json(chat.roster.resolve(peer))
    chat.roster.events.publish("contact.updated", contact=contact)
    return {"verification": verification_json(v), "contact": contact}


def user_action(action: UserAction) -> Handler:
    """The handler for one of the user's friendship actions on ``friend`` (``friends.block``
    also takes ``id``, for a peer that is not a contact)."""

    async def handler(s: Session, p: Params) -> Any:
        chat = s.server.chat
        if action is UserAction.BLOCK and "friend" not in p and "id" in p:
            contact = await chat.friends.block_id(str_param(p, "id"))
            return {"contact": chat.roster.contact_json(contact)}
        target = chat.roster.resolve(str_param(p, "friend"))
        updated = await chat.friends.act(target.peer_id, action)
        if updated is None or updated.state is ContactState.REMOVED:
            return {"peer_id": target.peer_id}
        return {"contact": chat.roster.contact_json(updated)}

    return handler


async def requests_list(s: Session, p: Params) -> Any:
    chat = s.server.chat
    return {
        "requests": [
            chat.roster.contact_json(c)
            for c in chat.roster.contacts()
            if c.state is ContactState.INCOMING
        ]
    }


METHODS: Final[dict[str, Handler]] = {
    "friends.list": friends_list,
    "friends.add": friends_add,
    "friends.rename": friends_rename,
    "friends.verification": friends_verification,
    "friends.verify": friends_verify,
    "friends.remove": user_action(UserAction.REMOVE),
    "friends.block": user_action(UserAction.BLOCK),
    "friends.unblock": user_action(UserAction.UNBLOCK),
    "requests.list": requests_list,
    "requests.accept": user_action(UserAction.ACCEPT),
    "requests.decline": user_action(UserAction.DECLINE),
}
