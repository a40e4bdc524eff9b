"""Conversations: ``messages.*``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from daemon.params import Handler, Params, int_param, str_param
from p2pchat.api import ApiError
from p2pchat.chat.messages import message_json
from p2pchat.wire import MSG_ID_BYTES

if TYPE_CHECKING:
    from daemon.control import Session

MAX_HISTORY: Final = 1000


async def send(s: Session, p: Params) -> Any:
    msg_id = None
    if p.get("id") is not None:
        try:
            msg_id = bytes.fromhex(str_param(p, "id"))
        except ValueError:
            msg_id = b""
        if len(msg_id) != MSG_ID_BYTES:
            raise ApiError("invalid_params", f"'id' must be {2 * MSG_ID_BYTES} hex characters")
    record = await s.server.chat.messages.send(str_param(p, "friend"), str_param(p, "text"), msg_id)
    return {"message": message_json(record)}


async def history(s: Session, p: Params) -> Any:
    chat = s.server.chat
    contact = chat.roster.resolve(str_param(p, "friend"))
    limit = int_param(p, "limit", 50, 1, MAX_HISTORY)
    before = int_param(p, "before", None, 0, 2**62)
    assert limit is not None
    records = await chat.messages.store.history(contact.peer_id, limit, before)
    return {"messages": [message_json(m) for m in records]}


async def read(s: Session, p: Params) -> Any:
    """Mark the conversation read (its unread count becomes 0); ``contact.updated`` follows."""
    return {"contact": await s.server.chat.messages.mark_read(str_param(p, "friend"))}


METHODS: Final[dict[str, Handler]] = {
    "messages.send": send,
    "messages.history": history,
    "messages.read": read,
}
