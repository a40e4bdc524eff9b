"""How far running sessions are, between their checkpoints: ``files.list`` shows it, and
``transfer.progress`` events report it twice a second while it changes."""

from __future__ import annotations

import dataclasses
import time
from typing import Final

import trio

from p2pchat.events import EventBus
from p2pchat.files.datapath import Progress
from p2pchat.files.state import TState
from p2pchat.files.store import Transfer
from p2pchat.files.table import TransferTable

PROGRESS_INTERVAL: Final = 0.5


class ProgressReports:
    """The :class:`Progress` of each running session (by transfer ID), with when it started
    and from which byte."""

    def __init__(self, table: TransferTable, events: EventBus) -> None:
        self.table = table
        self.events = events
        self._running: dict[bytes, tuple[Progress, float, int]] = {}

    def track(self, tid: bytes, progress: Progress) -> None:
        self._running[tid] = (progress, time.monotonic(), progress.bytes)

    def forget(self, tid: bytes) -> bool:
        """Stop reporting a session; whether it moved any bytes."""
        running = self._running.pop(tid, None)
        return running is not None and running[0].bytes > running[2]

    def live(self, t: Transfer) -> Transfer:
        """``t`` with the bytes its running session has moved so far."""
        running = self._running.get(t.tid)
        if running is None or t.state is not TState.ACTIVE:
            return t
        return dataclasses.replace(t, done_bytes=running[0].bytes)

    async def run(self) -> None:
        last: dict[bytes, int] = {}
        while True:
            await trio.sleep(PROGRESS_INTERVAL)
            for tid, (progress, started, start_bytes) in list(self._running.items()):
                t = self.table.get(tid)
                if t is None or last.get(tid) == progress.bytes:
                    continue
                last[tid] = progress.bytes
                elapsed = max(time.monotonic() - started, 1e-6)
                self.events.publish(
                    "transfer.progress",
                    id=t.id_hex,
                    direction=t.direction.value,
                    bytes=progress.bytes,
                    size=t.size,
                    rate=round((progress.bytes - start_bytes) / elapsed),
                )
            for tid in list(last):
                if tid not in self._running:
                    del last[tid]
