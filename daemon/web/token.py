"""The web app's token file (``<home>/web-token``, 0600): the one secret that opens the app.

The blocking helpers here run in a worker thread (``trio.to_thread``), never on the trio loop.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Final

import trio

from daemon.web.guard import is_token
from p2pchat.paths import write_private

log = logging.getLogger(__name__)

TOKEN_BYTES: Final = 32


def new_token() -> str:
    """32 random bytes as URL-safe base64 without padding (fits a URL fragment as is)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()


def write_token(path: Path, token: str) -> None:
    """Replace the token file atomically, created 0600 (never through a symlink). The temporary
    file has a random name, so concurrent rotations cannot trip over each other's."""
    write_private(path, token + "\n")


def read_or_create(path: Path) -> str:
    """The token in ``path``; a new one if the file is missing or does not hold one. A file
    others can read is made private again (the token itself may have leaked: say so)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        token = new_token()
        write_token(path, token)
        log.info("created the web app token in %s", path)
        return token
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        # Bytes, decoded leniently: a corrupt file is "not a token" (and replaced), not a
        # UnicodeDecodeError that stops the web app.
        text = f.read(256).decode("utf-8", errors="replace").strip()
    if stat.S_IMODE(mode) & 0o077:
        os.chmod(path, 0o600)
        log.warning(
            "%s was readable by other users; made it private (rotate the token with: "
            "p2pchat web --new-token)",
            path,
        )
    if not is_token(text):
        log.warning("%s does not hold a valid token; writing a new one", path)
        token = new_token()
        write_token(path, token)
        return token
    return text


async def load(path: Path) -> str:
    return await trio.to_thread.run_sync(read_or_create, path)


async def rotate(path: Path) -> str:
    """Write a new token and return it (safe to run concurrently: the last write wins)."""
    token = new_token()
    await trio.to_thread.run_sync(write_token, path, token)
    return token
