"""Kept-away peers (p2pchat.net.keepaway): who is refused until when, and the throttle on the
addresses they connected from, on a virtual clock."""

from __future__ import annotations

from p2pchat.net.keepaway import INBOUND_INTERVAL_S, MAX_IPS_PER_PEER, MAX_KEPT_AWAY, KeptAway

MALLORY, BOB = "12D3KooWMallory", "12D3KooWBob"


def test_a_peer_is_kept_away_for_its_time_others_are_not() -> None:
    k = KeptAway()
    k.keep_away(MALLORY, 30, {"192.0.2.7"}, now=100.0)
    assert k.remaining(MALLORY, 100.0) == 30 and k.remaining(BOB, 100.0) == 0
    assert [k.refuse_connection(MALLORY, "192.0.2.7", 101.0) for _ in range(3)] == [1, 2, 3]
    assert k.refuse_connection(BOB, "192.0.2.7", 101.0) == 0  # another peer, same address
    assert k.closed(MALLORY) == 3 and k.closed(BOB) == 0
    assert k.remaining(MALLORY, 130.0) == 0
    assert k.refuse_connection(MALLORY, "192.0.2.7", 130.0) == 0  # over: let back in
    # A second cool-down while one lasts extends it, never shortens it.
    k.keep_away(MALLORY, 30, set(), now=200.0)
    k.keep_away(MALLORY, 5, set(), now=201.0)
    assert k.remaining(MALLORY, 201.0) == 29.0


def test_its_addresses_get_one_inbound_connection_per_interval_while_it_lasts() -> None:
    k = KeptAway()
    assert k.admit_inbound("192.0.2.7", 0.0)  # nobody kept away: no throttle
    k.keep_away(MALLORY, 30, {"192.0.2.7"}, now=0.0)
    assert k.admit_inbound("192.0.2.7", 1.0)  # the first goes on to its handshake
    assert not k.admit_inbound("192.0.2.7", 1.5)
    assert not k.admit_inbound("192.0.2.7", 1.0 + INBOUND_INTERVAL_S - 0.01)
    assert k.admit_inbound("192.0.2.7", 1.0 + INBOUND_INTERVAL_S)
    assert k.throttled == 2
    assert all(k.admit_inbound("198.51.100.1", 2.0) for _ in range(10))  # other addresses
    # An address learnt from a connection it opened during the cool-down is throttled too.
    assert k.refuse_connection(MALLORY, "203.0.113.5", 4.0) == 1
    assert k.admit_inbound("203.0.113.5", 4.0) and not k.admit_inbound("203.0.113.5", 4.1)
    # Relayed connections have no address: nothing to throttle.
    k.refuse_connection(MALLORY, "", 4.0)
    assert "" not in k._peers[MALLORY].ips
    # When the cool-down ends, so does the throttle.
    assert all(k.admit_inbound("192.0.2.7", 30.0) for _ in range(10))


def test_state_is_bounded() -> None:
    k = KeptAway()
    for i in range(MAX_KEPT_AWAY + 10):
        k.keep_away(f"peer{i}", 1000 + i, {f"10.0.{i // 256}.{i % 256}"}, now=0.0)
    assert len(k._peers) == MAX_KEPT_AWAY
    assert k.remaining("peer0", 1.0) == 0 and k.remaining(f"peer{MAX_KEPT_AWAY + 9}", 1.0) > 0
    for i in range(50):
        k.refuse_connection("peer1000", f"10.1.0.{i}", 1.0)
    assert len(k._peers["peer1000"].ips) == MAX_IPS_PER_PEER
    k.keep_away(BOB, 1, set(), now=5000.0)  # the expired are forgotten, with their throttle
    assert list(k._peers) == [BOB] and k._admitted == {}
