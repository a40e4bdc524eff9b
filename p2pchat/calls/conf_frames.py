"""Sans-IO frames of the group-call protocol ``/p2pchat/conf/1.0.0`` (docs/PROTOCOL.md §16).

A group call ("conference") is a mesh: one stream, and one WebRTC peer connection, per pair
of participants. The member that connects opens the stream and sends ``conf-offer``; the
other answers with ``conf-answer`` (or ends the stream with ``conf-end``). An offer to a
member who is not in the call yet rings there; answering it joins the call. Both sides then
send ``conf-peers`` whenever the set of participants they are connected to changes, which is
how a joining member learns whom else to connect to.

Same framing as every p2pchat protocol: a varint length, then a CBOR map whose ``"t"`` names
the type. :mod:`p2pchat.calls.conference` says what the frames mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from p2pchat.calls.frames import CALL_ID_BYTES, sdp_field
from p2pchat.identity import IdentityError, check_peer_id
from p2pchat.wire import (
    FrameError,
    FrameReader,
    encode_checked,
    strict_cbor_decode,
)

CONF_PROTOCOL: Final = "/p2pchat/conf/1.0.0"
GROUP_ID_BYTES: Final = 16
MAX_PARTICIPANTS: Final = 8
"""Largest call: a mesh sends every source to each other participant, so beyond a handful
of parties the uplink and CPU run out first."""
MAX_PEER_ID_CHARS: Final = 64
CONF_END_REASONS: Final = (
    "hangup",
    "declined",
    "busy",
    "timeout",
    "failed",
    "glare",
    "full",
    "not_member",
)
"""Why a pair's link ended: ``hangup`` (the sender left the call), ``declined`` (it will not
join), ``busy`` (it is in another call), ``timeout`` (no answer in time), ``failed`` (media
or signalling broke), ``glare`` (both offered at once: this stream's offer lost, the other
one goes on), ``full`` (the call has :data:`MAX_PARTICIPANTS`), ``not_member`` (the
receiver does not count the sender, or itself, as a member of the group)."""


@dataclass(frozen=True, slots=True)
class ConfOffer:
    group_id: bytes
    conf_id: bytes
    video: bool
    sdp: str
    peers: tuple[str, ...]
    """The participants the sender is connected to in this call (never itself)."""


@dataclass(frozen=True, slots=True)
class ConfAnswer:
    conf_id: bytes
    sdp: str
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConfPeers:
    conf_id: bytes
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConfEnd:
    conf_id: bytes
    reason: str


ConfFrame: TypeAlias = ConfOffer | ConfAnswer | ConfPeers | ConfEnd


def encode_conf(frame: ConfFrame) -> bytes:
    """The length-prefixed wire form of ``frame``; our own frames obey the same rules."""
    return encode_checked(_to_map(frame), decode_conf)


def _to_map(frame: ConfFrame) -> dict[str, Any]:
    match frame:
        case ConfOffer(group_id, conf_id, video, sdp, peers):
            return {
                "t": "conf-offer",
                "g": group_id,
                "c": conf_id,
                "video": video,
                "sdp": sdp,
                "peers": list(peers),
            }
        case ConfAnswer(conf_id, sdp, peers):
            return {"t": "conf-answer", "c": conf_id, "sdp": sdp, "peers": list(peers)}
        case ConfPeers(conf_id, peers):
            return {"t": "conf-peers", "c": conf_id, "peers": list(peers)}
        case ConfEnd(conf_id, reason):
            return {"t": "conf-end", "c": conf_id, "reason": reason}
    raise TypeError(f"not a conference frame: {frame!r}")


def decode_conf(body: bytes) -> ConfFrame:
    """Decode and validate one frame body; :class:`FrameError` says what was wrong."""
    m = strict_cbor_decode(body, max_depth=2)
    if not isinstance(m, dict):
        raise FrameError("a frame must be a CBOR map")
    kind = m.get("t")
    conf_id = _bytes(m, "c", CALL_ID_BYTES)
    if kind == "conf-offer":
        video = m.get("video")
        if not isinstance(video, bool):
            raise FrameError("'video' must be true or false")
        return ConfOffer(_bytes(m, "g", GROUP_ID_BYTES), conf_id, video, sdp_field(m), _peers(m))
    if kind == "conf-answer":
        return ConfAnswer(conf_id, sdp_field(m), _peers(m))
    if kind == "conf-peers":
        return ConfPeers(conf_id, _peers(m))
    if kind == "conf-end":
        reason = m.get("reason")
        if reason not in CONF_END_REASONS:
            raise FrameError(f"unknown end reason {reason!r}")
        return ConfEnd(conf_id, str(reason))
    raise FrameError(f"unknown conference frame type {kind!r}")


def _bytes(m: dict[str, Any], key: str, size: int) -> bytes:
    value = m.get(key)
    if not isinstance(value, bytes) or len(value) != size:
        raise FrameError(f"{key!r} must be {size} bytes")
    return value


def _peers(m: dict[str, Any]) -> tuple[str, ...]:
    value = m.get("peers")
    if not isinstance(value, list) or len(value) >= MAX_PARTICIPANTS:
        raise FrameError(f"'peers' must be a list of fewer than {MAX_PARTICIPANTS} peer IDs")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not 0 < len(item) <= MAX_PEER_ID_CHARS:
            raise FrameError("'peers' must hold peer IDs")
        try:
            canonical = check_peer_id(item)
        except (IdentityError, ValueError):
            raise FrameError(
                f"'peers' holds something that is not a peer ID: {item[:16]!r}"
            ) from None
        if canonical != item or item in out:
            raise FrameError("'peers' must hold each peer ID once, in canonical form")
        out.append(item)
    return tuple(out)


class ConfFrameDecoder(FrameReader[ConfFrame]):
    def __init__(self) -> None:
        super().__init__(decode_conf)
