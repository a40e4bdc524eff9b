"""Group calls between real daemons (PROTOCOL.md §16): a mesh of aiortc peer connections
among the members who join, negotiated over ``/p2pchat/conf/1.0.0``; each member's video
encoded once for all the others; one member leaving while the rest go on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2pchat.api import ApiError
from p2pchat.calls.conf_frames import (
    CONF_PROTOCOL,
    ConfEnd,
    ConfFrameDecoder,
    ConfOffer,
    ConfPeers,
    encode_conf,
)
from p2pchat.identity import Identity, load_identity
from p2pchat.net.host import build_host
from p2pchat.paths import KEY_FILE
from tests.daemons.test_calls import _lan_ip
from tests.daemons.test_groups import invite_and_join
from tests.harness import Daemon, befriend, cli, ok, start_all, wait_for
from tests.peers import connect, running

pytestmark = [
    pytest.mark.daemons,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        _lan_ip() is None,
        reason="calls need a non-loopback IPv4 address: ICE host candidates never use loopback",
    ),
]


def group_call(d: Daemon) -> dict[str, Any] | None:
    """``d``'s current or last group call, with stats while it is live."""
    for call in d.call("calls.list")["calls"]:
        if call.get("kind") == "group":
            return dict(call)
    return None


def connected_to(d: Daemon) -> set[str]:
    call = group_call(d)
    if call is None or call["state"] == "ended":
        return set()
    return {p["peer_id"] for p in call["participants"] if p["state"] == "active"}


def frames_in(d: Daemon) -> dict[str, int]:
    call = group_call(d)
    assert call is not None, f"{d.name} has no group call"
    per_peer = (call.get("stats") or {}).get("participants") or {}
    return {peer: int(s.get("video_frames_in", 0)) for peer, s in per_peer.items()}


def decoded_fps(daemons: list[Daemon], seconds: float = 5.0) -> dict[str, dict[str, float]]:
    """Frames each daemon decoded from each other participant per second, over ``seconds``
    (counted by the daemons: a frame counts once the receiver's decoder returned it)."""
    before = {d.name: (time.monotonic(), frames_in(d)) for d in daemons}
    time.sleep(seconds)
    out: dict[str, dict[str, float]] = {}
    for d in daemons:
        then, old = before[d.name]
        now, new = time.monotonic(), frames_in(d)
        out[d.name] = {
            peer: round((count - old.get(peer, 0)) / (now - then), 1) for peer, count in new.items()
        }
    return out


def members_see_each_other(gid: str, daemons: list[Daemon]) -> None:
    """Every member's group streams to every other are up (group calls go to the online)."""

    def online(d: Daemon) -> bool:
        group = next(g for g in d.call("groups.list")["groups"] if g["id"] == gid)
        return all(m["online"] for m in group["members"])

    for d in daemons:
        wait_for(lambda d=d: online(d), 60, what=f"{d.name} to see every member online")


def star_group(
    make_daemon: Callable[..., Daemon], names: list[str], **config: Any
) -> tuple[list[Daemon], str]:
    """The first daemon befriends each other one (who are not friends of each other) and
    makes a group of all of them."""
    daemons = [make_daemon(name, start=False) for name in names]
    for d in daemons:
        if config:
            d.configure(**config)
    start_all(daemons)
    owner, rest = daemons[0], daemons[1:]
    for d in rest:
        befriend(owner, d)
    gid = owner.call("groups.create", name="team")["group"]["id"]
    invite_and_join(owner, gid, *rest)
    members_see_each_other(gid, daemons)
    return daemons, gid


