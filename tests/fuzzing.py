"""Structure-aware fuzzing of every decoder of hostile input, shared by ``bench/fuzz.py`` (at
scale, optionally coverage-guided with atheris) and ``tests/core/test_fuzz_short.py``.

Each :class:`Target` wraps one decoder: ``run(data)`` feeds it one generated input and returns
whether it was accepted; raising one of the target's ``expected`` error types is a rejection;
raising anything else is a *crash* (a bug to fix in the decoder). Inputs are bytes; text
decoders get them as UTF-8 with lone surrogates allowed (``surrogatepass``), else Latin-1.

Generation (:class:`Generator`) is a plain seeded mutator: start from VALID encodings made by
the real encoders, then flip bits, truncate, splice, insert interesting bytes, or rebuild the
structure (valid CBOR/JSON maps with fields of wrong types, sizes and depths, re-signed or
re-checksummed so the input gets past the signature/checksum into the field checks). Same
seed, same inputs.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import random
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
import trio

from p2pchat import config as config_mod
from p2pchat import wire
from p2pchat.calls import frames as call_frames
from p2pchat.files import bulk, filenames
from p2pchat.identity import FriendCode, Identity, IdentityError, parse_id_or_code
from p2pchat.net import records
from p2pchat.paths import CONFIG_FILE

NOW = 1_700_000_000
IDENTITY = Identity(nacl.signing.SigningKey(bytes(range(32))))
OTHER = Identity(nacl.signing.SigningKey(bytes(range(1, 33))))
RECORD_KEY = records.record_key(IDENTITY.peer_id)
BULK_KEY = bytes(range(100, 132))
BULK_TID = bytes(range(16))


class Crash(Exception):
    """A decoder raised something other than its documented error type(s)."""


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], bool]
    """Feed one input; True if accepted, False if rejected without an exception."""
    expected: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]
    """Valid (or nearly valid) inputs built with the real encoders."""
    structured: Callable[[random.Random], bytes]
    """A structure-aware input: the right shape with wrong contents."""


# --- random values -------------------------------------------------------------------------

_INTERESTING_INTS = (0, 1, -1, 15, 16, 17, 255, 256, 65535, 65536, 2**31, 2**32, 2**50,
                     2**50 + 1, 2**53, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63),
                     -(2**64), 10**30)  # fmt: skip
_INTERESTING_TEXT = ("", "/", "//", ".", "..", "a/b", "a\\b", "\x00", "\x1b[31m", "\r\n", "\t",
                     "\u202e", "\x85", "é", "~", "~nosuchuser/x", "/ip4/1.2.3.4/tcp/1",
                     "p2pchat:", "12D3KooW", "[::1]:80", "localhost", "hello", "x" * 300,
                     "\ud800", "a\udfffb")  # fmt: skip


def rand_text(rng: random.Random, *, surrogates: bool = True) -> str:
    r = rng.random()
    if r < 0.3:
        s = rng.choice(_INTERESTING_TEXT)
    elif r < 0.6:
        s = "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randrange(0, 40)))
    elif r < 0.8:
        s = "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 20)))
    else:
        s = "x" * rng.choice((0, 1, 31, 32, 33, 64, 65, 200, 201, 255, 256, 500, 501, 16385))
    if not surrogates:
        s = s.encode("utf-8", "replace").decode("utf-8")
    return s


def rand_value(rng: random.Random, depth: int = 0, *, cbor: bool = True) -> Any:
    """Any CBOR (or JSON, ``cbor=False``) value, biased to the edges."""
    r = rng.randrange(12 if depth < 6 else 8)
    if r == 0:
        return rng.choice(_INTERESTING_INTS)
    if r == 1:
        return rng.randrange(-1000, 1000)
    if r == 2:
        return rng.choice((True, False, None))
    if r == 3:
        return rng.choice((0.0, -0.0, 1.5, float("inf"), float("nan"), 1e308))
    if r in (4, 5):
        return rand_text(rng, surrogates=not cbor)
    if r in (6, 7):
        if not cbor:
            return rand_text(rng)
        return rng.randbytes(rng.choice((0, 1, 15, 16, 17, 31, 32, 33, 64, rng.randrange(100))))
    if r in (8, 9):
        return [rand_value(rng, depth + 1, cbor=cbor) for _ in range(rng.randrange(0, 4))]
    if r == 10:
        return {
            rand_text(rng, surrogates=not cbor): rand_value(rng, depth + 1, cbor=cbor)
            for _ in range(rng.randrange(0, 4))
        }
    if cbor:
        return cbor2.CBORTag(rng.choice((0, 1, 2, 28, 29, 258, 55799, 40000)), rand_value(rng, 6))
    return [[[[[[[[rand_value(rng, 6, cbor=False)]]]]]]]]


def mutate_map(rng: random.Random, m: dict[str, Any], *, cbor: bool = True) -> dict[str, Any]:
    """``m`` with a few fields dropped, retyped, resized or added."""
    out = dict(m)
    for _ in range(rng.randrange(1, 4)):
        keys = list(out)
        r = rng.random()
        if keys and r < 0.2:
            del out[rng.choice(keys)]
        elif keys and r < 0.75:
            k = rng.choice(keys)
            v = out[k]
            if isinstance(v, bytes) and rng.random() < 0.5:
                out[k] = v[: rng.randrange(len(v) + 1)] + rng.randbytes(rng.randrange(3))
            elif isinstance(v, list) and v and rng.random() < 0.5:
                out[k] = v * rng.choice((2, 17, 1025)) if rng.random() < 0.3 else v[1:]
            else:
                out[k] = rand_value(rng, cbor=cbor)
        else:
            out[rand_text(rng, surrogates=not cbor)] = rand_value(rng, cbor=cbor)
    return out


def safe_dumps(obj: Any) -> bytes:
    try:
        return cbor2.dumps(obj)
    except Exception:  # e.g. a value cbor2 will not encode; the generator just moves on
        return b"\xa0"


def as_text(data: bytes) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def text_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# --- wire frames -----------------------------------------------------------------------------


def _frames() -> list[wire.Frame]:
    addrs = ("/ip4/127.0.0.1/tcp/4001", "/ip6/::1/udp/4001/quic-v1")
    return [
        wire.Hello(addrs),
        wire.ChatMessage(b"m" * 16, 7, NOW * 1000, "hi\nthere é"),
        wire.Ack((b"a" * 16, b"b" * 16)),
        wire.FriendRequest("alice", "let's talk", addrs),
        wire.FriendAccept("bob", addrs[:1]),
        wire.FriendRemove(),
        wire.Received(),
        wire.Refused(wire.REFUSED_NOT_FRIEND, "no"),
        wire.FileOffer(b"t" * 16, "photo.jpg", 12345, b"h" * 32),
        wire.FileEnd(b"t" * 16, "cancelled", "user"),
        wire.FileGet(b"t" * 16, 100, "chacha20-poly1305", b"k" * 32, 4242, punch=50001),
        wire.FilePunch(b"t" * 16, 50002),
        wire.FileData(b"t" * 16, "tcp"),
    ]


def _body(encoded: bytes) -> bytes:
    """An encoded frame without its varint length prefix."""
    i = 0
    while encoded[i] & 0x80:
        i += 1
    return encoded[i + 1 :]


def _frame_maps() -> list[dict[str, Any]]:
    return [cbor2.loads(_body(wire.encode(f))) for f in _frames()]


def run_wire(data: bytes) -> bool:
    frame = wire.decode_frame(data)
    # Whatever is accepted must be sendable and read back the same (one rule, both ends).
    if _body(wire.encode(frame)) and wire.decode_frame(_body(wire.encode(frame))) != frame:
        raise Crash(f"{frame!r} does not survive a re-encode")
    return True


def _wire_structured(rng: random.Random) -> bytes:
    return safe_dumps(mutate_map(rng, rng.choice(_frame_maps())))


def run_wire_stream(data: bytes) -> bool:
    """The length-prefix framing reader, fed the input in pieces (sizes from the input)."""
    if not data:
        return False
    step = 1 + data[0] % 17
    reader = wire.FrameDecoder()
    got = 0
    for i in range(1, len(data), step):
        got += len(reader.feed(data[i : i + step]))
    return got > 0


def _stream_seeds() -> list[bytes]:
    encoded = [wire.encode(f) for f in _frames()]
    return [bytes([n]) + b"".join(encoded[: n % 12 + 1]) for n in range(12)]


def _stream_structured(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randrange(1, 4)):
        body = _wire_structured(rng)
        length = len(body) if rng.random() < 0.8 else rng.choice((0, 1, 65536, 65537, 2**35))
        prefix = wire.encode_varint(length)
        if rng.random() < 0.1:
            prefix = prefix[:-1] + bytes([prefix[-1] | 0x80, 0])  # non-minimal
        parts.append(prefix + body)
    return bytes([rng.randrange(256)]) + b"".join(parts)


# --- call frames -----------------------------------------------------------------------------

_CALL = b"c" * 16
_SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def _call_frames() -> list[call_frames.CallFrame]:
    return [
        call_frames.CallOffer(_CALL, True, _SDP),
        call_frames.CallRinging(_CALL),
        call_frames.CallAnswer(_CALL, _SDP),
        call_frames.CallCandidate(_CALL, "candidate:1 1 UDP 2122 127.0.0.1 5000 typ host", "0", 0),
        call_frames.CallCandidate(_CALL, "", "", 15),
        call_frames.CallEnd(_CALL, "hangup"),
    ]


def run_call(data: bytes) -> bool:
    frame = call_frames.decode_call(data)
    if call_frames.decode_call(_body(call_frames.encode_call(frame))) != frame:
        raise Crash(f"{frame!r} does not survive a re-encode")
    return True


def _call_structured(rng: random.Random) -> bytes:
    maps = [cbor2.loads(_body(call_frames.encode_call(f))) for f in _call_frames()]
    return safe_dumps(mutate_map(rng, rng.choice(maps)))


# --- address records -------------------------------------------------------------------------


def _record_fields(identity: Identity) -> dict[str, Any]:
    return {
        "id": identity.public_key,
        "seq": 5,
        "exp": NOW + 3600,
        "devices": [
            {"key": identity.public_key, "addrs": ["/ip4/127.0.0.1/tcp/4001"]},
            {"key": OTHER.public_key, "addrs": []},
        ],
    }


def _envelope(body: bytes) -> bytes:
    sig = IDENTITY.sign(records.SIGNING_CONTEXT + body)
    return cbor2.dumps({"v": records.RECORD_VERSION, "body": body, "sig": sig}, canonical=True)


def run_record(data: bytes) -> bool:
    """Mode byte: 0 the input is the record; 1 the input is the body, signed properly so the
    fields behind the signature are reached."""
    if not data:
        return False
    value = _envelope(data[1:]) if data[0] % 2 else data[1:]
    records.parse_record(RECORD_KEY, value, NOW)
    return True


def _record_seeds() -> list[bytes]:
    signed = records.sign_record(
        IDENTITY,
        5,
        NOW + 3600,
        (
            records.Device(IDENTITY.peer_id, ("/ip4/127.0.0.1/tcp/4001",)),
            records.Device(OTHER.peer_id, ()),
        ),
    )
    body = cbor2.loads(signed)["body"]
    return [b"\x00" + signed, b"\x01" + body]


def _record_structured(rng: random.Random) -> bytes:
    fields = _record_fields(IDENTITY)
    if rng.random() < 0.5:
        devices = [mutate_map(rng, d) for d in fields["devices"]]
        if rng.random() < 0.3:
            devices = devices * rng.choice((3, 5))
        fields["devices"] = devices
    else:
        fields = mutate_map(rng, fields)
    if rng.random() < 0.3:
        fields["exp"] = NOW + rng.choice((-1, 0, 1, 48 * 3600, 48 * 3600 + 601, 2**62))
    return b"\x01" + safe_dumps(fields)


# --- bulk records (file data path) -----------------------------------------------------------


def run_bulk(data: bytes) -> bool:
    """Header bytes: suite and path (feed vs the data-path thread's calls), file size and the
    verified offset; the rest is what the peer sends."""
    if len(data) < 4:
        return False
    suite = wire.BULK_SUITES[data[0] & 1]
    size = int.from_bytes(data[1:3], "big")
    offset = min(data[3] * 256, size)
    stream = data[4:]
    opener = bulk.RecordOpener(suite, BULK_KEY, BULK_TID, offset, size)
    if data[0] & 2:
        step = 1 + data[0] // 4
        for i in range(0, len(stream), step):
            opener.feed(stream[i : i + step])
        return opener.done
    pos = 0
    while len(stream) - pos >= bulk.HEADER_BYTES and not opener.done:
        length = opener.record_length(stream[pos : pos + bulk.HEADER_BYTES])
        record = stream[pos + bulk.HEADER_BYTES : pos + bulk.HEADER_BYTES + length]
        if len(record) < length:
            return False  # the connection ended mid-record
        if not opener.greeted:
            opener.check_hello(record)
        out = bytearray(length)
        opener.open_into(memoryview(record), memoryview(out))
        pos += bulk.HEADER_BYTES + length
    return opener.done


def _sealed(suite: str, offset: int, chunks: list[bytes], *, hello: bool = True) -> bytes:
    sealer = bulk.RecordSealer(suite, BULK_KEY, BULK_TID, offset)
    parts = [sealer.hello()]
    for chunk in chunks:
        out = bytearray(bulk.HEADER_BYTES + len(chunk) + bulk.TAG_BYTES)
        n = sealer.seal_into(memoryview(chunk), memoryview(out))
        parts.append(bytes(out[:n]))
    return b"".join(parts if hello else parts[1:])


def _bulk_seeds() -> list[bytes]:
    seeds = []
    for flags in range(4):
        suite = wire.BULK_SUITES[flags & 1]
        chunks = [b"a" * 100, b"b" * 300, b"c" * 7]
        size = sum(len(c) for c in chunks)
        seeds.append(bytes([flags]) + size.to_bytes(2, "big") + b"\x00" + _sealed(suite, 0, chunks))
    return seeds


def _bulk_structured(rng: random.Random) -> bytes:
    flags = rng.randrange(256)
    suite = wire.BULK_SUITES[flags & 1]
    chunks = [
        rng.randbytes(rng.choice((1, 2, 16, 255, 256, 1000))) for _ in range(rng.randrange(4))
    ]
    total = sum(len(c) for c in chunks)
    offset_byte = rng.choice((0, 0, 0, 1, 2))
    offset = offset_byte * 256
    size = max(0, total + offset + rng.choice((0, 0, 0, -1, 1, -300)))
    stream = bytearray(_sealed(suite, rng.choice((offset, offset, 0, 1)), chunks))
    if rng.random() < 0.3 and len(stream) > 4:
        stream[rng.randrange(len(stream))] ^= 1 << rng.randrange(8)
    if rng.random() < 0.2:
        stream += rng.choice((b"\x00\x00\x00\x10", b"\x00\x10\x00\x10", b"\xff\xff\xff\xff"))
    return bytes([flags]) + min(size, 65535).to_bytes(2, "big") + bytes([offset_byte]) + stream


# --- file names (what a received offer's name becomes on disk) ---------------------------------


def run_filename(data: bytes) -> bool:
    """A name a friend's offer may carry, sanitised into the one path component we write."""
    name = as_text(data)
    if wire.file_name_problem(name) is not None:
        return False
    safe = filenames.sanitize(name)
    if not safe or "/" in safe or "\x00" in safe or safe in (".", ".."):
        raise Crash(f"sanitize({name!r}) gave {safe!r}")
    return True


def _filename_structured(rng: random.Random) -> bytes:
    parts = [rand_text(rng) for _ in range(rng.randrange(1, 4))]
    return text_bytes(rng.choice(("", ".", " ", "-", "~")).join(parts))


# --- friend codes and IDs --------------------------------------------------------------------


def run_friend_code(data: bytes) -> bool:
    code = parse_id_or_code(as_text(data))
    if not code.peer_id.startswith("12D3KooW"):
        raise Crash(f"accepted {code!r}")
    return True


def _code_seeds() -> list[bytes]:
    return [
        text_bytes(IDENTITY.peer_id),
        text_bytes(FriendCode(IDENTITY.peer_id).encode()),
        text_bytes(FriendCode(OTHER.peer_id, ("/ip4/1.2.3.4/tcp/5", "/dns4/x/tcp/1")).encode()),
        text_bytes(FriendCode(OTHER.peer_id, ("/ip4/1.2.3.4/tcp/5",), invite=b"i" * 8).encode()),
    ]


def _code_structured(rng: random.Random) -> bytes:
    from p2pchat.identity import CODE_PREFIX, _code_checksum

    m: dict[str, Any] = {"v": 1, "k": IDENTITY.public_key, "a": ["/ip4/1.2.3.4/tcp/5"]}
    if rng.random() < 0.5:
        m.update(v=2, i=b"i" * 8)
    payload = safe_dumps(mutate_map(rng, m)) if rng.random() < 0.8 else rng.randbytes(10)
    body = base64.b32encode(payload + _code_checksum(payload)).decode().rstrip("=")
    body = body.lower() if rng.random() < 0.7 else body
    if rng.random() < 0.2:
        i = rng.randrange(len(body) + 1)
        body = body[:i] + rng.choice((" ", "\n", "=", "0", "1", "8", "é")) + body[i:]
    return text_bytes(rng.choice((CODE_PREFIX, "P2PCHAT:", " p2pchat:")) + body)


# --- control API lines -----------------------------------------------------------------------


class NodeReached(Exception):
    """A request passed the control API's parsing and parameter checks and reached the node
    (which this harness does not have: the node is not a decoder)."""


class _NoNode:
    def __getattr__(self, name: str) -> Any:
        raise NodeReached(name)


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


_PARAM_KEYS = ("addr", "audio_only", "before", "friend", "id", "limit", "media", "message",
               "name", "path", "peer_id", "record", "source", "state", "text", "stats", "sdp",
               "call", "transfer", "query")  # fmt: skip


def _control_parts() -> tuple[Any, Any, _ErrorLog]:
    from daemon import control

    server = control.ControlServer(_NoNode(), lambda: None)  # type: ignore[arg-type]
    server.node = _NoNode()  # type: ignore[assignment]
    session = control.Session(server, control._NoLink("socket"))
    errors = _ErrorLog()
    log = logging.getLogger("daemon.control")
    log.addHandler(errors)
    log.propagate = False
    return control, session, errors


_CONTROL: tuple[Any, Any, _ErrorLog] | None = None


def run_control(data: bytes) -> bool:
    """One request line through the real session dispatch (JSON-RPC envelope, method lookup,
    every handler's parameter checks) and the reply's JSON encoding, as ``Session.send``."""
    global _CONTROL
    if _CONTROL is None:
        _CONTROL = _control_parts()
    _control, session, errors = _CONTROL
    errors.errors.clear()
    line = data.split(b"\n", 1)[0]
    coro = session.handle_line(line)
    try:  # most requests never suspend: run them without the cost of a trio.run
        coro.send(None)
    except StopIteration as stop:
        reply = stop.value
    else:
        coro.close()  # it awaited something: no side effects here (no node), so run it again
        reply = trio.run(session.handle_line, line)
    text = json.dumps(reply, separators=(",", ":"))
    if not isinstance(reply, dict) or reply.get("jsonrpc") != "2.0" or len(text) > 1 << 20:
        raise Crash(f"bad reply {text[:200]}")
    for exc in errors.errors:
        if not isinstance(exc, NodeReached):
            raise Crash(f"internal error: {exc!r}") from exc
    return "result" in reply or bool(errors.errors)


def _control_seeds() -> list[bytes]:
    from daemon.control import METHODS

    out = []
    for i, method in enumerate(sorted(METHODS)):
        params = {"friend": IDENTITY.peer_id, "text": "hi", "id": "ab" * 16, "limit": 5}
        out.append(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}))
    return [s.encode() for s in out]


