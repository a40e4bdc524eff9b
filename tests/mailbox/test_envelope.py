"""Envelopes (p2pchat.mailbox.envelope): what a holder can and cannot learn or change.
Every rule of PROTOCOL.md §14.1, no network."""

from __future__ import annotations

import contextlib
import os

import cbor2
import nacl.public
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.identity import Identity
from p2pchat.mailbox.envelope import (
    BUCKETS,
    MAX_RECEIPT_IDS,
    SIGNING_CONTEXT,
    Envelope,
    EnvelopeError,
    HeldMessage,
    HeldReceipt,
    open_envelope,
    parse_envelope,
    seal_envelope,
)

NOW = 1_800_000_000
LATER = NOW + 3600
ALICE, BOB, MALLORY = Identity.generate(), Identity.generate(), Identity.generate()


def message(body: bytes = b"\x01" * 200) -> HeldMessage:
    return HeldMessage(os.urandom(16), 7, NOW * 1000, 1, body, b"k" * 150)


def test_a_sealed_message_opens_for_its_recipient_only() -> None:
    content = message()
    envelope = seal_envelope(ALICE, BOB.peer_id, content, LATER)
    parsed = parse_envelope(envelope.encode(), NOW)
    assert parsed == envelope
    opened = open_envelope(BOB, parsed)
    assert (opened.sender, opened.envelope_id, opened.content) == (
        ALICE.peer_id,
        envelope.envelope_id,
        content,
    )
    with pytest.raises(EnvelopeError, match="addressed to someone else"):
        open_envelope(MALLORY, parsed)
    # Even re-addressed to mallory's ID, the box is bob's: it does not open for her.
    with pytest.raises(EnvelopeError, match="altered"):
        open_envelope(MALLORY, Envelope(MALLORY.peer_id, parsed.envelope_id, LATER, parsed.box))


def test_a_receipt_round_trips() -> None:
    ids = tuple(os.urandom(16) for _ in range(MAX_RECEIPT_IDS))
    envelope = seal_envelope(BOB, ALICE.peer_id, HeldReceipt(ids), LATER)
    assert open_envelope(ALICE, parse_envelope(envelope.encode(), NOW)).content == HeldReceipt(ids)
    with pytest.raises(EnvelopeError, match="1 to"):
        seal_envelope(BOB, ALICE.peer_id, HeldReceipt(()), LATER)
    with pytest.raises(EnvelopeError, match="1 to"):
        seal_envelope(BOB, ALICE.peer_id, HeldReceipt((*ids, os.urandom(16))), LATER)


def test_sizes_are_padded_to_buckets() -> None:
    """A holder tells only which bucket: messages of 1 and 500 bytes look the same."""
    small = seal_envelope(ALICE, BOB.peer_id, message(b"x"), LATER)
    larger = seal_envelope(ALICE, BOB.peer_id, message(b"x" * 500), LATER)
    assert len(small.box) == len(larger.box) == BUCKETS[0] + 48
    biggest = seal_envelope(ALICE, BOB.peer_id, message(b"x" * 24 * 1024), LATER)
    assert len(biggest.box) == BUCKETS[-1] + 48
    assert len(biggest.encode()) < 64 * 1024  # fits one frame


def test_the_outer_fields_cannot_be_changed() -> None:
    """Expiry, ID and recipient are signed inside the box: a holder that changes any is
    found out."""
    envelope = seal_envelope(ALICE, BOB.peer_id, message(), LATER)
    for changed in (
        Envelope(BOB.peer_id, envelope.envelope_id, LATER + 1, envelope.box),
        Envelope(BOB.peer_id, os.urandom(16), LATER, envelope.box),
    ):
        with pytest.raises(EnvelopeError, match="not signed by the sender"):
            open_envelope(BOB, changed)


def test_every_byte_of_the_box_is_covered() -> None:
    envelope = seal_envelope(ALICE, BOB.peer_id, message(), LATER)
    step = 7  # every 7th byte: the MAC covers all of them alike
    for i in range(0, len(envelope.box), step):
        box = bytearray(envelope.box)
        box[i] ^= 0x01
        with pytest.raises(EnvelopeError):
            open_envelope(BOB, Envelope(envelope.to, envelope.envelope_id, LATER, bytes(box)))


def forged(inner: dict[str, object], to: Identity = BOB) -> Envelope:
    """A box anyone can make for ``to``: sealed boxes are anonymous, only the signature
    inside says who sent it."""
    padded_inner = cbor2.dumps(inner, canonical=True)
    framed = len(padded_inner).to_bytes(4, "big") + padded_inner
    padded = framed + bytes(BUCKETS[0] - len(framed))
    key = nacl.signing.VerifyKey(to.public_key).to_curve25519_public_key()
    box = nacl.public.SealedBox(key).encrypt(padded)
    return Envelope(to.peer_id, b"\x00" * 16, LATER, bytes(box))


