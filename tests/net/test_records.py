"""Signed address records: every rule of docs/PROTOCOL.md "Address records", without a network."""

from __future__ import annotations

import contextlib
import hashlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.identity import Identity
from p2pchat.net.records import (
    MAX_DEVICES,
    MAX_LIFETIME,
    MAX_RECORD_BYTES,
    SIGNING_CONTEXT,
    Device,
    RecordError,
    parse_record,
    record_key,
    select_record,
    sign_record,
)

NOW = 1_800_000_000
ADDRS = ("/ip4/198.51.100.7/tcp/4001", "/ip4/10.0.0.2/tcp/4001")


def make(identity: Identity, seq: int = 1, expires: int = NOW + 3600, addrs=ADDRS) -> bytes:
    return sign_record(identity, seq, expires, (Device(identity.peer_id, tuple(addrs)),))


def resign(identity: Identity, body_fields: dict, envelope_extra: dict | None = None) -> bytes:
    """A record with an arbitrary body, correctly signed: tests validation past the signature."""
    body = cbor2.dumps(body_fields, canonical=True)
    envelope = {"v": 1, "body": body, "sig": identity.sign(SIGNING_CONTEXT + body)}
    envelope.update(envelope_extra or {})
    return cbor2.dumps(envelope, canonical=True)


def good_body(identity: Identity, **over) -> dict:
    fields = {
        "id": identity.public_key,
        "seq": 5,
        "exp": NOW + 60,
        "devices": [{"key": identity.public_key, "addrs": list(ADDRS)}],
    }
    fields.update(over)
    return fields


def test_round_trip_gives_back_what_was_signed() -> None:
    me = Identity.generate()
    record = parse_record(record_key(me.peer_id), make(me, seq=42), NOW)
    assert record.identity == me.peer_id
    assert record.seq == 42
    assert record.expires == NOW + 3600
    assert record.addrs_of(me.peer_id) == ADDRS
    assert record.addrs_of(Identity.generate().peer_id) == ()


def test_key_is_derived_from_the_id_and_short_enough_for_dht_lookups() -> None:
    me = Identity.generate()
    key = record_key(me.peer_id)
    assert key == "/p2pchat/" + hashlib.sha256(me.public_key).hexdigest()[:40]
    assert len(key.encode()) <= 50
    assert record_key(Identity.generate().peer_id) != key


def test_a_record_under_someone_elses_key_is_refused() -> None:
    me, other = Identity.generate(), Identity.generate()
    with pytest.raises(RecordError, match="not its signer"):
        parse_record(record_key(other.peer_id), make(me), NOW)


def test_a_body_signed_by_another_key_is_refused() -> None:
    me, forger = Identity.generate(), Identity.generate()
    # The forger signs a body that claims to be mine.
    value = resign(forger, good_body(me))
    with pytest.raises(RecordError, match="bad signature"):
        parse_record(record_key(me.peer_id), value, NOW)


@pytest.mark.parametrize("where", ["body", "sig"])
def test_any_flipped_bit_is_refused(where: str) -> None:
    me = Identity.generate()
    envelope = cbor2.loads(make(me))
    for index in range(len(envelope[where])):
        for bit in (0, 7):
            tampered = bytearray(envelope[where])
            tampered[index] ^= 1 << bit
            value = cbor2.dumps({**envelope, where: bytes(tampered)}, canonical=True)
            with pytest.raises(RecordError):
                parse_record(record_key(me.peer_id), value, NOW)


def test_expired_records_are_refused() -> None:
    me = Identity.generate()
    value = make(me, expires=NOW)
    with pytest.raises(RecordError, match="expired"):
        parse_record(record_key(me.peer_id), value, NOW)
    assert parse_record(record_key(me.peer_id), value, NOW - 1).expires == NOW


def test_records_claiming_a_very_long_life_are_refused() -> None:
    me = Identity.generate()
    with pytest.raises(RecordError, match="implausibly"):
        parse_record(record_key(me.peer_id), make(me, expires=NOW + 10 * MAX_LIFETIME), NOW)
    assert parse_record(record_key(me.peer_id), make(me, expires=NOW + MAX_LIFETIME), NOW)


def test_the_newest_valid_record_wins() -> None:
    me = Identity.generate()
    key = record_key(me.peer_id)
    old, new = make(me, seq=1), make(me, seq=2, addrs=("/ip4/203.0.113.9/tcp/1",))
    assert select_record(key, [old, new], NOW) == 1
    assert select_record(key, [new, old], NOW) == 0


def test_invalid_candidates_never_win_even_with_a_higher_sequence() -> None:
    me, forger = Identity.generate(), Identity.generate()
    key = record_key(me.peer_id)
    honest = make(me, seq=1)
    forged = resign(forger, good_body(me, seq=10**9))
    expired = make(me, seq=10**9, expires=NOW - 1)
    assert select_record(key, [forged, expired, honest], NOW) == 2
    with pytest.raises(RecordError):
        select_record(key, [forged, expired], NOW)
    with pytest.raises(RecordError):
        select_record(key, [], NOW)


def test_equal_sequence_numbers_are_broken_the_same_way_everywhere() -> None:
    me = Identity.generate()
    key = record_key(me.peer_id)
    a = make(me, seq=3, expires=NOW + 100)
    b = make(me, seq=3, expires=NOW + 200)
    assert select_record(key, [a, b], NOW) == 1
    assert select_record(key, [b, a], NOW) == 0
    c = make(me, seq=3, expires=NOW + 100, addrs=("/ip4/203.0.113.1/tcp/2",))
    winner = [a, c][select_record(key, [a, c], NOW)]
    assert [c, a][select_record(key, [c, a], NOW)] == winner


