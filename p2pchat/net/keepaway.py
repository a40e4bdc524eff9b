"""Peers kept away for a while (a friend's cool-down, :mod:`p2pchat.chat.quotas`), sans-IO with
the time passed in.

While a peer is kept away every connection it opens is closed as soon as the handshake names
it, but that handshake is work a peer that keeps reconnecting makes us do again and again. So
the IP addresses it connected from are slowed down too, before any handshake: one inbound
connection per ``INBOUND_INTERVAL_S`` from each, for as long as the cool-down lasts. Other
peers behind the same address (a household, a carrier NAT) then wait a moment to connect;
connections already open are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

INBOUND_INTERVAL_S: Final = 2.0
"""From an address a kept-away peer used: at most one inbound connection this often."""

MAX_KEPT_AWAY: Final = 1024
"""Peers (and as many addresses each) remembered at once; the soonest to end go first."""

MAX_IPS_PER_PEER: Final = 8


@dataclass
class _Kept:
    until: float
    ips: set[str] = field(default_factory=set)
    closed: int = 0
    """Its connections closed as they opened."""


class KeptAway:
    """Which peers are kept away until when, and the inbound throttle on their addresses."""

    def __init__(self) -> None:
        self._peers: dict[str, _Kept] = {}
        self._admitted: dict[str, float] = {}
        """Per throttled IP: when its last inbound connection was let through."""
        self.throttled = 0
        """Inbound connections closed before their handshake."""

    def keep_away(self, peer: str, seconds: float, ips: set[str], now: float) -> None:
        self._expire(now)
        kept = self._peers.get(peer)
        if kept is None:
            if len(self._peers) >= MAX_KEPT_AWAY:
                del self._peers[min(self._peers, key=lambda p: self._peers[p].until)]
            kept = self._peers[peer] = _Kept(now + seconds)
        kept.until = max(kept.until, now + seconds)
        for ip in ips:
            self._add_ip(kept, ip)

    def remaining(self, peer: str, now: float) -> float:
        """Seconds ``peer`` is still kept away (0: it is not)."""
        kept = self._peers.get(peer)
        return max(0.0, kept.until - now) if kept is not None else 0.0

    def closed(self, peer: str) -> int:
        """Connections from ``peer`` closed as they opened, in its last cool-down."""
        kept = self._peers.get(peer)
        return kept.closed if kept is not None else 0

    def refuse_connection(self, peer: str, ip: str, now: float) -> int:
        """A connection from ``peer`` (from ``ip``, empty if relayed) has opened: 0 to keep
        it, else how many of its connections have been closed so far, this one included."""
        kept = self._peers.get(peer)
        if kept is None or kept.until <= now:
            return 0
        self._add_ip(kept, ip)
        kept.closed += 1
        return kept.closed

    def admit_inbound(self, ip: str, now: float) -> bool:
        """Whether a new inbound connection from ``ip`` may go on to its handshake."""
        if not any(ip in k.ips and k.until > now for k in self._peers.values()):
            return True
        last = self._admitted.get(ip)
        if last is not None and now - last < INBOUND_INTERVAL_S:
            self.throttled += 1
            return False
        self._admitted[ip] = now
        return True

    def _add_ip(self, kept: _Kept, ip: str) -> None:
        if ip and len(kept.ips) < MAX_IPS_PER_PEER:
            kept.ips.add(ip)

    def _expire(self, now: float) -> None:
        for peer, kept in list(self._peers.items()):
            if kept.until <= now:
                del self._peers[peer]
        live = {ip for k in self._peers.values() for ip in k.ips}
        for ip in list(self._admitted):
            if ip not in live:
                del self._admitted[ip]
