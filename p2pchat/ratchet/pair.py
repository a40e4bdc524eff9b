"""One friend's Olm session and our Olm account, sans-IO over vodozemac (PROTOCOL.md §13.2).

:class:`OlmAccount` holds our Olm identity key and one-time keys and hands out signed
bundles (:mod:`p2pchat.ratchet.bundle`). :class:`PairSession` is one friend's double ratchet:
:meth:`PairSession.seal` turns a message body into a :class:`Sealed` (a pre-key message until
the friend has answered, then normal messages), :meth:`PairSession.open` turns one back, once:
each message key is deleted as it is used, so a sealed message cannot be opened a second time
and a later theft of the state opens nothing already read. Both pickle to text encrypted with
a key the caller derives (:func:`pickle_key`), for the database; callers store the pickle in
the same transaction as the message it sealed or opened, so a crash never desynchronises the
ratchet.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import vodozemac

from p2pchat.identity import Identity
from p2pchat.ratchet.bundle import MAX_ONE_TIME_KEYS, KeyBundle, sign_bundle

PRE_KEY: Final = 0
NORMAL: Final = 1
MAX_SEALED_BYTES: Final = 64 * 1024
"""Bigger sealed bodies are refused before vodozemac parses them."""


class SealError(ValueError):
    """A sealed message that cannot be opened: malformed, tampered with, replayed, for
    another session, or from another identity key than the friend's."""


@dataclass(frozen=True)
class Sealed:
    kind: int
    """``PRE_KEY`` (starts a session; carries the sender's keys) or ``NORMAL``."""
    body: bytes


def pickle_key(identity: Identity) -> bytes:
    """The 32-byte key Olm state is pickled with, derived from the identity key: the state
    is readable by exactly whoever can use the identity (and the database is encrypted as
    well when the identity has a passphrase)."""
    return hashlib.blake2b(identity.seed, digest_size=32, person=b"p2pchat-olm-pkl").digest()


class OlmAccount:
    """Our Olm identity and one-time keys."""

    def __init__(self, account: vodozemac.Account) -> None:
        self._account = account

    @classmethod
    def create(cls) -> OlmAccount:
        return cls(vodozemac.Account())

    @classmethod
    def from_pickle(cls, pickled: str, key: bytes) -> OlmAccount:
        try:
            return cls(vodozemac.Account.from_pickle(pickled, key))
        except ValueError as exc:
            raise SealError(f"the stored Olm account cannot be read: {exc}") from None

    def pickle(self, key: bytes) -> str:
        return self._account.pickle(key)

    @property
    def identity_key(self) -> bytes:
        return self._account.curve25519_key.to_bytes()

    def bundle(self, identity: Identity, count: int, issued: int) -> bytes:
        """A signed bundle with ``count`` fresh one-time keys (those not yet used stay
        valid: a friend may hold an older bundle). Pickle the account afterwards."""
        if not 0 <= count <= MAX_ONE_TIME_KEYS:
            raise ValueError(f"a bundle carries 0 to {MAX_ONE_TIME_KEYS} one-time keys")
        self._account.generate_one_time_keys(count)
        keys = tuple(
            (key_id, key.to_bytes()) for key_id, key in self._account.one_time_keys.items()
        )
        self._account.mark_keys_as_published()  # so the next bundle lists only new ones
        return sign_bundle(identity, self.identity_key, keys, issued)

    def accept(self, their_identity_key: bytes, sealed: Sealed) -> tuple[PairSession, bytes]:
        """A friend's first message (a pre-key message to one of our one-time keys): the new
        session and the plaintext. The one-time key is used up: the same message a second
        time is refused. ``their_identity_key`` is the one in the friend's verified bundle;
        a message from any other key is refused."""
        if sealed.kind != PRE_KEY:
            raise SealError("a session starts with a pre-key message")
        message = _decode(sealed).to_pre_key()
        if message is None:
            raise SealError("not a pre-key message")
        try:
            sender = vodozemac.Curve25519PublicKey.from_bytes(their_identity_key)
            session, plaintext = self._account.create_inbound_session(sender, message)
        except ValueError as exc:
            raise SealError(f"cannot start a session from this message: {exc}") from None
        return PairSession(session), plaintext


class PairSession:
    """One friend's double ratchet."""

    def __init__(self, session: vodozemac.Session) -> None:
        self._session = session

    @classmethod
    def start(cls, account: OlmAccount, bundle: KeyBundle, key_id: str) -> PairSession:
        """A session to the friend whose verified ``bundle`` this is, using its one-time key
        ``key_id`` (never use one twice: the friend refuses the second session)."""
        keys = dict(bundle.one_time_keys)
        if key_id not in keys:
            raise SealError(f"the bundle has no one-time key {key_id!r}")
        try:
            session = account._account.create_outbound_session(
                vodozemac.Curve25519PublicKey.from_bytes(bundle.identity_key),
                vodozemac.Curve25519PublicKey.from_bytes(keys[key_id]),
            )
        except ValueError as exc:
            raise SealError(f"cannot start a session with these keys: {exc}") from None
        return cls(session)

    @classmethod
    def from_pickle(cls, pickled: str, key: bytes) -> PairSession:
        try:
            return cls(vodozemac.Session.from_pickle(pickled, key))
        except ValueError as exc:
            raise SealError(f"the stored session cannot be read: {exc}") from None

    def pickle(self, key: bytes) -> str:
        return self._session.pickle(key)

    @property
    def session_id(self) -> str:
        """The same on both sides of the session."""
        return self._session.session_id

    def seal(self, plaintext: bytes) -> Sealed:
        """Encrypt with the next message key (the state changes: pickle it with the message)."""
        kind, body = self._session.encrypt(plaintext).to_parts()
        return Sealed(kind, body)

    def open(self, sealed: Sealed) -> bytes:
        """Decrypt; each message opens once. Raises :class:`SealError`."""
        try:
            return self._session.decrypt(_decode(sealed))
        except ValueError as exc:
            raise SealError(f"cannot open the message: {exc}") from None

    def matches(self, sealed: Sealed) -> bool:
        """Whether a pre-key message belongs to this session (the friend resent its first
        message before seeing our answer)."""
        if sealed.kind != PRE_KEY:
            return False
        message = _decode(sealed).to_pre_key()
        return message is not None and self._session.session_matches(message)


def _decode(sealed: Sealed) -> vodozemac.AnyOlmMessage:
    if sealed.kind not in (PRE_KEY, NORMAL):
        raise SealError(f"unknown sealed message kind {sealed.kind!r}")
    if len(sealed.body) > MAX_SEALED_BYTES:
        raise SealError(f"sealed message of {len(sealed.body)} bytes exceeds {MAX_SEALED_BYTES}")
    try:
        return vodozemac.AnyOlmMessage.from_parts(sealed.kind, sealed.body)
    except ValueError as exc:
        raise SealError(f"malformed sealed message: {exc}") from None
