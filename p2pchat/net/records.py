"""Signed address records: where an identity's devices can be reached, published in the DHT.

Sans-IO: building, signing, parsing and choosing records, with no network and no clock of its
own (callers pass ``now``). :mod:`p2pchat.net.discovery` stores and fetches them.

A record is keyed by the *identity* (``/p2pchat/<digest of its public key>``) and lists one
or more *devices*, each with its own libp2p public key and addresses. The identity key signs
the whole record, so every device listed is vouched for by the identity. Today a daemon's
device key is its identity key; linked devices (later) will add entries without a format
change.

Validation (docs/PROTOCOL.md, "Address records") rejects: oversized or malformed encodings,
bad signatures, a key that does not match the signer, expired records and records claiming an
implausibly long life. Among valid records the highest sequence number wins; a record with a
lower sequence number than one already held never replaces it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.signing

from p2pchat.identity import (
    Identity,
    IdentityError,
    peer_id_from_public_key,
    public_key_from_peer_id,
)
from p2pchat.wire import MAX_ADDR_BYTES, MAX_ADDRS, FrameError, strict_cbor_decode, text_problem

RECORD_VERSION: Final = 1
NAMESPACE: Final = "p2pchat"
"""DHT key namespace: keys are ``/p2pchat/<digest>``, 49 bytes. (py-libp2p's DHT servers
refuse lookups for keys over 50 bytes that are not multihashes, so the PeerId itself, 52
characters, cannot be the key.)"""
MAX_RECORD_BYTES: Final = 8192
MAX_DEVICES: Final = 8
MAX_ADDRS_PER_DEVICE: Final = MAX_ADDRS
RECORD_LIFETIME: Final = 12 * 3600
"""Seconds a freshly signed record is valid."""
MAX_LIFETIME: Final = 48 * 3600
"""A record claiming to live longer than this (from now) is refused: a peer's clock or a
forger should not pin stale addresses into the network for months."""
CLOCK_SKEW: Final = 600
SIGNING_CONTEXT: Final = b"p2pchat address record v1\x00"
"""Signed bytes are this prefix plus the encoded body: a record signature can never be
mistaken for a signature over anything else the identity key signs."""


class RecordError(ValueError):
    """A record is unusable; the message says why."""


@dataclass(frozen=True, slots=True)
class Device:
    """One device of an identity: its libp2p peer ID and where it listens."""

    peer_id: str
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AddressRecord:
    identity: str
    """The PeerId of the identity key that signed the record."""
    seq: int
    expires: int
    """Unix time (seconds) after which the record is worthless."""
    devices: tuple[Device, ...]

    def addrs_of(self, peer_id: str) -> tuple[str, ...]:
        for device in self.devices:
            if device.peer_id == peer_id:
                return device.addrs
        return ()

    def all_addrs(self) -> tuple[str, ...]:
        return tuple(a for d in self.devices for a in d.addrs)


def record_key(peer_id: str) -> str:
    """The DHT key of an identity's address record: derived from the ID alone."""
    digest = hashlib.sha256(public_key_from_peer_id(peer_id)).hexdigest()[:40]
    return f"/{NAMESPACE}/{digest}"


def sign_record(identity: Identity, seq: int, expires: int, devices: tuple[Device, ...]) -> bytes:
    """Encode and sign a record with the identity key. Raises :class:`RecordError` for a
    record this module would itself refuse (too many devices or addresses, too big)."""
    if not 1 <= len(devices) <= MAX_DEVICES:
        raise RecordError(f"a record lists 1 to {MAX_DEVICES} devices")
    for d in devices:
        _check_addrs(d.addrs)
    body = cbor2.dumps(
        {
            "id": identity.public_key,
            "seq": seq,
            "exp": expires,
            "devices": [
                {"key": public_key_from_peer_id(d.peer_id), "addrs": list(d.addrs)} for d in devices
            ],
        },
        canonical=True,
    )
    signature = identity.sign(SIGNING_CONTEXT + body)
    value = cbor2.dumps({"v": RECORD_VERSION, "body": body, "sig": signature}, canonical=True)
    if len(value) > MAX_RECORD_BYTES:
        raise RecordError(f"record of {len(value)} bytes exceeds {MAX_RECORD_BYTES}")
    return value