def _control_structured(rng: random.Random) -> bytes:
    from daemon.control import METHODS

    params = {rng.choice(_PARAM_KEYS): rand_value(rng, cbor=False) for _ in range(rng.randrange(5))}
    req: dict[str, Any] = {"jsonrpc": "2.0", "id": rand_value(rng, 5, cbor=False)}
    req["method"] = rng.choice(sorted(METHODS)) if rng.random() < 0.9 else rand_text(rng)
    req["params"] = params if rng.random() < 0.9 else rand_value(rng, cbor=False)
    req = mutate_map(rng, req, cbor=False) if rng.random() < 0.15 else req
    text = json.dumps(req)
    if rng.random() < 0.05:
        text = "[" * rng.choice((100, 5000)) + text
    return text_bytes(text)


# --- the web guard ---------------------------------------------------------------------------


def run_web(data: bytes) -> bool:
    """The web server's request checks: fields separated by newlines (method, path, Host,
    Origin, Cookie, an upload name)."""
    from daemon.web import guard

    fields = [*as_text(data).split("\n"), "", "", "", "", "", ""]
    method, path, host, origin, cookie, upload = fields[:6]
    allowed = guard.allowed_authorities(8080, ["192.168.1.5", "fe80::1"])
    cookie_name = guard.cookie_name(8080)
    guard.parse_authority(host)
    refusal = guard.check_request(
        method=None if method == "WS" else method,
        path=path,
        hosts=[host] if host else [],
        origins=[origin] if origin else [],
        cookies=[cookie] if cookie else [],
        allowed=allowed,
        expected_cookie=guard.session_cookie("t" * 43),
        cookie_name=cookie_name,
    )
    name = guard.upload_name(upload or None)
    if name is not None:
        disposition = guard.content_disposition(name)
        disposition.encode("ascii")  # must be a valid header value
        if "/" in name or name in (".", ".."):
            raise Crash(f"upload name {name!r}")
    guard.content_type(path)
    guard.is_transfer_id(path)
    guard.token_ok(path, "t" * 43)
    return refusal is None


