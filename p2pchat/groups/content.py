"""What a group message and a shared sender key hold inside their seals (PROTOCOL.md §15.2,
§15.4). Sans-IO.

The frame around a group message says who sent it, its seq, clock, membership version and
ID, so that members can order and pass it on without opening it; the same fields are sealed
inside, and a message whose outside does not match its inside is refused: a member relaying
someone else's message cannot change where it shows, what it is, or whose it is (a member
holding another's key cannot pass that member's messages off as its own). A key shared with a
member names its group and session the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from p2pchat import wire
from p2pchat.groups.frames import Message
from p2pchat.wire import FrameError, strict_cbor_decode


class ContentError(ValueError):
    """An opened message or key that is not what its frame says."""


@dataclass(frozen=True)
class Content:
    text: str
    sent_at: int
    """Milliseconds since the epoch by the sender's clock: shown, never used to order."""


def message_plaintext(frame: Message, text: str, sent_at: int) -> bytes:
    return cbor2.dumps(
        {
            "g": frame.group_id,
            "from": frame.sender,
            "id": frame.msg_id,
            "seq": frame.seq,
            "clock": frame.clock,
            "v": frame.version,
            "text": text,
            "at": sent_at,
        },
        canonical=True,
    )


def open_content(frame: Message, plaintext: bytes) -> Content:
    """The text of an opened message, checked against its frame."""
    try:
        m = strict_cbor_decode(plaintext, max_depth=1)
    except FrameError as exc:
        raise ContentError(f"the opened message is not valid: {exc}") from None
    if not isinstance(m, dict) or set(m) != {"g", "from", "id", "seq", "clock", "v", "text", "at"}:
        raise ContentError("the opened message does not have the fields of one")
    outside = (frame.group_id, frame.sender, frame.msg_id, frame.seq, frame.clock, frame.version)
    if (m["g"], m["from"], m["id"], m["seq"], m["clock"], m["v"]) != outside:
        raise ContentError("the opened message is not the one its frame names")
    text, at = m["text"], m["at"]
    problem = (
        wire.text_problem(text, wire.MAX_TEXT_BYTES, multiline=True, allow_empty=False)
        if isinstance(text, str)
        else "is not text"
    )
    if problem is not None:
        raise ContentError(f"the message text {problem}")
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < 2**63:
        raise ContentError("the message time is not a non-negative integer")
    return Content(text, at)


def key_plaintext(group_id: bytes, session_id: str, shared: bytes, first_seq: int) -> bytes:
    return cbor2.dumps(
        {"g": group_id, "session": session_id, "key": shared, "seq": first_seq}, canonical=True
    )


def open_key(group_id: bytes, session_id: str, plaintext: bytes) -> tuple[bytes, int]:
    """The shared key inside an opened ``key`` frame, checked against the frame, and the seq
    of the first message its sender sealed with it."""
    try:
        m = strict_cbor_decode(plaintext, max_depth=1)
    except FrameError as exc:
        raise ContentError(f"the opened key is not valid: {exc}") from None
    if not isinstance(m, dict) or set(m) != {"g", "session", "key", "seq"}:
        raise ContentError("the opened key does not have the fields of one")
    if m["g"] != group_id or m["session"] != session_id or not isinstance(m["key"], bytes):
        raise ContentError("the opened key is not the one its frame names")
    seq = m["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq < 2**63:
        raise ContentError("the opened key's first seq is not a positive integer")
    return bytes(m["key"]), seq
