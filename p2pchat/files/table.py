"""Every transfer of one identity, in memory over the transfers table, and every change to
them: one place that commits a change (DB first, then the cache) before it is announced or
acted on, under the transfer's lock, so that two changes of one transfer never interleave."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from p2pchat import wire
from p2pchat.clock import now_ms
from p2pchat.events import EventBus
from p2pchat.files.disk import unlink_quietly
from p2pchat.files.state import PEER_EVENTS, TERMINAL, Direction, TEvent, TState, step
from p2pchat.files.store import Transfer, TransferStore
from p2pchat.identity import short
from p2pchat.locks import KeyedLocks

log = logging.getLogger(__name__)


def transfer_json(t: Transfer) -> dict[str, Any]:
    return {
        "id": t.id_hex,
        "peer_id": t.peer_id,
        "direction": t.direction.value,
        "name": t.name,
        "size": t.size,
        "hash": t.hash.hex(),
        "state": t.state.value,
        "bytes": t.size if t.state is TState.COMPLETED else t.done_bytes,
        "path": t.source if t.direction is Direction.OUT else t.final_path,
        "data_path": t.data_path,
        "error": t.error,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }


def clip_utf8(text: str, limit: int = wire.MAX_REASON_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (wire limits count bytes)."""
    return text.encode("utf-8", "replace")[:limit].decode("utf-8", "ignore")


class TransferTable:
    """The transfers, by ID. ``on_change`` hears of every state change (and owed notice)
    once it is committed and announced."""

    def __init__(
        self, store: TransferStore, events: EventBus, on_change: Callable[[Transfer], None]
    ) -> None:
        self.store = store
        self.events = events
        self._on_change = on_change
        self._transfers: dict[bytes, Transfer] = {}
        # Per transfer (key: its ID) and per peer's offers (key: the peer ID's bytes).
        self._locks: KeyedLocks[bytes] = KeyedLocks()

    async def load(self) -> None:
        for t in await self.store.all():
            self._transfers[t.tid] = t

    def get(self, tid: bytes) -> Transfer | None:
        return self._transfers.get(tid)

    def __getitem__(self, tid: bytes) -> Transfer:
        return self._transfers[tid]

    def all(self) -> list[Transfer]:
        return list(self._transfers.values())

    def of_peer(self, peer: str) -> list[Transfer]:
        return [t for t in self._transfers.values() if t.peer_id == peer]

    def locked(self, key: bytes) -> AbstractAsyncContextManager[None]:
        """Serialise state changes of one transfer (key: its ID), or the offers of one peer
        (key: its ID's bytes)."""
        return self._locks.hold(key)

    async def add(self, t: Transfer) -> bool:
        """Store a new transfer; False if its ID is taken in the database already."""
        stored, created = await self.store.create(t)
        if created:
            self._transfers[t.tid] = stored
        return created

    async def apply(
        self, tid: bytes, event: TEvent, *, reason: str = "", durable: bool = True, **fields: Any
    ) -> Transfer | None:
        """Apply ``event`` (caller holds the transfer's lock). Returns the updated transfer, or
        None if the event does not apply (peer events on finished transfers)."""
        t = self._transfers.get(tid)
        if t is None:
            return None
        tr = step(t.direction, t.state, event)
        if tr is None:
            return None
        if tr.notify is not None:
            fields["notice"] = tr.notify
            fields["notice_reason"] = clip_utf8(reason)
        if reason and (
            tr.state is TState.FAILED or event in PEER_EVENTS or event is TEvent.UNFRIENDED
        ):
            fields.setdefault("error", reason)  # why it ended, when the user did not do it
        if tr.drop_partial and t.part_path:
            await trio.to_thread.run_sync(unlink_quietly, t.part_path)
            fields["part_path"] = None
        updated = await self.store.update(tid, now_ms(), state=tr.state, durable=durable, **fields)
        assert updated is not None
        self._transfers[tid] = updated
        log.log(
            logging.INFO if tr.state is not t.state else logging.DEBUG,
            "transfer %s (%s %s): %s -> %s%s",
            updated.id_hex[:12],
            t.direction.value,
            short(t.peer_id),
            t.state.value,
            tr.state.value,
            f" ({reason})" if reason else "",
        )
        if tr.state is not t.state or tr.notify is not None:
            self.events.publish("transfer.updated", transfer=transfer_json(updated))
        self._on_change(updated)
        return updated

    async def fail(self, tid: bytes, reason: str) -> None:
        """End a transfer as failed; if even that cannot be stored, log it (the transfer
        stays as it was and is retried), never raise."""
        try:
            async with self.locked(tid):
                await self.apply(tid, TEvent.FAILED, reason=reason)
        except Exception as exc:  # this is the last resort: never let it escape
            log.error("could not record that transfer %s failed (%s): %s", tid.hex(), reason, exc)

    async def record(self, tid: bytes, **fields: Any) -> None:
        """Store how a session is going (not a state change, no lock needed). Not fsynced:
        losing one only means re-receiving a little, or an older ``data_path`` shown."""
        now = now_ms()
        await self.store.update(tid, now, durable=False, **fields)
        t = self._transfers.get(tid)
        if t is not None:
            self._transfers[tid] = dataclasses.replace(t, updated_at=now, **fields)

    async def prune_ended(self, peer: str, keep: int) -> int:
        """Keep at most ``keep`` ended transfer records of ``peer`` (a per-friend quota, so a
        friend offering file after file cannot grow the table for ever): the oldest ended
        ones go first, never one that still owes the friend a notice. Received files stay on
        disk; only the records go. Caller holds the peer's offers lock. How many went."""
        ended = [t for t in self.of_peer(peer) if t.state in TERMINAL]
        excess = len(ended) - keep
        if excess <= 0:
            return 0
        deletable = sorted(
            (t for t in ended if t.notice is None), key=lambda t: (t.updated_at, t.created_at)
        )[:excess]
        if not deletable:
            return 0
        await self.store.delete([t.tid for t in deletable])
        for t in deletable:
            self._transfers.pop(t.tid, None)
        log.info("pruned %d ended transfer records of %s", len(deletable), short(peer))
        return len(deletable)

    async def clear_notice(self, tid: bytes, notice: str) -> None:
        """The peer confirmed ``notice``; stop owing it (unless it changed meanwhile)."""
        await self.store.clear_notice(tid, notice)
        t = self._transfers.get(tid)
        if t is not None and t.notice == notice:
            self._transfers[tid] = dataclasses.replace(t, notice=None)
