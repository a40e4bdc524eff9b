"""The group protocol ``/p2pchat/group/1.0.0`` (PROTOCOL.md §15.4): its frames, sans-IO.

Frames are length-prefixed CBOR maps like the other p2pchat protocols
(:class:`p2pchat.wire.FrameReader`); a refusal is the same ``refused`` frame. Every frame
names its group. Two members open a stream with ``sync`` (what each holds: the membership
log's head and the message vector, §15.3) and then send each other what the other lacks:
membership entries (``log``), sender keys sealed to the peer (``key``), messages (``msg``),
and updated vectors (``have``, the group's receipts).

The daemon's side of it is :mod:`p2pchat.groups.channel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import cbor2

from p2pchat import wire
from p2pchat.groups.membership import GROUP_ID_BYTES, HASH_BYTES, MAX_ENTRY_BYTES
from p2pchat.groups.timeline import MAX_CLOCK
from p2pchat.ratchet.bundle import MAX_BUNDLE_BYTES
from p2pchat.ratchet.megolm import MAX_SEALED_BYTES
from p2pchat.wire import FrameError, FrameReader, Refused, strict_cbor_decode

__all__ = [
    "GROUP_PROTOCOL",
    "Addrs",
    "Bundle",
    "GotKey",
    "GroupDecoder",
    "GroupFrame",
    "Have",
    "Key",
    "Log",
    "Message",
    "Refused",
    "Sync",
    "WantBundle",
    "WantLog",
    "decode",
    "encode",
]

GROUP_PROTOCOL: Final = "/p2pchat/group/1.0.0"
MAX_VECTOR_SENDERS: Final = 1024
"""Senders one vector names (members now and before: a group's whole history)."""
MAX_ENTRIES_PER_FRAME: Final = 64
MAX_SESSION_ID_CHARS: Final = 64
MAX_OLM_BYTES: Final = 4096
"""A sender key sealed with Olm: the 229-byte key plus Olm's overhead, with room."""
KEY_BYTES: Final = 32
MSG_ID_BYTES: Final = 16
_MAX_UINT: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Sync:
    """What the sender holds of the group: its log's head (version and entry hash: two
    branches of one length differ by hash), and per sender (by Ed25519 key) the seq up to
    which it holds every message."""

    group_id: bytes
    head: int
    head_hash: bytes
    have: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True)
class Log:
    """Membership entries (§15.1), in version order."""

    group_id: bytes
    entries: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class WantLog:
    """Send me the membership entries from this version on (0: the whole log, which is
    how an invited friend asks for the group it is invited to)."""

    group_id: bytes
    first: int


@dataclass(frozen=True, slots=True)
class Bundle:
    """The sender's Olm key bundle (§13.1), signed by its libp2p key: with no one-time key
    at the start of a stream (its identity key, to check the pre-key messages it sends), with
    one when asked (to start a session with a member that is not a friend)."""

    group_id: bytes
    bundle: bytes


@dataclass(frozen=True, slots=True)
class WantBundle:
    """Send me a bundle with a one-time key: I owe you a sender key and have no session."""

    group_id: bytes