def parse_record(key: str, value: bytes, now: float) -> AddressRecord:
    """Decode and verify a record found under ``key``; raise :class:`RecordError` if it is
    malformed, forged, stored under another identity's key, expired or implausibly long-lived."""
    if len(value) > MAX_RECORD_BYTES:
        raise RecordError(f"record of {len(value)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        envelope = strict_cbor_decode(value, max_depth=2)
        body = _field(envelope, "body", bytes)
        signature = _field(envelope, "sig", bytes)
        if envelope.get("v") != RECORD_VERSION:
            raise RecordError(f"unsupported record version {envelope.get('v')!r}")
        if set(envelope) != {"v", "body", "sig"}:
            raise RecordError("unexpected fields in the record envelope")
        fields = strict_cbor_decode(body, max_depth=4)
        public_key = _field(fields, "id", bytes)
        seq = _uint(fields, "seq")
        expires = _uint(fields, "exp")
        raw_devices = _field(fields, "devices", list)
    except FrameError as exc:
        raise RecordError(f"malformed record: {exc}") from None
    if len(public_key) != 32 or not nacl.bindings.crypto_core_ed25519_is_valid_point(public_key):
        raise RecordError("the record's identity key is not a valid Ed25519 key")
    signer = peer_id_from_public_key(public_key)
    if key != record_key(signer):
        raise RecordError("the record is stored under a key that is not its signer's")
    if len(signature) != 64:
        raise RecordError("the record signature is not 64 bytes")
    try:
        nacl.signing.VerifyKey(public_key).verify(SIGNING_CONTEXT + body, signature)
    except nacl.exceptions.BadSignatureError:
        raise RecordError("bad signature on the record") from None
    if expires <= now:
        raise RecordError("the record has expired")
    if expires > now + MAX_LIFETIME + CLOCK_SKEW:
        raise RecordError("the record claims to be valid implausibly far into the future")
    if not 1 <= len(raw_devices) <= MAX_DEVICES:
        raise RecordError(f"a record lists 1 to {MAX_DEVICES} devices")
    devices: list[Device] = []
    for raw in raw_devices:
        devices.append(_device(raw))
    if len({d.peer_id for d in devices}) != len(devices):
        raise RecordError("a device is listed twice")
    return AddressRecord(signer, seq, expires, tuple(devices))


def select_record(key: str, values: list[bytes], now: float) -> int:
    """Index of the best of ``values``: the valid record with the highest sequence number
    (ties: the later expiry, then the larger encoding, so every node picks the same one).
    Raises :class:`RecordError` if none is valid."""
    best: tuple[int, int, bytes] | None = None
    best_index = -1
    for index, value in enumerate(values):
        try:
            record = parse_record(key, value, now)
        except RecordError:
            continue
        rank = (record.seq, record.expires, value)
        if best is None or rank > best:
            best, best_index = rank, index
    if best is None:
        raise RecordError("no valid record among the candidates")
    return best_index


def _device(raw: Any) -> Device:
    if not isinstance(raw, dict) or set(raw) != {"key", "addrs"}:
        raise RecordError("a device entry must hold exactly 'key' and 'addrs'")
    key = raw["key"]
    if not isinstance(key, bytes) or len(key) != 32:
        raise RecordError("a device key must be 32 bytes")
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(key):
        raise RecordError("a device key is not a valid Ed25519 key")
    addrs = raw["addrs"]
    if not isinstance(addrs, list):
        raise RecordError("a device's addrs must be a list")
    checked = _check_addrs(addrs)
    try:
        peer_id = peer_id_from_public_key(key)
    except (ValueError, IdentityError) as exc:
        raise RecordError(str(exc)) from None
    return Device(peer_id, checked)


def _check_addrs(addrs: Any) -> tuple[str, ...]:
    if len(addrs) > MAX_ADDRS:
        raise RecordError(f"a device lists more than {MAX_ADDRS} addresses")
    for a in addrs:
        if (
            not isinstance(a, str)
            or not a.startswith("/")
            or text_problem(a, MAX_ADDR_BYTES) is not None
        ):
            raise RecordError("addresses must be multiaddr strings")
    return tuple(addrs)


def _field(m: Any, key: str, kind: type) -> Any:
    if not isinstance(m, dict):
        raise RecordError("a record must be a CBOR map")
    value = m.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecordError(f"field {key!r} is missing or of the wrong type")
    return value


def _uint(m: dict[str, Any], key: str) -> int:
    value = _field(m, key, int)
    if not 0 <= value < 2**63:
        raise RecordError(f"field {key!r} is out of range")
    return int(value)
