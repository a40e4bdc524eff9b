"""File notices, both ways: a ``file-offer`` or ``file-end`` on a stream of its own, answered
``received``. What we owe a friend is stored with the transfer and delivered until the friend
confirms it (it may take a restart of either side); what a friend tells us is believed once,
and a repeat of it (its confirmation was lost) changes nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from p2pchat import wire
from p2pchat.chat.quotas import FriendQuotas
from p2pchat.clock import now_ms
from p2pchat.events import EventBus
from p2pchat.files import filenames
from p2pchat.files.state import PEER_OUTCOME_EVENTS, TERMINAL, Direction, TEvent, TState
from p2pchat.files.store import OFFER_NOTICE, Transfer
from p2pchat.files.table import TransferTable, clip_utf8, transfer_json
from p2pchat.identity import short
from p2pchat.net.host import Network
from p2pchat.net.streams import read_one_frame, reset

log = logging.getLogger(__name__)


class RefusedForNow(trio.TooSlowError):
    """The friend's daemon is full (too many open offers) or rate-limits us: the notice stays
    owed, and the others of its kind wait too (each would only be refused again)."""


NOTICE_TIMEOUT: Final = 10.0


class Notices:
    """``on_offered`` hears of each new offer while its transfer is still locked (to accept
    it at once if it is small enough)."""

    def __init__(
        self,
        *,
        table: TransferTable,
        net: Network,
        events: EventBus,
        on_offered: Callable[[Transfer], Awaitable[None]],
        quotas: FriendQuotas | None = None,
    ) -> None:
        self.table = table
        self.net = net
        self.events = events
        self._on_offered = on_offered
        self.quotas = quotas or FriendQuotas(time.monotonic)

    # --- from the friend -------------------------------------------------------------------

    async def answer(self, peer: str, frame: wire.Frame) -> wire.Frame:
        """The reply to a notice from friend ``peer``."""
        if isinstance(frame, wire.FileOffer):
            return await self._on_offer(peer, frame)
        if isinstance(frame, wire.FileEnd):
            return await self._on_end(peer, frame)
        raise wire.FrameError(f"unexpected {type(frame).__name__} on file stream")

    async def _on_offer(self, peer: str, frame: wire.FileOffer) -> wire.Frame:
        # Everything under one lock per peer's offers, so concurrent offers (a repeat of the
        # same ID, or a burst) are checked against what is really stored.
        async with self.table.locked(peer.encode()):
            return await self._on_offer_locked(peer, frame)

    async def _on_offer_locked(self, peer: str, frame: wire.FileOffer) -> wire.Frame:
        existing = self.table.get(frame.tid)
        if existing is not None:
            if existing.peer_id == peer and existing.direction is Direction.IN:
                return wire.Received()  # a repeated offer whose receipt was lost
            return wire.Refused(wire.REFUSED_BAD_FRAME, "transfer ID already in use")
        open_offers = sum(
            1
            for t in self.table.of_peer(peer)
            if t.direction is Direction.IN and t.state not in TERMINAL
        )
        refused = self.quotas.admit_offer(peer, open_offers)
        if refused is not None:
            log.info("refused a file offer from %s: %s", short(peer), refused.reason)
            return refused
        now = now_ms()
        t = Transfer(
            tid=frame.tid,
            peer_id=peer,
            direction=Direction.IN,
            name=filenames.sanitize(frame.name),
            size=frame.size,
            hash=frame.hash,
            state=TState.OFFERED,
            created_at=now,
            updated_at=now,
        )
        async with self.table.locked(t.tid):
            if not await self.table.add(t):  # the ID is taken in the database (not in the cache)
                return wire.Refused(wire.REFUSED_BAD_FRAME, "transfer ID already in use")
            log.info("file offer %s (%d bytes) from %s", t.name, t.size, short(peer))
            self.events.publish("transfer.offered", transfer=transfer_json(t))
            await self._on_offered(t)
        await self.table.prune_ended(peer, self.quotas.config.max_ended_transfers)
        return wire.Received()

    async def _on_end(self, peer: str, frame: wire.FileEnd) -> wire.Frame:
        t = self.table.get(frame.tid)
        if t is None or t.peer_id != peer:
            return wire.Received()  # e.g. a cancel for an offer that never arrived
        if frame.outcome == "completed" and t.direction is not Direction.OUT:
            raise wire.FrameError("only a receiver may report completion")
        if frame.outcome == "declined" and t.direction is not Direction.OUT:
            raise wire.FrameError("only a receiver may decline")
        async with self.table.locked(t.tid):
            reason = f"{frame.outcome} by the friend" + (
                f": {frame.reason}" if frame.reason else ""
            )
            await self.table.apply(t.tid, PEER_OUTCOME_EVENTS[frame.outcome], reason=reason)
        return wire.Received()

    # --- to the friend ---------------------------------------------------------------------

    def owed(self, peer: str) -> list[Transfer]:
        return [t for t in self.table.of_peer(peer) if t.notice is not None]

    async def deliver(self, t: Transfer) -> None:
        """Deliver ``t``'s owed notice (the friend's daemon is connected)."""
        notice = t.notice
        assert notice is not None
        frame: wire.Frame
        if notice == OFFER_NOTICE:
            frame = wire.FileOffer(t.tid, t.name, t.size, t.hash)
        else:
            frame = wire.FileEnd(t.tid, notice, clip_utf8(t.notice_reason))
        stream = await self.net.open_stream(t.peer_id, wire.FILE_PROTOCOL)
        try:
            with trio.fail_after(NOTICE_TIMEOUT):
                await stream.write(wire.encode(frame))
                reply = await read_one_frame(stream)
        finally:
            await reset(stream)
        async with self.table.locked(t.tid):
            if isinstance(reply, wire.Refused):
                if reply.code in (wire.REFUSED_FULL, wire.REFUSED_RATE_LIMITED):
                    raise RefusedForNow(f"{notice} refused for now: {reply.reason}")
                log.info("%s for %s refused: %s", notice, t.id_hex[:12], reply.reason)
            await self.table.clear_notice(t.tid, notice)
            if notice != OFFER_NOTICE:
                return
            if isinstance(reply, wire.Refused):
                reason = f"offer refused: {reply.reason}"
                await self.table.apply(t.tid, TEvent.FAILED, reason=reason)
            else:
                await self.table.apply(t.tid, TEvent.OFFER_DELIVERED)
