"""Link tasks: one task per peer that has work for the network, retrying with backoff.

Chat (owed friend notices, the outbox) and files (owed file notices, receive sessions) both
need "while there is work for this peer: reach it, do a round of work, and if that made no
progress wait a growing backoff, cut short when the network changes". :class:`Link` is that
loop; a concern subclasses it with its own :meth:`Link.wanted` and :meth:`Link.step`.
:class:`Links` keeps at most one link per peer, in a nursery its owner runs, and forgets a
link when it ends (when its peer no longer has work).

The loop never ends on a peer's failure: every exception of a round is logged (a bug in our
code loudly, with its traceback) and retried after the backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import trio

from p2pchat.identity import short
from p2pchat.net.streams import log_stream_failure

BACKOFF_MIN: Final = 0.5
BACKOFF_MAX: Final = 60.0


class Wakeup:
    """A level-triggered wake-up flag for one waiting task."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> None:
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            await self._event.wait()
        self._event = trio.Event()


class Link:
    """Keeps one peer's work moving. Subclasses say whether there is work (:meth:`wanted`)
    and do one round of it (:meth:`step`, True when it made progress, so the next round
    starts at once)."""

    kind = "link"
    """Names the link's task."""
    what = "link"
    """Names the link in logs."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._retry = Wakeup()  # cuts the backoff wait short
        self._backoff = BACKOFF_MIN

    def wanted(self) -> bool:
        """Whether this peer still has work; the link ends when it has none."""
        raise NotImplementedError

    async def step(self) -> bool:
        """One round of work."""
        raise NotImplementedError

    def retry_now(self) -> None:
        """End the current backoff wait (the backoff itself keeps growing)."""
        self._retry.set()

    def network_changed(self) -> None:
        """Something that may let a dial succeed changed (a connection opened or closed, new
        addresses, a user action): retry now, from a short backoff."""
        self._backoff = BACKOFF_MIN
        self._retry.set()

    async def run(self) -> None:
        while self.wanted():
            try:
                progressed = await self.step()
            except Exception as exc:  # libp2p raises many types on dead connections
                log_stream_failure(exc, f"{self.what} to %s", self.peer, level=logging.INFO)
                progressed = False
            if progressed:
                self._backoff = BACKOFF_MIN
                continue
            await self._retry.wait(self._backoff)
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)


L = TypeVar("L", bound=Link)


class Links(Generic[L]):
    """At most one running :class:`Link` per peer. :meth:`run` owns their nursery; links
    asked for before it runs start when it does (their owner re-ensures them at start)."""

    def __init__(self, make: Callable[[str], L]) -> None:
        self._make = make
        self._links: dict[str, L] = {}
        self._nursery: trio.Nursery | None = None

    async def run(
        self,
        start: Callable[[], None] = lambda: None,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run links until cancelled; ``start`` ensures the links wanted at start-up."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                start()
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None  # stopped: a link asked for now starts nowhere

    def get(self, peer: str) -> L | None:
        return self._links.get(peer)

    def __contains__(self, peer: str) -> bool:
        return peer in self._links

    def ensure(self, peer: str) -> L | None:
        """The peer's link, started if it has work and none runs (None if it has no work,
        or before or after :meth:`run`)."""
        link = self._links.get(peer)
        if link is not None:
            return link
        if self._nursery is None:
            return None
        link = self._make(peer)
        if not link.wanted():
            return None
        self._links[peer] = link
        self._nursery.start_soon(self._run_one, link, name=f"{link.kind}-{short(peer)}")
        return link

    async def _run_one(self, link: L) -> None:
        try:
            await link.run()
        finally:
            if self._links.get(link.peer) is link:
                del self._links[link.peer]
