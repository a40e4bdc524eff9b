"""What the sender's and the receiver's data sessions share: the table of one side's running
sessions (so that an end of the transfer can cancel its session, and a friend cannot run
more than a few at once) and the rule for dropping a session that stopped moving (the sender
runs :func:`watch_stall`; the receiver checks it at each checkpoint)."""

from __future__ import annotations

import time
from typing import Final

import trio

from p2pchat.files.datapath import Progress

MAX_SESSIONS_PER_PEER: Final = 4
STALL_MIN_BYTES: Final = 4096
"""A data session that moves less than this in the stall timeout is abandoned (and retried):
a slow link is fine, a trickle that only holds the session is not."""


class Sessions:
    """One side's running data sessions: the cancel scope of each, by transfer ID."""

    def __init__(self) -> None:
        self._running: dict[bytes, tuple[str, trio.CancelScope]] = {}

    def __contains__(self, tid: bytes) -> bool:
        return tid in self._running

    def full(self, peer: str) -> bool:
        """Whether ``peer`` has as many sessions running as it may."""
        running = sum(1 for owner, _scope in self._running.values() if owner == peer)
        return running >= MAX_SESSIONS_PER_PEER

    def add(self, tid: bytes, peer: str, scope: trio.CancelScope) -> None:
        """Register a session, cancelling the one it replaces."""
        self.cancel(tid)
        self._running[tid] = (peer, scope)

    def remove(self, tid: bytes, scope: trio.CancelScope) -> bool:
        """Forget a session that ended; False if another one has replaced it already."""
        running = self._running.get(tid)
        if running is None or running[1] is not scope:
            return False
        del self._running[tid]
        return True

    def cancel(self, tid: bytes) -> None:
        running = self._running.get(tid)
        if running is not None:
            running[1].cancel()


async def watch_stall(progress: Progress, timeout: float) -> None:
    """Raise if fewer than ``STALL_MIN_BYTES`` move on the wire in ``timeout`` (a peer that
    keeps a session open but moves nothing, or only a trickle)."""
    last_moved, last_change = progress.wire, time.monotonic()
    while True:
        await trio.sleep(1.0)
        if progress.wire - last_moved >= STALL_MIN_BYTES:
            last_moved, last_change = progress.wire, time.monotonic()
        elif time.monotonic() - last_change > timeout:
            raise ConnectionError(f"no data moved for {timeout:g} s")


def sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error inside a nursery's group (cancellations of siblings dropped); a
    group of cancellations only gives its first, which re-raised is still a cancellation."""
    errors = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
    if not errors:
        return group.exceptions[0]
    if len(errors) == 1:
        inner = errors[0]
        return sole_error(inner) if isinstance(inner, BaseExceptionGroup) else inner
    return group
