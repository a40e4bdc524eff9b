"""The holder protocol's frames (p2pchat.mailbox.frames), no network."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat import wire
from p2pchat.mailbox import frames
from p2pchat.mailbox.envelope import MAX_ENVELOPE_BYTES
from p2pchat.wire import FrameError

ALL = [
    frames.Deposit(b"e" * 100),
    frames.Stored(b"\x01" * 16),
    frames.Fetch(),
    frames.Held(b"e" * MAX_ENVELOPE_BYTES),
    frames.End(True),
    frames.End(False),
    frames.Taken(tuple(bytes([i]) * 16 for i in range(frames.MAX_TAKEN_IDS))),
    frames.Deleted(3),
    wire.Refused("quota", "full"),
]


@pytest.mark.parametrize("frame", ALL, ids=lambda f: type(f).__name__)
def test_every_frame_round_trips_through_the_decoder(frame: frames.MailboxFrame) -> None:
    decoder = frames.MailboxDecoder()
    raw = frames.encode(frame)
    assert decoder.feed(raw[:3]) == []
    assert decoder.feed(raw[3:]) == [frame]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"t": "deposit"}, "'env'"),
        ({"t": "deposit", "env": b""}, "'env'"),
        ({"t": "deposit", "env": b"x" * (MAX_ENVELOPE_BYTES + 1)}, "'env'"),
        ({"t": "stored", "id": b"short"}, "16 bytes"),
        ({"t": "end"}, "'more'"),
        ({"t": "end", "more": 1}, "'more'"),
        ({"t": "taken", "ids": []}, "1 to"),
        ({"t": "taken", "ids": [b"\x01" * 16] * (frames.MAX_TAKEN_IDS + 1)}, "1 to"),
        ({"t": "taken", "ids": [b"\x01" * 15]}, "16 bytes"),
        ({"t": "deleted", "n": -1}, "count"),
        ({"t": "deleted", "n": True}, "count"),
        ({"t": "refused", "code": ""}, "code"),
        ({"t": "hello", "addrs": []}, "unknown mailbox frame"),
        ({"x": 1}, "with a type"),
        ([1], "with a type"),
    ],
)
def test_malformed_frames_are_refused(body: object, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        frames.decode(cbor2.dumps(body))


def test_a_frame_too_large_poisons_the_decoder() -> None:
    decoder = frames.MailboxDecoder()
    with pytest.raises(FrameError):
        decoder.feed(wire.encode_varint(wire.MAX_FRAME_BYTES + 1))
    with pytest.raises(FrameError):
        decoder.feed(frames.encode(frames.Fetch()))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_frame_errors(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        frames.MailboxDecoder().feed(raw)
