"""The friend's ICE candidates, wherever they come from (offer SDP, answer SDP, trickled): one
address rule and one per-call cap, applied before aiortc or a web page sees them."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from p2pchat.calls.candidates import (
    MAX_REMOTE_CANDIDATES,
    CandidateBudget,
    candidate_problem,
)
from p2pchat.calls.frames import (
    MAX_CANDIDATE_BYTES,
    MAX_SDP_BYTES,
    CallAnswer,
    CallCandidate,
    CallOffer,
    encode_call,
)
from p2pchat.calls.media import with_reflexive
from p2pchat.calls.state import AddCandidate, ApplyAnswer, Call, CallState

CID = b"\x07" * 16


def cand(address: str, port: int = 40000, component: int = 1, extra: str = "") -> str:
    return f"candidate:1 {component} udp 2130706431 {address} {port} typ host{extra}"


def sdp_with(candidate_lines: list[str], *, end: str = "\r\n") -> str:
    head = [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    ]
    return end.join([*head, *candidate_lines, "a=end-of-candidates", ""])


def kept(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith("a=candidate")]


# --- the address rule --------------------------------------------------------------------

ALLOWED = [
    "10.0.1.2",  # a friend on the same LAN
    "192.168.5.5",
    "172.16.0.9",
    "100.64.0.1",  # carrier-grade NAT
    "198.51.100.7",  # public (documentation range)
    "fd00::2",  # IPv6 ULA
    "2001:db8::1",
]

DROPPED = {
    "abc123.local": "mDNS",
    "ABC-def.LOCAL.": "mDNS",
    "example.org": "host name",
    "localhost": "host name",
    "127.0.0.1": "loopback",
    "127.5.6.7": "loopback",
    "::1": "loopback",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::7f00:1": "loopback",  # IPv4-compatible
    "0.0.0.0": "unspecified",
    "0.1.2.3": "unspecified",  # "this network"
    "::": "unspecified",
    "169.254.169.254": "link-local",  # cloud metadata service
    "::ffff:169.254.169.254": "link-local",
    "fe80::1": "link-local",
    "fe80::1%eth0": "zone",
    "224.0.0.251": "multicast",
    "239.1.1.1": "multicast",
    "ff02::1": "multicast",
    "255.255.255.255": "broadcast",
    "240.0.0.1": "reserved",
    "fec0::1": "site-local",
}


@pytest.mark.parametrize("address", ALLOWED)
def test_lan_and_public_addresses_are_allowed(address: str) -> None:
    assert candidate_problem(cand(address)) is None


@pytest.mark.parametrize(("address", "why"), DROPPED.items())
def test_each_disallowed_address_class_is_dropped(address: str, why: str) -> None:
    problem = candidate_problem(cand(address))
    assert problem is not None and why.lower().split()[0] in problem.lower()
    budget = CandidateBudget()
    assert kept(budget.filter_sdp(sdp_with(["a=" + cand(address), "a=" + cand("10.0.0.1")]))) == [
        "a=" + cand("10.0.0.1")
    ]
    assert budget.taken == 1 and sum(budget.dropped.values()) == 1


@pytest.mark.parametrize(
    "value",
    [
        "candidate:842163049 1 udp 1677729535 198.51.100.7 54321 typ srflx raddr 0.0.0.0 rport 0 "
        "generation 0 ufrag +a/B network-cost 999",  # Chromium's srflx
        "candidate:0 1 UDP 2122252543 192.168.1.2 49979 typ host",  # Firefox
        "candidate:1 1 tcp 1518280447 192.168.1.2 9 typ host tcptype active generation 0",
        "candidate:abc 2 udp 1 10.0.0.2 5000 typ relay raddr 10.0.0.3 rport 6000",
    ],
)
def test_what_real_stacks_send_is_allowed(value: str) -> None:
    assert candidate_problem(value) is None


def test_the_reflexive_candidates_daemons_add_are_allowed() -> None:
    """What media.with_reflexive writes (aioice's 32-hex-digit foundation plus "x") passes the
    friend's filter, or NAT traversal between two daemons would break."""
    host = "a=candidate:f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 10.0.0.2 36370 typ host"
    sdp = with_reflexive(sdp_with([host]), ["198.51.100.1"])
    assert len(kept(sdp)) == 2
    assert CandidateBudget().filter_sdp(sdp) == sdp


@pytest.mark.parametrize(
    "value",
    [
        "",
        "candidate:",
        "1 1 udp 2130706431 10.0.0.2 40000 typ host",  # no candidate: prefix
        "Candidate:1 1 udp 2130706431 10.0.0.2 40000 typ host",
        "candidate:1 1 udp 2130706431 10.0.0.2 40000 typ",  # too short
        "candidate:1 1 udp 2130706431 10.0.0.2 40000 type host",
        "candidate:1 1 udp 2130706431 10.0.0.2 40000 typ bogus",
        "candidate:1  1 udp 2130706431 10.0.0.2 40000 typ host",  # empty field
        "candidate:1\t1 udp 2130706431 10.0.0.2 40000 typ host",  # a tab: another split
        "candidate:1 1 udp 2130706431 10.0.0.2 40000 typ host ",  # trailing space
        "candidate:1 1 udp 2130706431 10.0.0.2 40000 typ host raddr",  # odd extension
        "candidate:1 x udp 2130706431 10.0.0.2 40000 typ host",
        "candidate:1 0 udp 2130706431 10.0.0.2 40000 typ host",
        "candidate:1 1 sctp 2130706431 10.0.0.2 40000 typ host",
        "candidate:1 1 udp -5 10.0.0.2 40000 typ host",
        "candidate:1 1 udp 4294967296 10.0.0.2 40000 typ host",
        "candidate:1 1 udp 2130706431 10.0.0.2 0 typ host",
        "candidate:1 1 udp 2130706431 10.0.0.2 65536 typ host",
        "candidate:1 1 udp 2130706431 10.0.0.2 4e4 typ host",
        "candidate:1 1 udp 2130706431 10.0.0.2 40000 typ host rport x",
        "candidate:1 1 udp 2130706431 10.0.0.2 40000 typ host generation -1",
        "candidate:1 1 udp 2130706431 10.0.0.2 40000 typ host ufrag a\x00b",
        "candidate:ü 1 udp 2130706431 10.0.0.2 40000 typ host",
        "candidate:" + "f" * 65 + " 1 udp 2130706431 10.0.0.2 40000 typ host",
        cand("10.0.0.2", extra=" x " + "y" * MAX_CANDIDATE_BYTES),  # over the frame's limit
    ],
)
def test_malformed_candidates_are_dropped(value: str) -> None:
    assert candidate_problem(value) is not None
    budget = CandidateBudget()
    assert not budget.admit(value) and budget.taken == 0


# --- candidate lines in an SDP -------------------------------------------------------------


def test_an_sdp_with_300_candidates_is_capped() -> None:
    lines = [f"a={cand(f'10.0.{i // 250}.{i % 250 + 1}', 40000 + i)}" for i in range(300)]
    sdp = sdp_with(lines)
    assert len(sdp.encode()) <= MAX_SDP_BYTES  # it fits one offer frame
    encode_call(CallOffer(CID, False, sdp))  # a valid frame (encoding decodes it too)
    budget = CandidateBudget()
    out = budget.filter_sdp(sdp)
    assert kept(out) == lines[:MAX_REMOTE_CANDIDATES]
    assert budget.taken == MAX_REMOTE_CANDIDATES
    assert budget.dropped == {f"over the cap of {MAX_REMOTE_CANDIDATES} per call": 268}
    assert "268 × over the cap" in budget.summary()


def test_a_valid_sdp_is_unchanged_apart_from_the_removed_lines() -> None:
    good = [f"a={cand('10.0.1.2')}", f"a={cand('198.51.100.7', 40001)}"]
    bad = [f"a={cand('abc.local')}", f"a={cand('127.0.0.1')}", "a=candidate:garbage"]
    mixed = [good[0], bad[0], bad[1], good[1], bad[2]]
    for end in ("\r\n", "\n"):  # the frame allows either line end; both are kept
        assert CandidateBudget().filter_sdp(sdp_with(mixed, end=end)) == sdp_with(good, end=end)
        clean = sdp_with(good, end=end)
        assert CandidateBudget().filter_sdp(clean) == clean
    # No trailing line end, a session-level candidate, several media sections: the same.
    multi = "\r\n".join(
        [
            "v=0",
            bad[1],
            "m=audio 9 UDP/TLS/RTP/SAVPF 96",
            good[0],
            bad[0],
            "a=end-of-candidates",
            "m=video 9 UDP/TLS/RTP/SAVPF 97",
            good[1],
            "a=end-of-candidates",
        ]
    )
    assert CandidateBudget().filter_sdp(multi) == multi.replace(bad[1] + "\r\n", "").replace(
        bad[0] + "\r\n", ""
    )


@pytest.mark.parametrize(
    "hidden",
    [
        " a=" + cand("127.0.0.1"),  # leading space
        "a=CANDIDATE:" + cand("10.0.0.2").removeprefix("candidate:"),  # odd case
        "a=candidate " + cand("10.0.0.2").removeprefix("candidate:"),  # no colon
        "a=candidate:" + cand("10.0.0.2").removeprefix("candidate:") + "\t",
    ],
)
def test_odd_candidate_lines_are_dropped_not_passed_on(hidden: str) -> None:
    budget = CandidateBudget()
    assert budget.filter_sdp(sdp_with([hidden])) == sdp_with([])
    assert budget.taken == 0 and budget.dropped


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\n"])
def test_no_candidate_hides_behind_a_separator_the_parser_honours(separator: str) -> None:
    """aiortc splits with str.splitlines: a line break the frame's text rule lets through
    must not hide a candidate line from the filter."""
    sdp = sdp_with(["a=ice-options:trickle" + separator + "a=" + cand("127.0.0.1")])
    encode_call(CallOffer(CID, False, sdp))  # the frame rule allows it (encoding decodes)
    out = CandidateBudget().filter_sdp(sdp)
    assert "127.0.0.1" not in out
    assert all("127.0.0.1" not in line for line in out.splitlines())


# --- one budget per call: SDP and trickled together ------------------------------------------


def test_the_offer_and_trickled_candidates_share_one_cap() -> None:
    offer_lines = [f"a={cand(f'10.0.0.{i + 1}')}" for i in range(MAX_REMOTE_CANDIDATES - 2)]
    offer_lines.insert(3, f"a={cand('abc.local')}")
    offer = CallOffer(CID, False, sdp_with(offer_lines))
    call, _ = Call.incoming(offer, 0.0)
    assert kept(call.remote_sdp) == [line for line in offer_lines if ".local" not in line]
    taken: list[Any] = []
    for i in range(5):
        taken += call.receive(CallCandidate(CID, cand(f"10.1.0.{i + 1}"), "0", 0), 1.0)
    taken += call.receive(CallCandidate(CID, cand("127.0.0.1"), "0", 0), 1.0)
    taken += call.receive(CallCandidate(CID, cand("x.local"), "0", 0), 1.0)
    assert taken == [
        AddCandidate(cand("10.1.0.1"), "0", 0),
        AddCandidate(cand("10.1.0.2"), "0", 0),
    ]
    # "No more candidates" names no address: it passes, and costs nothing.
    assert call.receive(CallCandidate(CID, "", "0", 0), 1.0) == [AddCandidate("", "0", 0)]
    assert call.candidates.taken == MAX_REMOTE_CANDIDATES
    assert call.state is CallState.RINGING_IN


def test_the_answer_sdp_is_filtered_before_it_is_applied() -> None:
    call, _ = Call.outgoing(CID, False, sdp_with([]), 0.0)
    answer = sdp_with([f"a={cand('169.254.169.254')}", f"a={cand('10.0.0.9')}"])
    (applied,) = call.receive(CallAnswer(CID, answer), 1.0)
    assert isinstance(applied, ApplyAnswer)
    assert kept(applied.sdp) == [f"a={cand('10.0.0.9')}"] and call.remote_sdp == applied.sdp
    assert call.receive(CallCandidate(CID, cand("10.0.0.10"), "0", 0), 1.0) != []
    call.media_connected()
    assert call.receive(CallCandidate(CID, cand("10.0.0.11"), "0", 0), 2.0) == []  # active


# --- the real aiortc path: a filtered candidate never reaches the peer connection ---------------


class Stream:
    """Where the answer frame goes (what the call writes is not what this test is about)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.written.append(data)

    async def close(self) -> None:
        pass


@pytest.mark.timeout(60)
async def test_an_offers_filtered_candidates_never_reach_aiortc() -> None:
    """A friend's offer full of candidates reaches aiortc's ICE agent with only the allowed
    ones, at most the cap. The allowed ones are component-2 candidates (aiortc gathers only
    component 1 with rtcp-mux), so this machine sends checks to none of them; the loopback
    ones are component 1, so without the filter they would be probed (harmlessly, on lo)."""
    from p2pchat.calls.media import AsyncioThread, MediaOptions
    from p2pchat.calls.session import CallSession, MediaStates, release
    from p2pchat.events import EventBus

    rtc = AsyncioThread("test-offerer")

    async def make_offer() -> str:
        from aiortc import RTCConfiguration, RTCPeerConnection

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = str(pc.localDescription.sdp)
        await pc.close()
        return sdp

    with trio.fail_after(30):
        offer_sdp = await rtc.call(make_offer())
    await rtc.stop()
    allowed = [cand(f"198.51.100.{i + 1}", 50000 + i, component=2) for i in range(40)]
    dropped = [
        cand("127.0.0.1", 50100),
        cand("::1", 50101),
        cand("127.0.0.2", 50102, component=2),
        cand("169.254.169.254", 50103, component=2),
        cand("0.0.0.0", 50104, component=2),
        cand("224.0.0.1", 50105, component=2),
        cand("255.255.255.255", 50106, component=2),
        cand("::ffff:127.0.0.1", 50107, component=2),
    ]
    lines = [
        line for line in offer_sdp.split("\r\n") if not line.startswith("a=candidate:")
    ]  # its own host candidates would be probed: none of them
    end = lines.index("a=end-of-candidates")
    lines[end:end] = [f"a={c}" for c in dropped[:4] + allowed + dropped[4:]]
    offer = CallOffer(CID, False, "\r\n".join(lines))

    call, _ = Call.incoming(offer, trio.current_time())
    live = CallSession(
        "12D3KooWfriend",
        call,
        Stream(),  # type: ignore[arg-type]
        MediaOptions(video=False, source="test", record=""),
        events=EventBus(),
        on_ended=lambda _: None,
        on_released=lambda _: None,
        media=MediaStates(),
    )
    try:
        with trio.fail_after(30):
            await live.answer(MediaOptions(video=False, source="test", record=""), [])
        assert live.session is not None and live.rtc is not None
        pc = live.session.pc

        async def remote_candidates() -> list[tuple[str, int]]:
            transport = pc.getTransceivers()[0].receiver.transport.transport
            return [(c.ip, c.port) for c in transport.getRemoteCandidates()]

        with trio.fail_after(10):
            remote = await live.rtc.call(remote_candidates())
        assert remote == [(f"198.51.100.{i + 1}", 50000 + i) for i in range(MAX_REMOTE_CANDIDATES)]
        assert call.candidates.taken == MAX_REMOTE_CANDIDATES
        assert "over the cap" in call.candidates.summary()
        assert "loopback" in call.candidates.summary()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(20):
            await release(live.rtc, live.session)
