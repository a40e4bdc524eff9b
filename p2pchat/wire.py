"""Sans-IO wire format for p2pchat's peer protocols.

Every p2pchat stream carries *frames*: an unsigned-varint length followed by that many bytes
of CBOR encoding one map with a text key ``"t"`` naming the frame type. Nothing here does
I/O: :class:`FrameDecoder` is fed bytes and returns decoded, validated frames; ``encode``
turns a frame object into bytes. Everything received from the network is hostile until it
has passed :func:`decode_frame`, which checks sizes, types and limits before any caller sees it.

The protocols and their frames are documented in docs/PROTOCOL.md.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeAlias, TypeVar

import cbor2

FRIEND_PROTOCOL: Final = "/p2pchat/friend/1.0.0"
MSG_PROTOCOL: Final = "/p2pchat/msg/1.0.0"
MSG2_PROTOCOL: Final = "/p2pchat/msg/2.0.0"
"""Messages sealed with each pair's Olm session (PROTOCOL.md §5.4); proposed first."""
FILE_PROTOCOL: Final = "/p2pchat/file/2.0.0"

MAX_FRAME_BYTES: Final = 64 * 1024
"""Hard upper bound on one frame's body; a longer length prefix closes the stream."""

MAX_TEXT_BYTES: Final = 16 * 1024
"""Longest chat message body, in UTF-8 bytes."""

MAX_REQUEST_TEXT_BYTES: Final = 500
"""Longest text a stranger may attach to a friend request."""

MAX_NAME_BYTES: Final = 64
MAX_INVITE_BYTES: Final = 32
"""Longest invite secret a friend request may quote (today's codes carry 8 bytes)."""
MAX_ADDRS: Final = 16
MAX_ADDR_BYTES: Final = 256
MAX_ACK_IDS: Final = 1024
MSG_ID_BYTES: Final = 16
MAX_REASON_BYTES: Final = 200
MAX_KEYS_BYTES: Final = 2048
"""Longest key bundle (``p2pchat.ratchet.bundle.MAX_BUNDLE_BYTES``)."""
MAX_SEALED_BYTES: Final = 24 * 1024
"""Longest sealed message body: a 16 KiB text, its framing and Olm's overhead fit."""
SEALED_KINDS: Final = (0, 1)
"""Olm message types: 0 pre-key (starts a session), 1 normal."""

TRANSFER_ID_BYTES: Final = 16
MAX_FILE_NAME_BYTES: Final = 255
MAX_FILE_SIZE: Final = 2**50
"""Largest file that may be offered (1 PiB): keeps every offset well inside 63 bits."""
FILE_HASH_BYTES: Final = 32
BULK_KEY_BYTES: Final = 32
BULK_SUITES: Final = ("aes-256-gcm", "chacha20-poly1305")
FILE_OUTCOMES: Final = ("declined", "cancelled", "completed", "failed")
DATA_PATHS: Final = ("tcp", "punched", "stream")

_MAX_VARINT_BYTES: Final = 5  # enough for MAX_FRAME_BYTES with room to spare
_CBOR_MAX_DEPTH: Final = 4


F = TypeVar("F")


class FrameError(Exception):
    """The peer sent something that is not a valid frame; the stream must be closed."""


# --- frame types -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame on a msg stream: the sender's current listen addresses (hints). On msg/2.0.0
    also its key bundle (``keys``: its Olm identity key, signed) and whether it needs one of
    the receiver's one-time keys to start a session (``want_key``)."""

    addrs: tuple[str, ...]
    keys: bytes | None = None
    want_key: bool = False


@dataclass(frozen=True, slots=True)
class Keys:
    """msg/2.0.0, receiver to sender, answering a hello that wants a key: the receiver's key
    bundle with a fresh one-time key."""

    bundle: bytes


@dataclass(frozen=True, slots=True)
class SealedMessage:
    """msg/2.0.0: one chat message sealed with the pair's Olm session (``kind``, ``body``: the
    Olm message); its ID, sequence number and time travel beside it, for acks and order."""

    msg_id: bytes
    seq: int
    sent_at_ms: int
    kind: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat message. ``msg_id`` makes delivery idempotent; ``seq`` orders it."""

    msg_id: bytes
    seq: int
    sent_at_ms: int
    text: str


@dataclass(frozen=True, slots=True)
class Ack:
    """The receiver has durably stored these messages."""

    msg_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class FriendRequest:
    """A stranger asks to become a friend (the only frame strangers may send). ``invite``
    quotes the invite secret from the recipient's friend code, if the sender had one."""

    name: str
    text: str
    addrs: tuple[str, ...]
    invite: bytes | None = None


