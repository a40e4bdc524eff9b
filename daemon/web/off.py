"""The web app's stand-in when ``"web": false``: ``web.*`` still answer, without importing
the HTTP stack."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from daemon.web import token
from p2pchat.paths import WEB_TOKEN_FILE

if TYPE_CHECKING:
    from daemon.control import Session


class WebOff:
    def __init__(self, home: Path) -> None:
        self.token_path = home / WEB_TOKEN_FILE
        self._rotating = trio.Lock()

    async def info(self) -> dict[str, Any]:
        return {"enabled": False, "url": None, "login_url": None}

    async def url(self) -> str | None:
        return None

    async def new_token(self, caller: Session) -> dict[str, Any]:
        """Rotate the token anyway: the old one must not work when the app is turned on."""
        async with self._rotating:
            await token.rotate(self.token_path)
        return await self.info()
