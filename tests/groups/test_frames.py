"""Group protocol frames (p2pchat.groups.frames): each one round-trips, each field's rule
refuses what breaks it with the field's name, and no input crashes the decoder
(PROTOCOL.md §15.4). No network."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat import wire
from p2pchat.groups.frames import (
    MAX_ENTRIES_PER_FRAME,
    MAX_VECTOR_SENDERS,
    Addrs,
    Bundle,
    GotKey,
    GroupDecoder,
    Have,
    Key,
    Log,
    Message,
    Sync,
    WantBundle,
    WantLog,
    decode,
    encode,
)
from p2pchat.wire import FrameError, Refused

G = b"g" * 16
K1, K2 = b"\x01" * 32, b"\x02" * 32

FRAMES = [
    Sync(G, 7, b"h" * 32, ((K1, 3), (K2, 0))),
    Sync(G, 0, b"\x00" * 32, ()),
    Log(G, (b"entry one", b"entry two")),
    WantLog(G, 12),
    Key(G, "lmOlXfu8kPxgeyqFsuReGcG+N8WdIKOvbE8fd9vxDxI", 0, b"olm" * 100),
    Message(G, b"i" * 16, K1, 1, 9, 4, "session", b"megolm body"),
    Have(G, ((K1, 10),)),
    Refused("not_member", "you are not a member of this group"),
    Bundle(G, b"signed bundle"),
    WantBundle(G),
    Addrs(G, ((K1, ("/ip4/127.0.0.1/tcp/4001",)), (K2, ()))),
    GotKey(G, "lmOlXfu8kPxgeyqFsuReGcG+N8WdIKOvbE8fd9vxDxI"),
]


def body_of(frame: Any) -> bytes:
    encoded = encode(frame)
    for used in range(1, 4):  # the varint length prefix
        if wire.encode_varint(len(encoded) - used) == encoded[:used]:
            return encoded[used:]
    raise AssertionError("no length prefix")


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_reads_back_as_itself(frame: Any) -> None:
    assert decode(body_of(frame)) == frame


def test_a_stream_of_frames_decodes_in_pieces() -> None:
    data = b"".join(encode(f) for f in FRAMES)
    decoder = GroupDecoder()
    got: list[Any] = []
    for i in range(0, len(data), 7):
        got.extend(decoder.feed(data[i : i + 7]))
    assert got == FRAMES


def mutate(frame: Any, **changes: Any) -> bytes:
    m = cbor2.loads(body_of(frame))
    m.update(changes)
    return cbor2.dumps({k: v for k, v in m.items() if v is not ...})


MSG = FRAMES[5]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (mutate(MSG, g=b"short"), "'g' must be 16 bytes"),
        (mutate(MSG, id=b"x" * 15), "'id' must be 16 bytes"),
        (mutate(MSG, **{"from": b"k" * 31}), "'from' must be 32 bytes"),
        (mutate(MSG, seq=0), "'seq' starts at 1"),
        (mutate(MSG, seq=-1), "'seq' must be an unsigned"),
        (mutate(MSG, seq=True), "'seq' must be an unsigned"),
        (mutate(MSG, clock=0), "'clock' must be"),
        (mutate(MSG, clock=2**53), "'clock' must be"),
        (mutate(MSG, v="4"), "'v' must be an unsigned"),
        (mutate(MSG, session=""), "'session' must be"),
        (mutate(MSG, session="a\nb"), "'session' must be"),
        (mutate(MSG, session="é"), "'session' must be"),
        (mutate(MSG, body=b""), "'body' must be"),
        (mutate(MSG, body=b"x" * (64 * 1024 + 1)), "'body' must be"),
        (mutate(MSG, extra=1), "exactly the fields"),
        (mutate(MSG, body=...), "exactly the fields"),
        (mutate(FRAMES[0], hash=b"h" * 31), "'hash' must be 32 bytes"),
        (mutate(FRAMES[0], have={b"k": 1}), "32-byte key"),
        (mutate(FRAMES[0], have={K1: -1}), "unsigned integer"),
        (mutate(FRAMES[0], have=[1, 2]), "must map at most"),
        (
            mutate(
                FRAMES[0], have={i.to_bytes(32, "big"): 1 for i in range(MAX_VECTOR_SENDERS + 1)}
            ),
            "must map at most",
        ),
        (mutate(FRAMES[2], entries=[]), "1 to 64 entries"),
        (mutate(FRAMES[2], entries=[b"e"] * (MAX_ENTRIES_PER_FRAME + 1)), "1 to 64 entries"),
        (mutate(FRAMES[2], entries=[b"e" * 1025]), "an entry must be"),
        (mutate(FRAMES[2], entries=["text"]), "an entry must be"),
        (mutate(FRAMES[4], kind=2), "'kind' must be 0"),
        (mutate(FRAMES[4], kind=False), "'kind' must be 0"),
        (mutate(FRAMES[4], kind=1.0), "'kind' must be 0"),
        (mutate(FRAMES[4], olm=b"x" * 4097), "'olm' must be"),
        (mutate(FRAMES[3], **{"from": -5}), "'from' must be"),
        (mutate(FRAMES[8], bundle=b""), "'bundle' must be"),
        (mutate(FRAMES[8], bundle=b"b" * 2049), "'bundle' must be"),
        (mutate(FRAMES[10], peers={b"k": []}), "32-byte key"),
        (mutate(FRAMES[10], peers={K1: ["/ip4/1.2.3.4"] * 17}), "at most 16"),
        (mutate(FRAMES[10], peers={K1: ["not an address"]}), "multiaddr"),
        (mutate(FRAMES[10], peers={K1: [7]}), "multiaddr"),
        (cbor2.dumps({"t": "gossip", "g": G}), "unknown group frame type"),
        (cbor2.dumps(["t", "msg"]), "must be a CBOR map"),
        (b"\xff", "invalid CBOR"),
    ],
)
def test_each_rule_refuses_what_breaks_it(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode(raw)


def test_we_never_send_a_frame_we_would_refuse() -> None:
    with pytest.raises(FrameError, match="'seq' starts at 1"):
        encode(Message(G, b"i" * 16, K1, 0, 1, 0, "s", b"b"))
    with pytest.raises(FrameError, match="1 to 64 entries"):
        encode(Log(G, ()))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_gives_frame_errors_only(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "t",
                "g",
                "head",
                "hash",
                "have",
                "entries",
                "from",
                "session",
                "kind",
                "olm",
                "bundle",
                "peers",
            ]
        ),
        st.one_of(
            st.sampled_from(
                [
                    "sync",
                    "log",
                    "want-log",
                    "key",
                    "got-key",
                    "msg",
                    "have",
                    "bundle",
                    "want-bundle",
                    "addrs",
                ]
            ),
            st.binary(max_size=40),
            st.integers(min_value=-3, max_value=2**64),
            st.lists(st.binary(max_size=8), max_size=3),
            st.dictionaries(st.binary(min_size=31, max_size=33), st.integers(), max_size=3),
        ),
    )
)
def test_near_misses_give_frame_errors_only(m: dict[str, Any]) -> None:
    try:
        frame = decode(cbor2.dumps(m))
    except FrameError:
        return
    assert decode(body_of(frame)) == frame  # whatever passes reads back the same
