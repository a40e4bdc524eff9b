"""The event stream: ``events.subscribe`` (the session then forwards every event)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from daemon.params import Handler, Params

if TYPE_CHECKING:
    from daemon.control import Session


async def subscribe(s: Session, p: Params) -> Any:
    if not s.subscribed:
        s.subscribed = True
        receive = s.server.node.events.subscribe()
        assert s.nursery is not None
        s.nursery.start_soon(s.forward_events, receive)
    return {"subscribed": True}


METHODS: Final[dict[str, Handler]] = {
    "events.subscribe": subscribe,
}
