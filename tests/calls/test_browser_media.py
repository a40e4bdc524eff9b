"""The web page as a media endpoint, without I/O: what the daemon accepts from a page, and how
the page's reports become media states for the call state machine."""

from __future__ import annotations

from typing import Any

import pytest

from p2pchat.api import ApiError
from p2pchat.calls.browser import (
    MAX_STATS_KEYS,
    REPORTED_STATES,
    BrowserMedia,
    check_browser_sdp,
    check_stats,
    complete_candidates,
)
from p2pchat.calls.frames import MAX_SDP_BYTES


class Bus:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, event_type: str, **fields: Any) -> None:
        self.events.append((event_type, fields))


def test_a_session_description_is_accepted_as_given() -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"
    assert check_browser_sdp(sdp) == sdp
    assert check_browser_sdp("v=0" + "a" * (MAX_SDP_BYTES - 3)) is not None


@pytest.mark.parametrize(
    "bad",
    [None, 42, b"v=0", "", "hello", "V=0", " v=0", "v=0" + "a" * (MAX_SDP_BYTES - 2), "v=0\ud800"],
)
def test_anything_else_is_invalid_params(bad: Any) -> None:
    with pytest.raises(ApiError) as err:
        check_browser_sdp(bad)
    assert err.value.name == "invalid_params"


def test_stats_are_bounded() -> None:
    assert check_stats({"fps": 30}) == {"fps": 30}
    for bad in ([], "x", {str(i): i for i in range(MAX_STATS_KEYS + 1)}, {"x": "y" * 20_000}):
        with pytest.raises(ApiError):
            check_stats(bad)


def test_the_friends_answer_and_candidates_are_published_for_the_page() -> None:
    bus = Bus()
    media = BrowserMedia(bus, b"\x01" * 16)  # type: ignore[arg-type]
    media.apply_answer("v=0 answer")
    media.add_candidate("candidate:1 1 udp 1 192.0.2.9 5000 typ host", "0", 0)
    assert bus.events == [
        ("call.media", {"call_id": "01" * 16, "kind": "answer", "sdp": "v=0 answer"}),
        (
            "call.media",
            {
                "call_id": "01" * 16,
                "kind": "candidate",
                "candidate": "candidate:1 1 udp 1 192.0.2.9 5000 typ host",
                "mid": "0",
                "index": 0,
            },
        ),
    ]


@pytest.mark.parametrize("state", REPORTED_STATES)
def test_only_connected_failed_and_closed_reach_the_call(state: str) -> None:
    media = BrowserMedia(Bus(), b"\x00" * 16)  # type: ignore[arg-type]
    fed = media.report(state, None)
    assert fed == (state if state in ("connected", "failed", "closed") else None)
    assert media.stats_json() == {"state": state}


def test_a_report_keeps_the_last_stats_and_refuses_unknown_states() -> None:
    media = BrowserMedia(Bus(), b"\x00" * 16)  # type: ignore[arg-type]
    assert media.report(None, {"fps": 29.5}) is None
    assert media.report(None, None) is None
    assert media.stats_json() == {"fps": 29.5, "state": "new"}
    with pytest.raises(ApiError) as err:
        media.report("sideways", None)
    assert err.value.name == "invalid_params"
    assert media.state == "new"


def test_control_characters_and_bare_carriage_returns_are_refused() -> None:
    for bad in ("v=0\r\na=x\x1b[31m\r\n", "v=0\ra=x\r\n", "v=0\r\na=\x00\r\n"):
        with pytest.raises(ApiError) as err:
            check_browser_sdp(bad)
        assert err.value.name == "invalid_params"


def test_each_media_section_is_closed_with_end_of_candidates() -> None:
    sdp = (
        "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp 1 192.0.2.2 5000 "
        "typ host\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
    )
    done = complete_candidates(sdp)
    lines = done.split("\r\n")
    assert done.endswith("\r\n")
    assert lines.count("a=end-of-candidates") == 2
    assert lines[lines.index("m=video 9 UDP/TLS/RTP/SAVPF 96") - 1] == "a=end-of-candidates"
    assert lines[-2] == "a=end-of-candidates"
    assert complete_candidates(done) == done  # already complete: unchanged
    assert complete_candidates("v=0\r\ns=-\r\n") == "v=0\r\ns=-\r\n"  # no media: nothing added
    assert check_browser_sdp(sdp) == done


def test_reflexive_candidates_reach_a_browser_description() -> None:
    from p2pchat.calls.media import with_reflexive

    sdp = check_browser_sdp(
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=candidate:1 1 udp 2122260223 192.168.1.5 50000 typ host\r\n"
    )
    assert "typ srflx" in with_reflexive(sdp, ["203.0.113.7"])
