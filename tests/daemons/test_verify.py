"""Safety numbers end to end: two real daemons show the same number for each other; the
user's confirmation is stored, survives a restart, and can be revoked; what cannot be verified
says why."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from p2pchat.api import ApiError
from p2pchat.identity import Identity
from tests.harness import Daemon, befriend, cli, ok, send_and_wait_delivered

pytestmark = pytest.mark.daemons


def test_friends_see_one_safety_number_and_confirmations_are_kept(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    befriend(alice, bob)
    at_alice = alice.call("friends.verification", friend=bob.peer_id)["verification"]
    at_bob = bob.call("friends.verification", friend=alice.peer_id)["verification"]
    assert at_alice["safety_number"] == at_bob["safety_number"]
    groups = at_alice["safety_number"].split()
    assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)
    assert at_alice["verified"] is False and at_alice["verified_at"] is None
    assert alice.contact(bob.peer_id)["verified"] is False  # type: ignore[index]

    shown = ok(cli(alice.home, "verify", bob.peer_id[-8:]))
    assert " ".join(groups[:4]) in shown and " ".join(groups[8:]) in shown, shown
    assert "Status: not verified" in shown and "--confirm" in shown

    confirmed = ok(cli(alice.home, "verify", bob.peer_id[-8:], "--confirm"))
    assert "Status: verified" in confirmed, confirmed
    assert alice.contact(bob.peer_id)["verified"] is True  # type: ignore[index]
    assert bob.contact(alice.peer_id)["verified"] is False  # each side confirms for itself

    alice.restart()
    after = alice.call("friends.verification", friend=bob.peer_id)["verification"]
    assert after["verified"] is True and after["verified_at"] > 0
    assert after["safety_number"] == at_bob["safety_number"]
    listed = ok(cli(alice.home, "friends", "list"))
    assert "verified" in listed, listed

    revoked = alice.call("friends.verify", friend=bob.peer_id, verified=False)
    assert revoked["verification"]["verified"] is False
    assert revoked["contact"]["verified"] is False

    # What cannot be verified, and why.
    with pytest.raises(ApiError) as err:
        alice.call("friends.verification", friend="nobody")
    assert err.value.name == "not_found"
    stranger = Identity.generate().peer_id
    alice.call("friends.block", id=stranger)
    with pytest.raises(ApiError) as err:
        alice.call("friends.verify", friend=stranger)
    assert err.value.name == "not_friend" and "blocked" in err.value.message
    with pytest.raises(ApiError) as err:
        alice.call("friends.verify", friend=bob.peer_id, verified="yes")
    assert err.value.name == "invalid_params"
    failed = cli(alice.home, "verify", "nobody")
    assert failed.returncode != 0 and "no contact matches" in failed.stderr


def test_a_verified_friend_whose_end_to_end_keys_change_is_flagged(
    make_daemon: Callable[..., Daemon],
) -> None:
    """Bob loses his end-to-end state (as a reinstall that kept only identity.key would):
    his daemon makes a new Olm account. Alice had verified him: once his new keys reach her,
    he shows as changed, not verified, until she compares again. Messages flow meanwhile."""
    alice, bob = make_daemon("alice"), make_daemon("bob")
    befriend(alice, bob)
    send_and_wait_delivered(bob, "alice", "with my first keys")
    alice.call("friends.verify", friend=bob.peer_id)
    assert alice.contact(bob.peer_id)["verified"] is True  # type: ignore[index]

    bob.stop()
    with sqlite3.connect(bob.home / "p2pchat.db") as db:
        db.execute("DELETE FROM olm_account")
        db.execute("DELETE FROM olm_sessions")
    events = alice.client(timeout=30)
    stream = events.events()  # subscribed before bob can present his new keys
    bob.start()
    send_and_wait_delivered(bob, "alice", "with new keys")
    updated = next(
        e for e in stream if e["type"] == "contact.updated" and e["contact"]["verified"] is False
    )
    assert updated["contact"]["peer_id"] == bob.peer_id
    events.close()
    v = alice.call("friends.verification", friend=bob.peer_id)["verification"]
    assert (v["verified"], v["changed"]) == (False, True)
    assert "keys of" in alice.log_text() and "compare safety numbers again" in alice.log_text()
    shown = ok(cli(alice.home, "verify", bob.peer_id[-8:]))
    assert "Status: CHANGED" in shown and "--confirm" in shown, shown
    assert [m["text"] for m in alice.history(bob.peer_id) if m["direction"] == "in"] == [
        "with my first keys",
        "with new keys",
    ]
    send_and_wait_delivered(alice, "bob", "still reaches you")  # her old session is replaced

    alice.call("friends.verify", friend=bob.peer_id)  # compared again
    alice.restart()
    v = alice.call("friends.verification", friend=bob.peer_id)["verification"]
    assert (v["verified"], v["changed"]) == (True, False)
    assert alice.contact(bob.peer_id)["verified"] is True  # type: ignore[index]