def test_a_sender_cannot_be_impersonated() -> None:
    body = cbor2.dumps({"t": "receipt", "ids": [b"\x01" * 16]}, canonical=True)
    signed = SIGNING_CONTEXT + cbor2.dumps(
        [ALICE.peer_id, BOB.peer_id, b"\x00" * 16, LATER, body], canonical=True
    )
    # Mallory signs, claiming to be alice.
    envelope = forged({"from": ALICE.peer_id, "body": body, "sig": MALLORY.sign(signed)})
    with pytest.raises(EnvelopeError, match="not signed by the sender"):
        open_envelope(BOB, envelope)
    # Signed by alice for carol, then re-addressed to bob: refused too.
    carol = Identity.generate()
    for_carol = SIGNING_CONTEXT + cbor2.dumps(
        [ALICE.peer_id, carol.peer_id, b"\x00" * 16, LATER, body], canonical=True
    )
    envelope = forged({"from": ALICE.peer_id, "body": body, "sig": ALICE.sign(for_carol)})
    with pytest.raises(EnvelopeError, match="not signed by the sender"):
        open_envelope(BOB, envelope)
    # Properly signed by alice: opens.
    good = forged({"from": ALICE.peer_id, "body": body, "sig": ALICE.sign(signed)})
    assert open_envelope(BOB, good).sender == ALICE.peer_id


@pytest.mark.parametrize(
    ("inner", "match"),
    [
        ({"from": ALICE.peer_id, "body": b""}, "exactly from, body and sig"),
        ({"from": 5, "body": b"", "sig": b""}, "wrong types"),
        ({"from": "12D3KooWnot", "body": b"", "sig": b""}, "sender"),
    ],
)
def test_malformed_contents_are_refused(inner: dict[str, object], match: str) -> None:
    with pytest.raises(EnvelopeError, match=match):
        open_envelope(BOB, forged(inner))


def signed_content(content: dict[str, object]) -> Envelope:
    body = cbor2.dumps(content, canonical=True)
    signed = SIGNING_CONTEXT + cbor2.dumps(
        [ALICE.peer_id, BOB.peer_id, b"\x00" * 16, LATER, body], canonical=True
    )
    return forged({"from": ALICE.peer_id, "body": body, "sig": ALICE.sign(signed)})


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"t": "msg", "id": b"\x01" * 16}, "exactly"),
        (
            {"t": "msg", "id": b"\x01", "seq": 1, "ts": 1, "kind": 1, "body": b"x", "keys": b""},
            "not valid",
        ),
        (
            {
                "t": "msg",
                "id": b"\x01" * 16,
                "seq": 1,
                "ts": 1,
                "kind": 9,
                "body": b"x",
                "keys": b"",
            },
            "not valid",
        ),
        (
            {
                "t": "msg",
                "id": b"\x01" * 16,
                "seq": 1,
                "ts": 1,
                "kind": 1,
                "body": b"x",
                "keys": "text",
            },
            "keys",
        ),
        ({"t": "receipt", "ids": []}, "1 to"),
        ({"t": "receipt", "ids": [b"short"]}, "16 bytes"),
        ({"t": "receipt"}, "exactly t and ids"),
        ({"t": "poem"}, "unknown kind"),
        ({"t": 1}, "unknown kind"),
    ],
)
def test_malformed_held_content_is_refused(content: dict[str, object], match: str) -> None:
    with pytest.raises(EnvelopeError, match=match):
        open_envelope(BOB, signed_content(content))


def outer(**fields: object) -> bytes:
    base: dict[str, object] = {
        "v": 1,
        "to": BOB.peer_id,
        "id": b"\x02" * 16,
        "exp": LATER,
        "box": bytes(BUCKETS[0] + 48),
    }
    base.update(fields)
    return cbor2.dumps({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (outer(v=2), "version"),
        (outer(to="someone"), "recipient"),
        (outer(to=BOB.peer_id.lower()), "recipient"),
        (outer(id=b"\x02" * 15), "ID must be 16"),
        (outer(exp=NOW), "expired"),
        (outer(exp=True), "expired"),
        (outer(box=bytes(1000)), "padded sizes"),
        (outer(box=None), "exactly"),
        (outer(extra=1), "exactly"),
        (b"\xff", "not an envelope"),
        (cbor2.dumps([1, 2]), "exactly"),
        (b"\x00" * 50_000, "exceeds"),
    ],
)
def test_a_holder_refuses_malformed_envelopes(raw: bytes, match: str) -> None:
    with pytest.raises(EnvelopeError, match=match):
        parse_envelope(raw, NOW)


def test_a_well_formed_outer_parses() -> None:
    assert parse_envelope(outer(), NOW).to == BOB.peer_id


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_never_crashes_the_holder(raw: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        parse_envelope(raw, NOW)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_single_byte_changes_never_open_as_something_else(where: int, xor: int) -> None:
    envelope = seal_envelope(ALICE, BOB.peer_id, message(), LATER)
    raw = bytearray(envelope.encode())
    raw[where % len(raw)] ^= xor or 1
    try:
        opened = open_envelope(BOB, parse_envelope(bytes(raw), NOW))
    except EnvelopeError:
        return
    # Only a change the parse normalises away (none exists in canonical CBOR) could open.
    assert opened.content == envelope_content(envelope)


def envelope_content(envelope: Envelope) -> object:
    return open_envelope(BOB, envelope).content