def test_several_devices_each_vouched_for_by_the_identity() -> None:
    me = Identity.generate()
    laptop, phone = Identity.generate(), Identity.generate()
    devices = (
        Device(me.peer_id, ("/ip4/10.0.0.1/tcp/1",)),
        Device(laptop.peer_id, ("/ip4/10.0.0.2/tcp/2",)),
        Device(phone.peer_id, ()),
    )
    record = parse_record(record_key(me.peer_id), sign_record(me, 1, NOW + 60, devices), NOW)
    assert record.devices == devices
    assert record.addrs_of(laptop.peer_id) == ("/ip4/10.0.0.2/tcp/2",)
    assert record.all_addrs() == ("/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/2")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seq": -1}, "seq"),
        ({"seq": 2**64}, "malformed"),
        ({"seq": 2**63}, "seq"),
        ({"seq": True}, "seq"),
        ({"exp": "tomorrow"}, "exp"),
        ({"id": b"\x00" * 31}, "identity key"),
        ({"devices": []}, "devices"),
        ({"devices": "x"}, "devices"),
        ({"devices": [{"key": b"\x01" * 32}]}, "exactly"),
        ({"devices": [{"key": b"\x01" * 31, "addrs": []}]}, "32 bytes"),
        ({"devices": [{"key": "k", "addrs": []}]}, "32 bytes"),
        ({"devices": [{"key": b"\x01" * 32, "addrs": "x"}]}, "list"),
        ({"devices": [{"key": b"\x01" * 32, "addrs": ["tcp/1"]}]}, "multiaddr"),
        ({"devices": [{"key": b"\x01" * 32, "addrs": ["/a\n"]}]}, "multiaddr"),
        ({"devices": [{"key": b"\x01" * 32, "addrs": ["/" + "a" * 300]}]}, "multiaddr"),
        ({"devices": [{"key": b"\x01" * 32, "addrs": ["/ip4/1.2.3.4/tcp/1"] * 17}]}, "more"),
    ],
)
def test_malformed_bodies_are_refused_even_when_signed(change: dict, message: str) -> None:
    me = Identity.generate()
    body = good_body(me, **change)
    devices = body["devices"]
    if isinstance(devices, list) and devices and devices[0].get("key") == b"\x01" * 32:
        devices[0]["key"] = me.public_key
    with pytest.raises(RecordError, match=message):
        parse_record(record_key(me.peer_id), resign(me, body), NOW)


def test_a_device_key_that_is_not_a_curve_point_is_refused() -> None:
    me = Identity.generate()
    not_a_point = bytes([2]) + b"\x00" * 31
    body = good_body(me, devices=[{"key": not_a_point, "addrs": []}])
    with pytest.raises(RecordError, match="not a valid"):
        parse_record(record_key(me.peer_id), resign(me, body), NOW)


def test_duplicate_and_too_many_devices_are_refused() -> None:
    me = Identity.generate()
    dup = good_body(me, devices=[{"key": me.public_key, "addrs": []}] * 2)
    with pytest.raises(RecordError, match="twice"):
        parse_record(record_key(me.peer_id), resign(me, dup), NOW)
    many = good_body(
        me,
        devices=[{"key": Identity.generate().public_key, "addrs": []} for _ in range(9)],
    )
    with pytest.raises(RecordError, match="devices"):
        parse_record(record_key(me.peer_id), resign(me, many), NOW)
    with pytest.raises(RecordError, match="devices"):
        sign_record(me, 1, NOW, tuple(Device(me.peer_id, ()) for _ in range(MAX_DEVICES + 1)))


@pytest.mark.parametrize(
    "envelope_extra",
    [{"v": 2}, {"extra": 1}, {"sig": b"short"}, {"body": "text"}],
)
def test_bad_envelopes_are_refused(envelope_extra: dict) -> None:
    me = Identity.generate()
    with pytest.raises(RecordError):
        parse_record(record_key(me.peer_id), resign(me, good_body(me), envelope_extra), NOW)


def test_oversized_values_are_refused_before_decoding() -> None:
    me = Identity.generate()
    with pytest.raises(RecordError, match="exceeds"):
        parse_record(record_key(me.peer_id), b"\x00" * (MAX_RECORD_BYTES + 1), NOW)


def test_signing_refuses_what_parsing_would_refuse() -> None:
    me = Identity.generate()
    with pytest.raises(RecordError, match="multiaddr"):
        sign_record(me, 1, NOW, (Device(me.peer_id, ("not-an-addr",)),))
    with pytest.raises(RecordError):
        sign_record(me, 1, NOW, ())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes) -> None:
    me = Identity.generate()
    with contextlib.suppress(RecordError):
        parse_record(record_key(me.peer_id), data, NOW)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_truncation_or_extension_of_a_record_is_refused(data: st.DataObject) -> None:
    me = Identity.generate()
    value = make(me)
    cut = data.draw(st.integers(0, len(value) - 1))
    with pytest.raises(RecordError):
        parse_record(record_key(me.peer_id), value[:cut], NOW)
    with pytest.raises(RecordError):
        parse_record(record_key(me.peer_id), value + data.draw(st.binary(min_size=1)), NOW)
