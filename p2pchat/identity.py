"""Identity: the Ed25519 key, the user's ID (a libp2p PeerId) and friend codes.

This module is deliberately free of libp2p imports so that light clients can parse and check
IDs and codes; :mod:`p2pchat.net.host` turns an :class:`Identity` into a libp2p key pair. The PeerId
of an Ed25519 key is the base58btc encoding of the *identity* multihash of the protobuf-encoded
public key (``00 24 08 01 12 20 <32-byte key>``), which always starts ``12D3KooW``.

A bare PeerId has no checksum, so a typo in it can yield another valid-looking key. A *friend
code* adds what the bare ID lacks: a 32-bit checksum over the whole code and the daemon's
listen addresses as hints for the first contact (docs/PROTOCOL.md, "Friend codes"). A v2 code
also carries the daemon's current *invite secret*: a friend request quoting it takes the
invited path, which a flood of strangers cannot exhaust (:mod:`p2pchat.chat.invites`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import base58
import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils

from p2pchat.wire import strict_cbor_decode

_PEER_ID_PREFIX: Final = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
CODE_PREFIX: Final = "p2pchat:"
_CODE_VERSION_BARE: Final = 1
_CODE_VERSION: Final = 2
INVITE_BYTES: Final = 8
"""Length of the invite secret a v2 friend code carries (like Tox's "nospam")."""
_CODE_CHECK_BYTES: Final = 4
_CODE_MAX_CHARS: Final = 4096
KEY_FILE_VERSION: Final = 1


class IdentityError(Exception):
    """A key file, ID or friend code is unusable; the message says why, for humans."""


class PassphraseRequired(IdentityError):
    """The key is encrypted and no passphrase was given."""


class WrongPassphrase(IdentityError):
    """The passphrase does not decrypt the key."""


# --- peer IDs ------------------------------------------------------------------------------


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p PeerId (base58 string) of a 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("Ed25519 public keys are 32 bytes")
    return str(base58.b58encode(_PEER_ID_PREFIX + public_key).decode("ascii"))


def public_key_from_peer_id(peer_id: str) -> bytes:
    """Parse a PeerId string, returning the Ed25519 public key it embeds.

    Raises :class:`IdentityError` with a human explanation for anything that is not the ID of
    an Ed25519 key (p2pchat IDs always are) or whose key is not a valid curve point.
    """
    text = peer_id.strip()
    if not text:
        raise IdentityError("the ID is empty")
    if not text.startswith("12D3KooW"):
        raise IdentityError(
            f"not a p2pchat ID: IDs start with '12D3KooW' (friend codes start with '{CODE_PREFIX}')"
        )
    try:
        raw = base58.b58decode(text)
    except ValueError:
        bad = sorted({c for c in text if c not in base58.alphabet.decode()})
        raise IdentityError(
            f"not a p2pchat ID: it contains characters that never appear in IDs: {bad}"
        ) from None
    if len(raw) != len(_PEER_ID_PREFIX) + 32 or not raw.startswith(_PEER_ID_PREFIX):
        raise IdentityError(
            f"not a p2pchat ID: wrong length ({len(text)} characters; IDs have 52). "
            "Check for missing or extra characters."
        )
    key = raw[len(_PEER_ID_PREFIX) :]
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(key):
        raise IdentityError("not a valid ID: it does not encode a valid public key (typo?)")
    return key


def short(peer_id: str) -> str:
    """How logs name a peer: the last 8 characters of its ID (the start is the same for all)."""
    return peer_id[-8:]


def check_peer_id(peer_id: str) -> str:
    """Return the canonical form of a valid PeerId string, or raise :class:`IdentityError`."""
    return peer_id_from_public_key(public_key_from_peer_id(peer_id))


# --- friend codes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FriendCode:
    """What a friend code carries: the ID, address hints for the first contact and (v2) the
    invite secret that admits a request through the invited path."""

    peer_id: str
    addrs: tuple[str, ...] = ()
    invite: bytes | None = None

    def encode(self) -> str:
        fields: dict[str, object] = {
            "v": _CODE_VERSION_BARE,
            "k": public_key_from_peer_id(self.peer_id),
            "a": list(self.addrs),
        }
        if self.invite is not None:
            if len(self.invite) != INVITE_BYTES:
                raise ValueError(f"an invite secret is {INVITE_BYTES} bytes")
            fields.update(v=_CODE_VERSION, i=self.invite)
        payload = cbor2.dumps(fields)
        check = _code_checksum(payload)
        body = base64.b32encode(payload + check).decode("ascii").rstrip("=").lower()
        return CODE_PREFIX + body


def _code_checksum(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CODE_CHECK_BYTES, person=b"p2pchat-code").digest()


def decode_friend_code(code: str) -> FriendCode:
    """Parse and verify a friend code; any typo fails the checksum with a clear message."""
    text = "".join(code.split())  # tolerate line breaks and spaces from copy/paste
    if not text.lower().startswith(CODE_PREFIX):
        raise IdentityError(f"not a friend code: codes start with '{CODE_PREFIX}'")
    if len(text) > _CODE_MAX_CHARS:
        raise IdentityError("not a friend code: far too long")
    body = text[len(CODE_PREFIX) :].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        raise IdentityError(
            "not a valid friend code: it contains characters codes never use (typo?)"
        ) from None
    if base64.b32encode(raw).decode("ascii").rstrip("=") != body:
        # Non-canonical: unused trailing bits set, or a length no encoder produces.
        raise IdentityError(
            "friend code checksum does not match: the code was mistyped or cut short"
        )
    if len(raw) <= _CODE_CHECK_BYTES:
        raise IdentityError("not a valid friend code: too short")
    payload, check = raw[:-_CODE_CHECK_BYTES], raw[-_CODE_CHECK_BYTES:]
    if _code_checksum(payload) != check:
        raise IdentityError(
            "friend code checksum does not match: the code was mistyped or cut short"
        )
    try:
        m = strict_cbor_decode(payload, max_depth=3)
        key = m["k"]
        addrs = m.get("a", [])
        version = m.get("v")
        invite = m.get("i") if version == _CODE_VERSION else None
        if version not in (_CODE_VERSION_BARE, _CODE_VERSION):
            raise ValueError("bad version")
        if version == _CODE_VERSION and (
            not isinstance(invite, bytes) or len(invite) != INVITE_BYTES
        ):
            raise ValueError("bad invite")
        if not isinstance(key, bytes) or len(key) != 32:
            raise ValueError("bad fields")
        if not isinstance(addrs, list) or not all(
            isinstance(a, str) and a.startswith("/") for a in addrs
        ):
            raise ValueError("bad addrs")
    except Exception:
        raise IdentityError("friend code is from an unsupported version or corrupt") from None
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(key):
        raise IdentityError("friend code carries an invalid public key")
    return FriendCode(peer_id=peer_id_from_public_key(key), addrs=tuple(addrs[:16]), invite=invite)


def parse_id_or_code(text: str) -> FriendCode:
    """Accept a bare PeerId or a friend code, as the CLI and API do."""
    compact = "".join(text.split())
    if compact.lower().startswith(CODE_PREFIX):
        return decode_friend_code(compact)
    return FriendCode(peer_id=check_peer_id(compact))


# --- the key and its file ------------------------------------------------------------------


class Identity:
    """The daemon's Ed25519 signing key and derived ID."""

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._key = signing_key

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate())

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    @functools.cached_property
    def peer_id(self) -> str:
        # Cached: base58 encoding costs ~50 us in Python, and the key never changes.
        return peer_id_from_public_key(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return bytes(self._key.sign(data).signature)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text, validate=True)


