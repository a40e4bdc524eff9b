"""Envelopes: what a friend holds for another while the recipient is offline
(PROTOCOL.md §14.1). Sans-IO: bytes in, a checked envelope or an :class:`EnvelopeError` out.

A holder learns from an envelope only what it needs to hold and hand it over: the
recipient's ID, an envelope ID, an expiry and the size, padded to one of a few buckets.
Everything else (the sender, what kind of content, the message IDs) is inside a NaCl sealed
box to the recipient's key (the Curve25519 form of its Ed25519 identity). Inside, the sender
signs the content together with the outer fields, so a holder can neither read, alter,
re-address nor re-date an envelope without the recipient noticing; and a message inside is
itself an Olm message of the pair's session (:mod:`p2pchat.chat.sealing`), for forward secrecy.
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass
from typing import Any, Final

import cbor2
import nacl.exceptions
import nacl.public
import nacl.signing

from p2pchat import wire
from p2pchat.identity import Identity, IdentityError, check_peer_id, public_key_from_peer_id
from p2pchat.wire import FrameError, strict_cbor_decode

ENVELOPE_VERSION: Final = 1
SIGNING_CONTEXT: Final = b"p2pchat mailbox envelope v1\x00"
ENVELOPE_ID_BYTES: Final = 16
BUCKETS: Final = (1024, 4096, 16384, 40960)
"""Sizes a sealed box's content is padded to: a holder tells only which bucket."""
_BOX_OVERHEAD: Final = nacl.public.PublicKey.SIZE + 16
"""What a sealed box adds: the ephemeral key and the MAC."""
MAX_BOX_BYTES: Final = BUCKETS[-1] + _BOX_OVERHEAD
MAX_ENVELOPE_BYTES: Final = MAX_BOX_BYTES + 256
MAX_RECEIPT_IDS: Final = 512
"""Message IDs one receipt envelope names (512 x 16 bytes fits the first bucket but one)."""
CONTENT_MSG: Final = "msg"
CONTENT_RECEIPT: Final = "receipt"


@functools.lru_cache(maxsize=1024)
def _ed25519_key(peer_id: str) -> bytes:
    """The key an ID embeds (base58 decoding is slow in Python; one's friends are few)."""
    return public_key_from_peer_id(peer_id)


@functools.lru_cache(maxsize=1024)
def _is_canonical(peer_id: str) -> bool:
    return check_peer_id(peer_id) == peer_id


class EnvelopeError(ValueError):
    """An envelope that is malformed, not for us, altered, or not signed by its sender."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """The outer envelope, as a holder sees it."""

    to: str
    """The recipient's ID."""
    envelope_id: bytes
    expires: int
    """Seconds since the epoch: a holder drops it then."""
    box: bytes
    """The sealed box (only the recipient opens it)."""

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "v": ENVELOPE_VERSION,
                "to": self.to,
                "id": self.envelope_id,
                "exp": self.expires,
                "box": self.box,
            },
            canonical=True,
        )


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """A chat message inside an envelope: the Olm message and what travels beside it on
    msg/2.0.0 (:class:`p2pchat.wire.SealedMessage`), and the sender's key bundle, so a
    recipient that never saw the session's first message can still open it."""

    msg_id: bytes
    seq: int
    sent_at_ms: int
    kind: int
    body: bytes
    keys: bytes


@dataclass(frozen=True, slots=True)
class HeldReceipt:
    """The recipient of our messages stored these (it got them from holders)."""

    msg_ids: tuple[bytes, ...]


Content = HeldMessage | HeldReceipt


@dataclass(frozen=True, slots=True)
class Opened:
    """An envelope the recipient opened: who sent it (checked) and what it holds."""

    sender: str
    envelope_id: bytes
    content: Content


