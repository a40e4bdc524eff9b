"""Audio/video calls: ``calls.*``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from daemon.params import Handler, Params, bool_param, str_param
from p2pchat.api import ApiError
from p2pchat.calls.manager import CallManager

if TYPE_CHECKING:
    from daemon.control import Session


def _calls(s: Session) -> CallManager:
    calls = s.server.node.calls
    if calls is None:
        raise ApiError("internal_error", "the node is not running")
    return calls


async def start(s: Session, p: Params) -> Any:
    call = await _calls(s).start_call(
        str_param(p, "friend"),
        video=not bool_param(p, "audio_only", False),
        source=str_param(p, "source", required=False, default="test"),
        record=str_param(p, "record", required=False),
    )
    return {"call": call}


async def answer(s: Session, p: Params) -> Any:
    call = await _calls(s).answer(
        str_param(p, "friend", required=False) or None,
        source=str_param(p, "source", required=False, default="test"),
        record=str_param(p, "record", required=False),
    )
    return {"call": call}


async def hangup(s: Session, p: Params) -> Any:
    return {"call": await _calls(s).hangup(str_param(p, "friend", required=False) or None)}


async def list_calls(s: Session, p: Params) -> Any:
    return {"calls": await _calls(s).list_calls()}


METHODS: Final[dict[str, Handler]] = {
    "calls.start": start,
    "calls.answer": answer,
    "calls.hangup": hangup,
    "calls.list": list_calls,
}
