"""Audio/video calls: ``calls.*``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from daemon.params import Handler, Params, bool_param, str_param
from p2pchat.api import ApiError
from p2pchat.calls.browser import PageOwner, check_stats
from p2pchat.calls.conferences import Conferences
from p2pchat.calls.manager import CallManager

if TYPE_CHECKING:
    from daemon.control import Session


def _calls(s: Session) -> CallManager:
    calls = s.server.node.calls
    if calls is None:
        raise ApiError("internal_error", "the node is not running")
    return calls


def _conferences(s: Session) -> Conferences:
    conferences = s.server.node.conferences
    if conferences is None:
        raise ApiError("internal_error", "the node is not running")
    return conferences


def _group_target(s: Session, p: Params, key: str = "friend") -> str | None:
    """The group a call action is for: ``group``, or a ``friend`` that names no friend but
    one of our groups (so ``p2pchat call NAME`` works for both)."""
    group = str_param(p, "group", required=False) or None
    if group is not None:
        if "friend" in p:
            raise ApiError("invalid_params", "give 'friend' or 'group', not both")
        return group
    name = str_param(p, key, required=False) or None
    if name is None:
        return None
    chat = s.server.node.chat
    if chat is not None:
        try:
            chat.roster.resolve(name)
            return None  # a contact's name or ID: a 1:1 call (contacts come first)
        except ApiError as exc:
            if exc.name != "not_found":
                return None  # ambiguous among contacts: the 1:1 path says so
    return name if _conferences(s).names_group(name) else None


def _group_media(p: Params) -> None:
    if str_param(p, "media", required=False, default="aiortc") != "aiortc":
        raise ApiError("invalid_params", "group calls use the daemon's own media")
    if str_param(p, "record", required=False):
        raise ApiError("invalid_params", "group calls are not recorded")


def _browser_sdp(s: Session, p: Params) -> tuple[str | None, PageOwner | None]:
    """The page's SDP when ``media`` is ``browser`` (and the session that owns the call, which
    hangs up when that session ends); nothing for the daemon's own aiortc media."""
    media = str_param(p, "media", required=False, default="aiortc")
    if media == "aiortc":
        if "sdp" in p:
            raise ApiError("invalid_params", "'sdp' is only for media \"browser\"")
        return None, None
    if media != "browser":
        raise ApiError("invalid_params", '\'media\' must be "aiortc" or "browser"')
    if "sdp" not in p:
        raise ApiError("invalid_params", "missing parameter 'sdp' (the page's description)")
    owner = PageOwner()
    calls = _calls(s)
    s.add_close_callback(lambda: calls.owner_gone(owner))
    return p["sdp"], owner


async def start(s: Session, p: Params) -> Any:
    group = _group_target(s, p)
    if group is not None:
        _group_media(p)
        call = await _conferences(s).start(
            group,
            video=not bool_param(p, "audio_only", False),
            source=str_param(p, "source", required=False, default="test"),
        )
        return {"call": call}
    sdp, owner = _browser_sdp(s, p)
    call = await _calls(s).start_call(
        str_param(p, "friend"),
        video=not bool_param(p, "audio_only", False),
        source=str_param(p, "source", required=False, default="test"),
        record=str_param(p, "record", required=False),
        browser_sdp=sdp,
        owner=owner,
    )
    return {"call": call}


async def answer(s: Session, p: Params) -> Any:
    group = _group_target(s, p)
    conferences = _conferences(s)
    if group is not None or (
        "friend" not in p and conferences.is_ringing() and not _calls(s).is_ringing()
    ):
        _group_media(p)
        source = str_param(p, "source", required=False, default="test")
        return {"call": await conferences.answer(group, source)}
    sdp, owner = _browser_sdp(s, p)
    call = await _calls(s).answer(
        str_param(p, "friend", required=False) or None,
        source=str_param(p, "source", required=False, default="test"),
        record=str_param(p, "record", required=False),
        browser_sdp=sdp,
        owner=owner,
    )
    return {"call": call}


async def remote_offer(s: Session, p: Params) -> Any:
    return _calls(s).remote_offer()


async def ice_servers(s: Session, p: Params) -> Any:
    return {"ice_servers": _calls(s).ice_servers()}


async def report(s: Session, p: Params) -> Any:
    stats = check_stats(p["stats"]) if p.get("stats") is not None else None
    state = str_param(p, "state", required=False) or None
    return {"call": await _calls(s).report(str_param(p, "id"), state, stats)}


async def hangup(s: Session, p: Params) -> Any:
    group = _group_target(s, p)
    conferences = _conferences(s)
    if group is not None or ("friend" not in p and conferences.live):
        return {"call": await conferences.hangup(group)}
    return {"call": await _calls(s).hangup(str_param(p, "friend", required=False) or None)}


async def list_calls(s: Session, p: Params) -> Any:
    calls = await _conferences(s).list_calls() + await _calls(s).list_calls()
    calls.sort(key=lambda c: -(c.get("started_at") or 0))
    return {"calls": calls}


METHODS: Final[dict[str, Handler]] = {
    "calls.start": start,
    "calls.answer": answer,
    "calls.hangup": hangup,
    "calls.list": list_calls,
    "calls.remote_offer": remote_offer,
    "calls.ice_servers": ice_servers,
    "calls.report": report,
}