@dataclass(frozen=True, slots=True)
class FriendAccept:
    """The recipient of our request accepted it: we are now friends."""

    name: str
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FriendRemove:
    """The peer removed us from its friends; we mark the contact accordingly."""


@dataclass(frozen=True, slots=True)
class Received:
    """Reply on a friend stream: the request/accept was stored."""


@dataclass(frozen=True, slots=True)
class Refused:
    """Reply saying why a stream or frame was refused (``code`` is machine-readable)."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class FileOffer:
    """The sender offers a file: a bare name (no directories), its size and BLAKE3 hash."""

    tid: bytes
    name: str
    size: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class FileEnd:
    """A transfer ended on the sending side of this frame; ``outcome`` says how."""

    tid: bytes
    outcome: str
    reason: str


@dataclass(frozen=True, slots=True)
class FileGet:
    """The receiver asks for the file's bytes from ``offset``, sealed with ``key`` under
    ``suite``; ``port`` (if not 0) is a TCP port it listens on for a direct data path;
    ``punch`` (if not 0) the local port it holds for a simultaneous open through NATs."""

    tid: bytes
    offset: int
    suite: str
    key: bytes
    port: int
    punch: int = 0


@dataclass(frozen=True, slots=True)
class FilePunch:
    """The sender's answer to a :class:`FileGet` with ``punch``: it holds local ``port`` and
    is opening a TCP connection from it to the receiver's punch port; the receiver opens one
    the other way (a simultaneous open), then ``file-data`` follows."""

    tid: bytes
    port: int


@dataclass(frozen=True, slots=True)
class FileData:
    """The sender's answer to :class:`FileGet`: the records follow on ``path``."""

    tid: bytes
    path: str


Frame: TypeAlias = (
    Hello
    | Keys
    | SealedMessage
    | ChatMessage
    | Ack
    | FriendRequest
    | FriendAccept
    | FriendRemove
    | Received
    | Refused
    | FileOffer
    | FileEnd
    | FileGet
    | FilePunch
    | FileData
)

REFUSED_NOT_FRIEND: Final = "not_friend"
REFUSED_RATE_LIMITED: Final = "rate_limited"
REFUSED_BAD_FRAME: Final = "bad_frame"
REFUSED_FULL: Final = "full"
REFUSED_BUSY: Final = "busy"
REFUSED_UNKNOWN: Final = "unknown_transfer"
REFUSED_UNDECRYPTABLE: Final = "undecryptable"
"""msg/2.0.0: a sealed message did not open; the sender starts a new session and reseals."""
REFUSED_QUOTA: Final = "quota"
"""msg: the friend's stored-unread quota is used up (only sent on msg streams, where every
code means 'retry later'; PROTOCOL.md §3)."""


# --- encoding ----------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 varint, as used by libp2p length prefixes."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _to_map(frame: Frame) -> dict[str, Any]:
    match frame:
        case Hello(addrs=addrs, keys=keys, want_key=want_key):
            hello: dict[str, Any] = {"t": "hello", "addrs": list(addrs)}
            if keys is not None:
                hello["keys"] = keys
            if want_key:
                hello["want_key"] = True
            return hello
        case Keys(bundle=bundle):
            return {"t": "keys", "bundle": bundle}
        case SealedMessage(msg_id=msg_id, seq=seq, sent_at_ms=ts, kind=kind, body=body):
            return {"t": "sealed", "id": msg_id, "seq": seq, "ts": ts, "kind": kind, "body": body}
        case ChatMessage(msg_id=msg_id, seq=seq, sent_at_ms=ts, text=text):
            return {"t": "msg", "id": msg_id, "seq": seq, "ts": ts, "text": text}
        case Ack(msg_ids=ids):
            return {"t": "ack", "ids": list(ids)}
        case FriendRequest(name=name, text=text, addrs=addrs, invite=invite):
            request = {"t": "request", "name": name, "text": text, "addrs": list(addrs)}
            return request if invite is None else {**request, "invite": invite}
        case FriendAccept(name=name, addrs=addrs):
            return {"t": "accept", "name": name, "addrs": list(addrs)}
        case FriendRemove():
            return {"t": "remove"}
        case Received():
            return {"t": "received"}
        case Refused(code=code, reason=reason):
            return {"t": "refused", "code": code, "reason": reason}
        case FileOffer(tid=tid, name=name, size=size, hash=digest):
            return {"t": "file-offer", "id": tid, "name": name, "size": size, "hash": digest}
        case FileEnd(tid=tid, outcome=outcome, reason=reason):
            return {"t": "file-end", "id": tid, "outcome": outcome, "reason": reason}
        case FileGet(tid=tid, offset=offset, suite=suite, key=key, port=port, punch=punch):
            get = {
                "t": "file-get",
                "id": tid,
                "offset": offset,
                "suite": suite,
                "key": key,
                "port": port,
            }
            return get if not punch else {**get, "punch": punch}
        case FilePunch(tid=tid, port=port):
            return {"t": "file-punch", "id": tid, "port": port}
        case FileData(tid=tid, path=path):
            return {"t": "file-data", "id": tid, "path": path}
    raise TypeError(f"not a frame: {frame!r}")  # pragma: no cover


