"""Which friends the user has verified: compared safety numbers with
(:mod:`p2pchat.ratchet.safety`), kept in memory in step with the ``verified`` table."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from p2pchat.chat.store import ChatStore
from p2pchat.ratchet.safety import safety_number


@dataclass(frozen=True)
class Verification:
    peer_id: str
    safety_number: str
    """As both daemons compute it now."""
    verified: bool
    """The user confirmed this very number, and the friend's end-to-end keys are the ones
    it had then."""
    verified_at: int | None
    changed: bool
    """The user confirmed a number, but the keys it covered are not the ones now in use:
    the friend's Olm identity key changed since (a reinstall that lost its end-to-end
    state, or someone else holding its identity key), or the mark is from another scheme
    version. Shown so the user compares again."""


class VerifiedMarks:
    """The safety numbers the user confirmed, per peer, and the Olm identity key each peer
    last presented (a verification covers the key the friend had when it was made)."""

    def __init__(self, store: ChatStore, me: str) -> None:
        self._store = store
        self._me = me
        self._marks: dict[str, tuple[str, int, bytes | None]] = {}
        self._keys: dict[str, bytes] = {}
        self._numbers: dict[str, str] = {}
        """Safety numbers of marked peers (computing one costs ~1 ms: done once)."""
        self._lock = trio.Lock()
        """Changes run one at a time: memory follows the database in the same order."""

    async def load(self) -> None:
        self._marks = await self._store.verified_marks()
        self._keys = await self._store.olm_identity_keys()
        for peer in self._marks:
            self._numbers[peer] = await self._number(peer)

    async def _number(self, peer: str) -> str:
        return await trio.to_thread.run_sync(safety_number, self._me, peer)

    def _holds(self, peer: str) -> bool:
        """``peer``'s mark covers what it has now: the number, and the key if both known."""
        mark = self._marks.get(peer)
        if mark is None or self._numbers.get(peer) != mark[0]:
            return False
        key = self._keys.get(peer)
        return mark[2] is None or key is None or mark[2] == key

    def is_verified(self, peer: str) -> bool:
        """The user confirmed the safety number ``peer`` has now, with its current keys."""
        return self._holds(peer)

    async def get(self, peer: str) -> Verification:
        number = await self._number(peer)
        mark = self._marks.get(peer)
        return Verification(
            peer,
            number,
            verified=self._holds(peer),
            verified_at=mark[1] if mark else None,
            changed=mark is not None and not self._holds(peer),
        )

    async def saw_keys(self, peer: str, olm_key: bytes, now: int) -> bool:
        """``peer`` presented this Olm identity key (checked: signed by its ID's key);
        whether it differs from the one it presented before."""
        if self._keys.get(peer) == olm_key and (
            peer not in self._marks or self._marks[peer][2] is not None
        ):
            return False
        async with self._lock:
            previous = await self._store.note_olm_key(peer, olm_key, now)
            self._keys[peer] = olm_key
            mark = self._marks.get(peer)
            if mark is not None and mark[2] is None:  # a mark older than recorded keys
                self._marks[peer] = (mark[0], mark[1], previous or olm_key)
            return previous is not None

    async def mark(self, peer: str, now: int) -> Verification:
        number = await self._number(peer)
        async with self._lock:
            key = self._keys.get(peer)
            await self._store.set_verified(peer, number, now, key)
            self._marks[peer] = (number, now, key)
            self._numbers[peer] = number
        return await self.get(peer)

    async def unmark(self, peer: str) -> Verification:
        async with self._lock:
            await self._store.clear_verified(peer)
            self._marks.pop(peer, None)
        return await self.get(peer)