def _web_seeds() -> list[bytes]:
    from daemon.web import guard

    cookie = f"{guard.cookie_name(8080)}={guard.session_cookie('t' * 43)}"
    return [
        text_bytes("\n".join(("GET", "/", "127.0.0.1:8080", "", "", ""))),
        text_bytes(
            "\n".join(
                ("POST", "/api/x", "localhost:8080", "http://localhost:8080", cookie, "a.txt")
            )
        ),
        text_bytes("\n".join(("WS", "/ws", "[::1]:8080", "http://[::1]:8080", cookie, "../x"))),
        text_bytes("\n".join(("GET", "/static/app.js", "[fe80::1]:8080", "", "", ""))),
    ]


def _web_structured(rng: random.Random) -> bytes:
    fields = [as_text(s) for s in rng.choice(_web_seeds()).split(b"\n")]
    for _ in range(rng.randrange(1, 3)):
        i = rng.randrange(len(fields))
        fields[i] = rng.choice((fields[i] + rand_text(rng), rand_text(rng), fields[i][:3]))
    return text_bytes("\n".join(f.replace("\n", " ") for f in fields))


# --- config.json -----------------------------------------------------------------------------


_HOME: Path | None = None


def set_config_home(home: Path | None) -> None:
    """Where :func:`run_config` writes its config.json (default: a temporary directory)."""
    global _HOME
    _HOME = home


