"""The file-transfer state table: every allowed transition for each side, nothing else.

Pure data, like :mod:`p2pchat.chat.friendship`. A transfer is seen from its sender (``out``) or its
receiver (``in``). User actions on a finished transfer are errors; peer reports about one are
ignored (the peer may repeat itself after a lost acknowledgement).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Direction(StrEnum):
    OUT = "out"
    IN = "in"


class TState(StrEnum):
    OFFERING = "offering"  # out: offer not yet delivered to the friend's daemon
    OFFERED = "offered"  # out: delivered, waiting for the friend; in: waiting for the user
    ACTIVE = "active"  # accepted; bytes flow whenever both daemons are connected
    COMPLETED = "completed"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    FAILED = "failed"


TERMINAL: Final = frozenset({TState.COMPLETED, TState.DECLINED, TState.CANCELLED, TState.FAILED})


class TEvent(StrEnum):
    OFFER_DELIVERED = "offer_delivered"  # out
    DATA_REQUESTED = "data_requested"  # out: the receiver asked for bytes
    USER_ACCEPT = "accept"  # in
    USER_DECLINE = "decline"  # in
    USER_CANCEL = "cancel"
    VERIFIED = "verified"  # in: whole file received and its hash checked
    FAILED = "failed"  # this side gave up (bad data, file changed, disk full)
    PEER_DECLINED = "peer_declined"
    PEER_CANCELLED = "peer_cancelled"
    PEER_COMPLETED = "peer_completed"
    PEER_FAILED = "peer_failed"
    UNFRIENDED = "unfriended"  # the friendship ended (either side): nothing more can move


USER_EVENTS: Final = frozenset({TEvent.USER_ACCEPT, TEvent.USER_DECLINE, TEvent.USER_CANCEL})
PEER_EVENTS: Final = frozenset(
    {TEvent.PEER_DECLINED, TEvent.PEER_CANCELLED, TEvent.PEER_COMPLETED, TEvent.PEER_FAILED}
)


@dataclass(frozen=True, slots=True)
class Transition:
    state: TState
    notify: str | None = None
    """The outcome (a :data:`p2pchat.wire.FILE_OUTCOMES` value) owed to the peer, if any."""
    drop_partial: bool = False
    """Delete the receiver's partial file."""


_OUT, _IN = Direction.OUT, Direction.IN
_S, _E = TState, TEvent
_OPEN_OUT: Final = (_S.OFFERING, _S.OFFERED, _S.ACTIVE)
_OPEN_IN: Final = (_S.OFFERED, _S.ACTIVE)

TABLE: Final[dict[tuple[Direction, TState, TEvent], Transition]] = {
    (_OUT, _S.OFFERING, _E.OFFER_DELIVERED): Transition(_S.OFFERED),
    **{(_OUT, s, _E.DATA_REQUESTED): Transition(_S.ACTIVE) for s in _OPEN_OUT},
    **{(_OUT, s, _E.USER_CANCEL): Transition(_S.CANCELLED, "cancelled") for s in _OPEN_OUT},
    **{(_OUT, s, _E.FAILED): Transition(_S.FAILED, "failed") for s in _OPEN_OUT},
    (_OUT, _S.OFFERING, _E.PEER_DECLINED): Transition(_S.DECLINED),
    (_OUT, _S.OFFERED, _E.PEER_DECLINED): Transition(_S.DECLINED),
    **{(_OUT, s, _E.PEER_CANCELLED): Transition(_S.CANCELLED) for s in _OPEN_OUT},
    # An empty file completes without any data request.
    **{(_OUT, s, _E.PEER_COMPLETED): Transition(_S.COMPLETED) for s in _OPEN_OUT},
    **{(_OUT, s, _E.PEER_FAILED): Transition(_S.FAILED) for s in _OPEN_OUT},
    (_IN, _S.OFFERED, _E.USER_ACCEPT): Transition(_S.ACTIVE),
    (_IN, _S.OFFERED, _E.USER_DECLINE): Transition(_S.DECLINED, "declined", True),
    (_IN, _S.OFFERED, _E.USER_CANCEL): Transition(_S.DECLINED, "declined", True),
    (_IN, _S.ACTIVE, _E.USER_CANCEL): Transition(_S.CANCELLED, "cancelled", True),
    (_IN, _S.ACTIVE, _E.VERIFIED): Transition(_S.COMPLETED, "completed"),
    **{(_IN, s, _E.FAILED): Transition(_S.FAILED, "failed", True) for s in _OPEN_IN},
    **{(_IN, s, _E.PEER_CANCELLED): Transition(_S.CANCELLED, None, True) for s in _OPEN_IN},
    **{(_IN, s, _E.PEER_FAILED): Transition(_S.FAILED, None, True) for s in _OPEN_IN},
    # Not friends any more: the peer may no longer ask for data or offer it, and is not told
    # (it cannot be reached on the file protocol; its own daemon ends its side the same way).
    **{(_OUT, s, _E.UNFRIENDED): Transition(_S.CANCELLED) for s in _OPEN_OUT},
    **{(_IN, s, _E.UNFRIENDED): Transition(_S.CANCELLED, None, True) for s in _OPEN_IN},
}

PEER_OUTCOME_EVENTS: Final = {
    "declined": TEvent.PEER_DECLINED,
    "cancelled": TEvent.PEER_CANCELLED,
    "completed": TEvent.PEER_COMPLETED,
    "failed": TEvent.PEER_FAILED,
}


def step(direction: Direction, state: TState, event: TEvent) -> Transition | None:
    """The transition for ``event``, or None if it does not apply in ``state``."""
    return TABLE.get((direction, state, event))
