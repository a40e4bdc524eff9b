"""Publishing this identity's signed address record in the DHT (PROTOCOL.md §11.2).

The record is stored again when our advertised addresses change, on a start-up schedule
(the peers closest to our key change fastest while the network around us forms), each time
the young routing table has doubled, and hourly. Sequence numbers are the clock in ms but
always above the last one used, which is kept in the settings table across restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import trio

from p2pchat.identity import Identity
from p2pchat.net import kad, records
from p2pchat.storage.settings import Settings

log = logging.getLogger(__name__)

PUBLISH_SCHEDULE: Final = (3.0, 30.0, 120.0, 600.0)
"""Seconds after start-up at which the record is published again: early on, while the
network around us is still forming, the closest peers to our key change."""
REPUBLISH_EVERY: Final = 3600.0
PUT_TIMEOUT: Final = 30.0
GROWN_TABLE: Final = 20
"""Routing-table size (one Kademlia bucket) past which growth no longer triggers a republish."""
GROWTH_CHECK_EVERY: Final = 5.0
SETTING_SEQ: Final = "record_seq"


def table_grown(size_at_put: int, size_now: int) -> bool:
    """Whether the routing table has grown enough since our record was last stored to store
    it again: the peers closest to our key change fastest while the network around us forms
    (a daemon that published with one peer would otherwise leave its record there for the
    next scheduled republish). Doublings only, and only until the table holds a full bucket."""
    return size_at_put < GROWN_TABLE and size_now >= max(2 * size_at_put, 2)


def next_seq(last: int, now_ms: int) -> int:
    """Record sequence numbers: the clock in ms, but always above the last one used."""
    return max(now_ms, last + 1)


class RecordPublisher:
    """Keeps our record in the DHT. ``advertised`` says what it lists; ``table_size`` how
    many DHT peers we have (nothing is published while we have none)."""

    def __init__(
        self,
        dht: kad.OverlayDHT,
        settings: Settings,
        identity: Identity,
        *,
        advertised: Callable[[], tuple[str, ...]],
        table_size: Callable[[], int],
        started_at: float,
    ) -> None:
        self.dht = dht
        self.settings = settings
        self.identity = identity
        self._advertised = advertised
        self._table_size = table_size
        self.started_at = started_at
        self.published_seq: int | None = None
        self._addrs_changed = trio.Event()

    def addresses_changed(self) -> None:
        """Publish again soon (new addresses, or someone new to store the record)."""
        self._addrs_changed.set()

    async def run(self) -> None:
        last_addrs: tuple[str, ...] | None = None
        last_put = -REPUBLISH_EVERY
        table_at_put = 0
        schedule = list(PUBLISH_SCHEDULE)
        while True:
            now = time.monotonic()
            due_scheduled = bool(schedule) and now - self.started_at >= schedule[0]
            while schedule and now - self.started_at >= schedule[0]:
                schedule.pop(0)
            self._addrs_changed = trio.Event()
            addrs = self._advertised()
            size = self._table_size()
            due = (
                addrs != last_addrs
                or due_scheduled
                or now - last_put >= REPUBLISH_EVERY
                or table_grown(table_at_put, size)
            )
            if size > 0 and due and await self._publish(addrs):
                last_addrs, last_put, table_at_put = addrs, now, size
            wait = schedule[0] - (now - self.started_at) if schedule else REPUBLISH_EVERY / 4
            if table_at_put < GROWN_TABLE:
                wait = min(wait, GROWTH_CHECK_EVERY)
            with trio.move_on_after(max(1.0, wait)):
                await self._addrs_changed.wait()

    async def _publish(self, addrs: tuple[str, ...]) -> bool:
        last = int(await self.settings.get(SETTING_SEQ) or 0)
        seq = next_seq(last, int(time.time() * 1000))
        expires = int(time.time()) + records.RECORD_LIFETIME
        device = records.Device(self.identity.peer_id, addrs)
        try:
            value = records.sign_record(self.identity, seq, expires, (device,))
        except records.RecordError as exc:  # advertised_addrs keeps this from happening
            log.warning("cannot sign our address record: %s", exc)
            return False
        await self.settings.set(SETTING_SEQ, str(seq))
        try:
            with trio.fail_after(PUT_TIMEOUT):
                await self.dht.put_value(records.record_key(self.identity.peer_id), value)
        except Exception as exc:
            log.info("publishing our address record failed (will retry): %s", exc)
            return False
        self.published_seq = seq
        log.info("published address record #%d: %s", seq, ", ".join(addrs) or "(none)")
        return True