def _default_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="p2pchat-fuzz-"))
    atexit.register(shutil.rmtree, home, True)
    return home


def run_config(data: bytes) -> bool:
    """``config.json`` (a real file, read by :func:`load_config`) and ``web_listen`` parsing."""
    if _HOME is None:
        set_config_home(_default_home())
    assert _HOME is not None
    config_mod.parse_web_listen(as_text(data))
    (_HOME / CONFIG_FILE).write_bytes(data)
    cfg = config_mod.load_config(_HOME)
    json.dumps(cfg.to_json())
    return True


def _config_seeds() -> list[bytes]:
    base = config_mod.Config().to_json()
    full = dict(
        base,
        ice_servers=[
            "stun:stun.example:3478",
            {"urls": "turn:t:1", "username": "u", "credential": "c"},
        ],
        bootstrap=[f"/ip4/127.0.0.1/tcp/4001/p2p/{IDENTITY.peer_id}"],
        incoming_dir="/tmp/in",
    )
    return [json.dumps(base).encode(), json.dumps(full).encode(), b"127.0.0.1:0", b"[::1]:8080"]


def _config_structured(rng: random.Random) -> bytes:
    if rng.random() < 0.1:
        host = rng.choice(("127.0.0.1", "[::1]", "::1", "localhost", "[fe80::1%eth0]", "1.2.3"))
        return text_bytes(f"{host}:{rng.choice((0, 80, 65535, 65536, '٣'))}")
    seeds = _config_seeds()
    m = json.loads(seeds[rng.randrange(2)])
    m = mutate_map(rng, m, cbor=False)
    if rng.random() < 0.2:  # path-like values where paths go
        paths = ("~", "~/in", "~nosuchuser/in", "/a\x00b", "", "rel/dir", "/\udcff", "//x")
        m[rng.choice(("incoming_dir", "call_record_dir"))] = rng.choice(paths)
    text = json.dumps(m, ensure_ascii=rng.random() < 0.5)
    if rng.random() < 0.01:
        text = "[" * 5000 + "]" * 5000  # deeper than Python's recursion limit
    return text_bytes(text)


