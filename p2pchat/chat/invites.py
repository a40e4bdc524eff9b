"""The invite secret in our friend code, and the two ways in for a friend request.

A bare ID costs nothing to aim requests at, and IDs cost nothing to make: a stranger rotating
IDs can fill the pending-request table and spend the global request budget, so nobody else
gets in. Like Tox's "nospam", the daemon keeps a random *invite secret* that only its friend
code carries (v2 codes, :mod:`p2pchat.identity`). A request quoting the current secret takes
the *invited* path: its own rate budget and pending slots the stranger path can never take.
Any other request (no invite, a wrong one, or one from before ``p2pchat id --new-invite``)
takes the *stranger* path: a tighter global rate and a smaller share of the pending table.
Both paths answer alike, so a requester learns nothing about whether its invite was right.

:class:`RequestGate` is sans-IO (an injected clock, no files); the secret's file helpers are
blocking and meant for ``trio.to_thread``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

import nacl.utils

from p2pchat.chat.ratelimit import RequestLimiter
from p2pchat.identity import INVITE_BYTES
from p2pchat.paths import write_private

log = logging.getLogger(__name__)

INVITE_FILE: Final = "invite.json"
"""In the data directory (0600): the current invite secret."""
INVITE_FILE_VERSION: Final = 1

MAX_PENDING_REQUESTS: Final = 200
"""Pending incoming requests in all: the invited path may fill the table up to here..."""
MAX_STRANGER_PENDING: Final = 100
"""...the stranger path only up to here, so ``MAX_PENDING_REQUESTS - MAX_STRANGER_PENDING``
slots are always left for requests that quote the invite."""
STRANGER_GLOBAL_BURST: Final = 20
STRANGER_GLOBAL_PER_S: Final = 0.5
INVITED_GLOBAL_BURST: Final = 30
INVITED_GLOBAL_PER_S: Final = 1.0


class RequestPath(StrEnum):
    INVITED = "invited"
    STRANGER = "stranger"


class Refusal(StrEnum):
    RATE_LIMITED = "rate_limited"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Admission:
    path: RequestPath
    refused: Refusal | None = None


class RequestGate:
    """Admits or refuses friend requests from peers who are not (yet) friends."""

    def __init__(
        self,
        clock: Callable[[], float],
        secret: bytes | None = None,
        *,
        max_pending: int = MAX_PENDING_REQUESTS,
        max_stranger_pending: int = MAX_STRANGER_PENDING,
    ) -> None:
        self.secret = secret
        """The current invite secret (``None``: no invite is valid, every request is a
        stranger's)."""
        self.max_pending = max_pending
        self.max_stranger_pending = min(max_stranger_pending, max_pending)
        self._strangers = RequestLimiter(
            clock, global_burst=STRANGER_GLOBAL_BURST, global_per_s=STRANGER_GLOBAL_PER_S
        )
        self._invited = RequestLimiter(
            clock, global_burst=INVITED_GLOBAL_BURST, global_per_s=INVITED_GLOBAL_PER_S
        )

    def path(self, invite: bytes | None) -> RequestPath:
        """Which way in a request quoting ``invite`` takes (compared in constant time)."""
        if invite is None or self.secret is None:
            return RequestPath.STRANGER
        if hmac.compare_digest(invite, self.secret):
            return RequestPath.INVITED
        return RequestPath.STRANGER

    def admit(self, peer: str, invite: bytes | None, pending: int, *, repeat: bool) -> Admission:
        """Whether ``peer``'s request may be stored, given ``pending`` incoming requests now;
        ``repeat`` means it replaces the peer's own pending request (takes no new slot)."""
        path = self.path(invite)
        invited = path is RequestPath.INVITED
        limiter = self._invited if invited else self._strangers
        if not limiter.allow(peer):
            return Admission(path, Refusal.RATE_LIMITED)
        cap = self.max_pending if invited else self.max_stranger_pending
        if pending >= cap and not repeat:
            return Admission(path, Refusal.FULL)
        return Admission(path)


# --- the secret's file (blocking: call through trio.to_thread) --------------------------------


def new_invite() -> bytes:
    return nacl.utils.random(INVITE_BYTES)


def _write_invite(path: Path, secret: bytes) -> None:
    """Write atomically with mode 0600: a crash leaves the old file or the new one."""
    write_private(path, json.dumps({"version": INVITE_FILE_VERSION, "invite": secret.hex()}))


def _read_invite(path: Path) -> bytes:
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("version") != INVITE_FILE_VERSION:
        raise ValueError("unsupported format")
    text = doc.get("invite")
    if not isinstance(text, str):
        raise ValueError("no invite")
    secret = bytes.fromhex(text)
    if len(secret) != INVITE_BYTES:
        raise ValueError(f"the invite is not {INVITE_BYTES} bytes")
    return secret


def load_or_create_invite(home: Path) -> bytes:
    """The invite secret kept in ``home``, made on first use. An unreadable file is moved
    aside (``.corrupt``, kept for inspection) and replaced: a lost secret only means old
    friend codes take the stranger path, which still works."""
    path = home / INVITE_FILE
    try:
        return _read_invite(path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        aside = path.with_name(path.name + ".corrupt")
        log.warning("invite file %s is unreadable (%s): moved to %s", path, exc, aside.name)
        os.replace(path, aside)
    secret = new_invite()
    _write_invite(path, secret)
    return secret


def rotate_invite(home: Path) -> bytes:
    """Replace the invite secret: friend codes given out so far stop admitting requests to the
    invited path (bare IDs and old codes still reach us, through the stranger path)."""
    secret = new_invite()
    _write_invite(home / INVITE_FILE, secret)
    return secret
