"""The node itself: ``status``, ``identity.get``, ``invite.rotate``, ``daemon.shutdown``,
``peers.*``, ``dht.find``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from daemon.params import Handler, Params, str_param
from p2pchat.api import ApiError
from p2pchat.identity import IdentityError, check_peer_id

if TYPE_CHECKING:
    from daemon.control import Session

# The control server's logger, so that the shutdown line reads as it always has.
log = logging.getLogger("daemon.control")


async def status(s: Session, p: Params) -> Any:
    web = s.server.web
    return {**await s.server.node.status(), "web_url": await web.url() if web else None}


async def identity_get(s: Session, p: Params) -> Any:
    node = s.server.node
    return {"peer_id": node.peer_id, "friend_code": node.friend_code(), "addrs": node.addrs()}


async def invite_rotate(s: Session, p: Params) -> Any:
    """A new invite secret: friend codes given out so far take the slower stranger path."""
    node = s.server.node
    try:
        code = await node.rotate_invite()
    except OSError as exc:
        raise ApiError("storage_error", f"cannot write the new invite secret: {exc}") from None
    log.info("invite secret rotated through the control API")
    return {"peer_id": node.peer_id, "friend_code": code, "addrs": node.addrs()}


async def shutdown(s: Session, p: Params) -> Any:
    log.info("shutdown requested through the control API")
    s.server.shutdown()
    return {"stopping": True}


async def peers_list(s: Session, p: Params) -> Any:
    network = s.server.node.network
    assert network is not None
    by_peer: dict[str, list[dict[str, Any]]] = {}
    for conn in network.connections():
        by_peer.setdefault(conn["peer_id"], []).append({"kind": conn["kind"], "addr": conn["addr"]})
    peers = []
    for peer, conns in sorted(by_peer.items()):
        kinds = {c["kind"] for c in conns}
        peers.append(
            {
                "peer_id": peer,
                "kind": "direct" if "direct" in kinds else "relayed",
                "connections": conns,
            }
        )
    return {"peers": peers}


async def peers_connect(s: Session, p: Params) -> Any:
    network = s.server.node.network
    assert network is not None
    peer, elapsed = await network.connect_addr(str_param(p, "addr"))
    return {"peer_id": peer, "connect_ms": round(elapsed * 1000, 3)}


async def peers_disconnect(s: Session, p: Params) -> Any:
    network = s.server.node.network
    assert network is not None
    await network.disconnect(str_param(p, "peer_id"))
    return {"peer_id": p["peer_id"]}


async def dht_find(s: Session, p: Params) -> Any:
    """Look a peer up in the DHT now (its signed address record, else peer routing)."""
    node = s.server.node
    if node.discovery is None:
        raise ApiError("internal_error", "the node is not running")
    try:
        peer = check_peer_id(str_param(p, "peer_id"))
    except IdentityError as exc:
        raise ApiError("invalid_params", str(exc)) from None
    if peer == node.peer_id:
        raise ApiError("self", "that is this daemon's own ID")
    found = await node.discovery.find_addrs(peer)
    if found is None:
        if node.discovery.routing_table_size() == 0:
            raise ApiError(
                "not_found",
                f"{peer} was not found: this daemon has no DHT peers yet "
                "(is a bootstrap peer configured and reachable?)",
            )
        raise ApiError("not_found", f"{peer} was not found in the DHT")
    return {
        "peer_id": peer,
        "addrs": list(found.addrs),
        "source": found.source,
        "seq": found.seq,
        "lookup_ms": round(found.elapsed_s * 1000, 3),
    }


METHODS: Final[dict[str, Handler]] = {
    "status": status,
    "identity.get": identity_get,
    "invite.rotate": invite_rotate,
    "daemon.shutdown": shutdown,
    "peers.list": peers_list,
    "peers.connect": peers_connect,
    "peers.disconnect": peers_disconnect,
    "dht.find": dht_find,
}
