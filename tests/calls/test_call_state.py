"""Call signalling without I/O: every frame's encoding and validation, and every transition
of the call state machine, including glare, busy and timeouts."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pchat.calls.frames import (
    END_REASONS,
    MAX_SDP_BYTES,
    CallAnswer,
    CallCandidate,
    CallEnd,
    CallFrameDecoder,
    CallOffer,
    CallRinging,
    decode_call,
    encode_call,
)
from p2pchat.calls.state import (
    CONNECT_TIMEOUT,
    GLARE_MEMORY,
    MEDIA_LOSS_GRACE,
    RING_TIMEOUT,
    AddCandidate,
    ApplyAnswer,
    Call,
    CallProtocolError,
    CallState,
    Connected,
    Direction,
    Ended,
    Incoming,
    RemoteRinging,
    Ring,
    Send,
    decide_incoming,
)
from p2pchat.wire import FrameError, encode_varint

CID = bytes(range(16))
OTHER = bytes(16)
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CAND = "candidate:1 1 udp 2130706431 10.0.0.2 40000 typ host"

ALL_FRAMES = [
    CallOffer(CID, True, SDP),
    CallRinging(CID),
    CallAnswer(CID, SDP),
    CallCandidate(CID, CAND, "0", 0),
    CallCandidate(CID, "", "", 0),
    *[CallEnd(CID, reason) for reason in END_REASONS],
]


# --- frames --------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ALL_FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_round_trips(frame: object) -> None:
    wire = encode_call(frame)  # type: ignore[arg-type]
    assert CallFrameDecoder().feed(wire) == [frame]


def test_the_decoder_reassembles_frames_split_anywhere() -> None:
    data = b"".join(encode_call(f) for f in ALL_FRAMES)
    for step in (1, 3, 7, 64):
        decoder = CallFrameDecoder()
        got = []
        for i in range(0, len(data), step):
            got += decoder.feed(data[i : i + step])
        assert got == ALL_FRAMES


def _body(**fields: object) -> bytes:
    return cbor2.dumps(fields)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"t": "call-offer", "call": CID[:15], "video": True, "sdp": SDP}, "16 bytes"),
        ({"t": "call-offer", "call": CID, "video": 1, "sdp": SDP}, "video"),
        (
            {"t": "call-offer", "call": CID, "video": True, "sdp": "x" * (MAX_SDP_BYTES + 1)},
            "limit",
        ),
        ({"t": "call-offer", "call": CID, "video": True, "sdp": "v=0\x1b[2J"}, "control"),
        ({"t": "call-answer", "call": CID, "sdp": 5}, "text"),
        (
            {"t": "call-candidate", "call": CID, "candidate": "x" * 600, "mid": "0", "index": 0},
            "limit",
        ),
        ({"t": "call-candidate", "call": CID, "candidate": CAND, "mid": "0", "index": 99}, "index"),
        (
            {"t": "call-candidate", "call": CID, "candidate": CAND, "mid": "0", "index": True},
            "index",
        ),
        (
            {"t": "call-candidate", "call": CID, "candidate": "a\nb", "mid": "0", "index": 0},
            "control",
        ),
        ({"t": "call-end", "call": CID, "reason": "bored"}, "reason"),
        ({"t": "call-dance", "call": CID}, "unknown"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(
    fields: dict[str, object], problem: str
) -> None:
    with pytest.raises(FrameError, match=problem):
        decode_call(_body(**fields))


def test_we_never_send_what_we_would_refuse() -> None:
    with pytest.raises(FrameError):
        encode_call(CallEnd(CID, "bored"))
    with pytest.raises(FrameError):
        encode_call(CallOffer(CID[:4], True, SDP))


def test_a_decoder_is_poisoned_after_a_bad_frame() -> None:
    decoder = CallFrameDecoder()
    bad = _body(t="call-end", call=CID, reason="nope")
    with pytest.raises(FrameError):
        decoder.feed(encode_varint(len(bad)) + bad)
    with pytest.raises(FrameError):
        decoder.feed(encode_call(CallRinging(CID)))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        CallFrameDecoder().feed(data)


# --- the state machine ---------------------------------------------------------------------


def outgoing(now: float = 0.0) -> Call:
    call, out = Call.outgoing(CID, True, SDP, now)
    assert out == [Send(CallOffer(CID, True, SDP))]
    assert call.state is CallState.OFFERING
    return call


def incoming(now: float = 0.0) -> Call:
    call, out = Call.incoming(CallOffer(CID, False, SDP), now)
    assert out == [Send(CallRinging(CID)), Ring()]
    assert (call.state, call.remote_sdp, call.video) == (CallState.RINGING_IN, SDP, False)
    return call


def test_a_call_from_dial_to_hangup_on_both_sides() -> None:
    caller, callee = outgoing(), incoming()
    assert caller.receive(CallRinging(CID), 1) == [RemoteRinging()]
    assert caller.state is CallState.RINGING_OUT
    assert callee.answer("answer-sdp", 2) == [Send(CallAnswer(CID, "answer-sdp"))]
    assert callee.state is CallState.CONNECTING
    assert caller.receive(CallAnswer(CID, "answer-sdp"), 2) == [ApplyAnswer("answer-sdp")]
    assert caller.local_candidate(CAND, "0", 0) == [Send(CallCandidate(CID, CAND, "0", 0))]
    assert callee.receive(CallCandidate(CID, CAND, "0", 0), 2) == [AddCandidate(CAND, "0", 0)]
    assert caller.media_connected() == [Connected()]
    assert callee.media_connected() == [Connected()]
    assert caller.state is callee.state is CallState.ACTIVE
    assert caller.tick(10_000) == []  # an active call has no deadline
    assert callee.hangup() == [Send(CallEnd(CID, "hangup")), Ended("hangup", False)]
    assert caller.receive(CallEnd(CID, "hangup"), 3) == [Ended("hangup", True)]
    assert caller.state is callee.state is CallState.ENDED
    assert caller.ended_by_remote and not callee.ended_by_remote


def test_the_callee_declines() -> None:
    caller, callee = outgoing(), incoming()
    assert callee.decline() == [Send(CallEnd(CID, "declined")), Ended("declined", False)]
    assert caller.receive(CallEnd(CID, "declined"), 1) == [Ended("declined", True)]
    assert caller.end_reason == "declined"


def test_the_caller_gives_up_before_an_answer() -> None:
    caller, callee = outgoing(), incoming()
    caller.receive(CallRinging(CID), 0)
    assert caller.hangup() == [Send(CallEnd(CID, "hangup")), Ended("hangup", False)]
    assert callee.receive(CallEnd(CID, "hangup"), 1) == [Ended("hangup", True)]


@pytest.mark.parametrize("side", ["caller", "callee"])
def test_nobody_answers_in_time(side: str) -> None:
    call = outgoing() if side == "caller" else incoming()
    assert call.tick(RING_TIMEOUT - 0.01) == []
    assert call.tick(RING_TIMEOUT) == [Send(CallEnd(CID, "timeout")), Ended("timeout", False)]
    assert call.tick(RING_TIMEOUT + 1) == []


def test_media_that_never_connects_times_out() -> None:
    callee = incoming()
    callee.answer("a", 5)
    assert callee.tick(5 + CONNECT_TIMEOUT - 0.01) == []
    assert callee.tick(5 + CONNECT_TIMEOUT)[-1] == Ended("timeout", False)


def active(now: float = 0) -> Call:
    call = outgoing()
    call.receive(CallAnswer(CID, "a"), now)
    call.media_connected()
    assert call.state is CallState.ACTIVE
    return call


def test_lost_media_in_an_active_call_waits_for_the_friends_call_end() -> None:
    # The friend hung up: its DTLS close (UDP) overtook its call-end (libp2p stream).
    call = active()
    assert call.media_lost(10) == []
    assert call.state is CallState.ACTIVE and call.live
    assert call.tick(10 + MEDIA_LOSS_GRACE - 0.01) == []
    assert call.receive(CallEnd(CID, "hangup"), 11) == [Ended("hangup", True)]
    assert (call.end_reason, call.ended_by_remote) == ("hangup", True)


def test_lost_media_with_no_call_end_ends_as_failed_after_the_grace() -> None:
    call = active()
    assert call.media_lost(10) == []
    assert call.media_lost(11) == []  # a second report does not push the deadline back
    assert call.tick(10 + MEDIA_LOSS_GRACE) == [
        Send(CallEnd(CID, "failed")),
        Ended("failed", False),
    ]
    assert call.media_lost(20) == [] and call.tick(100) == []


def test_lost_media_before_the_call_is_active_fails_at_once() -> None:
    call = outgoing()
    call.receive(CallAnswer(CID, "a"), 0)  # connecting
    assert call.media_lost(1) == [Send(CallEnd(CID, "failed")), Ended("failed", False)]
    ringing = incoming()
    assert ringing.media_lost(1) == [Send(CallEnd(CID, "failed")), Ended("failed", False)]


def test_lost_media_then_our_hangup_ends_as_hangup() -> None:
    call = active()
    call.media_lost(10)
    assert call.hangup() == [Send(CallEnd(CID, "hangup")), Ended("hangup", False)]


def test_media_failure_and_a_vanished_stream_end_the_call() -> None:
    call = outgoing()
    call.receive(CallAnswer(CID, "a"), 0)
    assert call.media_failed() == [Send(CallEnd(CID, "failed")), Ended("failed", False)]
    other = incoming()
    assert other.stream_closed() == [Ended("failed", True)]
    assert other.stream_closed() == []


@pytest.mark.parametrize(
    "frame",
    [
        CallOffer(CID, True, SDP),  # an offer inside a call
        CallRinging(CID),  # the caller does not ring
        CallAnswer(CID, SDP),  # nor answer
        CallEnd(OTHER, "hangup"),  # another call's ID
    ],
)
def test_frames_a_callee_must_never_get_fail_the_call(frame: object) -> None:
    call = incoming()
    out = call.receive(frame, 1)  # type: ignore[arg-type]
    assert out == [Send(CallEnd(CID, "failed")), Ended("failed", False)]


def test_an_answer_after_connecting_fails_the_call() -> None:
    call = outgoing()
    call.receive(CallAnswer(CID, "a"), 0)
    assert call.receive(CallAnswer(CID, "a"), 0)[-1] == Ended("failed", False)


def test_local_actions_in_the_wrong_state_are_bugs() -> None:
    with pytest.raises(CallProtocolError):
        outgoing().answer("a", 0)
    with pytest.raises(CallProtocolError):
        outgoing().decline()
    ended = incoming()
    ended.hangup()
    with pytest.raises(CallProtocolError):
        ended.answer("a", 0)
    assert ended.hangup() == [] and ended.media_failed() == [] and ended.media_connected() == []


def test_the_callee_trickles_only_after_answering() -> None:
    call = incoming()
    assert call.local_candidate(CAND, "0", 0) == []
    call.answer("a", 0)
    assert call.local_candidate(CAND, "0", 0) == [Send(CallCandidate(CID, CAND, "0", 0))]


FRAMES_FOR_EXHAUSTION = [*ALL_FRAMES, CallRinging(OTHER), CallAnswer(OTHER, SDP)]


def reach(direction: Direction, state: CallState) -> Call:
    call = outgoing() if direction is Direction.OUT else incoming()
    steps = {
        (Direction.OUT, CallState.RINGING_OUT): lambda c: c.receive(CallRinging(CID), 0),
        (Direction.OUT, CallState.CONNECTING): lambda c: c.receive(CallAnswer(CID, "a"), 0),
        (Direction.IN, CallState.CONNECTING): lambda c: c.answer("a", 0),
        (Direction.OUT, CallState.ENDED): lambda c: c.hangup(),
        (Direction.IN, CallState.ENDED): lambda c: c.hangup(),
    }
    if state is CallState.ACTIVE:
        reach_connecting = steps[(direction, CallState.CONNECTING)]
        reach_connecting(call)
        call.media_connected()
    elif (direction, state) in steps:
        steps[(direction, state)](call)
    assert call.state is state
    return call


STATES = {
    Direction.OUT: [CallState.OFFERING, CallState.RINGING_OUT, CallState.CONNECTING],
    Direction.IN: [CallState.RINGING_IN, CallState.CONNECTING],
}


@pytest.mark.parametrize(
    ("direction", "state", "frame"),
    [
        (d, s, f)
        for d in Direction
        for s in [*STATES[d], CallState.ACTIVE, CallState.ENDED]
        for f in FRAMES_FOR_EXHAUSTION
    ],
)
def test_every_frame_in_every_state_gives_a_defined_result(
    direction: Direction, state: CallState, frame: object
) -> None:
    """Never an exception; an ended call ignores everything; a live call that ends reports
    exactly one Ended and tells the friend only if the friend did not end it."""
    call = reach(direction, state)
    out = call.receive(frame, 1)  # type: ignore[arg-type]
    if state is CallState.ENDED:
        assert out == []
        return
    ended = [o for o in out if isinstance(o, Ended)]
    if call.state is CallState.ENDED:
        assert len(ended) == 1
        told = [o for o in out if isinstance(o, Send)]
        assert bool(told) == (not ended[0].by_remote)
    else:
        assert ended == []


# --- busy and glare ------------------------------------------------------------------------


def test_a_second_caller_gets_busy_and_a_free_daemon_rings() -> None:
    current = incoming()
    assert decide_incoming(None, "", "alice", CID) is Incoming.RING
    assert decide_incoming(current, "bob", "alice", OTHER) is Incoming.BUSY
    current.hangup()
    assert decide_incoming(current, "bob", "alice", OTHER) is Incoming.RING


def test_a_call_from_the_friend_we_are_calling_after_it_connected_is_busy() -> None:
    ours = reach(Direction.OUT, CallState.CONNECTING)
    assert decide_incoming(ours, "bob", "bob", b"\xff" * 16) is Incoming.BUSY


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_glare_leaves_exactly_one_call_whatever_the_ids(a_id: bytes, b_id: bytes) -> None:
    if a_id == b_id:
        return
    a_call, _ = Call.outgoing(a_id, True, SDP, 0)  # alice calls bob...
    b_call, _ = Call.outgoing(b_id, True, SDP, 0)  # ...while bob calls alice
    at_alice = decide_incoming(a_call, "bob", "bob", b_id)
    at_bob = decide_incoming(b_call, "alice", "alice", a_id)
    assert {at_alice, at_bob} == {Incoming.GLARE_TAKE_THEIRS, Incoming.GLARE_KEEP_OURS}
    winner = a_id if at_bob is Incoming.GLARE_TAKE_THEIRS else b_id
    assert winner == max(a_id, b_id)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_glare_whose_call_end_overtakes_the_offer_still_leaves_one_call(
    a_id: bytes, b_id: bytes
) -> None:
    """The winner's ``call-end glare`` reaches the loser before the winner's offer: the
    loser's call has ended, and the offer that then arrives is taken, not rung."""
    if a_id == b_id:
        return
    loser_id, winner_id = sorted((a_id, b_id))
    lost, _ = Call.outgoing(loser_id, True, SDP, 0)
    lost.receive(CallEnd(loser_id, "glare"), 1)
    assert lost.end_reason == "glare"
    take = decide_incoming(
        None, "", "bob", winner_id, last=lost, last_peer="bob", since_last_end=0.5
    )
    assert take is Incoming.GLARE_TAKE_THEIRS


