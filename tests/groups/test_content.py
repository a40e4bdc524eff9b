"""What group messages and given keys hold inside their seals (p2pchat.groups.content):
the inside must be the frame's, or it is refused. No network."""

from __future__ import annotations

from dataclasses import replace

import cbor2
import pytest

from p2pchat.groups.content import (
    Content,
    ContentError,
    key_plaintext,
    message_plaintext,
    open_content,
    open_key,
)
from p2pchat.groups.frames import Message

G = b"g" * 16
FRAME = Message(G, b"i" * 16, b"\x01" * 32, 3, 1_800_000_000_000, 2, "session", b"sealed")


def test_a_message_opens_to_its_text_and_time() -> None:
    plaintext = message_plaintext(FRAME, "hello, group", 1234)
    assert open_content(FRAME, plaintext) == Content("hello, group", 1234)


@pytest.mark.parametrize(
    "changed",
    [
        {"group_id": b"h" * 16},
        {"sender": b"\x02" * 32},  # another member passing it off as its own
        {"msg_id": b"j" * 16},
        {"seq": 4},
        {"clock": 1_800_000_000_001},
        {"version": 3},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_frame_that_says_other_than_its_inside_is_refused(changed: dict[str, object]) -> None:
    plaintext = message_plaintext(FRAME, "hello", 1)
    with pytest.raises(ContentError, match="not the one its frame names"):
        open_content(replace(FRAME, **changed), plaintext)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("inside", "reason"),
    [
        (b"\xff", "not valid"),
        (cbor2.dumps(["a", "list"]), "fields of one"),
        (cbor2.dumps({"g": G}), "fields of one"),
    ],
)
def test_malformed_insides_are_refused(inside: bytes, reason: str) -> None:
    with pytest.raises(ContentError, match=reason):
        open_content(FRAME, inside)


def test_the_text_and_time_follow_the_rules_of_any_message() -> None:
    good = cbor2.loads(message_plaintext(FRAME, "x", 1))
    for field, value, reason in (
        ("text", "", "text"),
        ("text", "x" * 20000, "text"),
        ("text", 7, "not text"),
        ("at", -1, "time"),
        ("at", True, "time"),
    ):
        bad = cbor2.dumps({**good, field: value}, canonical=True)
        with pytest.raises(ContentError, match=reason):
            open_content(FRAME, bad)


def test_a_given_key_must_name_its_frames_group_and_session() -> None:
    plaintext = key_plaintext(G, "session", b"k" * 229, 12)
    assert open_key(G, "session", plaintext) == (b"k" * 229, 12)
    with pytest.raises(ContentError, match="not the one its frame names"):
        open_key(G, "other session", plaintext)
    with pytest.raises(ContentError, match="not the one its frame names"):
        open_key(b"h" * 16, "session", plaintext)
    with pytest.raises(ContentError, match="fields of one"):
        open_key(G, "session", cbor2.dumps({"g": G}))
    bad_seq = cbor2.dumps({"g": G, "session": "session", "key": b"k", "seq": 0})
    with pytest.raises(ContentError, match="first seq"):
        open_key(G, "session", bad_seq)