def save_identity(
    identity: Identity,
    path: Path,
    passphrase: bytes | None = None,
    *,
    opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_MODERATE,
    memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_MODERATE,
) -> None:
    """Write the key file (mode 0600), encrypted with Argon2id + XSalsa20-Poly1305 if a
    passphrase is given. Written to a temporary file and renamed, so a crash never leaves a
    half-written key."""
    doc: dict[str, object] = {
        "version": KEY_FILE_VERSION,
        "type": "ed25519",
        "peer_id": identity.peer_id,
    }
    if passphrase:
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        box_key = nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
        )
        sealed = nacl.secret.SecretBox(box_key).encrypt(identity.seed)
        doc.update(
            kdf="argon2id",
            opslimit=opslimit,
            memlimit=memlimit,
            salt=_b64(salt),
            sealed_seed=_b64(bytes(sealed)),
        )
    else:
        doc["seed"] = _b64(identity.seed)
    tmp = path.with_name(path.name + ".tmp")
    # A stale temporary file (or a link planted there) must not decide the key's permissions.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def key_file_is_encrypted(path: Path) -> bool:
    try:
        return "sealed_seed" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def load_identity(path: Path, passphrase: bytes | None = None) -> Identity:
    """Read the key file; raises :class:`IdentityError` subclasses with clear reasons."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise IdentityError(f"no key file at {path}") from None
    except (OSError, ValueError) as exc:
        raise IdentityError(f"key file {path} is unreadable: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != KEY_FILE_VERSION:
        raise IdentityError(f"key file {path} has an unsupported format")
    try:
        if "sealed_seed" in doc:
            if not passphrase:
                raise PassphraseRequired(
                    "the key is protected by a passphrase: give --passphrase-file FILE or set "
                    "P2PCHAT_PASSPHRASE"
                )
            box_key = nacl.pwhash.argon2id.kdf(
                nacl.secret.SecretBox.KEY_SIZE,
                passphrase,
                _unb64(doc["salt"]),
                opslimit=int(doc["opslimit"]),
                memlimit=int(doc["memlimit"]),
            )
            try:
                seed = nacl.secret.SecretBox(box_key).decrypt(_unb64(doc["sealed_seed"]))
            except nacl.exceptions.CryptoError:
                raise WrongPassphrase("wrong passphrase for the key file") from None
        else:
            seed = _unb64(doc["seed"])
        identity = Identity(nacl.signing.SigningKey(seed))
    except IdentityError:
        raise
    except (KeyError, ValueError, TypeError, nacl.exceptions.CryptoError) as exc:
        raise IdentityError(f"key file {path} is corrupt: {exc}") from None
    if doc.get("peer_id") not in (None, identity.peer_id):
        raise IdentityError(f"key file {path} is corrupt: key does not match its recorded ID")
    return identity
