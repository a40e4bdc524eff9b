"""The control API server: JSON-RPC 2.0, one object per line, over a private Unix socket.

docs/API.md is the contract. This module owns the socket, the line framing, the sessions (one
per client connection, with event forwarding once subscribed) and the dispatch. A session is
transport-agnostic (a :class:`Link` carries its messages): :mod:`daemon.web` runs the same
sessions over WebSockets, so both transports share one implementation of every method. The
methods live in :mod:`daemon.handlers`, one module per concern, each exporting its ``METHODS``
table; :data:`METHODS` merges them. Parameter checks shared by handlers are in :mod:`daemon.params`.
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

from daemon.handlers import calls, events, files, friends, groups, messages, node, web
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
    groups,
    files,
    calls,
    web,
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


class MessageTooLong(Exception):
    """A client sent a message over :data:`~p2pchat.api.MAX_LINE_BYTES`; the session ends."""


class Link(Protocol):
    """One client connection as a session sees it, whatever carries it: the Unix socket
    (:class:`SocketLink`) or a WebSocket (``daemon.web``). Each message is one JSON object."""

    kind: str
    """``"socket"`` or ``"web"``."""

    async def receive(self) -> bytes | str | None:
        """The next message; None once the client is gone. May raise :class:`MessageTooLong`."""
        ...

    async def send_text(self, text: str) -> None:
        """Send one message (one JSON object). Raises trio.BrokenResourceError or
        trio.ClosedResourceError once the client is gone."""
        ...

    async def aclose(self) -> None: ...


class SocketLink:
    """The Unix-socket framing: one object per line (UTF-8, newline-terminated)."""

    kind = "socket"

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buf = bytearray()

    async def receive(self) -> bytes | None:
        while True:
            newline = self._buf.find(b"\n")
            if newline > MAX_LINE_BYTES:
                raise MessageTooLong("request line too long")
            if newline >= 0:
                line = bytes(self._buf[:newline])
                del self._buf[: newline + 1]
                return line
            if len(self._buf) > MAX_LINE_BYTES:
                raise MessageTooLong("request line too long")
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self._buf += chunk

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(text.encode() + b"\n")

    async def aclose(self) -> None:
        await self.stream.aclose()


class _NoLink:
    """The link of a :meth:`Session.detached` session: nothing to read or write."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def receive(self) -> None:
        return None

    async def send_text(self, text: str) -> None:
        raise trio.ClosedResourceError("a detached session has no client to write to")

    async def aclose(self) -> None:
        pass


class Session:
    """One client connection: requests answered in order, plus events once subscribed.

    Transport-agnostic: the same dispatch serves the Unix socket and the web app's WebSocket,
    so the two can never disagree about what a method does."""

    def __init__(self, server: ControlServer, link: Link) -> None:
        self.server = server
        self.link = link
        self.transport: str = link.kind
        """``"socket"`` or ``"web"``."""
        self.write_lock = trio.Lock()
        self.nursery: trio.Nursery | None = None
        self.subscribed = False
        self._close_callbacks: list[Callable[[], None]] = []
        self._ended = False
        self._end_requested = False
        self._end_after_reply = False

    @classmethod
    def detached(cls, server: ControlServer, kind: str) -> Session:
        """A session with no connection, to run one method for an HTTP request (an upload, a
        download): the same handlers, without a client to reply to."""
        return cls(server, _NoLink(kind))

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when this session ends (at once if it has ended), e.g. to
        hang up a call whose page went away."""
        if self._ended:
            self._call_back(callback)
        else:
            self._close_callbacks.append(callback)

    def end(self) -> None:
        """End the session now (its pending request, if any, is abandoned); before it runs,
        it ends as soon as it starts."""
        self._end_requested = True
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    def end_after_reply(self) -> None:
        """End the session once the reply to the request being handled is sent."""
        self._end_after_reply = True

    async def send(self, obj: dict[str, Any]) -> None:
        # ensure_ascii: a lone surrogate echoed back in an id must not break the encoding.
        text = json.dumps(obj, separators=(",", ":"))
        async with self.write_lock:
            await self.link.send_text(text)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if self._end_requested:
                    nursery.cancel_scope.cancel()
                try:
                    while not self._end_after_reply:
                        try:
                            message = await self.link.receive()
                        except MessageTooLong as exc:
                            await self.send(_error(None, ApiError("invalid_request", str(exc))))
                            break
                        if message is None:
                            break
                        if message.strip():
                            await self.send(await self.handle_line(message))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._ended = True
            callbacks, self._close_callbacks = self._close_callbacks, []
            for callback in callbacks:
                self._call_back(callback)

    @staticmethod
    def _call_back(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("a session close callback failed")

    async def invoke(self, method: str, params: dict[str, Any]) -> Any:
        """Run ``method`` as a request on this session would; raises :class:`ApiError`."""
        handler = METHODS.get(method)
        if handler is None:
            raise ApiError("method_not_found", f"no method {method!r} (see docs/API.md)")
        return await handler(self, params)

    async def handle_line(self, line: bytes | str) -> dict[str, Any]:
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
            result = await self.invoke(method, params)
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
        await self.link.aclose()
        self.end()


def _error(req_id: Any, exc: ApiError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": exc.to_json()}


class WebFront(Protocol):
    """What the ``web.*`` handlers and ``status`` need of the web server (``daemon.web``),
    without the handlers importing it."""

    async def info(self) -> dict[str, Any]:
        """``{enabled, url, login_url}`` (see docs/API.md ``web.info``)."""
        ...

    async def new_token(self, caller: Session) -> dict[str, Any]:
        """Rotate the token: every web session ends (``caller``'s after its reply)."""
        ...

    async def url(self) -> str | None:
        """The app's address without the token; None when the web app is off."""
        ...


class ControlServer:
    def __init__(self, node: Node, shutdown: Callable[[], None]) -> None:
        self.node = node
        self.shutdown = shutdown
        self.web: WebFront | None = None
        """The web app, when the daemon serves one (set before any client connects)."""
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
            await Session(self, SocketLink(stream)).run()
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
