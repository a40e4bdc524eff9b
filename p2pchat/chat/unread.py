"""Unread counts: per conversation, the incoming messages stored after its read mark.

The database holds the truth (each conversation's read mark, :meth:`ChatStore.mark_read`);
this keeps the count per peer in memory, so a Contact can show it at no cost and a message
arriving costs no count query. The counts are read from the database once at start
(:meth:`UnreadCounts.load`, one index range per peer over its unread messages only), then
moved by the two things that change them: newly stored incoming messages (+1 each; a
duplicate delivered again is not stored again, so it is never counted twice) and the user
reading the conversation (0).

Both run under the peer's lock here, the database write and the count update together, so
the count always matches the committed order: a read that committed after a message counts
it read, one that committed before leaves it unread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from p2pchat.chat.store import ChatStore, IncomingMessage, MessageRecord, Opener
from p2pchat.locks import KeyedLocks


class UnreadCounts:
    """The unread count of every conversation, kept in step with the read marks."""

    def __init__(self, store: ChatStore) -> None:
        self._store = store
        self._counts: dict[str, int] = {}
        self._locks: KeyedLocks[str] = KeyedLocks()

    async def load(self) -> None:
        self._counts = await self._store.unread_counts()

    def count(self, peer: str) -> int:
        """Incoming messages from ``peer`` after the conversation's read mark (0 for none)."""
        return self._counts.get(peer, 0)

    async def add_incoming(
        self,
        peer: str,
        messages: Sequence[IncomingMessage],
        now: int,
        announce: Callable[[MessageRecord], None] = lambda record: None,
        opener: Opener | None = None,
    ) -> list[MessageRecord]:
        """Store received messages (:meth:`ChatStore.add_incoming`) and count the new ones.
        ``announce`` is called for each, right after it is counted, so whatever it publishes
        carries the count including that message."""
        async with self._locks.hold(peer):
            stored = await self._store.add_incoming(peer, messages, now, opener)
            for record in stored:
                # Only incoming messages are ever stored here: every one counts.
                self._counts[peer] = self._counts.get(peer, 0) + 1
                announce(record)
        return stored

    async def mark_read(self, peer: str) -> int:
        """Mark the conversation read up to its newest message; returns the mark (a row)."""
        async with self._locks.hold(peer):
            mark = await self._store.mark_read(peer)
            # Everything stored before the mark was committed has had its count added (the
            # lock), and nothing after it yet: all of it is read now.
            self._counts.pop(peer, None)
        return mark
