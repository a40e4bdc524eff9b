"""Group chats: ``groups.*`` (docs/API.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from daemon.params import Handler, Params, bool_param, int_param, str_param
from p2pchat.api import ApiError
from p2pchat.groups.service import Groups

if TYPE_CHECKING:
    from daemon.control import Session

MAX_HISTORY: Final = 1000
MAX_WAIT_S: Final = 300


def _groups(s: Session) -> Groups:
    groups = s.server.node.groups
    if groups is None:
        raise ApiError("internal_error", "the node is not running")
    return groups


async def list_groups(s: Session, p: Params) -> Any:
    return {"groups": _groups(s).list_json()}


async def show(s: Session, p: Params) -> Any:
    groups = _groups(s)
    return {"group": groups.group_json(groups.resolve(str_param(p, "group")))}


async def create(s: Session, p: Params) -> Any:
    return {"group": await _groups(s).create(str_param(p, "name"))}


async def invite(s: Session, p: Params) -> Any:
    return {"group": await _groups(s).invite(str_param(p, "group"), str_param(p, "friend"))}


async def join(s: Session, p: Params) -> Any:
    return {"group": await _groups(s).join(str_param(p, "group"))}


async def decline(s: Session, p: Params) -> Any:
    return {"group": await _groups(s).decline(str_param(p, "group"))}


async def leave(s: Session, p: Params) -> Any:
    return {"group": await _groups(s).leave(str_param(p, "group"))}


async def remove(s: Session, p: Params) -> Any:
    return {"group": await _groups(s).remove(str_param(p, "group"), str_param(p, "member"))}


async def rename(s: Session, p: Params) -> Any:
    return {"group": await _groups(s).rename(str_param(p, "group"), str_param(p, "name"))}


async def admin(s: Session, p: Params) -> Any:
    """Make a member an admin (``admin``: true, the default) or no longer one (false)."""
    groups = _groups(s)
    result = await groups.set_admin(
        str_param(p, "group"), str_param(p, "member"), bool_param(p, "admin", True)
    )
    return {"group": result}


async def send(s: Session, p: Params) -> Any:
    """Send; with ``wait`` (seconds), answer once every member holds it or the wait ends."""
    groups = _groups(s)
    wait = int_param(p, "wait", None, 0, MAX_WAIT_S)
    message = await groups.send(str_param(p, "group"), str_param(p, "text"))
    if wait:
        message.update(await groups.wait_held(message["group"], message["seq"], wait))
    return {"message": message}


async def history(s: Session, p: Params) -> Any:
    limit = int_param(p, "limit", 50, 1, MAX_HISTORY)
    assert limit is not None
    return {"messages": await _groups(s).history(str_param(p, "group"), limit)}


METHODS: Final[dict[str, Handler]] = {
    "groups.list": list_groups,
    "groups.show": show,
    "groups.create": create,
    "groups.invite": invite,
    "groups.join": join,
    "groups.decline": decline,
    "groups.leave": leave,
    "groups.remove": remove,
    "groups.rename": rename,
    "groups.admin": admin,
    "groups.send": send,
    "groups.history": history,
}
