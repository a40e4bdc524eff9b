"""The holder protocol ``/p2pchat/mailbox/1.0.0`` (PROTOCOL.md §14.2): its frames, sans-IO.

Frames are length-prefixed CBOR maps like the other p2pchat protocols
(:class:`p2pchat.wire.FrameReader`); a refusal is the same ``refused`` frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import cbor2

from p2pchat import wire
from p2pchat.mailbox.envelope import ENVELOPE_ID_BYTES, MAX_ENVELOPE_BYTES
from p2pchat.wire import FrameError, FrameReader, Refused, strict_cbor_decode

MAILBOX_PROTOCOL: Final = "/p2pchat/mailbox/1.0.0"
MAX_TAKEN_IDS: Final = 256
"""Envelope IDs one ``taken`` frame names; also the most a holder hands over per ``end``."""

REFUSED_DISABLED: Final = "disabled"
REFUSED_NOT_HELD_FOR: Final = "not_friend"
REFUSED_TOO_LARGE: Final = "too_large"
REFUSED_QUOTA: Final = "quota"
REFUSED_EXPIRY: Final = "expiry"


@dataclass(frozen=True, slots=True)
class Deposit:
    """Depositor to holder: keep this envelope for its recipient."""

    envelope: bytes


@dataclass(frozen=True, slots=True)
class Stored:
    """Holder to depositor: the envelope is durably stored."""

    envelope_id: bytes


@dataclass(frozen=True, slots=True)
class Fetch:
    """Recipient to holder: hand over what you hold for me (the connection says who I am)."""


@dataclass(frozen=True, slots=True)
class Held:
    """Holder to recipient: one envelope."""

    envelope: bytes


@dataclass(frozen=True, slots=True)
class End:
    """Holder to recipient: that was all for now; ``more`` if it holds more than it sent."""

    more: bool


@dataclass(frozen=True, slots=True)
class Taken:
    """Recipient to holder: these are dealt with (stored, or refused for good): delete them."""

    envelope_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Deleted:
    """Holder to recipient: how many of the taken envelopes it deleted."""

    count: int


MailboxFrame: TypeAlias = Deposit | Stored | Fetch | Held | End | Taken | Deleted | Refused


def _to_map(frame: MailboxFrame) -> dict[str, Any]:
    match frame:
        case Deposit(envelope=envelope):
            return {"t": "deposit", "env": envelope}
        case Stored(envelope_id=envelope_id):
            return {"t": "stored", "id": envelope_id}
        case Fetch():
            return {"t": "fetch"}
        case Held(envelope=envelope):
            return {"t": "held", "env": envelope}
        case End(more=more):
            return {"t": "end", "more": more}
        case Taken(envelope_ids=ids):
            return {"t": "taken", "ids": list(ids)}
        case Deleted(count=count):
            return {"t": "deleted", "n": count}
        case Refused(code=code, reason=reason):
            return {"t": "refused", "code": code, "reason": reason}
    raise TypeError(f"not a mailbox frame: {frame!r}")  # pragma: no cover


def encode(frame: MailboxFrame) -> bytes:
    body = cbor2.dumps(_to_map(frame))
    decode(body)  # what we send obeys the rules we apply to what we receive
    return wire.encode_varint(len(body)) + body


def _envelope(m: dict[str, Any]) -> bytes:
    env = m.get("env")
    if not isinstance(env, bytes) or not 1 <= len(env) <= MAX_ENVELOPE_BYTES:
        raise FrameError(f"field 'env' must be 1 to {MAX_ENVELOPE_BYTES} bytes")
    return env


def _envelope_id(value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) != ENVELOPE_ID_BYTES:
        raise FrameError(f"an envelope ID must be {ENVELOPE_ID_BYTES} bytes")
    return value


def decode(body: bytes) -> MailboxFrame:
    """One mailbox frame body (without its length prefix), checked."""
    m = strict_cbor_decode(body, max_depth=2)
    if not isinstance(m, dict) or not isinstance(m.get("t"), str):
        raise FrameError("a mailbox frame must be a CBOR map with a type")
    match m["t"]:
        case "deposit":
            return Deposit(_envelope(m))
        case "stored":
            return Stored(_envelope_id(m.get("id")))
        case "fetch":
            return Fetch()
        case "held":
            return Held(_envelope(m))
        case "end":
            more = m.get("more")
            if not isinstance(more, bool):
                raise FrameError("field 'more' must be true or false")
            return End(more)
        case "taken":
            ids = m.get("ids")
            if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_TAKEN_IDS:
                raise FrameError(f"field 'ids' must list 1 to {MAX_TAKEN_IDS} envelope IDs")
            return Taken(tuple(_envelope_id(i) for i in ids))
        case "deleted":
            count = m.get("n")
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 2**31:
                raise FrameError("field 'n' must be a count")
            return Deleted(count)
        case "refused":
            frame = wire.decode_frame(body)
            assert isinstance(frame, Refused)
            return frame
    raise FrameError(f"unknown mailbox frame type {m['t'][:32]!r}")


class MailboxDecoder(FrameReader[MailboxFrame]):
    def __init__(self) -> None:
        super().__init__(decode)