def parse_envelope(raw: bytes, now: float) -> Envelope:
    """The outer envelope, checked (what a holder checks before taking it)."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"an envelope of {len(raw)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    try:
        m = strict_cbor_decode(raw, max_depth=1)
    except FrameError as exc:
        raise EnvelopeError(f"not an envelope: {exc}") from None
    if not isinstance(m, dict) or set(m) != {"v", "to", "id", "exp", "box"}:
        raise EnvelopeError("not an envelope: it must have exactly v, to, id, exp and box")
    if m["v"] != ENVELOPE_VERSION:
        raise EnvelopeError(f"envelope version {m['v']!r} is not {ENVELOPE_VERSION}")
    to, envelope_id, expires, box = m["to"], m["id"], m["exp"], m["box"]
    if not isinstance(to, str) or len(to) > 64:
        raise EnvelopeError("the envelope's recipient is not an ID")
    try:
        if not _is_canonical(to):
            raise EnvelopeError("the envelope's recipient is not a canonical ID")
    except IdentityError as exc:
        raise EnvelopeError(f"the envelope's recipient: {exc}") from None
    if not isinstance(envelope_id, bytes) or len(envelope_id) != ENVELOPE_ID_BYTES:
        raise EnvelopeError(f"the envelope ID must be {ENVELOPE_ID_BYTES} bytes")
    if isinstance(expires, bool) or not isinstance(expires, int) or expires <= now:
        raise EnvelopeError("the envelope has expired (or has no expiry)")
    if not isinstance(box, bytes) or len(box) - _BOX_OVERHEAD not in BUCKETS:
        raise EnvelopeError("the envelope's box is not one of the padded sizes")
    return Envelope(to, envelope_id, expires, box)


def seal_envelope(
    sender: Identity,
    to: str,
    content: Content,
    expires: int,
    envelope_id: bytes | None = None,
) -> Envelope:
    """Sign ``content`` for ``to`` and seal it in a padded box only ``to`` opens."""
    envelope_id = envelope_id or os.urandom(ENVELOPE_ID_BYTES)
    body = cbor2.dumps(_content_map(content), canonical=True)
    signed = _signed_bytes(sender.peer_id, to, envelope_id, expires, body)
    inner = cbor2.dumps(
        {"from": sender.peer_id, "body": body, "sig": sender.sign(signed)}, canonical=True
    )
    padded = _pad(inner)
    recipient_key = nacl.signing.VerifyKey(_ed25519_key(to)).to_curve25519_public_key()
    box = nacl.public.SealedBox(recipient_key).encrypt(padded)
    return Envelope(to, envelope_id, expires, bytes(box))


def box_key(recipient: Identity) -> nacl.public.PrivateKey:
    """The Curve25519 key that opens boxes for ``recipient`` (derive once, open many)."""
    return nacl.signing.SigningKey(recipient.seed).to_curve25519_private_key()


def open_envelope(
    recipient: Identity, envelope: Envelope, key: nacl.public.PrivateKey | None = None
) -> Opened:
    """Open an envelope addressed to ``recipient`` (``key``: its :func:`box_key`); raises
    :class:`EnvelopeError` if it is not for us, was altered, or is not signed by the sender
    it names."""
    if envelope.to != recipient.peer_id:
        raise EnvelopeError("the envelope is addressed to someone else")
    private = key or box_key(recipient)
    try:
        padded = nacl.public.SealedBox(private).decrypt(envelope.box)
    except nacl.exceptions.CryptoError:
        raise EnvelopeError("the envelope's box does not open: it was altered") from None
    inner = _unpad(padded)
    try:
        m = strict_cbor_decode(inner, max_depth=1)
    except FrameError as exc:
        raise EnvelopeError(f"the envelope's content is not valid: {exc}") from None
    if not isinstance(m, dict) or set(m) != {"from", "body", "sig"}:
        raise EnvelopeError("the envelope's content must have exactly from, body and sig")
    sender, body, sig = m["from"], m["body"], m["sig"]
    if not isinstance(sender, str) or not isinstance(body, bytes) or not isinstance(sig, bytes):
        raise EnvelopeError("the envelope's content has fields of the wrong types")
    try:
        sender_key = _ed25519_key(sender)
    except IdentityError as exc:
        raise EnvelopeError(f"the envelope's sender: {exc}") from None
    signed = _signed_bytes(sender, envelope.to, envelope.envelope_id, envelope.expires, body)
    try:
        nacl.signing.VerifyKey(sender_key).verify(signed, sig)
    except (nacl.exceptions.BadSignatureError, ValueError):
        raise EnvelopeError("the envelope is not signed by the sender it names") from None
    return Opened(sender, envelope.envelope_id, _parse_content(body))


def _signed_bytes(sender: str, to: str, envelope_id: bytes, expires: int, body: bytes) -> bytes:
    fields = cbor2.dumps([sender, to, envelope_id, expires, body], canonical=True)
    return SIGNING_CONTEXT + fields


def _pad(inner: bytes) -> bytes:
    framed = struct.pack(">I", len(inner)) + inner
    for bucket in BUCKETS:
        if len(framed) <= bucket:
            return framed + bytes(bucket - len(framed))
    raise EnvelopeError(f"content of {len(inner)} bytes does not fit an envelope")


def _unpad(padded: bytes) -> bytes:
    if len(padded) not in BUCKETS:
        raise EnvelopeError("the envelope's content is not padded to a bucket")
    (length,) = struct.unpack(">I", padded[:4])
    if length > len(padded) - 4 or any(padded[4 + length :]):
        raise EnvelopeError("the envelope's padding is not valid")
    return padded[4 : 4 + length]


def _content_map(content: Content) -> dict[str, Any]:
    if isinstance(content, HeldMessage):
        return {
            "t": CONTENT_MSG,
            "id": content.msg_id,
            "seq": content.seq,
            "ts": content.sent_at_ms,
            "kind": content.kind,
            "body": content.body,
            "keys": content.keys,
        }
    if not 1 <= len(content.msg_ids) <= MAX_RECEIPT_IDS:
        raise EnvelopeError(f"a receipt names 1 to {MAX_RECEIPT_IDS} messages")
    return {"t": CONTENT_RECEIPT, "ids": list(content.msg_ids)}


def _parse_content(body: bytes) -> Content:
    try:
        m = strict_cbor_decode(body, max_depth=2)
    except FrameError as exc:
        raise EnvelopeError(f"the envelope's content is not valid: {exc}") from None
    if not isinstance(m, dict):
        raise EnvelopeError("the envelope's content is not a map")
    t = m.get("t")
    if t == CONTENT_MSG:
        if set(m) != {"t", "id", "seq", "ts", "kind", "body", "keys"}:
            raise EnvelopeError("a held message must have exactly t, id, seq, ts, kind, body, keys")
        try:
            frame = wire.decode_frame(
                cbor2.dumps(
                    {
                        "t": "sealed",
                        "id": m["id"],
                        "seq": m["seq"],
                        "ts": m["ts"],
                        "kind": m["kind"],
                        "body": m["body"],
                    }
                )
            )
        except FrameError as exc:  # the same rules as a sealed frame on msg/2.0.0
            raise EnvelopeError(f"the held message is not valid: {exc}") from None
        assert isinstance(frame, wire.SealedMessage)
        keys = m["keys"]
        if not isinstance(keys, bytes) or len(keys) > wire.MAX_KEYS_BYTES:
            raise EnvelopeError("the held message's keys are not a key bundle")
        return HeldMessage(frame.msg_id, frame.seq, frame.sent_at_ms, frame.kind, frame.body, keys)
    if t == CONTENT_RECEIPT:
        ids = m.get("ids")
        if set(m) != {"t", "ids"} or not isinstance(ids, list):
            raise EnvelopeError("a receipt must have exactly t and ids")
        if not 1 <= len(ids) <= MAX_RECEIPT_IDS:
            raise EnvelopeError(f"a receipt names 1 to {MAX_RECEIPT_IDS} messages")
        if not all(isinstance(i, bytes) and len(i) == wire.MSG_ID_BYTES for i in ids):
            raise EnvelopeError(f"a receipt's IDs must be {wire.MSG_ID_BYTES} bytes each")
        return HeldReceipt(tuple(ids))
    raise EnvelopeError("the envelope holds an unknown kind of content")