@dataclass(frozen=True, slots=True)
class Addrs:
    """Where the sender reaches other members (by Ed25519 key): hints, each address checked
    by the receiver's address policy, so members who are not friends find each other."""

    group_id: bytes
    peers: tuple[tuple[bytes, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class Key:
    """The sender's key for one Megolm session (§15.2), sealed to the receiver with their
    pairwise Olm session (§13.2): ``olm_kind`` and ``olm_body`` as in a sealed message."""

    group_id: bytes
    session_id: str
    olm_kind: int
    olm_body: bytes


@dataclass(frozen=True, slots=True)
class GotKey:
    """The receiver stored the sender's key for ``session_id``: it is owed no more (until
    then the sender gives it again on each new stream)."""

    group_id: bytes
    session_id: str


@dataclass(frozen=True, slots=True)
class Message:
    """One group message, from its sender or relayed by any member that holds it."""

    group_id: bytes
    msg_id: bytes
    sender: bytes
    """The Ed25519 key of the member who wrote it (the session's owner, §15.2)."""
    seq: int
    clock: int
    version: int
    """The membership version the sender had when it sent it."""
    session_id: str
    body: bytes
    """The Megolm message; inside, the same id, seq, clock and version, and the text."""


@dataclass(frozen=True, slots=True)
class Have:
    """The sender's vector after taking messages: receipts for what they now hold."""

    group_id: bytes
    have: tuple[tuple[bytes, int], ...]


GroupFrame: TypeAlias = (
    Sync | Log | WantLog | Bundle | WantBundle | Addrs | Key | GotKey | Message | Have | Refused
)


def _to_map(frame: GroupFrame) -> dict[str, Any]:
    match frame:
        case Sync(group_id=g, head=head, head_hash=head_hash, have=have):
            return {"t": "sync", "g": g, "head": head, "hash": head_hash, "have": dict(have)}
        case Log(group_id=g, entries=entries):
            return {"t": "log", "g": g, "entries": list(entries)}
        case WantLog(group_id=g, first=first):
            return {"t": "want-log", "g": g, "from": first}
        case Bundle(group_id=g, bundle=bundle):
            return {"t": "bundle", "g": g, "bundle": bundle}
        case WantBundle(group_id=g):
            return {"t": "want-bundle", "g": g}
        case Addrs(group_id=g, peers=peers):
            return {"t": "addrs", "g": g, "peers": {k: list(a) for k, a in peers}}
        case Key(group_id=g, session_id=session, olm_kind=kind, olm_body=body):
            return {"t": "key", "g": g, "session": session, "kind": kind, "olm": body}
        case GotKey(group_id=g, session_id=session):
            return {"t": "got-key", "g": g, "session": session}
        case Message() as m:
            return {
                "t": "msg",
                "g": m.group_id,
                "id": m.msg_id,
                "from": m.sender,
                "seq": m.seq,
                "clock": m.clock,
                "v": m.version,
                "session": m.session_id,
                "body": m.body,
            }
        case Have(group_id=g, have=have):
            return {"t": "have", "g": g, "have": dict(have)}
        case Refused(code=code, reason=reason):
            return {"t": "refused", "code": code, "reason": reason}
    raise TypeError(f"not a group frame: {frame!r}")  # pragma: no cover


def encode(frame: GroupFrame) -> bytes:
    body = cbor2.dumps(_to_map(frame), canonical=True)
    decode(body)  # what we send obeys the rules we apply to what we receive
    return wire.encode_varint(len(body)) + body


_FIELDS: Final = {
    "sync": {"t", "g", "head", "hash", "have"},
    "log": {"t", "g", "entries"},
    "want-log": {"t", "g", "from"},
    "bundle": {"t", "g", "bundle"},
    "want-bundle": {"t", "g"},
    "addrs": {"t", "g", "peers"},
    "key": {"t", "g", "session", "kind", "olm"},
    "got-key": {"t", "g", "session"},
    "msg": {"t", "g", "id", "from", "seq", "clock", "v", "session", "body"},
    "have": {"t", "g", "have"},
}


def decode(body: bytes) -> GroupFrame:
    """One group frame body (without its length prefix), checked."""
    m = strict_cbor_decode(body, max_depth=3)
    if not isinstance(m, dict) or not isinstance(m.get("t"), str):
        raise FrameError("a group frame must be a CBOR map with a type")
    kind = m["t"]
    if kind == "refused":
        frame = wire.decode_frame(body)
        assert isinstance(frame, Refused)
        return frame
    fields = _FIELDS.get(kind)
    if fields is None:
        raise FrameError(f"unknown group frame type {kind[:32]!r}")
    if set(m) != fields:
        raise FrameError(f"a {kind} frame has exactly the fields {', '.join(sorted(fields))}")
    g = _bytes(m, "g", GROUP_ID_BYTES, GROUP_ID_BYTES)
    match kind:
        case "sync":
            head_hash = _bytes(m, "hash", HASH_BYTES, HASH_BYTES)
            return Sync(g, _uint(m, "head"), head_hash, _have(m))
        case "log":
            entries = m["entries"]
            if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_ENTRIES_PER_FRAME:
                raise FrameError(f"field 'entries' must list 1 to {MAX_ENTRIES_PER_FRAME} entries")
            for entry in entries:
                if not isinstance(entry, bytes) or not 1 <= len(entry) <= MAX_ENTRY_BYTES:
                    raise FrameError(f"an entry must be 1 to {MAX_ENTRY_BYTES} bytes")
            return Log(g, tuple(entries))
        case "want-log":
            return WantLog(g, _uint(m, "from"))
        case "bundle":
            return Bundle(g, _bytes(m, "bundle", 1, MAX_BUNDLE_BYTES))
        case "want-bundle":
            return WantBundle(g)
        case "addrs":
            return Addrs(g, _peers(m))
        case "key":
            kind_value = m["kind"]
            if type(kind_value) is not int or kind_value not in (0, 1):
                raise FrameError("field 'kind' must be 0 (pre-key) or 1 (normal)")
            return Key(g, _session(m), kind_value, _bytes(m, "olm", 1, MAX_OLM_BYTES))
        case "got-key":
            return GotKey(g, _session(m))
        case "msg":
            seq, clock = _uint(m, "seq"), _uint(m, "clock")
            if seq < 1:
                raise FrameError("field 'seq' starts at 1")
            if not 1 <= clock < MAX_CLOCK:
                raise FrameError(f"field 'clock' must be 1 to {MAX_CLOCK - 1}")
            return Message(
                g,
                _bytes(m, "id", MSG_ID_BYTES, MSG_ID_BYTES),
                _bytes(m, "from", KEY_BYTES, KEY_BYTES),
                seq,
                clock,
                _uint(m, "v"),
                _session(m),
                _bytes(m, "body", 1, MAX_SEALED_BYTES),
            )
        case _:  # "have"
            return Have(g, _have(m))


def _bytes(m: dict[str, Any], name: str, low: int, high: int) -> bytes:
    value = m[name]
    if not isinstance(value, bytes) or not low <= len(value) <= high:
        size = f"{low} bytes" if low == high else f"{low} to {high} bytes"
        raise FrameError(f"field {name!r} must be {size}")
    return value


def _uint(m: dict[str, Any], name: str) -> int:
    value = m[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_UINT:
        raise FrameError(f"field {name!r} must be an unsigned integer")
    return value


def _session(m: dict[str, Any]) -> str:
    value = m["session"]
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_SESSION_ID_CHARS
        or not value.isascii()
        or not value.isprintable()
    ):
        raise FrameError(f"field 'session' must be 1 to {MAX_SESSION_ID_CHARS} printable ASCII")
    return value


def _peers(m: dict[str, Any]) -> tuple[tuple[bytes, tuple[str, ...]], ...]:
    peers = m["peers"]
    if not isinstance(peers, dict) or len(peers) > MAX_VECTOR_SENDERS:
        raise FrameError(f"field 'peers' must map at most {MAX_VECTOR_SENDERS} members")
    out = []
    for key, addrs in peers.items():
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise FrameError(f"a member in 'peers' must be a {KEY_BYTES}-byte key")
        if (
            not isinstance(addrs, list)
            or len(addrs) > wire.MAX_ADDRS
            or not all(_is_multiaddr(a) for a in addrs)
        ):
            raise FrameError(
                f"a member's addresses are at most {wire.MAX_ADDRS} multiaddr texts of at "
                f"most {wire.MAX_ADDR_BYTES} bytes"
            )
        out.append((key, tuple(addrs)))
    return tuple(sorted(out))


def _is_multiaddr(addr: Any) -> bool:
    return (
        isinstance(addr, str)
        and addr.startswith("/")
        and wire.text_problem(addr, wire.MAX_ADDR_BYTES) is None
    )


def _have(m: dict[str, Any]) -> tuple[tuple[bytes, int], ...]:
    have = m["have"]
    if not isinstance(have, dict) or len(have) > MAX_VECTOR_SENDERS:
        raise FrameError(f"field 'have' must map at most {MAX_VECTOR_SENDERS} senders to seqs")
    out = []
    for key, seq in have.items():
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise FrameError(f"a sender in 'have' must be a {KEY_BYTES}-byte key")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _MAX_UINT:
            raise FrameError("a seq in 'have' must be an unsigned integer")
        out.append((key, seq))
    return tuple(sorted(out))


class GroupDecoder(FrameReader[GroupFrame]):
    def __init__(self) -> None:
        super().__init__(decode)
