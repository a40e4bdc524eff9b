"""The invite secret (p2pchat.chat.invites): requests quoting it keep their own way in while
strangers with rotating IDs flood the other one; rotation; the secret's file.

The admission rules are checked on :class:`RequestGate` alone (a fake clock), then through
``Friends.on_frame`` on a real SQLite roster, where the pending table really fills up."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import cbor2
import pytest
import trio

from p2pchat import wire
from p2pchat.chat import invites
from p2pchat.chat.friends import Friends
from p2pchat.chat.friendship import ContactState
from p2pchat.chat.invites import (
    MAX_PENDING_REQUESTS,
    MAX_STRANGER_PENDING,
    STRANGER_GLOBAL_BURST,
    Admission,
    Refusal,
    RequestGate,
    RequestPath,
    load_or_create_invite,
    rotate_invite,
)
from p2pchat.chat.roster import Roster
from p2pchat.chat.store import ChatStore
from p2pchat.events import EventBus
from p2pchat.identity import INVITE_BYTES, Identity
from p2pchat.net.host import Network
from p2pchat.storage.schema import open_database
from tests.harness import FakeClock

SECRET = b"\x11" * INVITE_BYTES
WRONG = b"\x12" * INVITE_BYTES


def stranger(i: int) -> str:
    return f"12D3KooWstranger{i:036d}"


# --- the gate, sans-IO -------------------------------------------------------------------------


def test_only_the_current_secret_takes_the_invited_path() -> None:
    gate = RequestGate(FakeClock(), SECRET)
    assert gate.path(SECRET) is RequestPath.INVITED
    for other in (None, WRONG, SECRET[:-1], SECRET + b"\x00", b""):
        assert gate.path(other) is RequestPath.STRANGER
    assert RequestGate(FakeClock(), None).path(SECRET) is RequestPath.STRANGER


def test_a_rate_flood_from_rotating_ids_leaves_the_invited_path_open() -> None:
    clock = FakeClock()
    gate = RequestGate(clock, SECRET)
    flood = [gate.admit(stranger(i), None, 0, repeat=False) for i in range(500)]
    assert sum(a.refused is None for a in flood) == STRANGER_GLOBAL_BURST
    assert flood[-1] == Admission(RequestPath.STRANGER, Refusal.RATE_LIMITED)
    # A wrong invite is just another stranger: refused the same way.
    assert gate.admit("wrong", WRONG, 0, repeat=False) == flood[-1]
    assert gate.admit("friend-to-be", SECRET, 0, repeat=False) == Admission(RequestPath.INVITED)


def test_a_full_stranger_pool_leaves_invited_slots() -> None:
    gate = RequestGate(FakeClock(), SECRET)
    full = MAX_STRANGER_PENDING
    assert gate.admit("s", None, full, repeat=False).refused is Refusal.FULL
    assert gate.admit("s2", None, full, repeat=True).refused is None  # replaces its own
    assert gate.admit("i", SECRET, full, repeat=False).refused is None
    assert gate.admit("j", SECRET, MAX_PENDING_REQUESTS, repeat=False).refused is Refusal.FULL


def test_a_rotated_secret_sends_the_old_one_to_the_stranger_path() -> None:
    gate = RequestGate(FakeClock(), SECRET)
    gate.secret = WRONG
    assert gate.path(SECRET) is RequestPath.STRANGER
    assert gate.path(WRONG) is RequestPath.INVITED


# --- through Friends.on_frame, on a real database ---------------------------------------------


class _Net:
    """What ``Friends`` reads of the network when it answers requests: our ID only."""

    def __init__(self) -> None:
        self.identity = Identity.generate()

    def listen_addrs(self) -> list[str]:
        return []


@pytest.fixture
async def friends(tmp_path: Path) -> AsyncIterator[tuple[Friends, FakeClock]]:
    clock = FakeClock()
    async with open_database(tmp_path / "p2pchat.db") as db:
        roster = Roster(ChatStore(db), EventBus())
        await roster.load()
        f = Friends(network=cast(Network, _Net()), roster=roster, clock=clock)
        f.gate.secret = SECRET
        yield f, clock


def request(invite: bytes | None = None) -> wire.FriendRequest:
    return wire.FriendRequest("x", "hi", (), invite=invite)


def incoming(f: Friends) -> int:
    return sum(1 for c in f.roster.contacts() if c.state is ContactState.INCOMING)


async def test_strangers_with_rotating_ids_cannot_crowd_out_an_invited_request(
    friends: tuple[Friends, FakeClock],
) -> None:
    f, clock = friends
    replies: list[Any] = []
    with trio.fail_after(60):
        for _ in range(MAX_PENDING_REQUESTS + 20):
            clock.now += 10  # slow enough for every rate limit: only the table can say no
            replies.append(await f.on_frame(Identity.generate().peer_id, request()))
        assert replies.count(wire.Received()) == MAX_STRANGER_PENDING
        assert replies[-1] == wire.Refused(wire.REFUSED_FULL, "too many pending requests")
        assert incoming(f) == MAX_STRANGER_PENDING
        clock.now += 10
        # A wrong or stale invite is a stranger's request: the same refusal.
        assert await f.on_frame(Identity.generate().peer_id, request(WRONG)) == replies[-1]
        invited = Identity.generate().peer_id
        assert await f.on_frame(invited, request(SECRET)) == wire.Received()
        contact = f.roster.get(invited)
        assert contact is not None and contact.state is ContactState.INCOMING


async def test_a_request_burst_from_rotating_ids_leaves_the_invited_budget(
    friends: tuple[Friends, FakeClock],
) -> None:
    f, _ = friends
    with trio.fail_after(60):
        replies = [await f.on_frame(Identity.generate().peer_id, request()) for _ in range(60)]
        assert replies.count(wire.Received()) == STRANGER_GLOBAL_BURST
        assert replies[-1].code == wire.REFUSED_RATE_LIMITED  # type: ignore[attr-defined]
        assert await f.on_frame(Identity.generate().peer_id, request(SECRET)) == wire.Received()
        f.gate.secret = WRONG  # rotated: the old code's invite is a stranger's now
        stale = await f.on_frame(Identity.generate().peer_id, request(SECRET))
        assert stale == replies[-1]


async def test_a_request_we_owe_quotes_the_invite_of_the_code_we_added(
    friends: tuple[Friends, FakeClock],
) -> None:
    from p2pchat.identity import FriendCode

    f, _ = friends
    them = Identity.generate().peer_id
    contact = await f.add(FriendCode(them, (), SECRET).encode(), None, "hello")
    frame = f.notice_frame(contact)
    assert isinstance(frame, wire.FriendRequest) and frame.invite == SECRET
    assert wire.decode_frame(wire.encode(frame)[1:]) == frame  # on the wire and back
    contact = await f.add(them, None, "hello")  # by bare ID: no invite to quote
    frame = f.notice_frame(contact)
    assert isinstance(frame, wire.FriendRequest) and frame.invite is None


# --- the request frame's invite field --------------------------------------------------------


def test_a_request_without_invite_is_the_v1_frame() -> None:
    plain = wire.FriendRequest("x", "hi", ())
    assert b"invite" not in wire.encode(plain)
    assert wire.decode_frame(wire.encode(plain)[1:]).invite is None  # type: ignore[union-attr]


@pytest.mark.parametrize("invite", ["text", b"", b"x" * (wire.MAX_INVITE_BYTES + 1), 7])
def test_a_request_with_a_malformed_invite_is_a_frame_error(invite: object) -> None:
    body = cbor2.dumps({"t": "request", "name": "", "text": "", "addrs": [], "invite": invite})
    with pytest.raises(wire.FrameError, match="invite"):
        wire.decode_frame(body)


# --- the secret's file ---------------------------------------------------------------------------


def test_the_secret_persists_and_rotates(tmp_path: Path) -> None:
    first = load_or_create_invite(tmp_path)
    assert len(first) == INVITE_BYTES
    path = tmp_path / invites.INVITE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_invite(tmp_path) == first  # a restart keeps it
    second = rotate_invite(tmp_path)
    assert second != first
    assert load_or_create_invite(tmp_path) == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [invites.INVITE_FILE]  # no temp left


def test_the_secret_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        rotate_invite(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / invites.INVITE_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        json.dumps({"version": 9, "invite": "00" * 8}),
        json.dumps({"version": 1, "invite": "00" * 7}),
        json.dumps({"version": 1, "invite": "zz" * 8}),
        json.dumps([1]),
    ],
)
def test_an_unreadable_secret_file_is_kept_aside_and_replaced(tmp_path: Path, content: str) -> None:
    path = tmp_path / invites.INVITE_FILE
    path.write_text(content)
    secret = load_or_create_invite(tmp_path)
    assert len(secret) == INVITE_BYTES
    assert (tmp_path / (invites.INVITE_FILE + ".corrupt")).read_text() == content
    assert load_or_create_invite(tmp_path) == secret
