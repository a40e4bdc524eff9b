"""Unread counts end to end: two real daemons, the control API and the CLI."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Daemon, befriend, cli, ok, send_and_wait, wait_for

pytestmark = pytest.mark.daemons

MakeDaemon = Callable[..., Daemon]


def unread(d: Daemon, peer_id: str) -> int:
    contact = d.contact(peer_id)
    assert contact is not None
    return int(contact["unread"])


def test_unread_counts_rise_reset_on_read_and_survive_a_restart(make_daemon: MakeDaemon) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    befriend(alice, bob)
    assert unread(bob, alice.peer_id) == 0

    events: list[dict[str, Any]] = []
    sub = bob.client(timeout=None)
    stream = sub.events()
    listener = threading.Thread(target=lambda: events.extend(stream), daemon=True)
    listener.start()

    for i in range(3):
        send_and_wait(alice, bob, f"unread {i}")
    # Bob's own message: unread at alice, never at bob.
    send_and_wait(bob, alice, "bob's own message")
    assert unread(bob, alice.peer_id) == 3
    assert unread(alice, bob.peer_id) == 1
    received = wait_for(
        lambda: (r := [e for e in events if e["type"] == "message.received"]) and len(r) == 3 and r,
        what="three message.received events",
    )
    assert [e["contact"]["unread"] for e in received] == [1, 2, 3]

    # The CLI shows it.
    listing = ok(cli(bob.home, "friends", "list"))
    assert "3 unread" in listing

    # Read: 0, announced; then counted again from there.
    contact = bob.call("messages.read", friend="alice")["contact"]
    assert (contact["peer_id"], contact["unread"]) == (alice.peer_id, 0)
    updated = wait_for(
        lambda: [e for e in events if e["type"] == "contact.updated"], what="contact.updated"
    )
    assert updated[0]["contact"]["unread"] == 0
    assert unread(bob, alice.peer_id) == 0
    assert "unread" not in ok(cli(bob.home, "friends", "list"))
    send_and_wait(alice, bob, "after the read")
    send_and_wait(alice, bob, "and another")
    assert unread(bob, alice.peer_id) == 2
    sub.close()
    listener.join(5)

    # The read mark is on disk: a restart keeps the count as it was.
    bob.restart()
    assert unread(bob, alice.peer_id) == 2

    # `p2pchat history` opens the conversation: read.
    assert "and another" in ok(cli(bob.home, "history", "alice"))
    assert unread(bob, alice.peer_id) == 0
    bob.restart()
    assert unread(bob, alice.peer_id) == 0
