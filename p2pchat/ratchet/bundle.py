"""Key bundles: the Olm public keys a friend needs to start a session with us, signed by our
libp2p identity so that nobody else's keys can be passed off as ours (PROTOCOL.md §13.1).

A bundle names its signer's ID, our Olm identity key (Curve25519) and up to
``MAX_ONE_TIME_KEYS`` one-time keys, each usable for one session start. Sans-IO, like
:mod:`p2pchat.net.records`: bytes in, a checked :class:`KeyBundle` or a :class:`BundleError`
out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import cbor2
import nacl.exceptions
import nacl.signing

from p2pchat.identity import Identity, IdentityError, public_key_from_peer_id
from p2pchat.wire import FrameError, strict_cbor_decode

BUNDLE_VERSION: Final = 1
SIGNING_CONTEXT: Final = b"p2pchat olm key bundle v1\x00"
"""Prefixed to the signed body: a bundle signature is never valid as any other signature."""
MAX_ONE_TIME_KEYS: Final = 20
MAX_BUNDLE_BYTES: Final = 2048
CLOCK_SKEW_S: Final = 600
"""A bundle issued later than this past our clock is refused (a wrong clock, or a forgery
made to look newest)."""
_KEY_ID = re.compile(r"[A-Za-z0-9+/]{1,16}")
"""vodozemac's one-time key IDs (unpadded base64 of a counter)."""


class BundleError(ValueError):
    """A key bundle that is malformed, not signed by the ID it claims, or otherwise refused."""


@dataclass(frozen=True)
class KeyBundle:
    peer_id: str
    """The libp2p ID whose identity key signed the bundle."""
    identity_key: bytes
    """Olm identity key (Curve25519, 32 bytes)."""
    one_time_keys: tuple[tuple[str, bytes], ...]
    """(key ID, Curve25519 key): each starts at most one session."""
    issued: int
    """Seconds since the epoch, by the signer's clock: the newest bundle wins."""


def sign_bundle(
    identity: Identity,
    identity_key: bytes,
    one_time_keys: tuple[tuple[str, bytes], ...],
    issued: int,
) -> bytes:
    """Encode and sign a bundle; raises :class:`BundleError` for one :func:`parse_bundle`
    would refuse."""
    bundle = KeyBundle(identity.peer_id, identity_key, one_time_keys, issued)
    _check(bundle)
    body = cbor2.dumps(
        {
            "id": identity.public_key,
            "ik": identity_key,
            "otk": [[key_id, key] for key_id, key in one_time_keys],
            "at": issued,
        },
        canonical=True,
    )
    value = cbor2.dumps(
        {"v": BUNDLE_VERSION, "body": body, "sig": identity.sign(SIGNING_CONTEXT + body)},
        canonical=True,
    )
    if len(value) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle of {len(value)} bytes exceeds {MAX_BUNDLE_BYTES}")
    return value


def parse_bundle(peer_id: str, value: bytes, now: float) -> KeyBundle:
    """Decode and verify a bundle said to be ``peer_id``'s; :class:`BundleError` says why it
    is refused (malformed, another signer, bad signature, bad keys, issued in the future)."""
    if len(value) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle of {len(value)} bytes exceeds {MAX_BUNDLE_BYTES}")
    try:
        expected_key = public_key_from_peer_id(peer_id)
    except IdentityError as exc:
        raise BundleError(f"bad signer ID: {exc}") from None
    try:
        envelope = strict_cbor_decode(value, max_depth=2)
        if not isinstance(envelope, dict) or set(envelope) != {"v", "body", "sig"}:
            raise BundleError("a bundle is a map of exactly v, body and sig")
        if envelope["v"] != BUNDLE_VERSION:
            raise BundleError(f"unsupported bundle version {envelope['v']!r}")
        body, signature = _bytes(envelope, "body"), _bytes(envelope, "sig")
        fields = strict_cbor_decode(body, max_depth=3)
        if not isinstance(fields, dict) or set(fields) != {"id", "ik", "otk", "at"}:
            raise BundleError("a bundle body is a map of exactly id, ik, otk and at")
        signer, identity_key = _bytes(fields, "id"), _bytes(fields, "ik")
        raw_keys, issued = fields["otk"], fields["at"]
    except FrameError as exc:
        raise BundleError(f"malformed bundle: {exc}") from None
    if signer != expected_key:
        raise BundleError("the bundle is signed by another identity than the one it is for")
    if len(signature) != 64:
        raise BundleError("the bundle signature is not 64 bytes")
    try:
        nacl.signing.VerifyKey(signer).verify(SIGNING_CONTEXT + body, signature)
    except nacl.exceptions.BadSignatureError:
        raise BundleError("bad signature on the bundle") from None
    if not isinstance(raw_keys, list) or not all(
        isinstance(k, list) and len(k) == 2 and isinstance(k[0], str) and isinstance(k[1], bytes)
        for k in raw_keys
    ):
        raise BundleError("one-time keys are a list of [key ID, key] pairs")
    if not isinstance(issued, int) or isinstance(issued, bool) or issued < 0:
        raise BundleError("the issue time is not a non-negative integer")
    if issued > now + CLOCK_SKEW_S:
        raise BundleError("the bundle claims to be issued in the future")
    bundle = KeyBundle(peer_id, identity_key, tuple((k[0], k[1]) for k in raw_keys), issued)
    _check(bundle)
    return bundle


def _check(bundle: KeyBundle) -> None:
    if len(bundle.identity_key) != 32:
        raise BundleError("the identity key is not a 32-byte Curve25519 key")
    if len(bundle.one_time_keys) > MAX_ONE_TIME_KEYS:
        raise BundleError(f"a bundle carries at most {MAX_ONE_TIME_KEYS} one-time keys")
    ids = [key_id for key_id, _ in bundle.one_time_keys]
    if len(set(ids)) != len(ids):
        raise BundleError("a one-time key ID is listed twice")
    for key_id, key in bundle.one_time_keys:
        if not _KEY_ID.fullmatch(key_id):
            raise BundleError(f"bad one-time key ID {key_id[:20]!r}")
        if len(key) != 32:
            raise BundleError("a one-time key is not a 32-byte Curve25519 key")
        if key == bundle.identity_key:
            raise BundleError("a one-time key repeats the identity key")


def _bytes(m: dict[Any, Any], key: str) -> bytes:
    value = m[key]
    if not isinstance(value, bytes):
        raise BundleError(f"{key} is not a byte string")
    return value
