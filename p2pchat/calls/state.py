"""Sans-IO call signalling: one :class:`Call` per call, fed local actions, frames and the time,
returning what to send and what happened. The trio adapter does the I/O and drives the media.

States (docs/PROTOCOL.md §12.2 has the full table)::

    caller:  OFFERING --ringing--> RINGING_OUT --answer--> CONNECTING --media up--> ACTIVE
    callee:  RINGING_IN --user answers--> CONNECTING --media up--> ACTIVE
    both:    any state --end / hangup / timeout / failure--> ENDED

Only one call at a time per daemon: :func:`decide_incoming` says whether a new offer rings,
is busy, or collides with our own outgoing call to the same friend ("glare"), which is
resolved the same way on both sides: the call with the larger ID goes ahead.

What the friend sends for the media passes :class:`~p2pchat.calls.candidates.CandidateBudget`
here, before anything acts on it: the candidate lines of their offer or answer SDP and their
trickled candidates share one per-call cap and one address rule.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from p2pchat.calls.candidates import CandidateBudget
from p2pchat.calls.frames import (
    CallAnswer,
    CallCandidate,
    CallEnd,
    CallFrame,
    CallOffer,
    CallRinging,
)

RING_TIMEOUT: Final = 45.0
"""Seconds a call may ring before it ends as ``timeout``."""
CONNECT_TIMEOUT: Final = 20.0
"""Seconds from answer to connected media before the call ends as ``timeout``."""
GLARE_MEMORY: Final = 10.0
"""Seconds after losing a glare during which the friend's offer is answered at once."""
MEDIA_LOSS_GRACE: Final = 2.0
"""Seconds an active call waits, after its media path closed or failed, for the friend's
``call-end`` before ending as ``failed``: a friend who hangs up closes the DTLS session
(over UDP) right after sending ``call-end`` (over the libp2p stream), and either may arrive
first."""


class CallState(enum.Enum):
    OFFERING = "offering"
    RINGING_OUT = "ringing_out"
    RINGING_IN = "ringing_in"
    CONNECTING = "connecting"
    ACTIVE = "active"
    ENDED = "ended"


class Direction(enum.Enum):
    OUT = "out"
    IN = "in"


class CallProtocolError(Exception):
    """A local action that the state does not allow (a bug in the caller of this module)."""


# --- outputs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    frame: CallFrame


@dataclass(frozen=True, slots=True)
class Ring:
    """Incoming call: tell the user (or auto-answer)."""


@dataclass(frozen=True, slots=True)
class RemoteRinging:
    """Our call is ringing at the friend's daemon."""


@dataclass(frozen=True, slots=True)
class ApplyAnswer:
    """Caller: the friend answered; apply its SDP answer and start media."""

    sdp: str


@dataclass(frozen=True, slots=True)
class AddCandidate:
    candidate: str
    mid: str
    index: int


@dataclass(frozen=True, slots=True)
class Connected:
    """Media is flowing."""


@dataclass(frozen=True, slots=True)
class Ended:
    reason: str
    by_remote: bool


Output: TypeAlias = Send | Ring | RemoteRinging | ApplyAnswer | AddCandidate | Connected | Ended

_LIVE: Final = frozenset(
    {
        CallState.OFFERING,
        CallState.RINGING_OUT,
        CallState.RINGING_IN,
        CallState.CONNECTING,
        CallState.ACTIVE,
    }
)


