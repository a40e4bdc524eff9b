"""Sans-IO frames of the call signalling protocol ``/p2pchat/call/1.0.0``.

One libp2p stream per call, opened by the caller; both sides send frames on it (same framing
as every p2pchat protocol: a varint length, then a CBOR map whose ``"t"`` names the type).
What the frames mean, and when each may be sent, is :mod:`p2pchat.calls.state`'s business;
docs/PROTOCOL.md §12 documents both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from p2pchat.wire import (
    FrameError,
    FrameReader,
    encode_checked,
    strict_cbor_decode,
    text_problem,
)

CALL_PROTOCOL: Final = "/p2pchat/call/1.0.0"
CALL_ID_BYTES: Final = 16
MAX_SDP_BYTES: Final = 32 * 1024
MAX_CANDIDATE_BYTES: Final = 512
MAX_MID_BYTES: Final = 32
MAX_MLINE_INDEX: Final = 16
END_REASONS: Final = ("hangup", "declined", "busy", "timeout", "failed", "glare", "unavailable")
"""Why a call ended: ``hangup`` (either side, after or before answering), ``declined`` (by
the callee), ``busy`` (the callee is in another call), ``timeout`` (nobody answered, or media
never connected), ``failed`` (media or signalling broke), ``glare`` (both called at once and
this call lost), ``unavailable`` (the callee cannot take calls now)."""


@dataclass(frozen=True, slots=True)
class CallOffer:
    call_id: bytes
    video: bool
    sdp: str


@dataclass(frozen=True, slots=True)
class CallRinging:
    call_id: bytes


@dataclass(frozen=True, slots=True)
class CallAnswer:
    call_id: bytes
    sdp: str


@dataclass(frozen=True, slots=True)
class CallCandidate:
    """One trickled ICE candidate (the SDP ``candidate:`` attribute value, without ``a=``);
    an empty ``candidate`` means the sender has no more."""

    call_id: bytes
    candidate: str
    mid: str
    index: int


@dataclass(frozen=True, slots=True)
class CallEnd:
    call_id: bytes
    reason: str


CallFrame: TypeAlias = CallOffer | CallRinging | CallAnswer | CallCandidate | CallEnd


def encode_call(frame: CallFrame) -> bytes:
    """The length-prefixed wire form of ``frame``; our own frames obey the same rules."""
    return encode_checked(_to_map(frame), decode_call)


def _to_map(frame: CallFrame) -> dict[str, Any]:
    match frame:
        case CallOffer(call_id, video, sdp):
            return {"t": "call-offer", "call": call_id, "video": video, "sdp": sdp}
        case CallRinging(call_id):
            return {"t": "call-ringing", "call": call_id}
        case CallAnswer(call_id, sdp):
            return {"t": "call-answer", "call": call_id, "sdp": sdp}
        case CallCandidate(call_id, candidate, mid, index):
            return {
                "t": "call-candidate",
                "call": call_id,
                "candidate": candidate,
                "mid": mid,
                "index": index,
            }
        case CallEnd(call_id, reason):
            return {"t": "call-end", "call": call_id, "reason": reason}
    raise TypeError(f"not a call frame: {frame!r}")


def decode_call(body: bytes) -> CallFrame:
    """Decode and validate one call frame body; :class:`FrameError` says what was wrong."""
    m = strict_cbor_decode(body, max_depth=2)
    if not isinstance(m, dict):
        raise FrameError("a frame must be a CBOR map")
    kind = m.get("t")
    call_id = m.get("call")
    if not isinstance(call_id, bytes) or len(call_id) != CALL_ID_BYTES:
        raise FrameError(f"'call' must be {CALL_ID_BYTES} bytes")
    if kind == "call-offer":
        video = m.get("video")
        if not isinstance(video, bool):
            raise FrameError("'video' must be true or false")
        return CallOffer(call_id, video, sdp_field(m))
    if kind == "call-ringing":
        return CallRinging(call_id)
    if kind == "call-answer":
        return CallAnswer(call_id, sdp_field(m))
    if kind == "call-candidate":
        candidate = _text(m, "candidate", MAX_CANDIDATE_BYTES, allow_empty=True)
        mid = _text(m, "mid", MAX_MID_BYTES, allow_empty=True)
        index = m.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise FrameError("'index' must be a whole number")
        if not 0 <= index < MAX_MLINE_INDEX:
            raise FrameError(f"'index' must be 0 to {MAX_MLINE_INDEX - 1}")
        return CallCandidate(call_id, candidate, mid, index)
    if kind == "call-end":
        reason = m.get("reason")
        if reason not in END_REASONS:
            raise FrameError(f"unknown end reason {reason!r}")
        return CallEnd(call_id, str(reason))
    raise FrameError(f"unknown call frame type {kind!r}")


def sdp_field(m: dict[str, Any]) -> str:
    """A frame's ``sdp``: text of at most :data:`MAX_SDP_BYTES`, CRLF lines, nothing hidden."""
    return _text(m, "sdp", MAX_SDP_BYTES, multiline=True)


def _text(
    m: dict[str, Any], key: str, limit: int, *, multiline: bool = False, allow_empty: bool = False
) -> str:
    value = m.get(key)
    if not isinstance(value, str):
        raise FrameError(f"{key!r} must be text")
    # SDP lines end in CRLF; nothing else may hide in it.
    checked = value.replace("\r\n", "\n") if multiline else value
    problem = text_problem(checked, limit, multiline=multiline, allow_empty=allow_empty)
    if problem is not None:
        raise FrameError(f"{key!r} {problem}")
    return value


class CallFrameDecoder(FrameReader[CallFrame]):
    def __init__(self) -> None:
        super().__init__(decode_call)
