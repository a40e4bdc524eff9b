"""Sender keys for group messages, sans-IO over vodozemac's Megolm (PROTOCOL.md §15.2).

Each member seals what it sends to a group with its own outbound Megolm session, a
:class:`SenderKey`, and shares that session's key with each current member over their
pairwise Olm sessions (§13). A member opens the sender's messages with a :class:`ReceivedKey`
built from what was shared: from the index it was shared at onwards, never earlier (a member
who joins does not read what was sent before), and only the sender can seal (Megolm signs
every message with the session's Ed25519 key; receivers hold only its public half).

Megolm's ratchet only moves forward, but whoever holds a session's key can open everything
sealed after it with that session. So a sender starts a new session, shared with the members
who remain, whenever a member is removed or leaves (:func:`needs_new_key`): the removed
member's copy of the old key opens nothing sent after that. A session is also replaced after
``ROTATE_AFTER_MESSAGES`` messages or ``ROTATE_AFTER_S`` seconds, bounding what one stolen
key opens.

Pickles are encrypted with the key :func:`p2pchat.ratchet.pair.pickle_key` derives, as for
pairwise sessions; callers store them in the transaction that stores the message.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

import vodozemac

ROTATE_AFTER_MESSAGES: Final = 1000
ROTATE_AFTER_S: Final = 7 * 24 * 3600
MAX_SEALED_BYTES: Final = 64 * 1024
"""Bigger sealed group messages are refused before vodozemac parses them."""
MAX_SHARED_KEY_BYTES: Final = 512


class GroupSealError(ValueError):
    """A group message or shared key that cannot be used: malformed, tampered with, from
    another session, or older than the key we were given."""


@dataclass(frozen=True)
class Opened:
    plaintext: bytes
    index: int
    """The message's position in its session: with the session ID, names it once (a
    replayed message opens again to the same index; the store keeps one)."""


class _Session:
    """What both ends' Megolm sessions have: an ID and an encrypted pickle."""

    _session: vodozemac.GroupSession | vodozemac.InboundGroupSession

    def pickle(self, key: bytes) -> str:
        return str(self._session.pickle(key))

    @property
    def session_id(self) -> str:
        return str(self._session.session_id)


class SenderKey(_Session):
    """Our outbound Megolm session for one group."""

    def __init__(self, session: vodozemac.GroupSession, created_at: float) -> None:
        self._session: vodozemac.GroupSession = session
        self.created_at = created_at

    @classmethod
    def create(cls, now: float) -> SenderKey:
        return cls(vodozemac.GroupSession(), now)

    @classmethod
    def from_pickle(cls, pickled: str, key: bytes, created_at: float) -> SenderKey:
        try:
            return cls(vodozemac.GroupSession.from_pickle(pickled, key), created_at)
        except ValueError as exc:
            raise GroupSealError(f"the stored sender key cannot be read: {exc}") from None

    @property
    def next_index(self) -> int:
        return self._session.message_index

    def share(self) -> bytes:
        """The session key as of the next message: what a member needs to open everything
        we seal from now on, and nothing sealed before."""
        return base64.b64decode(_padded(self._session.session_key.to_base64()))

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt and sign with the next message key (pickle the state with the message)."""
        return bytes(self._session.encrypt(plaintext).to_bytes())


class ReceivedKey(_Session):
    """One member's sender key, as shared with us."""

    def __init__(self, session: vodozemac.InboundGroupSession) -> None:
        self._session: vodozemac.InboundGroupSession = session

    @classmethod
    def from_shared(cls, shared: bytes) -> ReceivedKey:
        if len(shared) > MAX_SHARED_KEY_BYTES:
            raise GroupSealError(f"a shared key of {len(shared)} bytes is too long")
        try:
            key = vodozemac.SessionKey(base64.b64encode(shared).decode().rstrip("="))
            return cls(vodozemac.InboundGroupSession(key))
        except (ValueError, TypeError) as exc:
            raise GroupSealError(f"the shared key is not valid: {exc}") from None

    @classmethod
    def from_pickle(cls, pickled: str, key: bytes) -> ReceivedKey:
        try:
            return cls(vodozemac.InboundGroupSession.from_pickle(pickled, key))
        except ValueError as exc:
            raise GroupSealError(f"the stored sender key cannot be read: {exc}") from None

    @property
    def first_index(self) -> int:
        return self._session.first_known_index

    def open(self, sealed: bytes) -> Opened:
        """Verify and decrypt one message of this session; :class:`GroupSealError` if it is
        not one (tampered, another session, or sealed before the key was shared with us)."""
        if len(sealed) > MAX_SEALED_BYTES:
            raise GroupSealError(f"a sealed group message of {len(sealed)} bytes is too long")
        try:
            message = vodozemac.MegolmMessage.from_bytes(sealed)
            decrypted = self._session.decrypt(message)
        except (ValueError, TypeError) as exc:
            raise GroupSealError(f"the group message does not open: {exc}") from None
        return Opened(bytes(decrypted.plaintext), int(decrypted.message_index))


def needs_new_key(key: SenderKey, now: float, *, members_left: bool) -> bool:
    """Whether to seal the next message with a new session: a member was removed or left
    since this one was shared, or it has sealed enough or lived long enough."""
    return (
        members_left
        or key.next_index >= ROTATE_AFTER_MESSAGES
        or now - key.created_at >= ROTATE_AFTER_S
    )


def _padded(text: str) -> str:
    return text + "=" * (-len(text) % 4)
