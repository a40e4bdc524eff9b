"""The registry of one side's running data sessions (p2pchat.files.sessions.Sessions): the
per-friend limit, a restarted session replacing the old one, and ends that cancel."""

from __future__ import annotations

import trio

from p2pchat.files.sessions import MAX_SESSIONS_PER_PEER, Sessions


async def test_a_friend_runs_at_most_the_limit_and_a_restart_replaces_its_session() -> None:
    sessions = Sessions()
    scopes = [trio.CancelScope() for _ in range(MAX_SESSIONS_PER_PEER)]
    for i, scope in enumerate(scopes):
        assert not sessions.full("alice")
        sessions.add(bytes([i]), "alice", scope)
    assert sessions.full("alice") and not sessions.full("bob")
    again = trio.CancelScope()
    sessions.add(bytes([0]), "alice", again)  # the receiver asked again
    assert scopes[0].cancel_called and not again.cancel_called
    assert not sessions.remove(bytes([0]), scopes[0])  # the replaced one ends: no effect
    assert bytes([0]) in sessions
    assert sessions.remove(bytes([0]), again)
    assert bytes([0]) not in sessions and not sessions.full("alice")
    sessions.cancel(bytes([1]))
    assert scopes[1].cancel_called and not scopes[2].cancel_called
    sessions.cancel(b"unknown")  # nothing runs for it: nothing happens