def test_a_four_party_video_call_decodes_every_other_at_20_fps_and_outlives_a_leaver(
    make_daemon: Callable[..., Daemon],
) -> None:
    (alice, bob, carol, dave), gid = star_group(make_daemon, ["alice", "bob", "carol", "dave"])
    everyone = [alice, bob, carol, dave]
    ids = {d.name: d.peer_id for d in everyone}

    # `p2pchat call GROUP` starts it; the group's name is no friend's, so it is the group.
    assert "group video call in team" in ok(cli(alice.home, "call", "team"))
    for d in (bob, carol, dave):
        wait_for(lambda d=d: (group_call(d) or {}).get("state") == "ringing_in", 30)
    # One joins from the CLI, two through the API.
    assert "group video call in team" in ok(cli(bob.home, "answer", "team"))
    carol.call("calls.answer", group=gid)
    dave.call("calls.answer", group="team")
    for d in everyone:
        others = {ids[o.name] for o in everyone if o is not d}
        wait_for(lambda d=d, o=others: connected_to(d) == o, 60, what=f"{d.name}'s mesh")

    time.sleep(1)  # each newcomer's first keyframe (at most two a second)
    rates = decoded_fps(everyone)
    for d in everyone:
        assert set(rates[d.name]) == {ids[o.name] for o in everyone if o is not d}, rates
        assert all(fps >= 20 for fps in rates[d.name].values()), rates
    # Each daemon encoded its picture once, not once per participant; every pair's media
    # path is direct (no relay, no server configured) and DTLS-SRTP protected.
    for d in everyone:
        stats = (group_call(d) or {})["stats"]
        encoder = stats["encoder"]
        assert encoder["encode_once"] is True and encoder["frames_encoded"] > 100, encoder
        for peer, link in stats["participants"].items():
            assert link["codecs"] == ["audio/opus", "video/VP8"], link
            assert (link["dtls"], link["srtp"], link["path"]["relayed"]) == (
                "connected",
                True,
                False,
            ), (d.name, peer, link)

    # `calls` shows each participant and its stats.
    shown = ok(cli(alice.home, "calls"))
    for d in (bob, carol, dave):
        assert ids[d.name] in shown, shown
    assert shown.count("fps") >= 3, shown

    # A 1:1 call to a member in the group call is busy.
    with pytest.raises(ApiError) as busy:
        alice.call("calls.start", friend=bob.peer_id)
    assert busy.value.name == "busy", busy.value

    # Carol leaves; the three others go on, still decoding each other.
    ok(cli(carol.home, "hangup", "team"))
    wait_for(lambda: (group_call(carol) or {}).get("released"), 20, what="carol's call released")
    assert (group_call(carol) or {})["reason"] == "hangup"
    rest = [alice, bob, dave]
    for d in rest:
        others = {ids[o.name] for o in rest if o is not d}
        wait_for(lambda d=d, o=others: connected_to(d) == o, 20, what=f"{d.name} without carol")
    rates = decoded_fps(rest, 4.0)
    for d in rest:
        assert set(rates[d.name]) == {ids[o.name] for o in rest if o is not d}, rates
        assert all(fps >= 20 for fps in rates[d.name].values()), rates

    # Down to two, the call goes on; the last one to leave ends it for the other.
    ok(cli(dave.home, "hangup"))
    wait_for(lambda: connected_to(alice) == {bob.peer_id}, 20)
    alice.call("calls.hangup", group=gid)
    wait_for(lambda: (group_call(bob) or {}).get("released"), 20, what="bob's call to end")
    call = group_call(bob) or {}
    assert (call["reason"], call["ended_by"]) == ("hangup", "member"), call


def test_an_audio_only_call_of_six_members_and_the_starter_leaving(
    make_daemon: Callable[..., Daemon],
) -> None:
    names = ["alice", "bob", "carol", "dave", "erin", "frank"]
    daemons, gid = star_group(make_daemon, names)
    alice, others = daemons[0], daemons[1:]
    ids = {d.name: d.peer_id for d in daemons}
    call = alice.call("calls.start", group=gid, audio_only=True)["call"]
    assert (call["kind"], call["video"]) == ("group", False)
    for d in others:
        wait_for(lambda d=d: (group_call(d) or {}).get("state") == "ringing_in", 30)
        d.call("calls.answer", group=gid)
    for d in daemons:
        want = {ids[o.name] for o in daemons if o is not d}
        wait_for(lambda d=d, w=want: connected_to(d) == w, 90, what=f"{d.name}'s mesh of six")

    def audio_packets(d: Daemon) -> dict[str, int]:
        per_peer = ((group_call(d) or {}).get("stats") or {}).get("participants") or {}
        return {p: int((s.get("audio_in") or {}).get("packets", 0)) for p, s in per_peer.items()}

    before = {d.name: audio_packets(d) for d in daemons}
    time.sleep(3)
    for d in daemons:
        after = audio_packets(d)
        assert set(after) == {ids[o.name] for o in daemons if o is not d}, after
        # Opus every 20 ms: 3 s is 150 packets; well over half must have come from each.
        assert all(after[p] - before[d.name].get(p, 0) >= 75 for p in after), (d.name, after)
        stats = (group_call(d) or {})["stats"]["participants"]
        assert all("video_in" not in s for s in stats.values()), stats  # audio only

    # The one who started it leaves: the five others stay connected to each other.
    alice.call("calls.hangup")
    for d in others:
        want = {ids[o.name] for o in others if o is not d}
        wait_for(lambda d=d, w=want: connected_to(d) == w, 20, what=f"{d.name} without alice")
    before = {d.name: audio_packets(d) for d in others}
    time.sleep(2)
    for d in others:
        after = audio_packets(d)
        assert all(after[p] - before[d.name].get(p, 0) >= 50 for p in after), (d.name, after)
    # Each leaves in turn; the last one's call ends as the one before it leaves.
    for d in others[:-1]:
        d.call("calls.hangup", group="team")
    for d in daemons:
        wait_for(lambda d=d: (group_call(d) or {}).get("released"), 20, what=f"{d.name} ends")
    last = group_call(others[-1]) or {}
    assert (last["reason"], last["ended_by"]) == ("hangup", "member"), last
    with pytest.raises(ApiError) as gone:
        others[-1].call("calls.hangup", group="team")
    assert gone.value.name == "not_found", gone.value


