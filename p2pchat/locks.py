"""Per-key trio locks that exist only while someone uses them (or while ``keep`` says so).

Used to serialise state changes per peer (chat) and per transfer (files) without a table
that peers can grow: an idle lock is dropped. Only the lock a task used is ever dropped, and
only when nobody holds or waits for it, so a waiter that was cancelled can never remove a
newer lock that another task holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import trio

K = TypeVar("K", bound=Hashable)


class KeyedLocks(Generic[K]):
    def __init__(self, keep: Callable[[K], bool] = lambda key: False) -> None:
        self._locks: dict[K, trio.Lock] = {}
        self._keep = keep

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if (
                self._locks.get(key) is lock
                and not lock.locked()
                and lock.statistics().tasks_waiting == 0
                and not self._keep(key)
            ):
                del self._locks[key]
