"""Group-call signalling without I/O: the ``/p2pchat/conf/1.0.0`` frames, the conference
state machine's transitions, and a simulated mesh (members joining in any order, any
delivery order, offering each other at once) that always closes."""

from __future__ import annotations

import contextlib
import random
from collections import deque
from dataclasses import dataclass, field

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.calls.conf_frames import (
    MAX_PARTICIPANTS,
    ConfAnswer,
    ConfEnd,
    ConfFrameDecoder,
    ConfOffer,
    ConfPeers,
    decode_conf,
    encode_conf,
)
from p2pchat.calls.conference import (
    CONNECT_TIMEOUT,
    RING_TIMEOUT,
    Announce,
    Answer,
    ApplyAnswer,
    Conference,
    ConfState,
    Ended,
    EndLink,
    LinkState,
    Offer,
    Output,
    Refuse,
    Ring,
)
from p2pchat.identity import Identity
from p2pchat.wire import FrameError

GID = b"g" * 16
CID = b"c" * 16
PEERS = sorted(Identity.generate().peer_id for _ in range(8))
A, B, C, D = PEERS[:4]  # A sorts first, then B, C, D
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"


# --- frames --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        ConfOffer(GID, CID, True, SDP, (A, B)),
        ConfOffer(GID, CID, False, SDP, ()),
        ConfAnswer(CID, SDP, (C,)),
        ConfPeers(CID, (A, B, C)),
        ConfEnd(CID, "hangup"),
        ConfEnd(CID, "glare"),
    ],
)
def test_every_frame_round_trips(frame: object) -> None:
    data = encode_conf(frame)  # type: ignore[arg-type]
    assert ConfFrameDecoder().feed(data) == [frame]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"t": "conf-end", "c": CID[:8], "reason": "hangup"}, "'c' must be 16 bytes"),
        ({"t": "conf-end", "c": CID, "reason": "bored"}, "unknown end reason"),
        ({"t": "conf-wat", "c": CID}, "unknown conference frame type"),
        ({"t": "conf-peers", "c": CID, "peers": "A"}, "'peers' must be a list"),
        ({"t": "conf-peers", "c": CID, "peers": PEERS[:MAX_PARTICIPANTS]}, "fewer than"),
        ({"t": "conf-peers", "c": CID, "peers": [A, A]}, "each peer ID once"),
        ({"t": "conf-peers", "c": CID, "peers": ["12D3KooWnotanid"]}, "not a peer ID"),
        ({"t": "conf-peers", "c": CID, "peers": [7]}, "must hold peer IDs"),
        ({"t": "conf-answer", "c": CID, "sdp": "x\x00", "peers": []}, "'sdp'"),
        ({"t": "conf-answer", "c": CID, "sdp": "x" * 40000, "peers": []}, "'sdp'"),
        ({"t": "conf-offer", "c": CID, "g": GID, "video": 1, "sdp": SDP, "peers": []}, "video"),
        ({"t": "conf-offer", "c": CID, "video": True, "sdp": SDP, "peers": []}, "'g' must be"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(body: dict[str, object], why: str) -> None:
    with pytest.raises(FrameError, match=why):
        decode_conf(cbor2.dumps(body))


def test_not_a_map_and_trailing_bytes_are_refused() -> None:
    with pytest.raises(FrameError):
        decode_conf(cbor2.dumps([1, 2]))
    with pytest.raises(FrameError):
        decode_conf(cbor2.dumps({"t": "conf-end", "c": CID, "reason": "hangup"}) + b"\x00")


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_conf(data)


# --- transitions ---------------------------------------------------------------------------


def test_starting_offers_every_online_member_and_times_out_unanswered() -> None:
    conf, out = Conference.start(GID, CID, True, A, [B, C, A], now=0.0)
    assert out == [Offer(B), Offer(C)]
    assert conf.state is ConfState.JOINED
    assert {p: link.state for p, link in conf.links.items()} == {
        B: LinkState.OFFER_OUT,
        C: LinkState.OFFER_OUT,
    }
    assert conf.tick(RING_TIMEOUT - 1) == []
    out = conf.tick(RING_TIMEOUT)
    assert out[:2] == [EndLink(B, "timeout"), EndLink(C, "timeout")]
    assert out[-1] == Ended("timeout", by_remote=False)
    assert not conf.live


def test_starting_with_nobody_online_ends_at_once() -> None:
    conf, out = Conference.start(GID, CID, True, A, [A], now=0.0)
    assert out == [Ended("timeout", by_remote=False)]
    assert not conf.live


def test_a_ringing_member_holds_offers_learns_participants_and_joins_them_all() -> None:
    conf, out = Conference.ringing(GID, CID, True, D, A, (), now=0.0)
    assert out == [Ring()] and conf.state is ConfState.RINGING
    # B joined meanwhile and offers too; A tells us C is in.
    assert conf.offer_from(B, (A,), now=1.0) == []
    assert conf.peers_from(A, (B, C), now=1.0) == []
    assert conf.links[B].state is LinkState.OFFER_IN
    out = conf.answer(now=2.0)
    assert out == [Answer(A), Answer(B), Announce(), Offer(C)]
    assert conf.participants() == (A, B)
    assert conf.links[C].state is LinkState.OFFER_OUT


def test_a_joined_member_answers_offers_at_once_and_offers_whom_it_learns() -> None:
    conf, _ = Conference.start(GID, CID, True, A, [B], now=0.0)
    out = conf.offer_from(C, (B, D), now=1.0)
    assert out == [Answer(C), Announce(), Offer(D)]
    assert conf.links[C].state is LinkState.CONNECTING
    # B was offered already: named again, it is not offered twice.
    assert Offer(B) not in out


def test_glare_keeps_the_offer_of_the_peer_that_sorts_first_on_both_sides() -> None:
    low, _ = Conference.start(GID, CID, True, A, [B], now=0.0)
    high, _ = Conference.start(GID, CID, True, B, [A], now=0.0)
    # Each gets the other's offer while its own is out.
    assert low.offer_from(B, (), now=1.0) == [Refuse(B, "glare")]
    assert low.links[B].state is LinkState.OFFER_OUT
    out = high.offer_from(A, (), now=1.0)
    assert out[:2] == [EndLink(A, "glare", tell=False), Answer(A)]
    assert high.links[A].state is LinkState.CONNECTING


def test_answers_connect_and_a_leaver_is_not_offered_again() -> None:
    conf, _ = Conference.start(GID, CID, True, A, [B, C], now=0.0)
    assert conf.answer_from(B, (), now=1.0) == [ApplyAnswer(B), Announce()]
    assert conf.link_connected(B) == []
    assert conf.links[B].state is LinkState.ACTIVE and conf.ever_connected
    assert conf.next_deadline() == RING_TIMEOUT  # C's offer still waits
    out = conf.link_ended(B, "hangup", by_remote=True)
    assert out == [EndLink(B, "hangup", tell=False), Announce()]
    assert conf.live  # C's offer is still out
    # C names B (stale news): B left, so it is not offered again.
    conf.answer_from(C, (B,), now=2.0)
    assert B not in conf.links
    # C leaves too: the call is over (everyone else left).
    out = conf.link_ended(C, "hangup", by_remote=True)
    assert out[-1] == Ended("hangup", by_remote=True)


def test_an_answer_nobody_asked_for_ends_that_link() -> None:
    conf, _ = Conference.start(GID, CID, True, A, [B, C], now=0.0)
    conf.answer_from(B, (), now=1.0)
    out = conf.answer_from(B, (), now=1.5)  # a second answer on the same link
    assert out[0] == EndLink(B, "failed", tell=True)
    assert conf.live and B not in conf.links


def test_a_link_that_never_connects_fails_after_the_connect_timeout() -> None:
    conf, _ = Conference.start(GID, CID, True, A, [B], now=0.0)
    conf.answer_from(B, (), now=1.0)
    assert conf.tick(1.0 + CONNECT_TIMEOUT - 0.1) == []
    out = conf.tick(1.0 + CONNECT_TIMEOUT)
    assert out[0] == EndLink(B, "failed", tell=True)
    assert out[-1] == Ended("failed", by_remote=False)


def test_decline_hangup_and_the_ring_ending_when_every_offerer_left() -> None:
    conf, _ = Conference.ringing(GID, CID, True, C, A, (), now=0.0)
    conf.offer_from(B, (), now=0.5)
    assert conf.decline() == [
        EndLink(A, "declined"),
        EndLink(B, "declined"),
        Ended("declined", by_remote=False),
    ]
    assert conf.offer_from(A, (), now=1.0) == [Refuse(A, "hangup")]

    ringing, _ = Conference.ringing(GID, CID, True, C, A, (), now=0.0)
    out = ringing.link_ended(A, "hangup", by_remote=True)
    assert out[-1] == Ended("hangup", by_remote=True)
    assert ringing.answer(1.0) == []  # nothing left to join

    ringing, _ = Conference.ringing(GID, CID, True, C, A, (), now=0.0)
    out = ringing.tick(RING_TIMEOUT)
    assert out == [EndLink(A, "timeout"), Ended("timeout", by_remote=False)]


def test_a_new_offer_from_a_linked_peer_replaces_the_old_link() -> None:
    conf, _ = Conference.start(GID, CID, True, B, [A], now=0.0)
    conf.answer_from(A, (), now=1.0)
    conf.link_connected(A)
    out = conf.offer_from(A, (), now=2.0)  # A lost its side and starts again
    assert out[:3] == [EndLink(A, "failed", tell=False), Announce(), Answer(A)]
    assert conf.links[A].state is LinkState.CONNECTING and not conf.links[A].ours


def test_a_late_glare_offer_from_the_higher_peer_is_refused_after_its_answer() -> None:
    # A and B offered each other; B took A's offer and answered it, and B's own offer (on
    # its own stream) only now reaches A: A refuses it and keeps the link it has.
    conf, _ = Conference.start(GID, CID, True, A, [B], now=0.0)
    conf.answer_from(B, (), now=1.0)
    assert conf.offer_from(B, (), now=1.1) == [Refuse(B, "glare")]
    assert conf.links[B].state is LinkState.CONNECTING


def test_the_mesh_is_capped() -> None:
    conf, _ = Conference.start(GID, CID, True, PEERS[0], PEERS[1:MAX_PARTICIPANTS], now=0.0)
    assert len(conf.links) == MAX_PARTICIPANTS - 1
    extra = Identity.generate().peer_id
    assert conf.offer_from(extra, (), now=1.0) == [Refuse(extra, "full")]
    conf.peers_from(PEERS[1], (extra,), now=1.0)
    assert extra not in conf.links


# --- a simulated mesh ------------------------------------------------------------------------


@dataclass
class Node:
    me: str
    conf: Conference | None = None
    streams: dict[str, int] = field(default_factory=dict)
    """peer → the stream our current link with it uses."""
    declines: bool = False


class Mesh:
    """Members exchanging frames over simulated streams, delivered in a random order (each
    stream in order), doing what the adapter does with each output."""

    def __init__(self, peers: list[str], rng: random.Random) -> None:
        self.nodes = {p: Node(p) for p in peers}
        self.rng = rng
        self.queues: dict[int, deque[tuple[str, str, str, object]]] = {}
        self.next_stream = 0
        self.to_answer: list[str] = []

    def send(self, stream: int, src: str, dst: str, kind: str, data: object = None) -> None:
        self.queues.setdefault(stream, deque()).append((src, dst, kind, data))

    def others(self, node: Node, peer: str) -> tuple[str, ...]:
        assert node.conf is not None
        return tuple(p for p in node.conf.participants() if p != peer)

    def apply(self, node: Node, outputs: list[Output], new_stream: int | None = None) -> None:
        for out in outputs:
            match out:
                case Offer(peer):
                    self.next_stream += 1
                    node.streams[peer] = self.next_stream
                    self.send(self.next_stream, node.me, peer, "offer", self.others(node, peer))
                case Answer(peer):
                    self.send(node.streams[peer], node.me, peer, "answer", self.others(node, peer))
                case ApplyAnswer(peer):
                    # Media comes up on both sides of this stream.
                    self.send(node.streams[peer], node.me, peer, "media")
                    self.apply(node, node.conf.link_connected(peer))  # type: ignore[union-attr]
                case Refuse(peer, reason):
                    assert new_stream is not None
                    self.send(new_stream, node.me, peer, "end", reason)
                case EndLink(peer, reason, tell):
                    stream = node.streams.pop(peer, None)
                    if tell and stream is not None:
                        self.send(stream, node.me, peer, "end", reason)
                case Announce():
                    for peer, stream in node.streams.items():
                        self.send(stream, node.me, peer, "peers", self.others(node, peer))
                case Ring():
                    self.to_answer.append(node.me)
                case Ended():
                    pass

    def deliver(self, stream: int) -> None:
        src, dst, kind, data = self.queues[stream].popleft()
        node = self.nodes[dst]
        conf = node.conf
        if kind == "offer":
            peers = data
            assert isinstance(peers, tuple)
            if conf is None or not conf.live:
                if conf is not None:  # we were in it and left: refused, not rung again
                    self.send(stream, dst, src, "end", "hangup")
                    return
                node.conf, out = Conference.ringing(GID, CID, True, dst, src, peers, 0.0)
                node.streams[src] = stream
                self.apply(node, out)
                return
            out = conf.offer_from(src, peers, 0.0)
            refused = [o for o in out if isinstance(o, Refuse)]
            if refused:
                self.apply(node, out, new_stream=stream)
                return
            old = [o for o in out if isinstance(o, EndLink) and o.peer == src]
            self.apply(node, old)
            node.streams[src] = stream
            self.apply(node, [o for o in out if o not in old])
            return
        if conf is None or node.streams.get(src) != stream:
            return  # a stale stream: the adapter has closed it
        if kind == "answer":
            assert isinstance(data, tuple)
            self.apply(node, conf.answer_from(src, data, 0.0))
        elif kind == "peers":
            assert isinstance(data, tuple)
            self.apply(node, conf.peers_from(src, data, 0.0))
        elif kind == "media":
            self.apply(node, conf.link_connected(src))
        elif kind == "end":
            assert isinstance(data, str)
            self.apply(node, conf.link_ended(src, data, by_remote=True))

    def run(self, answer_chance: float) -> None:
        for _ in range(20_000):
            ready = [s for s, q in self.queues.items() if q]
            if self.to_answer and (not ready or self.rng.random() < answer_chance):
                who = self.to_answer.pop(self.rng.randrange(len(self.to_answer)))
                node = self.nodes[who]
                assert node.conf is not None
                if node.declines:
                    self.apply(node, node.conf.decline())
                else:
                    self.apply(node, node.conf.answer(0.0))
                continue
            if not ready:
                return
            self.deliver(self.rng.choice(ready))
        raise AssertionError("the simulated mesh never settled")


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(2, MAX_PARTICIPANTS),
    seed=st.integers(0, 2**32),
    answer_chance=st.floats(0.01, 1.0),
    decliners=st.sets(st.integers(1, 5), max_size=2),
)
def test_the_mesh_closes_whatever_the_order(
    size: int, seed: int, answer_chance: float, decliners: set[int]
) -> None:
    peers = PEERS[:size]
    rng = random.Random(seed)
    rng.shuffle(peers)
    mesh = Mesh(peers, rng)
    starter = mesh.nodes[peers[0]]
    for i in decliners:
        if i < size:
            mesh.nodes[peers[i]].declines = True
    starter.conf, out = Conference.start(GID, CID, True, starter.me, peers, 0.0)
    mesh.apply(starter, out)
    mesh.run(answer_chance)

    joined = [n for n in mesh.nodes.values() if not n.declines]
    for node in joined:
        assert node.conf is not None
        want = {n.me for n in joined} - {node.me}
        if not want:
            assert not node.conf.live  # alone: everyone else declined
            continue
        assert node.conf.live, (node.me, node.conf)
        assert {p: link.state for p, link in node.conf.links.items()} == dict.fromkeys(
            want, LinkState.ACTIVE
        ), node.me
    for node in mesh.nodes.values():
        if node.declines:
            assert node.conf is not None and node.conf.end_reason == "declined"


