"""A group's messages as one member knows them: nothing lost, nothing twice, one order for
all (PROTOCOL.md §15.3). Sans-IO.

Each sender numbers its group messages 1, 2, 3, … (``seq``) and stamps each with a hybrid
Lamport clock: one above the highest it has seen in the group, and at least its wall clock
in milliseconds (a clock far ahead of the receiver's time is refused until that time comes).
A member keeps, per sender, how far it holds every message without a hole (``have``); two
members compare those vectors to learn what each lacks (:meth:`Timeline.missing_for`), so a
member that was offline gets what it missed from whichever member it meets first. Messages
show in the order (Lamport, sender, seq): per-sender order is kept (a sender's clock only
grows) and every member that holds the same messages shows them the same way, whatever order
they arrived in. How many members hold a message follows from their vectors
(:func:`members_holding`): the group's receipts.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

MAX_AHEAD: Final = 1000
"""A sender's message this far past the first one we lack is refused (asked for again later):
what one member can make another hold out of order is bounded."""
MAX_CLOCK: Final = 2**53
"""Lamport clocks stay below this (exact in JSON and JavaScript)."""
MAX_AHEAD_MS: Final = 10 * 60 * 1000
"""Clocks are hybrid: at least the sender's wall clock in ms. One further ahead of ours than
this is refused for now (sync brings it again once it is no longer ahead), so no member can
push the group's clock to its end."""


@dataclass(frozen=True, order=True)
class Position:
    """Where a message shows: the order every member sees."""

    clock: int
    sender: str
    seq: int


@dataclass(frozen=True)
class MessageRef:
    sender: str
    seq: int
    clock: int
    msg_id: bytes

    @property
    def position(self) -> Position:
        return Position(self.clock, self.sender, self.seq)


@dataclass(frozen=True)
class Accepted:
    """New: store it (and show it at ``position``)."""

    position: Position


@dataclass(frozen=True)
class Duplicate:
    """Held already."""


@dataclass(frozen=True)
class Refused:
    reason: str


Outcome = Accepted | Duplicate | Refused


class _Sender:
    """What we hold of one sender's messages."""

    def __init__(self) -> None:
        self.through = 0
        """Every seq up to this is held (or below the floor)."""
        self.floor = 0
        """Seqs up to this are not ours to hold (:meth:`Timeline.set_floor`)."""
        self.ahead: set[int] = set()
        """Seqs held past a hole."""
        self.ids: dict[int, bytes] = {}
        self.clocks: dict[int, int] = {}
        self.seqs: list[int] = []
        """Every seq held, sorted."""


