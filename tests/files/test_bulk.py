"""Unit and property tests of the sans-IO record layer (p2pchat.files.bulk)."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.files import bulk
from p2pchat.files.bulk import BulkError, RecordOpener, RecordSealer

TID = b"\x07" * 16
KEY = b"\x09" * 32


def seal_all(data: bytes, chunk: int, *, suite: str = "aes-256-gcm", offset: int = 0) -> bytes:
    sealer = RecordSealer(suite, KEY, TID, offset)
    out = bytearray(sealer.hello())
    record = bytearray(bulk.HEADER_BYTES + bulk.MAX_RECORD)
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        n = sealer.seal_into(memoryview(piece), memoryview(record))
        out += record[:n]
    return bytes(out)


@pytest.mark.parametrize("suite", ["aes-256-gcm", "chacha20-poly1305"])
def test_round_trip_both_suites(suite: str) -> None:
    data = os.urandom(300_000)
    opener = RecordOpener(suite, KEY, TID, 0, len(data))
    chunks = opener.feed(seal_all(data, 65536, suite=suite))
    assert b"".join(chunks) == data
    assert opener.done and opener.buffered == 0


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=5000),
    chunk=st.integers(min_value=1, max_value=700),
    cuts=st.lists(st.integers(min_value=0, max_value=20000), max_size=12),
)
def test_any_split_of_the_byte_stream_gives_the_same_chunks(
    data: bytes, chunk: int, cuts: list[int]
) -> None:
    wire_bytes = seal_all(data, chunk)
    opener = RecordOpener("aes-256-gcm", KEY, TID, 0, len(data))
    got = bytearray()
    last = 0
    for cut in [*sorted(c % (len(wire_bytes) + 1) for c in cuts), len(wire_bytes)]:
        for piece in opener.feed(wire_bytes[last:cut]):
            got += piece
        last = cut
    assert bytes(got) == data
    assert opener.done


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise_anything_but_bulk_error(garbage: bytes) -> None:
    opener = RecordOpener("aes-256-gcm", KEY, TID, 0, 10_000)
    with contextlib.suppress(BulkError):
        opener.feed(garbage)


def test_every_flipped_bit_is_caught() -> None:
    data = os.urandom(200)
    good = seal_all(data, 100)
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x10
        opener = RecordOpener("aes-256-gcm", KEY, TID, 0, len(data))
        try:
            opener.feed(bytes(bad))
        except BulkError:
            continue
        # No error is only possible when a flipped length bit makes the opener wait for
        # bytes that never come; altered data is never accepted as the file.
        assert not opener.done, i


def test_wrong_key_or_transfer_fails_at_the_hello() -> None:
    wire_bytes = seal_all(b"hello", 5)
    with pytest.raises(BulkError, match="authentication"):
        RecordOpener("aes-256-gcm", b"\x01" * 32, TID, 0, 5).feed(wire_bytes)
    with pytest.raises(BulkError):
        RecordOpener("aes-256-gcm", KEY, b"\x08" * 16, 0, 5).feed(wire_bytes)


def test_records_bound_to_their_offset() -> None:
    """A record sealed for offset 0 cannot be accepted as the data at offset 100."""
    data = os.urandom(200)
    from_zero = seal_all(data, 100)
    opener = RecordOpener("aes-256-gcm", KEY, TID, 100, 200)
    with pytest.raises(BulkError, match="authentication"):
        opener.feed(from_zero)
    resumed = seal_all(data[100:], 100, offset=100)
    opener = RecordOpener("aes-256-gcm", KEY, TID, 100, 200)
    assert b"".join(opener.feed(resumed)) == data[100:]


def test_reordered_records_fail() -> None:
    sealer = RecordSealer("aes-256-gcm", KEY, TID, 0)
    hello = sealer.hello()
    records = []
    for piece in (b"a" * 10, b"b" * 10):
        out = bytearray(100)
        n = sealer.seal_into(memoryview(piece), memoryview(out))
        records.append(bytes(out[:n]))
    opener = RecordOpener("aes-256-gcm", KEY, TID, 0, 20)
    with pytest.raises(BulkError):
        opener.feed(hello + records[1] + records[0])


def test_oversending_is_refused() -> None:
    data = os.urandom(100)
    opener = RecordOpener("aes-256-gcm", KEY, TID, 0, 99)
    with pytest.raises(BulkError, match="more than the offered size"):
        opener.feed(seal_all(data, 100))
    opener = RecordOpener("aes-256-gcm", KEY, TID, 0, 50)
    with pytest.raises(BulkError, match="more than the offered size"):
        opener.feed(seal_all(data, 50))  # a whole extra record after the end


@pytest.mark.parametrize("length", [0, 16, bulk.MAX_RECORD + 1, 2**32 - 1])
def test_record_lengths_out_of_range(length: int) -> None:
    hello = RecordSealer("aes-256-gcm", KEY, TID, 0).hello()
    opener = RecordOpener("aes-256-gcm", KEY, TID, 0, 10 * bulk.MAX_CHUNK)
    with pytest.raises(BulkError):
        opener.feed(hello + length.to_bytes(4, "big"))


def test_first_record_must_be_a_hello() -> None:
    opener = RecordOpener("aes-256-gcm", KEY, TID, 0, 1000)
    with pytest.raises(BulkError, match="hello"):
        opener.feed((500).to_bytes(4, "big"))


def test_sealer_refuses_misuse() -> None:
    sealer = RecordSealer("aes-256-gcm", KEY, TID, 0)
    out = memoryview(bytearray(100))
    with pytest.raises(RuntimeError):
        sealer.seal_into(memoryview(b"x"), out)
    sealer.hello()
    with pytest.raises(RuntimeError):
        sealer.hello()
    with pytest.raises(ValueError):
        sealer.seal_into(memoryview(b""), out)


def test_preferred_suite_is_known() -> None:
    assert bulk.preferred_suite() in ("aes-256-gcm", "chacha20-poly1305")


def test_documented_example_records() -> None:
    """The worked example in docs/PROTOCOL.md §10, byte for byte."""
    sealer = RecordSealer("aes-256-gcm", bytes(32), b"\x01" * 16, 0)
    hello = sealer.hello()
    out = bytearray(100)
    n = sealer.seal_into(memoryview(b"hi"), memoryview(out))
    assert hello.hex() == "00000020cfa6413c4c616a6f064fc4d2bbf29c192e49d4f3f5104f8919ab019e1f0bd961"
    assert bytes(out[:n]).hex() == "0000001241a8a255ae879cdcf7e955ceebfae3f61cca"
    opener = RecordOpener("aes-256-gcm", bytes(32), b"\x01" * 16, 0, 2)
    assert opener.feed(hello + bytes(out[:n])) == [b"hi"]