def test_a_member_that_keeps_failing_is_not_offered_again_until_it_offers() -> None:
    conf, _ = Conference.start(GID, CID, True, A, [B, C], now=0.0)
    conf.answer_from(B, (), now=0.1)
    conf.link_connected(B)
    # B keeps naming C, whom we cannot reach: we try twice, then no more.
    conf.link_ended(C, "failed", by_remote=False)
    assert conf.peers_from(B, (C,), now=1.0) == [Offer(C)]
    conf.link_ended(C, "timeout", by_remote=False)
    assert conf.peers_from(B, (C,), now=2.0) == []
    assert conf.peers_from(B, (C,), now=3.0) == []
    # C offering itself is always heard.
    assert Answer(C) in conf.offer_from(C, (), now=4.0)


def test_a_peer_that_connected_is_offered_again_after_each_drop() -> None:
    """Failures count only towards giving up on a peer we cannot reach: one whose link
    connected and then dropped (twice) is still offered again when others name it."""
    conf, _ = Conference.start(GID, CID, True, A, [B, C], now=0.0)
    conf.answer_from(B, (), now=0.1)
    conf.link_connected(B)
    for now in (1.0, 2.0):
        conf.answer_from(C, (), now=now)
        conf.link_connected(C)
        conf.link_ended(C, "failed", by_remote=False)  # its media dropped
        assert conf.peers_from(B, (C,), now=now + 0.5) == [Offer(C)]
    assert C not in conf.gone


