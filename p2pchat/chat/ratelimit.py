"""Token buckets for what strangers may do (friend requests), with an injected clock. The
same :class:`TokenBucket` meters what friends may do (:mod:`.quotas`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

MAX_TRACKED_PEERS: Final = 4096


@dataclass
class TokenBucket:
    capacity: float
    refill_per_s: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def take_up_to(self, n: int, now: float) -> int:
        """Take as many of ``n`` whole tokens as there are; how many were taken."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_s)
        self.updated = now
        taken = max(0, min(n, int(self.tokens)))
        self.tokens -= taken
        return taken

    def borrow(self, n: float, now: float) -> float:
        """Take ``n`` tokens, into debt if need be: how long until the debt is paid (0 if
        there was no need). For pacing: wait that long before taking what comes next."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_s)
        self.updated = now
        self.tokens -= n
        return max(0.0, -self.tokens / self.refill_per_s)

    def seconds_until(self, n: int, now: float) -> float:
        """How long until ``n`` whole tokens (at most the capacity) are there; 0 if now."""
        tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_s)
        missing = min(float(n), self.capacity) - tokens
        return max(0.0, missing / self.refill_per_s)


class RequestLimiter:
    """A per-peer bucket plus a global one; a request must fit both.

    Per-peer state is bounded (least recently seen peers are forgotten), so a flood of fresh
    peer IDs costs memory no larger than ``MAX_TRACKED_PEERS`` buckets and still hits the
    global limit.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        per_peer_burst: float = 3,
        per_peer_per_s: float = 1 / 60,
        global_burst: float = 30,
        global_per_s: float = 1.0,
    ) -> None:
        self._clock = clock
        self._per_peer = (per_peer_burst, per_peer_per_s)
        self._global = TokenBucket(global_burst, global_per_s, global_burst, clock())
        self._peers: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, peer: str) -> bool:
        now = self._clock()
        bucket = self._peers.pop(peer, None)
        if bucket is None:
            burst, rate = self._per_peer
            bucket = TokenBucket(burst, rate, burst, now)
        self._peers[peer] = bucket
        while len(self._peers) > MAX_TRACKED_PEERS:
            self._peers.popitem(last=False)
        if not bucket.take(now):
            return False
        return self._global.take(now)