def encode(frame: Frame) -> bytes:
    """Serialise ``frame`` to its length-prefixed wire form, checking our own limits too."""
    return encode_checked(_to_map(frame), decode_frame)


def encode_checked(fields: dict[str, Any], decode: Callable[[bytes], object]) -> bytes:
    """The length-prefixed wire form of one frame's ``fields``, refused (``ValueError``,
    :class:`FrameError`) unless it fits a frame and ``decode`` (its protocol's decoder)
    accepts it: what we send obeys the rules we apply to what we receive."""
    body = cbor2.dumps(fields)
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    decode(body)
    return encode_varint(len(body)) + body


# --- decoding ----------------------------------------------------------------------------


def _need(m: dict[str, Any], key: str, kind: type) -> Any:
    if key not in m:
        raise FrameError(f"missing field {key!r}")
    value = m[key]
    # bool is an int subclass; never accept it where an int is expected.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FrameError(f"field {key!r} must be {kind.__name__}")
    return value


_CONTROL_CHARS: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_CHARS_BUT_TAB_NEWLINE: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def text_problem(
    value: str, max_bytes: int, *, multiline: bool = False, allow_empty: bool = True
) -> str | None:
    """Why ``value`` may not travel in a text field (``None`` if it may).

    One rule for both ends: the API refuses what a receiving daemon would refuse, so nothing
    can sit in an outbox that no peer will ever accept. No control characters (terminal
    escapes, carriage returns) except tab and newline in multi-line text; valid UTF-8.
    """
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode text (it contains a lone surrogate)"
    if size > max_bytes:
        return f"is {size} bytes; the limit is {max_bytes}"
    if not allow_empty and not value:
        return "is empty"
    pattern = _CONTROL_CHARS_BUT_TAB_NEWLINE if multiline else _CONTROL_CHARS
    if pattern.search(value):
        return "contains control characters"
    return None


def _text(
    m: dict[str, Any],
    key: str,
    max_bytes: int,
    *,
    multiline: bool = False,
    allow_empty: bool = True,
) -> str:
    value: str = _need(m, key, str)
    problem = text_problem(value, max_bytes, multiline=multiline, allow_empty=allow_empty)
    if problem is not None:
        raise FrameError(f"field {key!r} {problem}")
    return value


def _addrs(m: dict[str, Any]) -> tuple[str, ...]:
    raw = _need(m, "addrs", list)
    if len(raw) > MAX_ADDRS:
        raise FrameError(f"too many addrs ({len(raw)} > {MAX_ADDRS})")
    out: list[str] = []
    for a in raw:
        if (
            not isinstance(a, str)
            or not a.startswith("/")
            or text_problem(a, MAX_ADDR_BYTES) is not None
        ):
            raise FrameError("addrs must be multiaddr strings")
        out.append(a)
    return tuple(out)


def _uint(m: dict[str, Any], key: str) -> int:
    value: int = _need(m, key, int)
    if not 0 <= value < 2**63:
        raise FrameError(f"field {key!r} out of range")
    return value


def _port(m: dict[str, Any], key: str) -> int:
    value = _uint(m, key)
    if value > 65535:
        raise FrameError(f"field {key!r}: port out of range")
    return value


def _msg_id(value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) != MSG_ID_BYTES:
        raise FrameError(f"message id must be {MSG_ID_BYTES} bytes")
    return value


