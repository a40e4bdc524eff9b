"""A web page as a call's media endpoint, instead of the daemon's own aiortc.

The page captures camera and microphone and runs the RTCPeerConnection; the daemon only
carries its session descriptions over the call signalling (``/p2pchat/call/1.0.0``, unchanged
on the wire), so a browser can call an aiortc daemon, and the other way round. The call state
machine stays the single authority: the page's reports (``calls.report``) feed it the same
media states aiortc's peer connection does, and what the friend sends for the media (their
answer, their trickled candidates) reaches the page as ``call.media`` events.
"""

from __future__ import annotations

from typing import Any, Final

from p2pchat.api import ApiError
from p2pchat.calls.frames import MAX_SDP_BYTES
from p2pchat.events import EventBus

REPORTED_STATES: Final = ("new", "connecting", "connected", "disconnected", "failed", "closed")
"""RTCPeerConnection.connectionState values a page may report."""
MAX_STATS_KEYS: Final = 64
MAX_STATS_BYTES: Final = 16 * 1024


def check_browser_sdp(sdp: Any) -> str:
    """The page's session description, or ``invalid_params`` saying what is wrong with it."""
    if not isinstance(sdp, str) or not sdp:
        raise ApiError("invalid_params", "'sdp' must be the page's session description (a string)")
    if len(sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise ApiError("invalid_params", f"'sdp' is over {MAX_SDP_BYTES} bytes")
    if not sdp.startswith("v=0"):
        raise ApiError("invalid_params", "'sdp' is not a session description (must start v=0)")
    try:
        sdp.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError("invalid_params", "'sdp' is not valid text") from None
    return sdp


def check_stats(stats: Any) -> dict[str, Any]:
    """The page's stats object, bounded (it is shown by ``calls.list``, nothing else)."""
    if not isinstance(stats, dict):
        raise ApiError("invalid_params", "'stats' must be an object")
    if len(stats) > MAX_STATS_KEYS or len(repr(stats)) > MAX_STATS_BYTES:
        raise ApiError("invalid_params", "'stats' is too large")
    return dict(stats)


class BrowserMedia:
    """The page's side of one call: what to hand it, and what it last reported."""

    def __init__(self, events: EventBus, call_id: bytes) -> None:
        self._events = events
        self.call_id = call_id
        self.stats: dict[str, Any] = {}
        self.state = "new"
        self.sessions: set[int] = set()
        """``id()`` of the control sessions that own this call (the one that started or
        answered it): when the last goes away, the page is gone and the call ends."""

    def _publish(self, kind: str, **fields: Any) -> None:
        self._events.publish("call.media", call_id=self.call_id.hex(), kind=kind, **fields)

    def apply_answer(self, sdp: str) -> None:
        self._publish("answer", sdp=sdp)

    def add_candidate(self, candidate: str, mid: str, index: int) -> None:
        self._publish("candidate", candidate=candidate, mid=mid, index=index)

    def report(self, state: str | None, stats: dict[str, Any] | None) -> str | None:
        """Take the page's report; the media state to feed the call, if it says one."""
        if stats is not None:
            self.stats = stats
        if state is None:
            return None
        if state not in REPORTED_STATES:
            raise ApiError("invalid_params", f"'state' must be one of {', '.join(REPORTED_STATES)}")
        self.state = state
        return state if state in ("connected", "failed", "closed") else None

    def stats_json(self) -> dict[str, Any]:
        return {**self.stats, "state": self.state}
