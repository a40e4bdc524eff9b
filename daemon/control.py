"""The control API server: JSON-RPC 2.0, one object per line, over a private Unix socket.

docs/API.md is the contract. This module only frames, validates and dispatches; the behaviour
lives in :class:`p2pchat.node.Node` and :class:`p2pchat.chat.messages.Chat`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import trio

from p2pchat.api import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    MAX_LINE_BYTES,
    PARSE_ERROR,
    ApiError,
)
from p2pchat.calls.manager import CallManager
from p2pchat.chat.friendship import UserAction
from p2pchat.chat.messages import Chat, message_json
from p2pchat.chat.store import ContactState
from p2pchat.files.manager import TransferManager
from p2pchat.identity import IdentityError, check_peer_id
from p2pchat.node import Node
from p2pchat.wire import MSG_ID_BYTES

log = logging.getLogger(__name__)

MAX_HISTORY: Final = 1000
MAX_CLIENTS: Final = 64

Params = dict[str, Any]
Handler = Callable[["Session", Params], Awaitable[Any]]


class ControlSocketError(Exception):
    pass


def _str(params: Params, key: str, *, required: bool = True, default: str = "") -> str:
    if key not in params or params[key] is None:
        if required:
            raise ApiError("invalid_params", f"missing parameter {key!r}")
        return default
    value = params[key]
    if not isinstance(value, str):
        raise ApiError("invalid_params", f"parameter {key!r} must be a string")
    return value


def _int(params: Params, key: str, default: int | None, lo: int, hi: int) -> int | None:
    value = params.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ApiError("invalid_params", f"parameter {key!r} must be an integer in [{lo}, {hi}]")
    return value


class Session:
    """One client connection: requests answered in order, plus events once subscribed."""

    def __init__(self, server: ControlServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.write_lock = trio.Lock()
        self.nursery: trio.Nursery | None = None
        self.subscribed = False

    async def send(self, obj: dict[str, Any]) -> None:
        # ensure_ascii: a lone surrogate echoed back in an id must not break the encoding.
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        async with self.write_lock:
            await self.stream.send_all(data)

    async def run(self) -> None:
        buf = bytearray()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                while True:
                    newline = buf.find(b"\n")
                    if newline < 0:
                        if len(buf) > MAX_LINE_BYTES:
                            await self.send(
                                _error(None, ApiError("invalid_request", "request line too long"))
                            )
                            break
                        chunk = await self.stream.receive_some(65536)
                        if not chunk:
                            break
                        buf += chunk
                        continue
                    line = bytes(buf[:newline])
                    del buf[: newline + 1]
                    if line.strip():
                        await self.send(await self.handle_line(line))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                nursery.cancel_scope.cancel()

    async def handle_line(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": PARSE_ERROR,
                    "message": "the request is not valid JSON",
                    "data": {"name": "parse_error"},
                },
            }
        if not isinstance(request, dict) or request.get("jsonrpc") != "2.0":
            return {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": INVALID_REQUEST,
                    "message": "not a JSON-RPC 2.0 request object",
                    "data": {"name": "invalid_request"},
                },
            }
        req_id = request.get("id")
        if not (req_id is None or (isinstance(req_id, str | int) and not isinstance(req_id, bool))):
            req_id = None  # JSON-RPC ids are strings, numbers or null; never echo anything else
        method = request.get("method")
        params = request.get("params", {})
        if params is None:
            params = {}
        try:
            if not isinstance(method, str):
                raise ApiError("invalid_request", "'method' must be a string")
            if not isinstance(params, dict):
                raise ApiError("invalid_params", "'params' must be an object")
            handler = METHODS.get(method)
            if handler is None:
                raise ApiError("method_not_found", f"no method {method!r} (see docs/API.md)")
            result = await handler(self, params)
            return {"jsonrpc": "2.0", "id": req_id, "result": result}
        except ApiError as exc:
            return _error(req_id, exc)
        except Exception:
            log.exception("internal error in %r", method)
            return {
                "jsonrpc": "2.0",
                "id": req_id,
                "error": {
                    "code": INTERNAL_ERROR,
                    "message": "internal error (details in the daemon log)",
                    "data": {"name": "internal_error"},
                },
            }

    async def forward_events(self, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        try:
            async with receive:
                async for event in receive:
                    await self.send({"jsonrpc": "2.0", "method": "event", "params": event})
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        # The bus closed our channel (we fell behind) or the client left: end the session.
        await self.stream.aclose()


def _error(req_id: Any, exc: ApiError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": exc.to_json()}


class ControlServer:
    def __init__(self, node: Node, shutdown: Callable[[], None]) -> None:
        self.node = node
        self.shutdown = shutdown
        self._clients = 0

    @property
    def chat(self) -> Chat:
        assert self.node.chat is not None
        return self.node.chat

    async def serve(self, path: Path, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        sock = await bind_unix_socket(path)
        listener = trio.SocketListener(sock)
        task_status.started()
        try:
            await trio.serve_listeners(self._handle, [listener])
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self._clients >= MAX_CLIENTS:
            await stream.aclose()
            return
        self._clients += 1
        try:
            await Session(self, stream).run()
        except Exception:
            # One misbehaving client must never take the daemon down.
            log.exception("control API session failed")
        finally:
            self._clients -= 1
            await stream.aclose()


async def bind_unix_socket(path: Path) -> trio.socket.SocketType:
    """Bind the control socket with mode 0600, replacing a stale one left by a crash."""
    if len(os.fsencode(path)) >= 104:
        raise ControlSocketError(
            f"the control socket path {path} is too long for a Unix socket; use a shorter --home"
        )
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            path.unlink()
        else:
            raise ControlSocketError(f"another daemon is already serving {path}")
        finally:
            probe.close()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(os.fspath(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


# --- methods -------------------------------------------------------------------------------


async def _status(s: Session, p: Params) -> Any:
    return await s.server.node.status()


async def _identity(s: Session, p: Params) -> Any:
    node = s.server.node
    return {"peer_id": node.peer_id, "friend_code": node.friend_code(), "addrs": node.addrs()}


async def _friends_list(s: Session, p: Params) -> Any:
    chat = s.server.chat
    assert chat.store is not None
    outbox = await chat.store.outbox_sizes()
    shown = (ContactState.FRIEND, ContactState.OUTGOING, ContactState.BLOCKED)
    return {
        "contacts": [
            chat.contact_json(c, outbox.get(c.peer_id, 0))
            for c in chat.contacts()
            if c.state in shown
        ]
    }


async def _friends_add(s: Session, p: Params) -> Any:
    name = _str(p, "name", required=False, default="") if p.get("name") is not None else None
    contact = await s.server.chat.add_friend(
        _str(p, "id"), name, _str(p, "message", required=False)
    )
    return {"contact": s.server.chat.contact_json(contact)}


async def _friends_rename(s: Session, p: Params) -> Any:
    contact = await s.server.chat.rename(_str(p, "friend"), _str(p, "name"))
    return {"contact": s.server.chat.contact_json(contact)}


def _action(action: UserAction) -> Handler:
    async def handler(s: Session, p: Params) -> Any:
        chat = s.server.chat
        if action is UserAction.BLOCK and "friend" not in p and "id" in p:
            contact = await chat.block_id(_str(p, "id"))
            return {"contact": chat.contact_json(contact)}
        target = chat.resolve(_str(p, "friend"))
        updated = await chat.user_action(target.peer_id, action)
        if updated is None or updated.state is ContactState.REMOVED:
            return {"peer_id": target.peer_id}
        return {"contact": chat.contact_json(updated)}

    return handler


async def _requests_list(s: Session, p: Params) -> Any:
    chat = s.server.chat
    return {
        "requests": [
            chat.contact_json(c) for c in chat.contacts() if c.state is ContactState.INCOMING
        ]
    }


async def _send(s: Session, p: Params) -> Any:
    msg_id = None
    if p.get("id") is not None:
        try:
            msg_id = bytes.fromhex(_str(p, "id"))
        except ValueError:
            msg_id = b""
        if len(msg_id) != MSG_ID_BYTES:
            raise ApiError("invalid_params", f"'id' must be {2 * MSG_ID_BYTES} hex characters")
    record = await s.server.chat.send_message(_str(p, "friend"), _str(p, "text"), msg_id)
    return {"message": message_json(record)}


async def _history(s: Session, p: Params) -> Any:
    chat = s.server.chat
    contact = chat.resolve(_str(p, "friend"))
    limit = _int(p, "limit", 50, 1, MAX_HISTORY)
    before = _int(p, "before", None, 0, 2**62)
    assert limit is not None
    records = await chat.store.history(contact.peer_id, limit, before)
    return {"messages": [message_json(m) for m in records]}


async def _subscribe(s: Session, p: Params) -> Any:
    if not s.subscribed:
        s.subscribed = True
        receive = s.server.node.events.subscribe()
        assert s.nursery is not None
        s.nursery.start_soon(s.forward_events, receive)
    return {"subscribed": True}


async def _peers_list(s: Session, p: Params) -> Any:
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


async def _dht_find(s: Session, p: Params) -> Any:
    """Look a peer up in the DHT now (its signed address record, else peer routing)."""
    node = s.server.node
    if node.discovery is None:
        raise ApiError("internal_error", "the node is not running")
    try:
        peer = check_peer_id(_str(p, "peer_id"))
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


async def _peers_connect(s: Session, p: Params) -> Any:
    network = s.server.node.network
    assert network is not None
    peer, elapsed = await network.connect_addr(_str(p, "addr"))
    return {"peer_id": peer, "connect_ms": round(elapsed * 1000, 3)}


async def _peers_disconnect(s: Session, p: Params) -> Any:
    network = s.server.node.network
    assert network is not None
    await network.disconnect(_str(p, "peer_id"))
    return {"peer_id": p["peer_id"]}


def _files(s: Session) -> TransferManager:
    files = s.server.node.files
    if files is None:
        raise ApiError("internal_error", "the node is not running")
    return files


def _calls(s: Session) -> CallManager:
    calls = s.server.node.calls
    if calls is None:
        raise ApiError("internal_error", "the node is not running")
    return calls


def _flag(params: Params, key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise ApiError("invalid_params", f"parameter {key!r} must be true or false")
    return value


async def _calls_start(s: Session, p: Params) -> Any:
    call = await _calls(s).start_call(
        _str(p, "friend"),
        video=not _flag(p, "audio_only", False),
        source=_str(p, "source", required=False, default="test"),
        record=_str(p, "record", required=False),
    )
    return {"call": call}


async def _calls_answer(s: Session, p: Params) -> Any:
    call = await _calls(s).answer(
        _str(p, "friend", required=False) or None,
        source=_str(p, "source", required=False, default="test"),
        record=_str(p, "record", required=False),
    )
    return {"call": call}


async def _calls_hangup(s: Session, p: Params) -> Any:
    return {"call": await _calls(s).hangup(_str(p, "friend", required=False) or None)}


async def _calls_list(s: Session, p: Params) -> Any:
    return {"calls": await _calls(s).list_calls()}


async def _files_send(s: Session, p: Params) -> Any:
    return {"transfer": await _files(s).send_file(_str(p, "friend"), _str(p, "path"))}


async def _files_list(s: Session, p: Params) -> Any:
    return {"transfers": _files(s).list_json()}


async def _files_accept(s: Session, p: Params) -> Any:
    return {"transfer": await _files(s).accept(_str(p, "id"))}


async def _files_decline(s: Session, p: Params) -> Any:
    return {"transfer": await _files(s).decline(_str(p, "id"))}


async def _files_cancel(s: Session, p: Params) -> Any:
    return {"transfer": await _files(s).cancel(_str(p, "id"))}


async def _shutdown(s: Session, p: Params) -> Any:
    log.info("shutdown requested through the control API")
    s.server.shutdown()
    return {"stopping": True}


METHODS: Final[dict[str, Handler]] = {
    "status": _status,
    "identity.get": _identity,
    "friends.list": _friends_list,
    "friends.add": _friends_add,
    "friends.rename": _friends_rename,
    "friends.remove": _action(UserAction.REMOVE),
    "friends.block": _action(UserAction.BLOCK),
    "friends.unblock": _action(UserAction.UNBLOCK),
    "requests.list": _requests_list,
    "requests.accept": _action(UserAction.ACCEPT),
    "requests.decline": _action(UserAction.DECLINE),
    "messages.send": _send,
    "messages.history": _history,
    "events.subscribe": _subscribe,
    "peers.list": _peers_list,
    "peers.connect": _peers_connect,
    "peers.disconnect": _peers_disconnect,
    "dht.find": _dht_find,
    "calls.start": _calls_start,
    "calls.answer": _calls_answer,
    "calls.hangup": _calls_hangup,
    "calls.list": _calls_list,
    "files.send": _files_send,
    "files.list": _files_list,
    "files.accept": _files_accept,
    "files.decline": _files_decline,
    "files.cancel": _files_cancel,
    "daemon.shutdown": _shutdown,
}
