"""Sans-IO group call ("conference") state: whom to connect to, and when the call ends.

A conference is a mesh of links, one per other participant. Each link is a stream and a
peer connection, opened by whichever of the pair connects first (:mod:`.conf_frames`)::

    OFFER_OUT --their answer--> CONNECTING --media up--> ACTIVE
    OFFER_IN  (held while we ring) --we join--> CONNECTING --media up--> ACTIVE
    any link --conf-end / failure / timeout--> gone

The conference itself::

    RINGING --the user answers--> JOINED --the user hangs up, or everyone else left--> ENDED
    RINGING --declined / nobody left offering / ring timeout--> ENDED

Joining means answering every offer held while ringing, then offering to every participant
named by anyone we are linked to that we have no link with yet. Participants tell their
links whenever their own set changes (``conf-peers``), so a mesh closes however the members
join. Two participants offering each other at once ("glare") keep the offer of the one
whose peer ID sorts first, on both sides.

One class, no I/O: the trio adapter (:mod:`.conference_call`) feeds it what happened and
carries out what it returns.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from p2pchat.calls.conf_frames import MAX_PARTICIPANTS

RING_TIMEOUT: Final = 45.0
"""Seconds a conference rings before it ends as ``timeout``, and seconds one of our offers
waits for its answer."""
CONNECT_TIMEOUT: Final = 20.0
"""Seconds from an answer to connected media on one link."""


class ConfState(enum.Enum):
    RINGING = "ringing_in"
    JOINED = "active"
    ENDED = "ended"


class LinkState(enum.Enum):
    OFFER_OUT = "offering"
    OFFER_IN = "ringing_in"
    CONNECTING = "connecting"
    ACTIVE = "active"


# --- outputs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offer:
    """Open a link to ``peer``: a stream, a peer connection, our offer."""

    peer: str


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the offer held from ``peer``."""

    peer: str