def test_participants_who_left_the_group_are_not_dialled() -> None:
    conf, _ = Conference.ringing(GID, CID, True, D, A, (B, C), now=0.0)
    assert conf.known == {B, C}
    conf.forget_all_but(frozenset({A, B, D}))  # C was removed from the group meanwhile
    out = conf.answer(now=1.0)
    assert Offer(B) in out and Offer(C) not in out


def test_links_learned_later_wait_the_configured_ring_timeout() -> None:
    conf, _ = Conference.start(GID, CID, True, A, [B], now=0.0, ring_timeout=7.0)
    conf.answer_from(B, (C,), now=1.0)
    assert conf.links[C].deadline == 8.0


def test_the_shared_encoder_coalesces_keyframe_requests() -> None:
    from p2pchat.calls.conf_media import KEYFRAME_MIN_INTERVAL, SharedVideoEncoder

    encoder = SharedVideoEncoder(source=None)
    try:
        assert encoder._keyframe_now()  # the first frame
        encoder.request_keyframe()
        encoder.request_keyframe()
        assert not encoder._keyframe_now()  # too soon after the last one: it waits...
        encoder._last_key -= KEYFRAME_MIN_INTERVAL
        assert encoder._keyframe_now()  # ...but is not lost
        assert not encoder._keyframe_now()  # and the two requests made one keyframe
    finally:
        encoder._worker.shutdown()