def test_a_lost_glare_is_remembered_only_briefly_and_only_for_that_friend() -> None:
    lost, _ = Call.outgoing(CID, True, SDP, 0)
    lost.receive(CallEnd(CID, "glare"), 1)
    big = b"\xff" * 16

    def decide(peer: str, offer_id: bytes, ago: float, last: Call = lost) -> Incoming:
        return decide_incoming(
            None, "", peer, offer_id, last=last, last_peer="bob", since_last_end=ago
        )

    assert decide("bob", big, 1) is Incoming.GLARE_TAKE_THEIRS
    assert decide("bob", big, GLARE_MEMORY) is Incoming.RING  # long ago: a new call
    assert decide("carol", big, 1) is Incoming.RING  # another friend
    assert decide("bob", b"\x00" * 16, 1) is Incoming.RING  # not the call we lost to
    hung_up, _ = Call.outgoing(CID, True, SDP, 0)
    hung_up.hangup()
    assert decide("bob", big, 1, hung_up) is Incoming.RING  # ended for another reason


def test_glare_counts_only_while_our_call_is_unanswered() -> None:
    for state in (CallState.OFFERING, CallState.RINGING_OUT):
        ours = reach(Direction.OUT, state)
        assert decide_incoming(ours, "bob", "bob", b"\xff" * 16) is Incoming.GLARE_TAKE_THEIRS
        assert decide_incoming(ours, "bob", "bob", b"\x00" * 16) is Incoming.GLARE_KEEP_OURS