class Timeline:
    """One group's messages as one member holds them (refs only; bodies live in the store)."""

    def __init__(self) -> None:
        self._senders: dict[str, _Sender] = {}
        self._clock = 0
        self._order: list[Position] = []

    @property
    def clock(self) -> int:
        return self._clock

    def next_stamp(self, sender: str, now_ms: int) -> tuple[int, int]:
        """(seq, clock) for the next message ``sender`` (we) sends at ``now_ms``."""
        held = self._senders.get(sender)
        seq = 1 + (held.seqs[-1] if held and held.seqs else 0)
        return seq, max(self._clock + 1, now_ms)

    def receive(self, ref: MessageRef, now_ms: int) -> Outcome:
        """Take a message ref (from its sender or from any member syncing us) at ``now_ms``
        by our clock."""
        problem = self.check(ref, now_ms)
        if problem is not None:
            return problem
        held = self._senders.setdefault(ref.sender, _Sender())
        held.ids[ref.seq] = ref.msg_id
        held.clocks[ref.seq] = ref.clock
        bisect.insort(held.seqs, ref.seq)
        if ref.seq == held.through + 1:
            held.through += 1
            while held.through + 1 in held.ahead:
                held.ahead.remove(held.through + 1)
                held.through += 1
        else:
            held.ahead.add(ref.seq)
        self._clock = max(self._clock, ref.clock)
        bisect.insort(self._order, ref.position)
        return Accepted(ref.position)

    def check(self, ref: MessageRef, now_ms: int) -> Duplicate | Refused | None:
        """What :meth:`receive` would answer if not :class:`Accepted` (None: it would take
        it), changing nothing: a caller checks before it opens and stores the message."""
        if not isinstance(ref.seq, int) or ref.seq < 1:
            return Refused("a message's seq starts at 1")
        if not 1 <= ref.clock < MAX_CLOCK:
            return Refused(f"a message's clock is between 1 and {MAX_CLOCK}")
        if ref.clock > now_ms + MAX_AHEAD_MS:
            return Refused("the message's clock is ahead of ours: it comes again later")
        held = self._senders.get(ref.sender) or _Sender()  # refused: nothing left behind
        if ref.seq <= held.floor and ref.seq not in held.ids:
            return Duplicate()  # not ours to hold
        known = held.ids.get(ref.seq)
        if known is not None:
            if known == ref.msg_id:
                return Duplicate()
            return Refused(f"message {ref.seq} of that sender is already another message")
        if ref.seq > held.through + MAX_AHEAD:
            return Refused(f"message {ref.seq} is too far ahead of {held.through + 1}: sync first")
        problem = self._clock_problem(held, ref)
        return Refused(problem) if problem is not None else None

    @staticmethod
    def _clock_problem(held: _Sender, ref: MessageRef) -> str | None:
        """A sender's clock only grows: refuse a message that breaks that against the nearest
        of its messages we hold on either side."""
        at = bisect.bisect_left(held.seqs, ref.seq)
        if at > 0 and held.clocks[held.seqs[at - 1]] >= ref.clock:
            return "the message's clock is not past that sender's earlier message"
        if at < len(held.seqs) and held.clocks[held.seqs[at]] <= ref.clock:
            return "the message's clock is not before that sender's later message"
        return None

    def have(self) -> dict[str, int]:
        """Per sender, the seq up to which we hold everything: what we tell other members."""
        return {sender: held.through for sender, held in self._senders.items() if held.through}

    def gaps(self) -> dict[str, list[int]]:
        """Per sender, the seqs we lack below the highest we hold: what to ask for."""
        out: dict[str, list[int]] = {}
        for sender, held in self._senders.items():
            if held.ahead:
                top = max(held.ahead)
                out[sender] = [s for s in range(held.through + 1, top) if s not in held.ahead]
        return out

    def missing_for(
        self, their_have: Mapping[str, int], limit: int | None = None
    ) -> list[tuple[str, int]]:
        """(sender, seq) of what we hold and a member whose vector is ``their_have`` lacks
        up to its first hole, in order (it may hold some of those past a hole: it answers
        duplicates); at most ``limit``, the oldest of each sender first, senders in turn."""
        out: list[tuple[str, int]] = []
        for sender, held in sorted(self._senders.items()):
            if limit is not None and len(out) >= limit:
                break
            start = bisect.bisect_right(held.seqs, their_have.get(sender, 0))
            end = len(held.seqs) if limit is None else min(len(held.seqs), start + limit - len(out))
            out.extend((sender, seq) for seq in held.seqs[start:end])
        return out

    def set_floor(self, sender: str, floor: int) -> None:
        """``sender``'s messages up to ``floor`` are none of ours to hold (sent before we
        joined, or while we were out: we cannot open them): our vector skips them, so members
        stop offering them, and they are taken as duplicates."""
        held = self._senders.setdefault(sender, _Sender())
        held.floor = max(held.floor, floor)
        if held.through < held.floor:
            held.through = held.floor
            held.ahead = {s for s in held.ahead if s > held.through}
            while held.through + 1 in held.ahead:
                held.ahead.remove(held.through + 1)
                held.through += 1

    def count(self, sender: str) -> int:
        """How many of ``sender``'s messages we hold."""
        held = self._senders.get(sender)
        return len(held.seqs) if held is not None else 0

    @property
    def total(self) -> int:
        return len(self._order)

    def holds(self, sender: str, seq: int) -> bool:
        held = self._senders.get(sender)
        return held is not None and seq in held.ids

    def ordered(self) -> list[Position]:
        """Every message held, in the order every member shows them."""
        return list(self._order)


def members_holding(sender: str, seq: int, haves: Iterable[Mapping[str, int]]) -> int:
    """How many of the members whose vectors are ``haves`` hold message ``seq`` of
    ``sender`` (held up to it without a hole: past a hole it counts once the hole fills)."""
    return sum(1 for have in haves if have.get(sender, 0) >= seq)
