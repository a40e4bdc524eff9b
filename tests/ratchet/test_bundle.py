"""Olm key bundles (p2pchat.ratchet.bundle): every rule of PROTOCOL.md §13.1, no network."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.identity import Identity
from p2pchat.ratchet.bundle import (
    CLOCK_SKEW_S,
    MAX_BUNDLE_BYTES,
    MAX_ONE_TIME_KEYS,
    SIGNING_CONTEXT,
    BundleError,
    parse_bundle,
    sign_bundle,
)

NOW = 1_800_000_000
IK = bytes(range(32))
OTKS = (("AAAAAAAAAAA", bytes([1]) * 32), ("AAAAAAAAAAB", bytes([2]) * 32))


def resign(identity: Identity, body: dict[str, object], v: int = 1) -> bytes:
    """A bundle with any body, properly signed: what a hostile friend can send."""
    raw = cbor2.dumps(body, canonical=True)
    return cbor2.dumps(
        {"v": v, "body": raw, "sig": identity.sign(SIGNING_CONTEXT + raw)}, canonical=True
    )


def test_a_signed_bundle_reads_back() -> None:
    me = Identity.generate()
    bundle = parse_bundle(me.peer_id, sign_bundle(me, IK, OTKS, NOW), NOW)
    assert (bundle.peer_id, bundle.identity_key, bundle.one_time_keys) == (me.peer_id, IK, OTKS)
    assert bundle.issued == NOW


def test_another_identitys_bundle_is_not_taken_as_ours() -> None:
    me, mallory = Identity.generate(), Identity.generate()
    value = sign_bundle(mallory, IK, OTKS, NOW)
    with pytest.raises(BundleError, match="signed by another identity"):
        parse_bundle(me.peer_id, value, NOW)


def test_a_changed_byte_breaks_the_signature() -> None:
    me = Identity.generate()
    value = bytearray(sign_bundle(me, IK, OTKS, NOW))
    # Flip a byte of the identity key inside the signed body.
    at = bytes(value).index(IK)
    value[at] ^= 1
    with pytest.raises(BundleError, match="bad signature"):
        parse_bundle(me.peer_id, bytes(value), NOW)


def test_a_signature_made_for_something_else_is_refused() -> None:
    me = Identity.generate()
    body = cbor2.dumps({"id": me.public_key, "ik": IK, "otk": [], "at": NOW}, canonical=True)
    value = cbor2.dumps({"v": 1, "body": body, "sig": me.sign(body)}, canonical=True)
    with pytest.raises(BundleError, match="bad signature"):
        parse_bundle(me.peer_id, value, NOW)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"ik": IK, "at": NOW}, "exactly id, ik, otk and at"),
        ({"ik": IK, "otk": [], "at": NOW, "x": 1, "id": None}, "exactly id, ik, otk and at"),
        ({"ik": IK[:31], "otk": [], "at": NOW}, "32-byte Curve25519"),
        ({"ik": "text", "otk": [], "at": NOW}, "ik is not a byte string"),
        ({"ik": IK, "otk": [["A", b"short"]], "at": NOW}, "one-time key is not a 32-byte"),
        ({"ik": IK, "otk": [["A", IK]], "at": NOW}, "repeats the identity key"),
        ({"ik": IK, "otk": [["A", OTKS[0][1]], ["A", OTKS[1][1]]], "at": NOW}, "listed twice"),
        ({"ik": IK, "otk": [["bad id!", OTKS[0][1]]], "at": NOW}, "bad one-time key ID"),
        ({"ik": IK, "otk": [[1, OTKS[0][1]]], "at": NOW}, r"\[key ID, key\] pairs"),
        ({"ik": IK, "otk": {"A": OTKS[0][1]}, "at": NOW}, r"\[key ID, key\] pairs"),
        ({"ik": IK, "otk": [], "at": -1}, "non-negative integer"),
        ({"ik": IK, "otk": [], "at": True}, "non-negative integer"),
        ({"ik": IK, "otk": [], "at": 1.5}, "non-negative integer"),
        ({"ik": IK, "otk": [], "at": NOW + CLOCK_SKEW_S + 1}, "in the future"),
        (
            {"ik": IK, "otk": [[f"K{i}", bytes([i + 3]) * 32] for i in range(21)], "at": NOW},
            f"at most {MAX_ONE_TIME_KEYS}",
        ),
    ],
)
def test_signed_but_bad_bodies_are_refused(body: dict[str, object], reason: str) -> None:
    me = Identity.generate()
    if "id" in body and body["id"] is None:
        body = {**body, "id": me.public_key}
    elif "id" not in body:
        body = {"id": me.public_key, **body}
    with pytest.raises(BundleError, match=reason):
        parse_bundle(me.peer_id, resign(me, body), NOW)


def test_envelopes_other_than_v1_are_refused() -> None:
    me = Identity.generate()
    good = {"id": me.public_key, "ik": IK, "otk": [], "at": NOW}
    with pytest.raises(BundleError, match="unsupported bundle version 2"):
        parse_bundle(me.peer_id, resign(me, good, v=2), NOW)
    with pytest.raises(BundleError, match="exactly v, body and sig"):
        parse_bundle(me.peer_id, cbor2.dumps({"v": 1, "body": b""}), NOW)
    with pytest.raises(BundleError, match="exactly v, body and sig"):
        parse_bundle(me.peer_id, cbor2.dumps([1, b"", b""]), NOW)
    with pytest.raises(BundleError, match="signature is not 64 bytes"):
        raw = cbor2.dumps(good, canonical=True)
        parse_bundle(me.peer_id, cbor2.dumps({"v": 1, "body": raw, "sig": b"x"}), NOW)
    with pytest.raises(BundleError, match="exceeds"):
        parse_bundle(me.peer_id, bytes(MAX_BUNDLE_BYTES + 1), NOW)
    with pytest.raises(BundleError, match="bad signer ID"):
        parse_bundle("12D3KooWtypo", sign_bundle(me, IK, (), NOW), NOW)


def test_we_do_not_sign_what_we_would_refuse() -> None:
    me = Identity.generate()
    with pytest.raises(BundleError, match="32-byte"):
        sign_bundle(me, IK[:16], (), NOW)
    with pytest.raises(BundleError, match="listed twice"):
        sign_bundle(me, IK, (OTKS[0], OTKS[0]), NOW)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_never_gets_past_the_checks(data: bytes) -> None:
    me = Identity.generate()
    with pytest.raises(BundleError):
        parse_bundle(me.peer_id, data, NOW)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_is_refused(position: int, xor: int) -> None:
    me = Identity.generate()
    value = bytearray(sign_bundle(me, IK, OTKS, NOW))
    position %= len(value)
    value[position] ^= xor or 1
    with pytest.raises(BundleError):
        parse_bundle(me.peer_id, bytes(value), NOW)