# --- the table -------------------------------------------------------------------------------


def targets() -> dict[str, Target]:
    from p2pchat.api import ApiError

    frame_seeds = lambda: [_body(wire.encode(f)) for f in _frames()]  # noqa: E731
    call_seeds = lambda: [_body(call_frames.encode_call(f)) for f in _call_frames()]  # noqa: E731
    names = ["photo.jpg", "..x", "a b.tar.gz", "ǅ" * 100, "con", ".hidden", "x" * 255]
    table = [
        Target("wire", run_wire, (wire.FrameError,), frame_seeds, _wire_structured),
        Target(
            "wire-stream", run_wire_stream, (wire.FrameError,), _stream_seeds, _stream_structured
        ),
        Target("call", run_call, (wire.FrameError,), call_seeds, _call_structured),
        Target("record", run_record, (records.RecordError,), _record_seeds, _record_structured),
        Target("bulk", run_bulk, (bulk.BulkError,), _bulk_seeds, _bulk_structured),
        Target(
            "filename",
            run_filename,
            (),
            lambda: [text_bytes(n) for n in names],
            _filename_structured,
        ),
        Target("friend-code", run_friend_code, (IdentityError,), _code_seeds, _code_structured),
        Target("control", run_control, (ApiError,), _control_seeds, _control_structured),
        Target("web", run_web, (), _web_seeds, _web_structured),
        Target("config", run_config, (config_mod.ConfigError,), _config_seeds, _config_structured),
    ]
    return {t.name: t for t in table}