@dataclass(frozen=True, slots=True)
class ApplyAnswer:
    """``peer`` answered our offer: apply its answer."""

    peer: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the offer ``peer`` just made, on its new stream only."""

    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class EndLink:
    """Close the link with ``peer`` (telling it ``reason`` when ``tell``)."""

    peer: str
    reason: str
    tell: bool = True


@dataclass(frozen=True, slots=True)
class Announce:
    """Our participants changed: tell every link."""


@dataclass(frozen=True, slots=True)
class Ring:
    """A conference rings here: tell the user."""


@dataclass(frozen=True, slots=True)
class Ended:
    reason: str
    by_remote: bool


Output: TypeAlias = Offer | Answer | ApplyAnswer | Refuse | EndLink | Announce | Ring | Ended

_GONE_REASONS: Final = frozenset({"hangup", "declined", "busy", "not_member", "full", "timeout"})
"""A link ended by the peer for one of these: it is not offered to again (until it offers)."""
MAX_OFFER_FAILURES: Final = 2
"""Links with one peer that failed (or went unanswered) this many times: it is not offered to
again (until it offers). Otherwise anyone naming an unreachable member in ``conf-peers``
could make us dial it over and over."""


@dataclass
class Link:
    peer: str
    state: LinkState
    deadline: float
    ours: bool = False
    """We made the offer this link began with."""


@dataclass
class Conference:
    group_id: bytes
    conf_id: bytes
    video: bool
    me: str
    state: ConfState
    deadline: float
    """When a ringing conference stops ringing, or (joined) when a call that never connected
    anyone gives up; inf once someone connected."""
    links: dict[str, Link] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)
    """Participants others named that we have no link with (yet)."""
    gone: set[str] = field(default_factory=set)
    failures: dict[str, int] = field(default_factory=dict)
    """Peer → links with it that ended failed or unanswered, on our side or theirs."""
    ring_timeout: float = RING_TIMEOUT
    ever_connected: bool = False
    end_reason: str = ""
    ended_by_remote: bool = False
    _last_reason: str = ""

    # --- starting ---------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        group_id: bytes,
        conf_id: bytes,
        video: bool,
        me: str,
        online: list[str],
        now: float,
        ring_timeout: float = RING_TIMEOUT,
    ) -> tuple[Conference, list[Output]]:
        """We start a call in the group: offer to every member online (they ring)."""
        conf = cls(group_id, conf_id, video, me, ConfState.JOINED, now + ring_timeout)
        conf.ring_timeout = ring_timeout
        out: list[Output] = []
        for peer in sorted(set(online) - {me})[: MAX_PARTICIPANTS - 1]:
            conf.links[peer] = Link(peer, LinkState.OFFER_OUT, now + ring_timeout, ours=True)
            out.append(Offer(peer))
        if not out:
            conf.state = ConfState.ENDED
            conf.end_reason = "timeout"
            out.append(Ended("timeout", by_remote=False))
        return conf, out

    @classmethod
    def ringing(
        cls,
        group_id: bytes,
        conf_id: bytes,
        video: bool,
        me: str,
        peer: str,
        peers: tuple[str, ...],
        now: float,
        ring_timeout: float = RING_TIMEOUT,
    ) -> tuple[Conference, list[Output]]:
        """A member's offer for a call we are not in: it rings."""
        conf = cls(group_id, conf_id, video, me, ConfState.RINGING, now + ring_timeout)
        conf.ring_timeout = ring_timeout
        conf.links[peer] = Link(peer, LinkState.OFFER_IN, now + ring_timeout)
        conf._learn(peers, now)
        return conf, [Ring()]

    # --- queries ----------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.state is not ConfState.ENDED

    def participants(self) -> tuple[str, ...]:
        """Whom we are in the call with (answered either way), as we announce them."""
        return tuple(
            sorted(
                p
                for p, link in self.links.items()
                if link.state in (LinkState.CONNECTING, LinkState.ACTIVE)
            )
        )

    def next_deadline(self) -> float:
        times = [link.deadline for link in self.links.values()]
        if self.state is ConfState.RINGING or not self.ever_connected:
            times.append(self.deadline)
        return min(times, default=float("inf")) if self.live else float("inf")

    # --- the network ------------------------------------------------------------------------

    def offer_from(self, peer: str, peers: tuple[str, ...], now: float) -> list[Output]:
        """``peer`` offers a link (on a new stream)."""
        if not self.live:
            return [Refuse(peer, "hangup")]
        out: list[Output] = []
        link = self.links.get(peer)
        if link is not None and link.ours and self.me < peer:
            # Glare: both offered, and ours goes on (they drop theirs alike). Their offer may
            # even arrive after their answer to ours, on its own stream.
            return [Refuse(peer, "glare")]
        if link is not None and link.state is LinkState.OFFER_OUT:
            del self.links[peer]  # glare, and theirs goes on
            out.append(EndLink(peer, "glare", tell=False))
        elif link is not None:
            # It opened a new link while we still hold an old one: the old one is dead to it.
            del self.links[peer]
            out.append(EndLink(peer, "failed", tell=False))
            if link.state is not LinkState.OFFER_IN:
                out.append(Announce())
        elif len(self.links) >= MAX_PARTICIPANTS - 1:
            return [Refuse(peer, "full")]
        self.gone.discard(peer)
        self.failures.pop(peer, None)
        self.known.discard(peer)
        if self.state is ConfState.RINGING:
            self.links[peer] = Link(peer, LinkState.OFFER_IN, self.deadline)
            self._learn(peers, now)
            return out
        self.links[peer] = Link(peer, LinkState.CONNECTING, now + CONNECT_TIMEOUT)
        out.append(Answer(peer))
        out.append(Announce())
        out.extend(self._learn(peers, now))
        return out

    def answer_from(self, peer: str, peers: tuple[str, ...], now: float) -> list[Output]:
        link = self.links.get(peer)
        if link is None or link.state is not LinkState.OFFER_OUT:
            return self.link_ended(peer, "failed", by_remote=False, tell=True)
        link.state, link.deadline = LinkState.CONNECTING, now + CONNECT_TIMEOUT
        return [ApplyAnswer(peer), Announce(), *self._learn(peers, now)]

    def peers_from(self, peer: str, peers: tuple[str, ...], now: float) -> list[Output]:
        if peer not in self.links:
            return []
        return self._learn(peers, now)

    def link_connected(self, peer: str) -> list[Output]:
        link = self.links.get(peer)
        if link is None or link.state is not LinkState.CONNECTING:
            return []
        link.state, link.deadline = LinkState.ACTIVE, float("inf")
        self.ever_connected = True
        # Failures count towards giving up on a peer we cannot reach; one that connected is
        # reachable, so a later media drop starts that count afresh (else two drops would put
        # each of a pair in the other's `gone`, and neither would offer again).
        self.failures.pop(peer, None)
        return []

    def link_ended(
        self, peer: str, reason: str, *, by_remote: bool, tell: bool = False
    ) -> list[Output]:
        """The link with ``peer`` ended (its ``conf-end``, its stream, its media)."""
        link = self.links.pop(peer, None)
        if link is None:
            return []
        out: list[Output] = [EndLink(peer, reason, tell=tell)]
        if by_remote and reason in _GONE_REASONS:
            self.gone.add(peer)
        elif reason in ("failed", "timeout"):
            self.failures[peer] = self.failures.get(peer, 0) + 1
            if self.failures[peer] >= MAX_OFFER_FAILURES:
                self.gone.add(peer)
        self._last_reason = reason
        if link.state in (LinkState.CONNECTING, LinkState.ACTIVE):
            out.append(Announce())
        out.extend(self._check_end(by_remote))
        return out

    def forget_all_but(self, members: set[str] | frozenset[str]) -> None:
        """Membership changed: participants named to us who are no longer members are not
        dialled (links with them are ended by the caller)."""
        self.known &= set(members)

    # --- the user ---------------------------------------------------------------------------

    def answer(self, now: float) -> list[Output]:
        """Join the call that rings."""
        if self.state is not ConfState.RINGING:
            return []
        self.state = ConfState.JOINED
        self.deadline = now + CONNECT_TIMEOUT
        out: list[Output] = []
        for link in self.links.values():
            if link.state is LinkState.OFFER_IN:
                link.state, link.deadline = LinkState.CONNECTING, now + CONNECT_TIMEOUT
                out.append(Answer(link.peer))
        out.append(Announce())
        out.extend(self._learn((), now))
        return out

    def decline(self) -> list[Output]:
        if self.state is not ConfState.RINGING:
            return []
        return self._end_all("declined", by_remote=False)

    def hangup(self, reason: str = "hangup") -> list[Output]:
        if not self.live:
            return []
        return self._end_all(reason, by_remote=False)

    # --- time -------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Output]:
        if not self.live:
            return []
        if self.state is ConfState.RINGING and now >= self.deadline:
            return self._end_all("timeout", by_remote=False)
        out: list[Output] = []
        for link in list(self.links.values()):
            if now >= link.deadline:
                reason = "timeout" if link.state is LinkState.OFFER_OUT else "failed"
                out.extend(self.link_ended(link.peer, reason, by_remote=False, tell=True))
        if self.live and not self.ever_connected and now >= self.deadline and not self.links:
            out.extend(self._end_all("timeout", by_remote=False))
        return out

    # --- inside -----------------------------------------------------------------------------

    def _learn(self, peers: tuple[str, ...], now: float) -> list[Output]:
        for p in peers:
            if p != self.me and p not in self.links and p not in self.gone:
                self.known.add(p)
        if self.state is not ConfState.JOINED:
            return []
        out: list[Output] = []
        for p in sorted(self.known):
            if len(self.links) >= MAX_PARTICIPANTS - 1:
                break
            self.known.discard(p)
            self.links[p] = Link(p, LinkState.OFFER_OUT, now + self.ring_timeout, ours=True)
            out.append(Offer(p))
        return out

    def _check_end(self, by_remote: bool) -> list[Output]:
        if self.links:
            return []
        if self.state is ConfState.RINGING:
            # Everyone who offered left before we answered.
            return self._finish(self._last_reason or "hangup", by_remote)
        if self.state is ConfState.JOINED:
            reason = "hangup" if self.ever_connected else (self._last_reason or "timeout")
            return self._finish(reason, by_remote)
        return []

    def _end_all(self, reason: str, *, by_remote: bool) -> list[Output]:
        out: list[Output] = [EndLink(p, reason) for p in sorted(self.links)]
        self.links.clear()
        self.known.clear()
        out.extend(self._finish(reason, by_remote))
        return out

    def _finish(self, reason: str, by_remote: bool) -> list[Output]:
        self.state = ConfState.ENDED
        self.end_reason = reason
        self.ended_by_remote = by_remote
        return [Ended(reason, by_remote)]
