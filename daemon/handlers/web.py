"""The web app: ``web.info`` and ``web.new_token`` (the server itself is :mod:`daemon.web`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from daemon.params import Handler, Params

if TYPE_CHECKING:
    from daemon.control import Session

OFF: Final = {"enabled": False, "url": None, "login_url": None}


def _for(s: Session, info: dict[str, Any]) -> dict[str, Any]:
    """No token to the web app itself: whoever holds a (leaked) cookie must not be able to
    read the token, which outlives the cookie's session (``login_url`` null; ``url`` kept)."""
    if s.transport == "web" and info.get("login_url") is not None:
        return {**info, "login_url": None}
    return info


async def info(s: Session, p: Params) -> Any:
    web = s.server.web
    return _for(s, await web.info()) if web is not None else dict(OFF)


async def new_token(s: Session, p: Params) -> Any:
    """A new token: every web session (cookie, open WebSocket) stops working."""
    web = s.server.web
    return _for(s, await web.new_token(s)) if web is not None else dict(OFF)


METHODS: Final[dict[str, Handler]] = {
    "web.info": info,
    "web.new_token": new_token,
}
