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
