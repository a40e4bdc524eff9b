"""Fan-out of daemon events to API subscribers, never blocking the publisher.

Each subscriber gets a bounded queue; one that falls too far behind is dropped (its channel
closed) rather than slowing delivery for everyone else, and its client sees the connection end.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import trio

log = logging.getLogger(__name__)

SUBSCRIBER_BACKLOG: Final = 10_000

Event = dict[str, Any]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[trio.MemorySendChannel[Event]] = set()

    def subscribe(self) -> trio.MemoryReceiveChannel[Event]:
        send, receive = trio.open_memory_channel[Event](SUBSCRIBER_BACKLOG)
        self._subscribers.add(send)
        return receive

    def publish(self, event_type: str, **fields: Any) -> None:
        event: Event = {"type": event_type, **fields}
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                log.warning(
                    "dropping an API subscriber that fell %d events behind", SUBSCRIBER_BACKLOG
                )
                send.close()
                self._subscribers.discard(send)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(send)