def _bytes(m: dict[str, Any], key: str, size: int) -> bytes:
    value = m.get(key)
    if not isinstance(value, bytes) or len(value) != size:
        raise FrameError(f"field {key!r} must be {size} bytes")
    return value


def _choice(m: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = _need(m, key, str)
    if value not in allowed:
        raise FrameError(f"field {key!r} must be one of {', '.join(allowed)}")
    return str(value)


def file_name_problem(name: str) -> str | None:
    """Why ``name`` is not a bare file name a peer may offer (``None`` if it is).

    Offers carry a name only, never a path: separators, ``.``/``..`` and control characters
    are protocol violations (the receiver still sanitises what passes, see
    :mod:`p2pchat.files.filenames`)."""
    problem = text_problem(name, MAX_FILE_NAME_BYTES, allow_empty=False)
    if problem is not None:
        return problem
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if name in (".", ".."):
        return "is a directory reference"
    return None


def _no_tags(decoder: Any, tag: Any) -> Any:
    raise FrameError(f"CBOR tag {tag.tag} not allowed")


def _no_semantic_tag(decoder: Any, *args: Any) -> Any:
    raise FrameError("CBOR semantic tags are not allowed")


# cbor2 decodes well-known tags itself (datetimes, regexes, shared references, sets...) before
# ``tag_hook`` sees them; override every tag number it might know so none is ever decoded.
_REJECT_SEMANTIC_TAGS: Final[dict[int, Any]] = {
    tag: _no_semantic_tag for tag in (*range(1024), 1004, 1040, 55799)
}


def strict_cbor_decode(data: bytes, max_depth: int = _CBOR_MAX_DEPTH) -> Any:
    """Decode exactly one CBOR item from untrusted bytes, or raise :class:`FrameError`.

    No tags (so no datetimes, regexes or shared references are ever built), no indefinite
    lengths, no duplicate map keys, only text/byte-string keys, bounded nesting, and nothing
    after the item.
    """
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            fp,
            tag_hook=_no_tags,
            semantic_decoders=_REJECT_SEMANTIC_TAGS,
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        ).decode()
    except FrameError:
        raise
    except Exception as exc:  # cbor2 raises several types on hostile input
        raise FrameError(f"invalid CBOR: {exc}") from None
    if fp.tell() != len(data):
        raise FrameError("trailing bytes after the CBOR item")
    return value


