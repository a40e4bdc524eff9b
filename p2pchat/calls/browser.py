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
from p2pchat.calls.media import MediaOptions
from p2pchat.events import EventBus
from p2pchat.wire import text_problem

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
    # The signalling frame's own rule (CRLF line ends are what SDP uses): refused here, with a
    # clear error, rather than by the frame encoder after the call was set up.
    problem = text_problem(sdp.replace("\r\n", "\n"), MAX_SDP_BYTES, multiline=True)
    if problem is not None or "\r" in sdp.replace("\r\n", ""):
        raise ApiError("invalid_params", f"'sdp' {problem or 'has a bare carriage return'}")
    return complete_candidates(sdp)


def complete_candidates(sdp: str) -> str:
    """``sdp`` with ``a=end-of-candidates`` closing each media section that lacks it.

    A page hands over its description once ICE gathering is complete, but browsers leave the
    marker out; the daemon adds its own reflexive candidates before that marker, and aiortc
    on the friend's side reads it as "no more candidates"."""
    lines = sdp.split("\r\n")
    trailing = lines[-1] == ""
    if trailing:
        lines.pop()
    out: list[str] = []
    in_media = closed = False
    for line in lines:
        if line.startswith("m="):
            if in_media and not closed:
                out.append("a=end-of-candidates")
            in_media, closed = True, False
        elif line == "a=end-of-candidates":
            closed = True
        out.append(line)
    if in_media and not closed:
        out.append("a=end-of-candidates")
    return "\r\n".join(out) + ("\r\n" if trailing else "")


def page_options(video: bool) -> MediaOptions:
    """What a browser call's JSON says it sends: the page's own camera and microphone."""
    return MediaOptions(video=video, source="browser", record="", ice_servers=())


class PageOwner:
    """The control session (a web page) that runs a browser call; ``gone`` once it ended."""

    def __init__(self) -> None:
        self.gone = False


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
        self.owner: PageOwner | None = None
        """The session that started or answered this call: when it ends, so does the call."""

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
