"""Unit and property tests of the sans-IO frame codec (p2pchat.wire)."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pchat import wire
from p2pchat.wire import (
    Ack,
    ChatMessage,
    FileData,
    FileEnd,
    FileGet,
    FileOffer,
    FilePunch,
    Frame,
    FrameDecoder,
    FrameError,
    FriendAccept,
    FriendRemove,
    FriendRequest,
    Hello,
    Received,
    Refused,
)

FRAME_TYPES = (
    Hello,
    ChatMessage,
    Ack,
    FriendRequest,
    FriendAccept,
    FriendRemove,
    Received,
    Refused,
    FileOffer,
    FileEnd,
    FileGet,
    FilePunch,
    FileData,
)
TYPE_NAMES = [
    "hello",
    "msg",
    "ack",
    "request",
    "accept",
    "remove",
    "received",
    "refused",
    "file-offer",
    "file-end",
    "file-get",
    "file-punch",
    "file-data",
]
FIELD_NAMES = [
    "t",
    "addrs",
    "id",
    "seq",
    "ts",
    "text",
    "ids",
    "name",
    "code",
    "reason",
    "size",
    "hash",
    "outcome",
    "offset",
    "suite",
    "key",
    "port",
    "punch",
    "path",
]

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def body(m: Any) -> bytes:
    """CBOR body (no length prefix) of an arbitrary map or value."""
    return cbor2.dumps(m)


def framed(raw_body: bytes) -> bytes:
    return wire.encode_varint(len(raw_body)) + raw_body


def unframe(data: bytes) -> bytes:
    """Strip the varint length prefix from one encoded frame."""
    i = 0
    while data[i] & 0x80:
        i += 1
    return data[i + 1 :]


def valid_msg(**overrides: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"t": "msg", "id": b"\x01" * 16, "seq": 1, "ts": 2, "text": "hi"}
    m.update(overrides)
    return m


def assert_valid_frame(frame: object) -> None:
    """A decoded frame is one of ours and survives our own encoder (which re-validates)."""
    assert isinstance(frame, FRAME_TYPES)
    assert FrameDecoder().feed(wire.encode(frame)) == [frame]


# --- strategies ------------------------------------------------------------------------------


def _truncate_utf8(s: str, limit: int) -> str:
    return s.encode("utf-8")[:limit].decode("utf-8", "ignore")


# Text fields carry no control characters (tab and newline aside, in message bodies).
_chars = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))


def text_upto(limit: int, *, min_size: int = 0, max_chars: int = 80) -> st.SearchStrategy[str]:
    return (
        st.text(_chars, min_size=min_size, max_size=max_chars)
        .map(lambda s: _truncate_utf8(s, limit))
        .filter(lambda s: len(s) >= min_size)
    )


addr_st = st.text(_chars, max_size=wire.MAX_ADDR_BYTES // 4 - 1).map(lambda s: "/" + s)
addrs_st = st.lists(addr_st, max_size=wire.MAX_ADDRS).map(tuple)
msg_id_st = st.binary(min_size=wire.MSG_ID_BYTES, max_size=wire.MSG_ID_BYTES)
uint_st = st.integers(min_value=0, max_value=2**63 - 1)
tid_st = st.binary(min_size=wire.TRANSFER_ID_BYTES, max_size=wire.TRANSFER_ID_BYTES)
file_name_st = text_upto(wire.MAX_FILE_NAME_BYTES, min_size=1, max_chars=100).filter(
    lambda s: wire.file_name_problem(s) is None
)

frame_st: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Hello, addrs=addrs_st),
    st.builds(
        ChatMessage,
        msg_id=msg_id_st,
        seq=uint_st,
        sent_at_ms=uint_st,
        text=text_upto(wire.MAX_TEXT_BYTES, min_size=1, max_chars=300),
    ),
    st.builds(Ack, msg_ids=st.lists(msg_id_st, max_size=40).map(tuple)),
    st.builds(
        FriendRequest,
        name=text_upto(wire.MAX_NAME_BYTES),
        text=text_upto(wire.MAX_REQUEST_TEXT_BYTES, max_chars=200),
        addrs=addrs_st,
    ),
    st.builds(FriendAccept, name=text_upto(wire.MAX_NAME_BYTES), addrs=addrs_st),
    st.just(FriendRemove()),
    st.just(Received()),
    st.builds(
        Refused,
        code=text_upto(32, min_size=1, max_chars=32),
        reason=text_upto(wire.MAX_REASON_BYTES, max_chars=100),
    ),
    st.builds(
        FileOffer,
        tid=tid_st,
        name=file_name_st,
        size=st.integers(min_value=0, max_value=wire.MAX_FILE_SIZE),
        hash=st.binary(min_size=32, max_size=32),
    ),
    st.builds(
        FileEnd,
        tid=tid_st,
        outcome=st.sampled_from(wire.FILE_OUTCOMES),
        reason=text_upto(wire.MAX_REASON_BYTES, max_chars=100),
    ),
    st.builds(
        FileGet,
        tid=tid_st,
        offset=st.integers(min_value=0, max_value=wire.MAX_FILE_SIZE),
        suite=st.sampled_from(wire.BULK_SUITES),
        key=st.binary(min_size=32, max_size=32),
        port=st.integers(min_value=0, max_value=65535),
        punch=st.integers(min_value=0, max_value=65535),
    ),
    st.builds(FilePunch, tid=tid_st, port=st.integers(min_value=1, max_value=65535)),
    st.builds(FileData, tid=tid_st, path=st.sampled_from(wire.DATA_PATHS)),
)

cbor_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
cbor_values = st.recursive(
    cbor_leaf,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=4)
    ),
    max_leaves=15,
)
frame_like_maps = st.builds(
    lambda t, fields: {"t": t, **fields},
    st.sampled_from(TYPE_NAMES) | cbor_leaf,
    st.dictionaries(
        st.sampled_from(FIELD_NAMES[1:]) | st.text(max_size=4), cbor_values, max_size=6
    ),
)


# --- round trip ------------------------------------------------------------------------------


@SETTINGS
@given(frame_st)
def test_round_trip_single_frame(frame: Frame) -> None:
    data = wire.encode(frame)
    raw = unframe(data)
    assert data == wire.encode_varint(len(raw)) + raw
    assert wire.decode_frame(raw) == frame
    decoder = FrameDecoder()
    assert decoder.feed(data) == [frame]
    assert decoder.buffered == 0


@SETTINGS
@given(st.lists(frame_st, min_size=1, max_size=8), st.data())
def test_round_trip_concatenated_and_split_arbitrarily(
    frames: list[Frame], data: st.DataObject
) -> None:
    blob = b"".join(wire.encode(f) for f in frames)
    cuts = sorted(
        data.draw(st.lists(st.integers(min_value=0, max_value=len(blob)), max_size=12), "cuts")
    )
    decoder = FrameDecoder()
    out: list[Frame] = []
    start = 0
    for cut in [*cuts, len(blob)]:
        out.extend(decoder.feed(blob[start:cut]))
        start = cut
    assert out == frames
    assert decoder.buffered == 0


def test_feeding_one_byte_at_a_time() -> None:
    frames: list[Frame] = [
        Hello(addrs=("/ip4/1.2.3.4/tcp/1",)),
        ChatMessage(msg_id=b"\x07" * 16, seq=3, sent_at_ms=99, text="héllo"),
        Ack(msg_ids=(b"\x07" * 16,)),
        Received(),
    ]
    blob = b"".join(wire.encode(f) for f in frames)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(len(blob)):
        out.extend(decoder.feed(blob[i : i + 1]))
    assert out == frames


def test_feed_empty_bytes_is_harmless() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(wire.encode(Received())) == [Received()]
    assert decoder.feed(b"") == []


def test_partial_frame_is_buffered() -> None:
    data = wire.encode(ChatMessage(msg_id=b"\x00" * 16, seq=1, sent_at_ms=1, text="x" * 300))
    decoder = FrameDecoder()
    assert decoder.feed(data[:-1]) == []
    assert decoder.buffered == len(data) - 1
    assert decoder.feed(data[-1:]) == [
        ChatMessage(msg_id=b"\x00" * 16, seq=1, sent_at_ms=1, text="x" * 300)
    ]
    assert decoder.buffered == 0


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 300, 16383, 16384, 2**21, 2**35])
def test_encode_varint_minimal_leb128(value: int) -> None:
    enc = wire.encode_varint(value)
    decoded = sum((b & 0x7F) << (7 * i) for i, b in enumerate(enc))
    assert decoded == value
    assert all(b & 0x80 for b in enc[:-1])
    assert not enc[-1] & 0x80
    assert len(enc) == max(1, (value.bit_length() + 6) // 7)


def test_encode_varint_rejects_negative() -> None:
    with pytest.raises(ValueError):
        wire.encode_varint(-1)


def test_encode_rejects_frames_our_own_decoder_would_refuse() -> None:
    with pytest.raises(FrameError):
        wire.encode(ChatMessage(msg_id=b"\x00" * 16, seq=1, sent_at_ms=1, text=""))
    with pytest.raises(FrameError):
        wire.encode(Hello(addrs=("no-slash",)))
    with pytest.raises(FrameError):
        wire.encode(Ack(msg_ids=(b"short",)))


# --- robustness ------------------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=600))
def test_decode_frame_arbitrary_bytes(raw: bytes) -> None:
    try:
        frame = wire.decode_frame(raw)
    except FrameError:
        return
    assert_valid_frame(frame)


@SETTINGS
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_decoder_feed_arbitrary_bytes(raw: bytes, chunk: int) -> None:
    decoder = FrameDecoder()
    try:
        for i in range(0, len(raw), chunk):
            for frame in decoder.feed(raw[i : i + chunk]):
                assert_valid_frame(frame)
    except FrameError:
        with pytest.raises(FrameError):
            decoder.feed(b"")


@SETTINGS
@given(st.binary(min_size=1, max_size=400))
def test_decoder_feed_arbitrary_length_prefixed_bodies(raw: bytes) -> None:
    # A correct length prefix gets random bytes past the header check into the CBOR decoder.
    try:
        frames = FrameDecoder().feed(framed(raw))
    except FrameError:
        return
    assert len(frames) == 1
    assert_valid_frame(frames[0])


@SETTINGS
@given(cbor_values)
def test_decode_arbitrary_cbor_values(value: Any) -> None:
    try:
        frame = wire.decode_frame(body(value))
    except FrameError:
        return
    assert_valid_frame(frame)


@SETTINGS
@given(frame_like_maps)
def test_decode_arbitrary_frame_like_maps(m: dict[Any, Any]) -> None:
    raw = body(m)
    try:
        frame = wire.decode_frame(raw)
    except FrameError:
        with pytest.raises(FrameError):
            FrameDecoder().feed(framed(raw))
        return
    assert_valid_frame(frame)
    assert FrameDecoder().feed(framed(raw)) == [frame]


@pytest.mark.parametrize("bad", ["\x1b[31mred", "line\rover", "bell\x07", "\x9b31m"])
def test_control_characters_are_refused_in_names_and_text(bad: str) -> None:
    with pytest.raises(FrameError, match="control characters"):
        wire.decode_frame(cbor2.dumps({"t": "accept", "name": bad, "addrs": []}))
    with pytest.raises(FrameError, match="control characters"):
        wire.decode_frame(
            cbor2.dumps({"t": "msg", "id": bytes(16), "seq": 1, "ts": 1, "text": bad})
        )


def test_tab_and_newline_are_fine_in_message_text_only() -> None:
    text = "two\nlines\tand a tab"
    msg = wire.decode_frame(
        cbor2.dumps({"t": "msg", "id": bytes(16), "seq": 1, "ts": 1, "text": text})
    )
    assert isinstance(msg, ChatMessage) and msg.text == text
    with pytest.raises(FrameError):
        wire.decode_frame(cbor2.dumps({"t": "accept", "name": "a\nb", "addrs": []}))


@SETTINGS
@given(frame_st, st.sampled_from(FIELD_NAMES), cbor_values)
def test_decode_valid_frame_with_one_field_replaced(frame: Frame, key: str, value: Any) -> None:
    m = cbor2.loads(unframe(wire.encode(frame)))
    m[key] = value
    try:
        decoded = wire.decode_frame(body(m))
    except FrameError:
        return
    assert_valid_frame(decoded)


# --- poisoning -------------------------------------------------------------------------------


def test_decoder_stays_poisoned_after_error() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError) as first:
        decoder.feed(b"\x00")  # empty frame
    for _ in range(3):
        with pytest.raises(FrameError) as again:
            decoder.feed(wire.encode(Received()))
        assert again.value is first.value
    with pytest.raises(FrameError):
        decoder.feed(b"")


def test_decoder_poisoned_by_bad_body_after_good_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(wire.encode(Received())) == [Received()]
    with pytest.raises(FrameError):
        decoder.feed(framed(body({"t": "nope"})))
    with pytest.raises(FrameError):
        decoder.feed(wire.encode(Received()))


@SETTINGS
@given(st.binary(min_size=1, max_size=100), frame_st)
def test_poisoned_decoder_never_recovers(garbage: bytes, frame: Frame) -> None:
    decoder = FrameDecoder()
    try:
        decoder.feed(b"\x00" + garbage)
    except FrameError:
        pass
    else:  # pragma: no cover - an empty frame always fails
        pytest.fail("empty frame accepted")
    with pytest.raises(FrameError):
        decoder.feed(wire.encode(frame))


# --- length prefix ---------------------------------------------------------------------------


def test_oversized_length_rejected_from_header_alone() -> None:
    header = wire.encode_varint(wire.MAX_FRAME_BYTES + 1)
    with pytest.raises(FrameError, match="exceeds"):
        FrameDecoder().feed(header)


def test_oversized_length_rejected_when_header_completes_bytewise() -> None:
    header = wire.encode_varint(wire.MAX_FRAME_BYTES + 1)
    decoder = FrameDecoder()
    for b in header[:-1]:
        assert decoder.feed(bytes([b])) == []
    with pytest.raises(FrameError):
        decoder.feed(header[-1:])


def test_max_length_header_waits_for_body() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(wire.encode_varint(wire.MAX_FRAME_BYTES)) == []


def test_custom_max_frame() -> None:
    assert FrameDecoder(max_frame=10).feed(wire.encode_varint(10)) == []
    with pytest.raises(FrameError):
        FrameDecoder(max_frame=10).feed(wire.encode_varint(11))


def test_decode_frame_rejects_oversized_body() -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(b"\xa0" * (wire.MAX_FRAME_BYTES + 1))


@pytest.mark.parametrize(
    "prefix",
    [
        b"\x80\x00",  # zero, two bytes
        b"\x81\x00",  # one, two bytes
        b"\x85\x80\x00",  # five, three bytes
        b"\xff\x80\x00",
    ],
)
def test_non_minimal_varint_rejected(prefix: bytes) -> None:
    with pytest.raises(FrameError, match="non-minimal"):
        FrameDecoder().feed(prefix + b"\xa0" * 200)


def test_empty_frame_rejected() -> None:
    with pytest.raises(FrameError, match="empty"):
        FrameDecoder().feed(b"\x00")


def test_overlong_varint_rejected() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x80\x80\x80\x80") == []  # still could be a (huge) prefix
    with pytest.raises(FrameError):
        decoder.feed(b"\x80")


# --- CBOR-level rejections -------------------------------------------------------------------


@pytest.mark.parametrize(
    "tagged",
    [
        cbor2.CBORTag(0, "2020-01-01T00:00:00Z"),
        cbor2.CBORTag(1, 0),
        cbor2.CBORTag(2, b"\x01"),
        cbor2.CBORTag(24, b"\xa0"),
        cbor2.CBORTag(28, []),
        cbor2.CBORTag(29, 0),
        cbor2.CBORTag(258, [1, 2]),
        cbor2.CBORTag(1004, "2020-01-01"),
        cbor2.CBORTag(55799, "x"),
        cbor2.CBORTag(40000, "x"),
    ],
    ids=lambda t: f"tag{t.tag}",
)
def test_cbor_tags_rejected_anywhere(tagged: cbor2.CBORTag) -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(body({"t": "remove", "extra": tagged}))
    with pytest.raises(FrameError):
        wire.decode_frame(body({"t": "ack", "ids": [tagged]}))
    with pytest.raises(FrameError):
        wire.decode_frame(body(cbor2.CBORTag(tagged.tag, {"t": "remove"})))


def test_huge_integer_is_a_rejected_bignum_tag() -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(body(valid_msg(seq=2**64)))


def test_self_describe_prefix_rejected() -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(b"\xd9\xd9\xf7" + body({"t": "remove"}))


@pytest.mark.parametrize(
    "raw",
    [
        b"\xbf\x61t\x66remove\xff",  # indefinite map
        b"\xa1\x61t\x7f\x63rem\x63ove\xff",  # indefinite text
        b"\xa2\x61t\x63ack\x63ids\x9f\xff",  # indefinite array
        b"\xa2\x61t\x66remove\x61x\x5f\x41a\xff",  # indefinite bytes
    ],
)
def test_indefinite_lengths_rejected(raw: bytes) -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(raw)


def test_duplicate_keys_rejected() -> None:
    raw = b"\xa2\x61t\x66remove\x61t\x66remove"
    with pytest.raises(FrameError):
        wire.decode_frame(raw)
    raw2 = b"\xa3\x61t\x66remove\x61x\x01\x61x\x02"
    with pytest.raises(FrameError):
        wire.decode_frame(raw2)


def test_nesting_depth_limit() -> None:
    ok = {"t": "remove", "x": [[[1]]]}
    assert wire.decode_frame(body(ok)) == FriendRemove()
    with pytest.raises(FrameError):
        wire.decode_frame(body({"t": "remove", "x": [[[[1]]]]}))
    with pytest.raises(FrameError):
        wire.decode_frame(b"\xa2\x61t\x66remove\x61x" + b"\x81" * 10_000 + b"\x00")


@pytest.mark.parametrize(
    "raw",
    [
        b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00",  # array claiming 2**32 items
        b"\xbb\x00\x00\x00\x01\x00\x00\x00\x00",  # map claiming 2**32 pairs
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # bytes claiming 2**64-1 bytes
        b"\x7b\xff\xff\xff\xff\xff\xff\xff\xff",  # text claiming 2**64-1 bytes
        b"\xa1\x61t\x62\xff\xfe",  # invalid UTF-8
        b"\xa1\x61t\x63\xed\xa0\x80",  # encoded surrogate
        b"\xa1\x61t",  # truncated
        b"\x1c",  # reserved additional info
        b"\xff",  # stray break
    ],
)
def test_malformed_cbor_rejected(raw: bytes) -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(raw)


def test_trailing_bytes_after_map_rejected() -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(body({"t": "remove"}) + b"\x00")


# --- frame-level rejections ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 1, "remove", b"remove", [], ["t", "remove"], 1.5, True],
    ids=repr,
)
def test_frame_must_be_map(value: Any) -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(body(value))


@pytest.mark.parametrize(
    "m",
    [
        {},
        {"type": "remove"},
        {"t": None},
        {"t": 1},
        {"t": b"remove"},
        {"t": "Remove"},
        {"t": "nope"},
        {"t": ""},
        {"t": "x" * 10_000},
    ],
    ids=repr,
)
def test_missing_or_unknown_type_rejected(m: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(body(m))


def test_unknown_fields_are_ignored() -> None:
    assert wire.decode_frame(body({"t": "received", "future": [1, 2]})) == Received()
    assert wire.decode_frame(body(valid_msg(extra="x"))) == ChatMessage(
        msg_id=b"\x01" * 16, seq=1, sent_at_ms=2, text="hi"
    )


BAD_MSGS = {
    "seq bool": valid_msg(seq=True),
    "seq false": valid_msg(seq=False),
    "ts bool": valid_msg(ts=True),
    "seq float": valid_msg(seq=1.0),
    "seq str": valid_msg(seq="1"),
    "seq negative": valid_msg(seq=-1),
    "seq 2**63": valid_msg(seq=2**63),
    "ts 2**64-1": valid_msg(ts=2**64 - 1),
    "seq missing": {k: v for k, v in valid_msg().items() if k != "seq"},
    "ts missing": {k: v for k, v in valid_msg().items() if k != "ts"},
    "text missing": {k: v for k, v in valid_msg().items() if k != "text"},
    "id missing": {k: v for k, v in valid_msg().items() if k != "id"},
    "id str": valid_msg(id="a" * 16),
    "id short": valid_msg(id=b"\x00" * 15),
    "id long": valid_msg(id=b"\x00" * 17),
    "id list": valid_msg(id=[0] * 16),
    "text empty": valid_msg(text=""),
    "text bytes": valid_msg(text=b"hi"),
    "text bool": valid_msg(text=True),
    "text NUL": valid_msg(text="a\x00b"),
    "text too long": valid_msg(text="a" * (wire.MAX_TEXT_BYTES + 1)),
    "text too long multibyte": valid_msg(text="é" * (wire.MAX_TEXT_BYTES // 2) + "a"),
}


@pytest.mark.parametrize("m", BAD_MSGS.values(), ids=BAD_MSGS.keys())
def test_bad_chat_messages_rejected(m: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(body(m))


def test_chat_message_limits_accepted_at_boundary() -> None:
    big = "é" * (wire.MAX_TEXT_BYTES // 2)
    frame = wire.decode_frame(body(valid_msg(text=big, seq=2**63 - 1, ts=0)))
    assert frame == ChatMessage(msg_id=b"\x01" * 16, seq=2**63 - 1, sent_at_ms=0, text=big)
    assert FrameDecoder().feed(wire.encode(frame)) == [frame]


BAD_OTHERS = {
    "hello no addrs": {"t": "hello"},
    "hello addrs str": {"t": "hello", "addrs": "/ip4/1.2.3.4"},
    "hello addr int": {"t": "hello", "addrs": [1]},
    "hello addr bytes": {"t": "hello", "addrs": [b"/ip4"]},
    "hello addr no slash": {"t": "hello", "addrs": ["ip4/1.2.3.4"]},
    "hello addr empty": {"t": "hello", "addrs": [""]},
    "hello addr too long": {"t": "hello", "addrs": ["/" + "a" * wire.MAX_ADDR_BYTES]},
    "hello too many addrs": {"t": "hello", "addrs": ["/a"] * (wire.MAX_ADDRS + 1)},
    "ack no ids": {"t": "ack"},
    "ack ids bytes": {"t": "ack", "ids": b"\x00" * 16},
    "ack bad id": {"t": "ack", "ids": [b"\x00" * 16, b"\x00"]},
    "ack too many": {"t": "ack", "ids": [b"\x00" * 16] * (wire.MAX_ACK_IDS + 1)},
    "request no name": {"t": "request", "text": "", "addrs": []},
    "request no text": {"t": "request", "name": "", "addrs": []},
    "request no addrs": {"t": "request", "name": "", "text": ""},
    "request name too long": {
        "t": "request",
        "name": "é" * (wire.MAX_NAME_BYTES // 2) + "a",
        "text": "",
        "addrs": [],
    },
    "request text too long": {
        "t": "request",
        "name": "",
        "text": "a" * (wire.MAX_REQUEST_TEXT_BYTES + 1),
        "addrs": [],
    },
    "request name NUL": {"t": "request", "name": "\x00", "text": "", "addrs": []},
    "request text NUL": {"t": "request", "name": "", "text": "hi\x00", "addrs": []},
    "request name int": {"t": "request", "name": 0, "text": "", "addrs": []},
    "accept no addrs": {"t": "accept", "name": "x"},
    "accept name NUL": {"t": "accept", "name": "a\x00", "addrs": []},
    "accept name too long": {"t": "accept", "name": "a" * 65, "addrs": []},
    "refused empty code": {"t": "refused", "code": "", "reason": ""},
    "refused code too long": {"t": "refused", "code": "c" * 33, "reason": ""},
    "refused reason too long": {"t": "refused", "code": "c", "reason": "r" * 201},
    "refused reason NUL": {"t": "refused", "code": "c", "reason": "\x00"},
    "refused code NUL": {"t": "refused", "code": "\x00", "reason": ""},
    "refused no reason": {"t": "refused", "code": "c"},
    "refused code bool": {"t": "refused", "code": True, "reason": ""},
}


@pytest.mark.parametrize("m", BAD_OTHERS.values(), ids=BAD_OTHERS.keys())
def test_bad_frames_rejected(m: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(body(m))


GOOD = {
    "hello max": (
        {"t": "hello", "addrs": ["/" + "a" * (wire.MAX_ADDR_BYTES - 1)] * wire.MAX_ADDRS},
        Hello(addrs=("/" + "a" * (wire.MAX_ADDR_BYTES - 1),) * wire.MAX_ADDRS),
    ),
    "hello empty": ({"t": "hello", "addrs": []}, Hello(addrs=())),
    "ack max": (
        {"t": "ack", "ids": [b"\x02" * 16] * wire.MAX_ACK_IDS},
        Ack(msg_ids=(b"\x02" * 16,) * wire.MAX_ACK_IDS),
    ),
    "ack empty": ({"t": "ack", "ids": []}, Ack(msg_ids=())),
    "request max": (
        {
            "t": "request",
            "name": "é" * (wire.MAX_NAME_BYTES // 2),
            "text": "a" * wire.MAX_REQUEST_TEXT_BYTES,
            "addrs": ["/x"],
        },
        FriendRequest(
            name="é" * (wire.MAX_NAME_BYTES // 2),
            text="a" * wire.MAX_REQUEST_TEXT_BYTES,
            addrs=("/x",),
        ),
    ),
    "request empty": (
        {"t": "request", "name": "", "text": "", "addrs": []},
        FriendRequest(name="", text="", addrs=()),
    ),
    "accept": ({"t": "accept", "name": "Bob", "addrs": ["/a"]}, FriendAccept("Bob", ("/a",))),
    "remove": ({"t": "remove"}, FriendRemove()),
    "received": ({"t": "received"}, Received()),
    "refused max": (
        {"t": "refused", "code": "c" * 32, "reason": "r" * wire.MAX_REASON_BYTES},
        Refused(code="c" * 32, reason="r" * wire.MAX_REASON_BYTES),
    ),
}


@pytest.mark.parametrize(("m", "expected"), GOOD.values(), ids=GOOD.keys())
def test_good_frames_at_limits(m: dict[str, Any], expected: Frame) -> None:
    assert wire.decode_frame(body(m)) == expected
    assert FrameDecoder().feed(wire.encode(expected)) == [expected]


def test_addr_limit_counts_bytes() -> None:
    addr = "/" + "€" * (wire.MAX_ADDR_BYTES - 1)  # 256 characters, 766 bytes
    with pytest.raises(FrameError):
        wire.decode_frame(body({"t": "hello", "addrs": [addr]}))


# --- file frames -------------------------------------------------------------------------------


def file_offer(**overrides: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "t": "file-offer",
        "id": b"\x02" * 16,
        "name": "a.txt",
        "size": 3,
        "hash": b"\x00" * 32,
    }
    m.update(overrides)
    return m


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "..",
        ".",
        "",
        "x\x00y",
        "tab\tname",
        "\x1b[2J",
        "é" * 200,
    ],
)
def test_file_offer_names_must_be_bare_names(name: str) -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(body(file_offer(name=name)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"size": -1},
        {"size": wire.MAX_FILE_SIZE + 1},
        {"size": True},
        {"id": b"\x01" * 15},
        {"hash": b"\x00" * 31},
        {"hash": "00" * 32},
    ],
)
def test_file_offer_fields_are_checked(overrides: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(body(file_offer(**overrides)))


@pytest.mark.parametrize(
    "m",
    [
        {"t": "file-end", "id": b"\x01" * 16, "outcome": "exploded", "reason": ""},
        {
            "t": "file-get",
            "id": b"\x01" * 16,
            "offset": 0,
            "suite": "rot13",
            "key": b"k" * 32,
            "port": 0,
        },
        {
            "t": "file-get",
            "id": b"\x01" * 16,
            "offset": 0,
            "suite": "aes-256-gcm",
            "key": b"k" * 16,
            "port": 0,
        },
        {
            "t": "file-get",
            "id": b"\x01" * 16,
            "offset": 0,
            "suite": "aes-256-gcm",
            "key": b"k" * 32,
            "port": 65536,
        },
        {
            "t": "file-get",
            "id": b"\x01" * 16,
            "offset": wire.MAX_FILE_SIZE + 1,
            "suite": "aes-256-gcm",
            "key": b"k" * 32,
            "port": 1,
        },
        {
            "t": "file-get",
            "id": b"\x01" * 16,
            "offset": 0,
            "suite": "aes-256-gcm",
            "key": b"k" * 32,
            "port": 1,
            "punch": 65536,
        },
        {
            "t": "file-get",
            "id": b"\x01" * 16,
            "offset": 0,
            "suite": "aes-256-gcm",
            "key": b"k" * 32,
            "port": 1,
            "punch": -1,
        },
        {
            "t": "file-get",
            "id": b"\x01" * 16,
            "offset": 0,
            "suite": "aes-256-gcm",
            "key": b"k" * 32,
            "port": 1,
            "punch": True,
        },
        {"t": "file-punch", "id": b"\x01" * 16, "port": 0},
        {"t": "file-punch", "id": b"\x01" * 16, "port": 65536},
        {"t": "file-punch", "id": b"\x01" * 15, "port": 4242},
        {"t": "file-punch", "id": b"\x01" * 16},
        {"t": "file-data", "id": b"\x01" * 16, "path": "carrier-pigeon"},
    ],
)
def test_other_file_frames_are_checked(m: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        wire.decode_frame(body(m))


def test_a_file_get_without_punch_is_the_old_frame() -> None:
    """A receiver that offers no punch port sends the frame an older sender knows, and an
    older receiver's frame (no ``punch`` field) decodes as offering none."""
    get = FileGet(b"\x01" * 16, 0, "aes-256-gcm", b"k" * 32, 4242)
    assert "punch" not in cbor2.loads(unframe(wire.encode(get)))
    with_punch = FileGet(b"\x01" * 16, 0, "aes-256-gcm", b"k" * 32, 4242, punch=50000)
    assert cbor2.loads(unframe(wire.encode(with_punch)))["punch"] == 50000
    assert wire.decode_frame(unframe(wire.encode(get))).punch == 0  # type: ignore[union-attr]