async def _offer_as(identity: Identity, target: Daemon, *raw: bytes) -> list[Any]:
    """Open a conference stream to ``target`` as ``identity``, send ``raw``, and return the
    frames it answers (or the error that ended the stream) within a few seconds."""
    host = build_host(identity)
    got: list[Any] = []
    async with running(host):
        await connect(host, target)
        stream = await host.new_stream(ID.from_base58(target.peer_id), [TProtocol(CONF_PROTOCOL)])
        for data in raw:
            await stream.write(data)
        decoder = ConfFrameDecoder()
        with trio.move_on_after(4):
            while True:
                try:
                    data = await stream.read(65536)
                except Exception as exc:
                    got.append(type(exc).__name__)
                    break
                if not data:
                    break
                got.extend(decoder.feed(data))
    return got


def test_strangers_garbage_declines_and_unanswered_calls(
    make_daemon: Callable[..., Daemon],
) -> None:
    (alice, bob, carol), gid = star_group(
        make_daemon, ["alice", "bob", "carol"], call_ring_timeout=6
    )
    group_id = bytes.fromhex(gid)
    offer = ConfOffer(group_id, b"\x01" * 16, False, "v=0\r\n", ())
    side = alice.call("groups.create", name="side")["group"]["id"]  # Alice and Bob only
    invite_and_join(alice, side, bob)

    # A stranger who knows the group's ID is told it is no member; nothing rings.
    got = trio.run(_offer_as, Identity.generate(), alice, encode_conf(offer))
    assert ConfEnd(offer.conf_id, "not_member") in got, got
    # Garbage, and a stream that does not start with an offer: reset, nothing rings.
    got = trio.run(_offer_as, Identity.generate(), alice, b"\x05junk!")
    assert not [f for f in got if isinstance(f, ConfEnd)], got
    got = trio.run(_offer_as, Identity.generate(), alice, encode_conf(ConfPeers(b"\x01" * 16, ())))
    assert not [f for f in got if isinstance(f, ConfEnd)], got
    assert group_call(alice) is None
    assert alice.call("status")["call"] is None

    # Bob declines; Carol joins: the call is Alice and Carol, and Bob is not asked again.
    alice.call("calls.start", group="team", audio_only=True)
    for d in (bob, carol):
        wait_for(lambda d=d: (group_call(d) or {}).get("state") == "ringing_in", 30)
    bob.call("calls.hangup", group="team")
    carol.call("calls.answer")
    wait_for(lambda: connected_to(alice) == {carol.peer_id}, 30, what="alice and carol")
    wait_for(lambda: connected_to(carol) == {alice.peer_id}, 30, what="carol and alice")
    declined = group_call(bob) or {}
    assert (declined["reason"], declined["ended_by"], declined["released"]) == (
        "declined",
        "you",
        True,
    ), declined
    assert [p["peer_id"] for p in (group_call(alice) or {})["participants"]] == [carol.peer_id]
    with pytest.raises(ApiError) as nothing:
        bob.call("calls.answer", group="team")
    assert nothing.value.name == "not_found", nothing.value
    # Bob, with the call's ID but another group's (one Alice shares with him, and Carol is
    # not in), is no member of this call: refused, and nothing changes. (Bob's daemon stays
    # stopped from here: its identity is used by a scripted host.)
    call_id = bytes.fromhex((group_call(alice) or {})["id"])
    bob.stop()
    other = ConfOffer(bytes.fromhex(side), call_id, False, "v=0\r\n", (carol.peer_id,))
    got = trio.run(_offer_as, load_identity(bob.home / KEY_FILE), alice, encode_conf(other))
    assert ConfEnd(call_id, "not_member") in got, got
    assert [p["peer_id"] for p in (group_call(alice) or {})["participants"]] == [carol.peer_id]
    # In a group call, a 1:1 call reaching Carol is busy, and so is a call Alice starts.
    with pytest.raises(ApiError) as busy:
        alice.call("calls.start", group="team")
    assert busy.value.name == "busy", busy.value
    carol.call("calls.hangup")
    wait_for(lambda: (group_call(alice) or {}).get("released"), 20, what="alice's call ends")

    # Nobody answers: it rings for the ring timeout everywhere, then ends as timeout.
    alice.call("calls.start", group=gid, audio_only=True)
    for d in (carol,):
        wait_for(
            lambda d=d: (group_call(d) or {}).get("state") == "ringing_in",
            30,
            what=f"{d.name} to ring ({group_call(alice)})",
        )
    for d in (alice, carol):
        wait_for(lambda d=d: (group_call(d) or {}).get("released"), 30, what=f"{d.name} times out")
        assert (group_call(d) or {})["reason"] == "timeout", group_call(d)
    # Calling a group with no other member online, or one we are not in, fails clearly.
    carol.stop()
    wait_for(
        lambda: (
            not any(
                m["online"] and not m["me"]
                for m in next(g for g in alice.call("groups.list")["groups"])["members"]
            )
        ),
        30,
    )
    with pytest.raises(ApiError) as alone:
        alice.call("calls.start", group="team")
    assert alone.value.name == "unreachable", alone.value
    with pytest.raises(ApiError) as unknown:
        alice.call("calls.start", group="nosuchgroup")
    assert unknown.value.name == "not_found", unknown.value
