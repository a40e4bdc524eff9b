"""End-to-end: real p2pchatd processes on 127.0.0.1, driven through the control API."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from p2pchat.api import ApiError
from tests.harness import Daemon, assert_stays, befriend, send_and_wait_delivered, wait_for

pytestmark = pytest.mark.daemons

MakeDaemon = Callable[..., Daemon]


def test_befriend_then_chat_both_ways_with_history_and_events(make_daemon: MakeDaemon) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    events: list[dict[str, Any]] = []
    sub = bob.client(timeout=None)
    stream = sub.events()  # subscribed from here on

    def collect() -> None:
        try:
            for event in stream:
                events.append(event)
        except Exception:
            return

    listener = threading.Thread(target=collect, daemon=True)
    listener.start()

    contact = alice.call("friends.add", id=bob.code(), name="bob", message="it's alice")["contact"]
    assert contact["state"] == "outgoing"
    requests = wait_for(lambda: bob.call("requests.list")["requests"], what="request at bob")
    assert requests[0]["peer_id"] == alice.peer_id
    assert requests[0]["request_text"] == "it's alice"
    assert requests[0]["their_name"] == "alice"
    # Not friends yet: bob cannot message alice, alice cannot message bob.
    for sender, friend in ((alice, "bob"), (bob, "alice")):
        with pytest.raises(ApiError) as err:
            sender.call("messages.send", friend=friend, text="too early")
        assert err.value.name == "not_friend"

    accepted = bob.call("requests.accept", friend="alice")["contact"]
    assert (accepted["peer_id"], accepted["state"]) == (alice.peer_id, "friend")
    wait_for(lambda: alice.contact(bob.peer_id)["state"] == "friend", what="accept at alice")

    sent = alice.call("messages.send", friend="bob", text="hello bob")["message"]
    assert sent["state"] == "pending" and sent["direction"] == "out"
    reply = bob.call("messages.send", friend="alice", text="hi alice 👋")["message"]

    def settled(d: Daemon, friend: str) -> bool:
        hist = d.history(friend)
        return len(hist) == 2 and all(m["state"] != "pending" for m in hist)

    wait_for(lambda: settled(alice, "bob"), what="alice's history")
    wait_for(lambda: len(bob.history("alice")) == 2, what="bob's history")

    a_hist = alice.history("bob")
    assert [(m["direction"], m["text"]) for m in a_hist] == [
        ("out", "hello bob"),
        ("in", "hi alice 👋"),
    ] or [(m["direction"], m["text"]) for m in a_hist] == [
        ("in", "hi alice 👋"),
        ("out", "hello bob"),
    ]
    b_hist = {m["id"]: m for m in bob.history("alice")}
    assert b_hist[sent["id"]]["text"] == "hello bob"
    assert b_hist[sent["id"]]["state"] == "received"
    assert b_hist[reply["id"]]["direction"] == "out"
    wait_for(lambda: settled(bob, "alice"), what="bob's reply delivered")

    types = wait_for(
        lambda: (
            {e["type"] for e in events} >= {"friend.request", "message.received"}
            and {e["type"] for e in events}
        ),
        what="events at bob",
    )
    assert "friend.accepted" in types
    received = [e for e in events if e["type"] == "message.received"]
    assert received[0]["message"]["text"] == "hello bob"
    sub.close()
    listener.join(5)
    assert not listener.is_alive()


def test_message_to_stopped_friend_arrives_after_it_restarts(make_daemon: MakeDaemon) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    befriend(alice, bob)
    watcher = alice.client(timeout=None)
    stream = watcher.events()
    seen: list[dict[str, Any]] = []
    listener = threading.Thread(target=lambda: seen.extend(stream), daemon=True)
    listener.start()
    bob.stop()
    wait_for(lambda: any(e["type"] == "friend.offline" for e in seen), what="friend.offline")
    ids = [
        alice.call("messages.send", friend="bob", text=f"offline {i}")["message"]["id"]
        for i in range(5)
    ]
    # Bob is down: for a while nothing can change (the point here, so a fixed period).
    assert_stays(
        lambda: all(m["state"] == "pending" for m in alice.history("bob")),
        0.5,
        what="alice's messages to stay pending",
    )
    assert alice.call("friends.list")["contacts"][0]["outbox"] == 5

    # Alice also restarts while bob is away: the outbox is on disk, not in memory.
    watcher.close()
    listener.join(5)
    alice.restart()
    watcher = alice.client(timeout=None)
    stream = watcher.events()
    seen.clear()
    listener = threading.Thread(target=lambda: seen.extend(stream), daemon=True)
    listener.start()
    bob.start()
    online = wait_for(
        lambda: [e for e in seen if e["type"] == "friend.online"],
        what="friend.online after bob restarts",
    )
    assert online[0]["contact"]["peer_id"] == bob.peer_id
    assert online[0]["contact"]["online"] is True
    wait_for(
        lambda: all(m["state"] == "delivered" for m in alice.history("bob")),
        timeout=20,
        what="delivery after restart",
    )
    got = bob.history("alice")
    assert [m["id"] for m in got] == ids
    assert [m["text"] for m in got] == [f"offline {i}" for i in range(5)]
    delivered = wait_for(
        lambda: (
            [e for e in seen if e["type"] == "message.delivered"]
            if len([e for e in seen if e["type"] == "message.delivered"]) == 5
            else None
        ),
        what="5 delivered events",
    )
    assert sorted(e["message"]["id"] for e in delivered) == sorted(ids)
    watcher.close()


def test_kill9_sender_mid_burst_delivers_every_message_exactly_once(
    make_daemon: MakeDaemon,
) -> None:
    """kill -9 the sender while a client pushes 1,000 messages; restart it; the client retries
    the one send whose reply it never got (same client-chosen id). Every message the client
    ever submitted arrives exactly once, in order."""
    alice, bob = make_daemon("alice"), make_daemon("bob")
    befriend(alice, bob)
    attempted: list[str] = []  # ids the client submitted, in order
    accepted: list[str] = []  # ids whose reply arrived
    errors: list[BaseException] = []

    def burst() -> None:
        try:
            with alice.client() as c:
                for i in range(1000):
                    msg_id = os.urandom(16).hex()
                    attempted.append(msg_id)
                    c.call("messages.send", friend="bob", text=f"m{i:04d}", id=msg_id)
                    accepted.append(msg_id)
        except BaseException as exc:  # the daemon dies under us: expected
            errors.append(exc)

    sender = threading.Thread(target=burst)
    sender.start()
    wait_for(lambda: len(accepted) >= 300, timeout=30, interval=0.005, what="300 sends")
    alice.kill9()
    sender.join(10)
    assert errors, "the burst should have been cut off by kill -9"
    assert 300 <= len(accepted) < 1000
    assert len(attempted) - len(accepted) <= 1

    alice.start()
    stored = [m["id"] for m in alice.history("bob", limit=1000)]
    # Everything the API accepted survived the crash, in order.
    assert stored[: len(accepted)] == accepted
    # The client retries the send it never heard back about: stored once either way.
    for i, msg_id in enumerate(attempted[len(accepted) :], start=len(accepted)):
        first = alice.call("messages.send", friend="bob", text=f"m{i:04d}", id=msg_id)
        again = alice.call("messages.send", friend="bob", text=f"m{i:04d}", id=msg_id)
        # Both replies name the one stored message (its state may move on in between).
        for reply in (first, again):
            assert reply["message"]["id"] == msg_id and reply["message"]["text"] == f"m{i:04d}"
        assert again["message"]["seq"] == first["message"]["seq"]
    stored = [m["id"] for m in alice.history("bob", limit=1000)]
    assert stored == attempted

    wait_for(
        lambda: all(m["state"] == "delivered" for m in alice.history("bob", limit=1000)),
        timeout=60,
        what="all delivered after restart",
    )
    got = bob.history("alice", limit=1000)
    got_ids = [m["id"] for m in got]
    assert len(got_ids) == len(set(got_ids)), "duplicates at the receiver"
    assert got_ids == attempted, "receiver must hold exactly the submitted messages, in order"
    assert [m["text"] for m in got] == [f"m{i:04d}" for i in range(len(attempted))]
    assert [m["seq"] for m in got] == list(range(1, len(attempted) + 1))


def test_kill9_receiver_mid_burst_keeps_the_olm_session_in_step(make_daemon: MakeDaemon) -> None:
    """kill -9 the receiver while sealed messages pour in (between receiving a message and
    storing what it opened to, for whichever was in flight); restart it. Every message
    arrives once, in order, and the session goes on in both directions: nothing failed to
    open, and neither side had to start a new session."""
    alice, bob = make_daemon("alice"), make_daemon("bob")
    befriend(alice, bob)
    send_and_wait_delivered(alice, "bob", "first")
    send_and_wait_delivered(bob, "alice", "first back")
    sessions = {d.name: d.log_text().count("started an end-to-end session") for d in (alice, bob)}
    total = 1500
    done = threading.Event()

    def burst() -> None:
        with alice.client() as c:
            for i in range(total):
                c.call("messages.send", friend="bob", text=f"m{i:04d}")
        done.set()

    sender = threading.Thread(target=burst)
    sender.start()
    seen: list[int] = []

    def arriving() -> bool:
        seen.append(sum(m["direction"] == "in" for m in bob.history("alice", limit=1000)))
        return seen[-1] >= 200

    wait_for(arriving, timeout=60, interval=0.01, what="200 messages at bob")
    bob.kill9()
    assert seen[-1] < total, "the burst should still be arriving when bob is killed"
    sender.join(60)
    assert done.is_set()
    bob.start()
    wait_for(
        lambda: all(m["state"] == "delivered" for m in alice.history("bob", limit=1000)),
        timeout=90,
        what="every message delivered after the restart",
    )
    got: list[dict[str, Any]] = []
    before = None
    while True:  # all of bob's history with alice, paged back
        page = bob.call(
            "messages.history",
            friend="alice",
            limit=1000,
            **({"before": before} if before is not None else {}),
        )["messages"]
        got = page + got
        if len(page) < 1000:
            break
        before = page[0]["row"]
    texts = [m["text"] for m in got if m["direction"] == "in"]
    assert texts == ["first"] + [f"m{i:04d}" for i in range(total)]
    # The same sessions carry on, both ways.
    send_and_wait_delivered(bob, "alice", "after the crash")
    send_and_wait_delivered(alice, "bob", "still in step")
    assert [m["text"] for m in alice.history("bob", 5) if m["direction"] == "in"][-1:] == [
        "after the crash"
    ]
    assert [m["text"] for m in bob.history("alice", 5) if m["direction"] == "in"][-1:] == [
        "still in step"
    ]
    for d in (alice, bob):
        assert "did not open" not in d.log_text(), d.name
        assert d.log_text().count("started an end-to-end session") == sessions[d.name], d.name


def test_mistyped_id_or_code_is_rejected_and_nothing_is_added(make_daemon: MakeDaemon) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    code = bob.code()
    i = len(code) // 2
    typo = code[:i] + ("a" if code[i] != "a" else "b") + code[i + 1 :]
    for bad in (
        typo,
        # A bare ID has no checksum: only typos that break its structure are certain to be
        # caught (a wrong last character still yields a valid key ~5% of the time), which is
        # why friend codes exist. These always are:
        bob.peer_id[:-1] + "0",  # '0' is not in the base58 alphabet
        bob.peer_id[:-3],
        bob.peer_id + "a",
        "hello",
        alice.peer_id,
    ):
        with pytest.raises(ApiError) as err:
            alice.call("friends.add", id=bad)
        assert err.value.name in ("invalid_id", "self"), bad
        assert err.value.message
    assert alice.call("friends.list")["contacts"] == []


def test_blocked_peer_is_dropped_silently_and_friends_are_unaffected(
    make_daemon: MakeDaemon,
) -> None:
    alice, bob, mallory = make_daemon("alice"), make_daemon("bob"), make_daemon("mallory")
    befriend(alice, bob)
    # Mallory asks; alice blocks her; a second request is dropped silently.
    mallory.call("friends.add", id=alice.code(), message="let me in")
    wait_for(lambda: alice.call("requests.list")["requests"], what="mallory's request")
    blocked = alice.call("friends.block", friend=mallory.peer_id)["contact"]
    assert (blocked["peer_id"], blocked["state"]) == (mallory.peer_id, "blocked")
    assert alice.call("requests.list")["requests"] == []
    mallory.call("friends.remove", friend=alice.peer_id)
    mallory.call("friends.add", id=alice.code(), message="again")
    wait_for(
        lambda: "dropped a request from blocked peer" in alice.log_text(),
        timeout=20,
        what="blocked request to be dropped",
    )
    assert alice.call("requests.list")["requests"] == []
    blocked = [c for c in alice.call("friends.list")["contacts"] if c["state"] == "blocked"]
    assert [c["peer_id"] for c in blocked] == [mallory.peer_id]
    # Mallory cannot tell: her request looks delivered, like any request still pending.
    assert mallory.contact(alice.peer_id)["state"] == "outgoing"
    # Alice's friendship with bob carries on.
    sent = bob.call("messages.send", friend="alice", text="still here")["message"]
    wait_for(
        lambda: any(m["id"] == sent["id"] for m in alice.history("bob")),
        what="bob's message after the block",
    )
