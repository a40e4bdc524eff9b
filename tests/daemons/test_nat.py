"""Daemons behind real NAT routers (network namespaces), and on a LAN with no bootstrap.

(a) Endpoint-independent NATs: two friends meet by bare ID through the public daemon's DHT,
    chat through its relay, and DCUtR punches a direct connection between them; files take a
    data connection punched the same way, and a transfer that began on the relay moves to it.
(b) Symmetric NATs: no hole can be punched; they still chat, through the relay.
(c) One LAN segment, no bootstrap: mDNS alone lets them find each other.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import (
    Daemon,
    assert_stays,
    befriend_by_id,
    send_and_wait,
    transfer,
    wait_for,
    wait_state,
)
from tests.netlab import Lab, NatLab, lan_lab, nat_lab, skip_reason

_why_not = skip_reason()
pytestmark = [
    pytest.mark.daemons,
    pytest.mark.skipif(_why_not is not None, reason=_why_not or ""),
]


MakeDaemon = Callable[..., Daemon]


def in_ns(
    make_daemon: MakeDaemon, lab: Lab, ns: str, name: str, listen: str, **config: object
) -> Daemon:
    d = make_daemon(name, start=False, prefix=lab.prefix(ns))
    d.configure(listen=[listen], **config)
    return d


def kinds_between(a: Daemon, b: Daemon) -> list[str]:
    for peer in a.call("peers.list")["peers"]:
        if peer["peer_id"] == b.peer_id:
            return [c["kind"] for c in peer["connections"]]
    return []


def offer_accepted(sender: Daemon, receiver: Daemon, name: str, size: int) -> tuple[str, bytes]:
    """``sender`` offers a file of ``size`` random bytes, ``receiver`` accepts it: its ID and
    the bytes it must end up with."""
    src = sender.home / name
    payload = os.urandom(size)
    src.write_bytes(payload)
    tid = str(sender.call("files.send", friend=receiver.peer_id, path=str(src))["transfer"]["id"])
    wait_state(receiver, tid, "offered", timeout=30)
    receiver.call("files.accept", id=tid)
    return tid, payload


def arrived(receiver: Daemon, tid: str, name: str, payload: bytes, timeout: float = 60) -> str:
    """Wait for the file to be complete at ``receiver``, check its bytes; its data path."""
    done = wait_state(receiver, tid, "completed", timeout=timeout)
    assert (receiver.home / "incoming" / name).read_bytes() == payload
    return str(done["data_path"])


def nat_daemons(
    make_daemon: MakeDaemon, lab: NatLab, h2_config: dict[str, Any] | None = None
) -> tuple[Daemon, Daemon, Daemon]:
    pub = in_ns(make_daemon, lab.lab, lab.pub, "pub", f"/ip4/{NatLab.PUB_IP}/tcp/4001").start()
    boot = pub.bootstrap_addr()
    h1 = in_ns(make_daemon, lab.lab, lab.h1, "h1", "/ip4/0.0.0.0/tcp/4001")
    h2 = in_ns(make_daemon, lab.lab, lab.h2, "h2", "/ip4/0.0.0.0/tcp/4001", **(h2_config or {}))
    for d in (h1, h2):
        d.launch("--bootstrap", boot)
    for d in (h1, h2):
        d.wait_started()
    assert pub.call("status")["reachability"] == "public"
    assert pub.call("status")["relay_service"] is True
    for d in (h1, h2):
        status = wait_for(
            lambda d=d: (s := d.call("status"))["relays"] and s["record_seq"] and s,
            timeout=30,
            what="a relay reservation and a published record",
        )
        assert status["reachability"] == "private"
        assert status["relays"] == [pub.peer_id]
    return pub, h1, h2


@pytest.mark.timeout(180)
def test_endpoint_independent_nats_meet_chat_via_relay_and_punch_through(
    make_daemon: MakeDaemon,
) -> None:
    with nat_lab(symmetric=False) as lab:
        pub, h1, h2 = nat_daemons(make_daemon, lab)
        # h2's record lists its relay circuit first: the only way in from outside. (h2 may
        # have published its first record before its reservation; the record it publishes
        # once the circuit exists is the one a lookup must then find.)
        circuit = f"/ip4/{NatLab.PUB_IP}/tcp/4001/p2p/{pub.peer_id}/p2p-circuit"
        found = wait_for(
            lambda: (f := h1.call("dht.find", peer_id=h2.peer_id))["addrs"][0] == circuit and f,
            timeout=30,
            interval=1.0,
            what="h2's record with its relay circuit first",
        )
        assert found["source"] == "record"
        befriend_by_id(h1, h2, "through two NATs", timeout=60)
        # The routers drop unsolicited inbound connections, so a direct connection between
        # h1 and h2 can only come from DCUtR's hole punch.
        wait_for(
            lambda: "direct" in kinds_between(h1, h2),
            timeout=60,
            what="DCUtR to upgrade the relayed connection to a direct one",
        )
        assert "direct" in kinds_between(h2, h1)
        conn_addrs = [
            c["addr"]
            for p in h1.call("peers.list")["peers"]
            if p["peer_id"] == h2.peer_id
            for c in p["connections"]
            if c["kind"] == "direct"
        ]
        # Seen from h1, the direct connection goes to h2's router's public address.
        assert any(NatLab.R2_WAN in a for a in conn_addrs), conn_addrs
        send_and_wait(h2, h1, "and back, directly", timeout=30)
        # Neither can dial the other's data port (each router drops it), so a file takes a
        # connection punched by a simultaneous open, as the libp2p one was, not the stream.
        tid, payload = offer_accepted(h2, h1, "photos.tar", 24 << 20)
        assert arrived(h1, tid, "photos.tar", payload) == "punched"
        assert wait_state(h2, tid, "completed", timeout=30)["data_path"] == "punched"
        assert "via punched" in h1.log_text()

        # Where no hole can be punched (here h1's router lets no new flow out but the libp2p
        # port's, as a symmetric NAT would map it elsewhere), the file still arrives, on the
        # stream inside the direct libp2p connection, after the punch's 5 s.
        lab.lab.sh(
            lab.r1,
            "iptables -I FORWARD -i lan -p tcp --syn ! --sport 4001 ! --dport 4001 -j DROP",
        )
        tid2, payload2 = offer_accepted(h2, h1, "notes.bin", 3 << 20)
        assert arrived(h1, tid2, "notes.bin", payload2) == "stream"
        assert "could not punch a data connection" in h2.log_text()
        assert "direct" in kinds_between(h1, h2)


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("tc") is None, reason="needs tc (iproute2) to slow the relay")
def test_a_relayed_transfer_moves_to_a_punched_connection_when_one_appears(
    make_daemon: MakeDaemon,
) -> None:
    """While the routers let no flow between the two sites, the friends meet through the
    relay and a file starts on the relayed stream. When the way opens, DCUtR punches a direct
    connection at its next try, and the transfer moves to it at once (from its last
    checkpoint) and finishes on a punched data connection, byte for byte."""
    with nat_lab(symmetric=False) as lab:
        for router, other in ((lab.r1, NatLab.R2_WAN), (lab.r2, NatLab.R1_WAN)):
            lab.lab.sh(router, f"iptables -I FORWARD -i lan -d {other} -j DROP")
        # The relay's uplink is slow (8 Mbit/s), so that the transfer outlasts DCUtR's next
        # try by far; the punched path does not go through it.
        lab.lab.sh(lab.pub, "tc qdisc add dev wan root tbf rate 8mbit burst 64kb latency 50ms")
        _pub, h1, h2 = nat_daemons(make_daemon, lab)
        befriend_by_id(h1, h2, "relayed for now", timeout=60)
        assert set(kinds_between(h1, h2)) == {"relayed"}
        tid, payload = offer_accepted(h2, h1, "video.mkv", 40 << 20)  # 40 s through the relay
        wait_for(lambda: transfer(h1, tid)["bytes"] > 0, timeout=30, what="relayed bytes")
        assert transfer(h1, tid)["data_path"] == "stream"
        assert set(kinds_between(h1, h2)) == {"relayed"}
        for router, other in ((lab.r1, NatLab.R2_WAN), (lab.r2, NatLab.R1_WAN)):
            lab.lab.sh(router, f"iptables -D FORWARD -i lan -d {other} -j DROP")
        wait_for(lambda: "direct" in kinds_between(h1, h2), timeout=60, what="DCUtR's next try")
        moved_at = transfer(h1, tid)["bytes"]
        assert moved_at < len(payload), "the transfer ended before it could move"
        assert arrived(h1, tid, "video.mkv", payload, timeout=20) == "punched"
        assert "moving its transfers to it" in h1.log_text()


@pytest.mark.timeout(180)
def test_symmetric_nats_still_chat_through_the_relay(make_daemon: MakeDaemon) -> None:
    with nat_lab(symmetric=True) as lab:
        _pub, h1, h2 = nat_daemons(make_daemon, lab)
        befriend_by_id(h1, h2, "through two symmetric NATs", timeout=60)
        assert kinds_between(h1, h2) and set(kinds_between(h1, h2)) == {"relayed"}
        # Give DCUtR its attempts (they log only at debug level): they must fail, the
        # connection stays relayed throughout, and chat must go on.
        assert_stays(
            lambda: set(kinds_between(h1, h2)) == {"relayed"},
            5,
            interval=0.5,
            what="the relayed-only connection",
        )
        send_and_wait(h2, h1, "still relayed", timeout=30)
        assert set(kinds_between(h1, h2)) == {"relayed"}
        # A file goes through the relay too: no direct dial and no punch over a relayed
        # connection (its remote IP is the relay's), the records ride the libp2p stream.
        tid, payload = offer_accepted(h2, h1, "through-relay.bin", 2 << 20)
        assert arrived(h1, tid, "through-relay.bin", payload) == "stream"
        assert "could not punch" not in h2.log_text()


@pytest.mark.timeout(120)
def test_two_daemons_on_a_lan_find_each_other_with_mdns(make_daemon: MakeDaemon) -> None:
    with lan_lab() as (lab, ns_a, ns_b):
        a = in_ns(make_daemon, lab, ns_a, "a", "/ip4/0.0.0.0/tcp/0", mdns=True)
        b = in_ns(make_daemon, lab, ns_b, "b", "/ip4/0.0.0.0/tcp/0", mdns=True)
        a.launch()
        b.launch()
        a.wait_started()
        b.wait_started()
        wait_for(lambda: kinds_between(a, b), timeout=30, what="mDNS to connect them")
        befriend_by_id(a, b, "found you on the LAN", timeout=60)
        assert "mDNS: found" in a.log_text() or "mDNS: found" in b.log_text()


@pytest.mark.timeout(180)
def test_a_call_between_friends_behind_nats_gets_a_direct_media_path(
    make_daemon: MakeDaemon,
) -> None:
    """No STUN or TURN server is configured: each daemon offers the public IP that libp2p
    peers observed for it as a server-reflexive candidate, and the two NATs (which keep
    source ports) let the checks through once both sides have sent."""
    with nat_lab(symmetric=False) as lab:
        _pub, h1, h2 = nat_daemons(make_daemon, lab)
        befriend_by_id(h1, h2, "call me", timeout=60)
        assert h1.call("status")["call"] is None
        h1.call("calls.start", friend=h2.peer_id)
        wait_for(
            lambda: (h2.call("status")["call"] or {}).get("state") == "ringing_in",
            timeout=30,
            what="h2 to ring",
        )
        h2.call("calls.answer")
        wait_for(
            lambda: (h1.call("status")["call"] or {}).get("state") == "active",
            timeout=30,
            what="media to connect through both NATs",
        )

        def secured() -> dict[str, Any] | None:
            stats: dict[str, Any] = h1.call("calls.list")["calls"][0].get("stats") or {}
            return stats if stats.get("dtls") == "connected" and stats.get("path") else None

        # The stats name the selected path once DTLS is up over it.
        stats = wait_for(secured, timeout=30, what="h1's call stats to show DTLS connected")
        path = stats["path"]
        # Seen from h1, media comes from h2's router's public address: direct, not relayed.
        assert path["relayed"] is False
        assert path["remote"].startswith(f"{NatLab.R2_WAN}:"), path
        assert path["local"].startswith(f"{NatLab.H1_IP}:"), path
        assert stats["dtls"] == "connected" and stats["srtp"] is True
        h1.call("calls.hangup")
        wait_for(
            lambda: h2.call("calls.list")["calls"][0]["released"],
            timeout=30,
            what="the call to end on h2",
        )
