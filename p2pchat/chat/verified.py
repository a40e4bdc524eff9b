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
    """The user confirmed this very number."""
    verified_at: int | None
    changed: bool
    """The user confirmed a number, but not this one: the keys it covered are not the ones
    now in use. An ID's key cannot change, so today this means a stored mark from another
    scheme version; shown so the user checks again."""


class VerifiedMarks:
    """The safety numbers the user confirmed, per peer."""

    def __init__(self, store: ChatStore, me: str) -> None:
        self._store = store
        self._me = me
        self._marks: dict[str, tuple[str, int]] = {}
        self._valid: set[str] = set()

    async def load(self) -> None:
        self._marks = await self._store.verified_marks()
        self._valid = {
            peer
            for peer, (number, _) in self._marks.items()
            if await trio.to_thread.run_sync(safety_number, self._me, peer) == number
        }

    def is_verified(self, peer: str) -> bool:
        """The user confirmed the safety number ``peer`` has now."""
        return peer in self._valid

    async def get(self, peer: str) -> Verification:
        number = await trio.to_thread.run_sync(safety_number, self._me, peer)
        mark = self._marks.get(peer)
        return Verification(
            peer,
            number,
            verified=mark is not None and mark[0] == number,
            verified_at=mark[1] if mark else None,
            changed=mark is not None and mark[0] != number,
        )

    async def mark(self, peer: str, now: int) -> Verification:
        number = await trio.to_thread.run_sync(safety_number, self._me, peer)
        await self._store.set_verified(peer, number, now)
        self._marks[peer] = (number, now)
        self._valid.add(peer)
        return await self.get(peer)

    async def unmark(self, peer: str) -> Verification:
        await self._store.clear_verified(peer)
        self._marks.pop(peer, None)
        self._valid.discard(peer)
        return await self.get(peer)