def decode_frame(body: bytes) -> Frame:
    """Decode and validate one frame body (without its length prefix)."""
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    m = strict_cbor_decode(body)
    if not isinstance(m, dict):
        raise FrameError("frame must be a CBOR map")
    t = m.get("t")
    if not isinstance(t, str):
        raise FrameError("frame has no type")
    match t:
        case "hello":
            keys = m.get("keys")
            if keys is not None and not (isinstance(keys, bytes) and len(keys) <= MAX_KEYS_BYTES):
                raise FrameError(f"field 'keys' must be at most {MAX_KEYS_BYTES} bytes")
            want_key = m.get("want_key", False)
            if not isinstance(want_key, bool):
                raise FrameError("field 'want_key' must be true or false")
            return Hello(addrs=_addrs(m), keys=keys, want_key=want_key)
        case "keys":
            bundle = _need(m, "bundle", bytes)
            if len(bundle) > MAX_KEYS_BYTES:
                raise FrameError(f"field 'bundle' must be at most {MAX_KEYS_BYTES} bytes")
            return Keys(bundle=bundle)
        case "sealed":
            kind = _need(m, "kind", int)
            if kind not in SEALED_KINDS:
                raise FrameError("field 'kind' must be 0 or 1")
            body = _need(m, "body", bytes)
            if not 1 <= len(body) <= MAX_SEALED_BYTES:
                raise FrameError(f"field 'body' must be 1 to {MAX_SEALED_BYTES} bytes")
            return SealedMessage(
                msg_id=_msg_id(m.get("id")),
                seq=_uint(m, "seq"),
                sent_at_ms=_uint(m, "ts"),
                kind=kind,
                body=body,
            )
        case "msg":
            return ChatMessage(
                msg_id=_msg_id(m.get("id")),
                seq=_uint(m, "seq"),
                sent_at_ms=_uint(m, "ts"),
                text=_text(m, "text", MAX_TEXT_BYTES, multiline=True, allow_empty=False),
            )
        case "ack":
            ids = _need(m, "ids", list)
            if len(ids) > MAX_ACK_IDS:
                raise FrameError("too many ids in ack")
            return Ack(msg_ids=tuple(_msg_id(i) for i in ids))
        case "request":
            invite = m.get("invite")
            if invite is not None and (
                not isinstance(invite, bytes) or not 1 <= len(invite) <= MAX_INVITE_BYTES
            ):
                raise FrameError(f"field 'invite' must be 1 to {MAX_INVITE_BYTES} bytes")
            return FriendRequest(
                name=_text(m, "name", MAX_NAME_BYTES),
                text=_text(m, "text", MAX_REQUEST_TEXT_BYTES, multiline=True),
                addrs=_addrs(m),
                invite=invite,
            )
        case "accept":
            return FriendAccept(name=_text(m, "name", MAX_NAME_BYTES), addrs=_addrs(m))
        case "remove":
            return FriendRemove()
        case "received":
            return Received()
        case "refused":
            return Refused(
                code=_text(m, "code", 32, allow_empty=False),
                reason=_text(m, "reason", MAX_REASON_BYTES),
            )
        case "file-offer":
            name = _need(m, "name", str)
            problem = file_name_problem(name)
            if problem is not None:
                raise FrameError(f"file name {problem}")
            size = _uint(m, "size")
            if size > MAX_FILE_SIZE:
                raise FrameError(f"file size {size} exceeds {MAX_FILE_SIZE}")
            return FileOffer(
                tid=_bytes(m, "id", TRANSFER_ID_BYTES),
                name=name,
                size=size,
                hash=_bytes(m, "hash", FILE_HASH_BYTES),
            )
        case "file-end":
            return FileEnd(
                tid=_bytes(m, "id", TRANSFER_ID_BYTES),
                outcome=_choice(m, "outcome", FILE_OUTCOMES),
                reason=_text(m, "reason", MAX_REASON_BYTES),
            )
        case "file-get":
            offset = _uint(m, "offset")
            if offset > MAX_FILE_SIZE:
                raise FrameError("offset out of range")
            return FileGet(
                tid=_bytes(m, "id", TRANSFER_ID_BYTES),
                offset=offset,
                suite=_choice(m, "suite", BULK_SUITES),
                key=_bytes(m, "key", BULK_KEY_BYTES),
                port=_port(m, "port"),
                punch=_port(m, "punch") if "punch" in m else 0,
            )
        case "file-punch":
            port = _port(m, "port")
            if port == 0:
                raise FrameError("field 'port' must name a port")
            return FilePunch(tid=_bytes(m, "id", TRANSFER_ID_BYTES), port=port)
        case "file-data":
            return FileData(
                tid=_bytes(m, "id", TRANSFER_ID_BYTES), path=_choice(m, "path", DATA_PATHS)
            )
    raise FrameError(f"unknown frame type {t[:32]!r}")


class FrameReader(Generic[F]):
    """Incremental decoder: ``feed`` bytes, get back every complete frame, each decoded and
    validated by ``decode`` (one protocol's frame set).

    After a :class:`FrameError` the decoder is poisoned (the stream is no longer in sync) and
    every further ``feed`` raises again.
    """

    def __init__(self, decode: Callable[[bytes], F], max_frame: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._decode = decode
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[F]:
        if self._error is not None:
            raise self._error
        self._buf += data
        frames: list[F] = []
        try:
            while True:
                header = self._parse_header()
                if header is None:
                    break
                length, offset = header
                if len(self._buf) < offset + length:
                    break
                body = bytes(self._buf[offset : offset + length])
                del self._buf[: offset + length]
                frames.append(self._decode(body))
        except FrameError as exc:
            self._error = exc
            raise
        return frames

    def _parse_header(self) -> tuple[int, int] | None:
        value = 0
        for i, byte in enumerate(self._buf[:_MAX_VARINT_BYTES]):
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i > 0 and byte == 0:
                    raise FrameError("non-minimal length prefix")
                if value > self._max:
                    raise FrameError(f"frame length {value} exceeds {self._max}")
                if value == 0:
                    raise FrameError("empty frame")
                return value, i + 1
        if len(self._buf) >= _MAX_VARINT_BYTES:
            raise FrameError("length prefix too long")
        return None


class FrameDecoder(FrameReader[Frame]):
    """:class:`FrameReader` for the friend, message and file protocols."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        super().__init__(decode_frame, max_frame)
