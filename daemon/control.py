"""The control API server: JSON-RPC 2.0, one object per line, over a private Unix socket.

docs/API.md is the contract. This module owns the socket, the line framing, the sessions (one
per client connection, with event forwarding once subscribed) and the dispatch. The methods
live in :mod:`daemon.handlers`, one module per concern, each exporting its ``METHODS`` table;
:data:`METHODS` merges them. Parameter checks shared by handlers are in :mod:`daemon.params`.
The behaviour itself lives in :class:`p2pchat.node.Node` and :class:`p2pchat.chat.service.Chat`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import trio

from daemon.handlers import calls, events, files, friends, messages, node
from daemon.params import Handler
from p2pchat.api import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    MAX_LINE_BYTES,
    PARSE_ERROR,
    ApiError,
)
from p2pchat.chat.service import Chat
from p2pchat.node import Node

log = logging.getLogger(__name__)

MAX_CLIENTS: Final = 64


class ControlSocketError(Exception):
    pass


class HandlerModule(Protocol):
    """A module of :mod:`daemon.handlers`: one concern's part of the method table."""

    __name__: str

    @property
    def METHODS(self) -> Mapping[str, Handler]: ...


HANDLER_MODULES: Final[tuple[HandlerModule, ...]] = (
    node,
    events,
    friends,
    messages,
    files,
    calls,
)
"""Every concern's handler module; adding a concern adds its module here."""


def merge_methods(tables: Mapping[str, Mapping[str, Handler]]) -> dict[str, Handler]:
    """One method table from several (keyed by where each comes from); a method defined in
    two of them is a programming error, refused here, at import time."""
    merged: dict[str, Handler] = {}
    owner: dict[str, str] = {}
    for source, table in tables.items():
        for method, handler in table.items():
            if method in merged:
                raise ValueError(
                    f"control method {method!r} is defined twice: in {owner[method]} and {source}"
                )
            merged[method] = handler
            owner[method] = source
    return merged


METHODS: Final[dict[str, Handler]] = merge_methods(
    {module.__name__: module.METHODS for module in HANDLER_MODULES}
)


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