@dataclass
class Call:
    call_id: bytes
    direction: Direction
    video: bool
    state: CallState
    deadline: float
    """When the current state times out (ringing or connecting); inf when it cannot."""
    end_reason: str = ""
    ended_by_remote: bool = False
    remote_sdp: str = ""
    """The friend's offer or answer, its candidate lines already filtered."""
    candidates: CandidateBudget = field(default_factory=CandidateBudget, compare=False, repr=False)
    """The friend's candidates taken so far (SDP and trickled), and what was dropped."""
    media_gone: bool = False
    """The active call's media path closed or failed; it ends at ``deadline`` unless the
    friend's ``call-end`` comes first."""

    # --- starting ---------------------------------------------------------------------------

    @classmethod
    def outgoing(
        cls, call_id: bytes, video: bool, sdp: str, now: float, ring_timeout: float = RING_TIMEOUT
    ) -> tuple[Call, list[Output]]:
        call = cls(call_id, Direction.OUT, video, CallState.OFFERING, now + ring_timeout)
        return call, [Send(CallOffer(call_id, video, sdp))]

    @classmethod
    def incoming(
        cls, offer: CallOffer, now: float, ring_timeout: float = RING_TIMEOUT
    ) -> tuple[Call, list[Output]]:
        call = cls(
            offer.call_id, Direction.IN, offer.video, CallState.RINGING_IN, now + ring_timeout
        )
        call.remote_sdp = call.candidates.filter_sdp(offer.sdp)
        return call, [Send(CallRinging(offer.call_id)), Ring()]

    # --- local actions ----------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.state in _LIVE

    def answer(self, sdp: str, now: float) -> list[Output]:
        self._require(CallState.RINGING_IN, "answer")
        self._move(CallState.CONNECTING, now + CONNECT_TIMEOUT)
        return [Send(CallAnswer(self.call_id, sdp))]

    def decline(self) -> list[Output]:
        self._require(CallState.RINGING_IN, "decline")
        return self._end("declined", by_remote=False, tell=True)

    def hangup(self, reason: str = "hangup") -> list[Output]:
        """End the call from this side (any live state); nothing if already ended."""
        if not self.live:
            return []
        return self._end(reason, by_remote=False, tell=True)

    def local_candidate(self, candidate: str, mid: str, index: int) -> list[Output]:
        """Trickle one of our candidates: the caller may from its offer on, the callee once
        it has answered."""
        if not self.live or self.state is CallState.RINGING_IN:
            return []
        return [Send(CallCandidate(self.call_id, candidate, mid, index))]

    def media_connected(self) -> list[Output]:
        if self.state is not CallState.CONNECTING:
            return []
        self._move(CallState.ACTIVE, float("inf"))
        return [Connected()]

    def media_failed(self) -> list[Output]:
        """Media could not be set up (or the friend's input was unusable): end now."""
        if not self.live:
            return []
        return self._end("failed", by_remote=False, tell=True)

    def media_lost(self, now: float) -> list[Output]:
        """The peer connection closed or failed. Before the call is active that is a
        failure; once active, it may be the friend hanging up, whose ``call-end`` is on its
        way: wait ``MEDIA_LOSS_GRACE`` for it."""
        if not self.live:
            return []
        if self.state is not CallState.ACTIVE:
            return self.media_failed()
        if not self.media_gone:
            self.media_gone = True
            self.deadline = now + MEDIA_LOSS_GRACE
        return []

    def stream_closed(self) -> list[Output]:
        """The signalling stream (or the connection under it) is gone."""
        if not self.live:
            return []
        return self._end("failed", by_remote=True, tell=False)

    def tick(self, now: float) -> list[Output]:
        """Timeouts: ringing too long, media not connected in time, or media lost and no
        ``call-end`` came."""
        if self.live and now >= self.deadline:
            reason = "failed" if self.media_gone else "timeout"
            return self._end(reason, by_remote=False, tell=True)
        return []

    # --- frames from the friend -------------------------------------------------------------

    def receive(self, frame: CallFrame, now: float) -> list[Output]:
        if not self.live:
            return []  # late frames after the end are harmless
        if frame.call_id != self.call_id:
            return self._violation()
        match frame:
            case CallEnd(_, reason):
                return self._end(reason, by_remote=True, tell=False)
            case CallCandidate(_, candidate, mid, index):
                # The caller trickles from its offer on (the callee applies them once it
                # has a peer connection), the callee from its answer on; only while the
                # call is being set up, within the call's candidate budget (an empty one
                # says "no more" and names nothing).
                if self.state is CallState.ACTIVE or (
                    candidate and not self.candidates.admit(candidate)
                ):
                    return []
                return [AddCandidate(candidate, mid, index)]
            case CallRinging(_) if self.direction is Direction.OUT:
                if self.state is CallState.OFFERING:
                    self._move(CallState.RINGING_OUT, self.deadline)
                    return [RemoteRinging()]
                return []  # a repeated ringing is harmless
            case CallAnswer(_, sdp) if self.direction is Direction.OUT and self.state in (
                CallState.OFFERING,
                CallState.RINGING_OUT,
            ):
                self.remote_sdp = self.candidates.filter_sdp(sdp)
                self._move(CallState.CONNECTING, now + CONNECT_TIMEOUT)
                return [ApplyAnswer(self.remote_sdp)]
        return self._violation()

    # --- internals --------------------------------------------------------------------------

    def _violation(self) -> list[Output]:
        return self._end("failed", by_remote=False, tell=True)

    def _require(self, state: CallState, action: str) -> None:
        if self.state is not state:
            raise CallProtocolError(f"cannot {action} a call that is {self.state.value}")

    def _move(self, state: CallState, deadline: float) -> None:
        self.state = state
        self.deadline = deadline

    def _end(self, reason: str, *, by_remote: bool, tell: bool) -> list[Output]:
        self._move(CallState.ENDED, float("inf"))
        self.end_reason = reason
        self.ended_by_remote = by_remote
        out: list[Output] = []
        if tell:
            out.append(Send(CallEnd(self.call_id, reason)))
        out.append(Ended(reason, by_remote))
        return out


class Incoming(enum.Enum):
    RING = "ring"
    BUSY = "busy"
    GLARE_TAKE_THEIRS = "glare-take-theirs"
    """Both called at once and theirs has the larger ID: end ours (``glare``), answer theirs."""
    GLARE_KEEP_OURS = "glare-keep-ours"
    """Both called at once and ours has the larger ID: refuse theirs with ``glare``."""


def decide_incoming(
    current: Call | None,
    current_peer: str,
    offer_peer: str,
    offer_id: bytes,
    *,
    last: Call | None = None,
    last_peer: str = "",
    since_last_end: float = float("inf"),
) -> Incoming:
    """What to do with a new offer, given the call we are in (if any) and the last call that
    ended (``since_last_end`` seconds ago). Both sides of a glare reach opposite decisions
    from the same two IDs, so exactly one call survives; the friend's ``call-end glare`` may
    overtake its offer, so an offer that beats the call we just lost to it is taken too."""
    if current is None or not current.live:
        if (
            last is not None
            and last_peer == offer_peer
            and last.end_reason == "glare"
            and last.direction is Direction.OUT
            and offer_id > last.call_id
            and since_last_end < GLARE_MEMORY
        ):
            return Incoming.GLARE_TAKE_THEIRS
        return Incoming.RING
    if (
        current_peer == offer_peer
        and current.direction is Direction.OUT
        and current.state in (CallState.OFFERING, CallState.RINGING_OUT)
        and offer_id != current.call_id
    ):
        if offer_id > current.call_id:
            return Incoming.GLARE_TAKE_THEIRS
        return Incoming.GLARE_KEEP_OURS
    return Incoming.BUSY