# --- generation ------------------------------------------------------------------------------

_MAGIC = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1F, 0x40, 0x5F, 0x60,
          0x7B, 0x9F, 0xA1, 0xBF, 0xC0, 0xD8, 0xF4, 0xF5, 0xF6, 0xF7, 0xF9, 0xFB, 0xFF)  # fmt: skip


def mutate_bytes(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """Byte-level havoc on a (usually valid) input."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        r = rng.randrange(8)
        n = len(buf)
        if r == 0 and n:
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif r == 1 and n:
            buf[rng.randrange(n)] = rng.choice(_MAGIC)
        elif r == 2:
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif r == 3 and n:
            i = rng.randrange(n)
            del buf[i : i + rng.randrange(1, 17)]
        elif r == 4 and n:
            del buf[rng.randrange(n) :]  # truncate
        elif r == 5 and n:
            i, j = sorted((rng.randrange(n), rng.randrange(n)))
            buf[j:j] = buf[i : i + 64]
        elif r == 6 and corpus:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            buf = buf[: rng.randrange(n + 1)] + bytearray(other[cut:])  # splice
        elif r == 7 and n:
            i = rng.randrange(n)
            buf[i] = (buf[i] + rng.choice((1, -1, 16, -16))) % 256
    return bytes(buf)


class Generator:
    """Seeded input stream for one target: a third valid-then-mutated, a third
    structure-aware, the rest structure-aware then mutated, with the valid seeds first."""

    def __init__(self, target: Target, seed: int) -> None:
        self.target = target
        self.rng = random.Random(f"{seed}:{target.name}")
        self.corpus = target.seeds()

    def mutate(self, data: bytes) -> bytes:
        r = self.rng.random()
        if r < 0.35:
            return mutate_bytes(self.rng, data, self.corpus)
        if r < 0.7:
            return self.target.structured(self.rng)
        return mutate_bytes(self.rng, self.target.structured(self.rng), self.corpus)

    def __iter__(self) -> Iterator[bytes]:
        yield from self.corpus
        while True:
            yield self.mutate(self.rng.choice(self.corpus))


# --- running ---------------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    seed: int
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: list[tuple[bytes, str]] = field(default_factory=list)
    crash_count: int = 0
    elapsed: float = 0.0


class Outcome:
    """Classifies one run of a target: accepted, rejected, or a crash (with its traceback)."""

    def __init__(self, target: Target, result: Result, keep: int = 5) -> None:
        self.target = target
        self.result = result
        self.keep = keep

    def feed(self, data: bytes) -> bool:
        """Run one input; False if it crashed the decoder."""
        r = self.result
        r.inputs += 1
        try:
            accepted = self.target.run(data)
        except self.target.expected:
            r.rejected += 1
            return True
        except Exception:  # anything else, a RecursionError included, is a decoder bug
            r.crash_count += 1
            if len(r.crashes) < self.keep:
                r.crashes.append((data, traceback.format_exc(limit=8)))
            return False
        if accepted:
            r.accepted += 1
        else:
            r.rejected += 1
        return True


def run_target(target: Target, count: int, seed: int) -> Result:
    """Feed ``count`` generated inputs to ``target`` (plain seeded mutator)."""
    result = Result(target.name, seed)
    outcome = Outcome(target, result)
    start = time.perf_counter()
    gen = iter(Generator(target, seed))
    for _ in range(count):
        outcome.feed(next(gen))
    result.elapsed = time.perf_counter() - start
    return result
