"""The web app's server: a Starlette app served by Hypercorn's trio worker in the daemon.

It is a second transport of the control API: the page talks JSON-RPC over a WebSocket to a
:class:`daemon.control.Session` (the very sessions and handlers the Unix socket uses), plus
the few things a browser cannot do over JSON: log in, upload a file's bytes, download a
received file, fetch the QR code. :class:`Guard` runs :func:`daemon.web.guard.check_request`
before any route and adds the security headers to every response.

Task tree: ``run_daemon``'s nursery → :meth:`WebServer.serve` (its own nursery) → the
upload watcher, and Hypercorn's ``serve`` → one task per connection → the WebSocket's
:class:`~daemon.control.Session` (its nursery: event forwarding). Cancelling the daemon's
nursery ends them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import socket
import stat
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import hypercorn.trio
import hypercorn.trio.run
import hypercorn.trio.tcp_server
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from daemon.control import ControlServer, Session
from daemon.web import guard, token
from daemon.web.uploads import Uploads
from p2pchat import wire
from p2pchat.api import MAX_LINE_BYTES, ApiError
from p2pchat.config import Config, parse_web_listen, save_config
from p2pchat.paths import WEB_TOKEN_FILE, WEB_UPLOADS_DIR

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
MAX_WEB_SESSIONS: Final = 32
"""Open WebSockets at once (a few tabs; the Unix socket has its own limit)."""
MAX_LOGIN_BYTES: Final = 4096
READY_TIMEOUT: Final = 10.0
"""How long ``web.info``/``status`` wait for a web server that is still starting."""
CLOSE_ROTATED: Final = 4401
"""WebSocket close code when ``web.new_token`` ended the session: log in again."""
CLOSE_FULL: Final = 1013
MAX_HTTP_CONNECTIONS: Final = 128
"""HTTP connections at once; more are closed as soon as they are accepted."""
READ_TIMEOUT: Final = 30.0
"""A connection on which nothing moved either way for this long is closed (WebSockets answer
the pings; a download in progress keeps its connection)."""
MAX_RECV: Final = 65536
PING_INTERVAL: Final = 10.0
"""WebSocket pings: well inside :data:`READ_TIMEOUT`, so an idle page's pongs keep it open."""
LENGTH_REQUIRED: Final = "an upload needs a Content-Length header (the file's size)"
WATCH_RETRY: Final = 5.0
"""Seconds before the upload watcher tries again after an error."""

_STATUS: Final = {
    "parse_error": 400,
    "invalid_request": 400,
    "invalid_params": 400,
    "invalid_id": 400,
    "unauthorized": 401,
    "not_found": 404,
    "not_friend": 409,
    "ambiguous": 409,
    "blocked": 409,
    "self": 409,
    "invalid_state": 409,
    "too_large": 413,
    "disk_full": 507,
}
"""HTTP status of an API error (the body always carries the JSON-RPC error object)."""


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.to_json()}, status_code=_STATUS.get(exc.name, 500))


def unauthorized(status: int, message: str) -> JSONResponse:
    body = {"code": guard.UNAUTHORIZED_CODE, "message": message, "data": {"name": "unauthorized"}}
    return JSONResponse({"error": body}, status_code=status)


class Connections:
    """The HTTP connections a :class:`WebServer` has accepted, so that it can cap them and
    end them all at shutdown: Hypercorn writes with ``send_all`` in a shielded cancel scope,
    so a client that stops reading would otherwise hold the daemon's exit forever."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.streams: set[trio.SocketStream] = set()
        self.closing = False

    def admit(self, stream: trio.SocketStream) -> bool:
        if self.closing or len(self.streams) >= self.limit:
            return False
        self.streams.add(stream)
        return True

    def shutdown_all(self) -> None:
        """``shutdown(SHUT_RDWR)`` every connection: blocked writes fail at once (EPIPE)."""
        self.closing = True
        for stream in list(self.streams):
            with contextlib.suppress(OSError, AttributeError):
                stream.socket.shutdown(socket.SHUT_RDWR)


class TrackedConfig(HypercornConfig):
    """Hypercorn's config plus the :class:`Connections` its connections register in."""

    connections: Connections | None = None


class TrackedTCPServer(hypercorn.trio.tcp_server.TCPServer):
    """Hypercorn's connection handler, registering each connection in its config's
    :class:`Connections` (refusing it beyond the cap); with another config, unchanged."""

    async def run(self) -> None:
        connections = getattr(self.config, "connections", None)
        if not isinstance(connections, Connections):
            await super().run()
            return
        stream = cast("trio.SocketStream", self.stream)
        if not connections.admit(stream):
            with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.aclose()
            return
        try:
            await super().run()
        finally:
            connections.streams.discard(stream)

    async def protocol_send(self, event: Any) -> None:
        await super().protocol_send(event)
        self._last_sent = trio.current_time()

    async def _read_data(self) -> None:
        # Hypercorn's read timeout also fires while a long response (a big download) is being
        # sent to a client that has nothing to say: here a connection times out only when
        # nothing moved either way for READ_TIMEOUT.
        connections = getattr(self.config, "connections", None)
        if not isinstance(connections, Connections):
            await super()._read_data()
            return
        while True:
            data: bytes | None = None
            try:
                with trio.move_on_after(READ_TIMEOUT):
                    data = bytes(await self.stream.receive_some(MAX_RECV))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            if data is None:
                quiet = trio.current_time() - getattr(self, "_last_sent", 0.0)
                if self.send_lock.locked() or quiet < READ_TIMEOUT:
                    continue
                break
            await self.protocol.handle(RawData(data))
            if data == b"":
                break
        await self.protocol.handle(Closed())

    async def _close(self) -> None:
        # A closed connection's task may linger (Hypercorn's keep-alive timer); it no longer
        # counts against the cap.
        try:
            await super()._close()
        finally:
            connections = getattr(self.config, "connections", None)
            if isinstance(connections, Connections):
                connections.streams.discard(cast("trio.SocketStream", self.stream))


# hypercorn.trio.run.worker_serve makes one TCPServer per accepted connection by this name.
hypercorn.trio.run.TCPServer = TrackedTCPServer  # type: ignore[attr-defined]


class WebSocketLink:
    """A :class:`daemon.control.Link` over a WebSocket: one JSON object per message."""

    kind = "web"

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.closed = False
        self.close_code = 1000

    async def receive(self) -> bytes | str | None:
        if self.closed:
            return None
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            self.closed = True
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        data = message.get("bytes")
        return bytes(data) if data is not None else b""

    async def send_text(self, text: str) -> None:
        if self.closed:
            raise trio.ClosedResourceError("the WebSocket is closed")
        try:
            await self.websocket.send_text(text)
        except (RuntimeError, OSError, WebSocketDisconnect) as exc:
            self.closed = True
            raise trio.BrokenResourceError("the WebSocket is gone") from exc

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await self.websocket.close(self.close_code)


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page, held in memory: the package's files do not change while the
    daemon runs, and serving bytes skips a stat and an open per request on the trio thread."""

    body: bytes
    media_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, media_type: str) -> Asset:
        """``body`` with an ETag made from its bytes."""
        return cls(body, media_type, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')


MAX_ASSETS_BYTES: Final = 16 * 1024 * 1024


def load_assets(root: Path) -> dict[str, Asset]:
    """Every regular file under ``root`` by its relative path (symlinks never followed, so
    nothing outside the package is served); empty when the directory is missing."""
    assets: dict[str, Asset] = {}
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in sorted(names):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            body = path.read_bytes()
            total += len(body)
            if total > MAX_ASSETS_BYTES:
                raise ValueError(f"the web app's files in {root} exceed {MAX_ASSETS_BYTES} bytes")
            assets[path.relative_to(root).as_posix()] = Asset.of(body, guard.content_type(name))
    return assets


def asset_response(asset: Asset | None, request: Request) -> Response:
    if asset is None:
        return PlainTextResponse("not found", 404)
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


class Guard:
    """ASGI middleware: refuse what :func:`guard.check_request` refuses, before any route
    (and before reading a body), and add the security headers to every response."""

    def __init__(self, app: ASGIApp, web: WebServer) -> None:
        self.app = app
        self.web = web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])

        def values(name: bytes) -> list[str]:
            return [v.decode("latin-1") for k, v in raw if k.lower() == name]

        path: str = scope.get("path", "")
        websocket = scope["type"] == "websocket"
        refusal = guard.check_request(
            method=None if websocket else str(scope.get("method", "")),
            path=path,
            hosts=values(b"host"),
            origins=values(b"origin"),
            cookies=values(b"cookie"),
            allowed=self.web.allowed,
            expected_cookie=self.web.cookie,
            cookie_name=self.web.cookie_name,
        )
        extra = guard.response_headers(path)

        async def send_secured(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = list(message.get("headers") or [])
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        if refusal is None:
            await self.app(scope, receive, send_secured)
            return
        if refusal.name:
            response: Response = unauthorized(refusal.status, refusal.message)
        else:
            response = PlainTextResponse(refusal.message, status_code=refusal.status)
        if not websocket:
            await response(scope, receive, send_secured)
        elif "websocket.http.response" in (scope.get("extensions") or {}):
            await send_secured(
                {
                    "type": "websocket.http.response.start",
                    "status": response.status_code,
                    "headers": response.raw_headers,
                }
            )
            await send_secured({"type": "websocket.http.response.body", "body": response.body})
        else:
            await send({"type": "websocket.close", "code": 1008})


async def _no_route(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods: a JSON error under /api/, like every other API answer."""
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    if not request.url.path.startswith("/api/"):
        return PlainTextResponse("Not Found" if status == 404 else "Method Not Allowed", status)
    if status == 404:
        return error_response(ApiError("not_found", "no such API path"))
    return JSONResponse(
        {"error": ApiError("invalid_request", "method not allowed here").to_json()}, status
    )


def _url_host(host: str) -> str:
    """How the app's URL names the listen host (a wildcard by its loopback address)."""
    if host in ("localhost", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _regular_file(path: str) -> os.stat_result | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _qr_svg(text: str) -> bytes:
    import segno  # loaded when a page first asks for a QR code, not in every idle daemon

    out = io.BytesIO()
    segno.make_qr(text, error="m").save(
        out, kind="svg", scale=4, border=4, light="#fff", xmldecl=False, omitsize=True
    )
    return out.getvalue()


class WebServer:
    """The web app of one daemon; serve it with ``nursery.start(web.serve)``."""

    def __init__(self, control: ControlServer, home: Path, config: Config) -> None:
        self.control = control
        self.home = home
        self.config = config
        self.token_path = home / WEB_TOKEN_FILE
        self.uploads = Uploads(home / WEB_UPLOADS_DIR)
        self.token = ""
        self.cookie = guard.session_cookie(token.new_token())  # matches nothing until loaded
        self.allowed: frozenset[guard.Authority] = frozenset()
        self.port = 0
        self.cookie_name = guard.cookie_name(0)  # set to the bound port's before serving
        self.connections = Connections(MAX_HTTP_CONNECTIONS)
        self._websockets = 0
        """WebSockets accepted or being accepted (counted before the accept is awaited)."""
        self._qr: tuple[str, Asset] | None = None
        """The friend code last drawn, and its QR code as SVG."""
        self._url: str | None = None
        self._error = ""
        self._ready = trio.Event()
        self._sessions: dict[Session, WebSocketLink] = {}
        self._rotating = trio.Lock()
        self.assets: dict[str, Asset] = {}
        self.app = Guard(
            Starlette(
                routes=[
                    Route("/", self._index, methods=["GET"]),
                    Route("/static/{path:path}", self._asset, methods=["GET", "HEAD"]),
                    Route("/api/login", self._login, methods=["POST"]),
                    Route("/api/session", self._session, methods=["GET"]),
                    WebSocketRoute("/api/ws", self._websocket),
                    Route("/api/files", self._upload, methods=["POST"]),
                    Route("/api/files/{id}/download", self._download, methods=["GET"]),
                    Route("/api/friend-code.svg", self._friend_code, methods=["GET"]),
                ],
                exception_handlers={404: _no_route, 405: _no_route},
            ),
            self,
        )

    # --- the control API's view (daemon.control.WebFront) --------------------------------

    async def info(self) -> dict[str, Any]:
        with trio.move_on_after(READY_TIMEOUT):
            await self._ready.wait()
        if self._url is None:
            info: dict[str, Any] = {"enabled": False, "url": None, "login_url": None}
            if self._error:
                info["error"] = self._error
            return info
        return {"enabled": True, "url": self._url, "login_url": f"{self._url}#token={self.token}"}

    async def url(self) -> str | None:
        with trio.move_on_after(READY_TIMEOUT):
            await self._ready.wait()
        return self._url

    async def new_token(self, caller: Session) -> dict[str, Any]:
        """A new token and cookie; every open WebSocket is closed (``caller``'s once it has
        its reply)."""
        async with self._rotating:
            self.token = await token.rotate(self.token_path)
            self.cookie = guard.session_cookie(self.token)
        for session, link in list(self._sessions.items()):
            link.close_code = CLOSE_ROTATED
            if session is caller:
                session.end_after_reply()
            else:
                session.end()
        log.info("web app token rotated; %d web session(s) closed", len(self._sessions))
        return await self.info()

    # --- lifecycle ---------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self.assets = await trio.to_thread.run_sync(load_assets, STATIC_DIR)
            self.token = await token.load(self.token_path)
            self.cookie = guard.session_cookie(self.token)
            sock, host = await self._listen()
        except (OSError, ValueError) as exc:
            self._error = f"the web app could not start: {exc}"
            log.error("%s", self._error)
            self._ready.set()
            task_status.started()
            return
        port = sock.getsockname()[1]
        self.port = port
        self.cookie_name = guard.cookie_name(port)
        hc = TrackedConfig()
        hc.connections = self.connections
        hc.read_timeout = int(READ_TIMEOUT)  # other configs; ours: TrackedTCPServer._read_data
        hc.bind = [f"fd://{sock.detach()}"]
        hc.accesslog = None
        http_log = logging.getLogger("daemon.web.http")
        http_log.setLevel(logging.WARNING)  # not hypercorn's "Running on …" lines
        hc.errorlog = http_log
        hc.include_server_header = False
        hc.websocket_max_message_size = MAX_LINE_BYTES
        hc.graceful_timeout = 1.0
        hc.websocket_ping_interval = PING_INTERVAL
        # A wildcard listen address adds no name: the Host must still be a loopback one.
        extra = () if host in ("localhost", "0.0.0.0", "::") else (host,)
        self.allowed = guard.allowed_authorities(port, extra)
        async with trio.open_nursery() as nursery:
            try:
                nursery.start_soon(self._watch_uploads)
                # Starlette's and Hypercorn's ASGI type hints differ; the protocol is the same.
                app = cast("ASGIFramework", self.app)
                await nursery.start(partial(hypercorn.trio.serve, app, hc, mode="asgi"))
                self._url = f"http://{_url_host(host)}:{port}/"
                self._ready.set()
                log.info("web app on %s (open it with: p2pchat web --open)", self._url)
                task_status.started()
                await trio.sleep_forever()
            finally:
                # Before the nursery waits for its connections: a write blocked on a client
                # that stopped reading is shielded from cancellation, not from this.
                self.connections.shutdown_all()

    async def _listen(self) -> tuple[socket.socket, str]:
        """Bind ``web_listen``; a pinned port that is taken now falls back to a free one.
        The port bound is written back to the config (kept across restarts)."""
        parsed = parse_web_listen(self.config.web_listen)
        if parsed is None:
            raise ValueError(f"invalid web_listen {self.config.web_listen!r}")
        host, port = parsed
        bind_host = "127.0.0.1" if host == "localhost" else host
        try:
            sock = _bind(bind_host, port)
        except OSError as exc:
            if port == 0:
                raise
            log.warning("web_listen port %d is not available (%s); using a free one", port, exc)
            sock = _bind(bind_host, 0)
        if host not in ("localhost", "127.0.0.1", "::1"):
            log.warning("the web app listens on %s: reachable from other machines", host)
        bound = sock.getsockname()[1]
        pinned = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        if pinned != self.config.web_listen:
            self.config.web_listen = pinned
            try:
                await trio.to_thread.run_sync(save_config, self.home, self.config)
            except BaseException:
                sock.close()
                raise
            log.info("pinned web_listen in config: %s", pinned)
        return sock, host

    async def _watch_uploads(self) -> None:
        """Delete staged uploads whose transfer ended; a sweep first catches those that
        ended while nobody watched (daemon down, or the bus dropped us)."""
        while True:
            try:
                events = self.control.node.events.subscribe()
                transfers = await Session.detached(self.control, "web").invoke("files.list", {})
                await self.uploads.sweep(transfers["transfers"])
                await self.uploads.watch(events)
                log.warning("the upload watcher fell behind the events; sweeping again")
            except Exception:
                # Staged copies are only disk space: never let them take the daemon down.
                log.exception("the upload watcher failed; retrying in %g s", WATCH_RETRY)
                await trio.sleep(WATCH_RETRY)

    # --- routes ----------------------------------------------------------------------------

    async def _index(self, request: Request) -> Response:
        index = self.assets.get("index.html")
        if index is None:
            return PlainTextResponse("the web app's files are missing: reinstall p2pchat", 404)
        return asset_response(index, request)

    async def _asset(self, request: Request) -> Response:
        return asset_response(self.assets.get(request.path_params["path"]), request)

    async def _login(self, request: Request) -> Response:
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_LOGIN_BYTES:
                    return error_response(ApiError("invalid_request", "the login is too long"))
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return error_response(ApiError("parse_error", 'the login must be {"token": "..."}'))
        given = doc.get("token") if isinstance(doc, dict) else None
        if not guard.token_ok(given, self.token):
            return unauthorized(403, guard.WRONG_TOKEN_MESSAGE)
        cookie = guard.set_cookie_header(self.token, self.port)
        return Response(status_code=204, headers={"set-cookie": cookie})

    async def _session(self, request: Request) -> Response:
        return JSONResponse({"peer_id": self.control.node.peer_id})

    async def _websocket(self, websocket: WebSocket) -> None:
        if self._websockets >= MAX_WEB_SESSIONS:
            # Accepted, then closed with "try again later": the page can tell why (a refused
            # upgrade is only an opaque error to it).
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await websocket.accept()
                await websocket.close(CLOSE_FULL)
            return
        self._websockets += 1  # before any await: simultaneous upgrades cannot pass the cap
        try:
            await websocket.accept()
            link = WebSocketLink(websocket)
            session = Session(self.control, link)
            self._sessions[session] = link
            try:
                cookies = websocket.headers.getlist("cookie")
                if not guard.cookie_ok(cookies, self.cookie, self.cookie_name):
                    # The token was rotated while this upgrade was being accepted.
                    link.close_code = CLOSE_ROTATED
                    session.end()
                await session.run()
            finally:
                del self._sessions[session]
                await link.aclose()
        finally:
            self._websockets -= 1

    async def _upload(self, request: Request) -> Response:
        """Stream the body to a staged file, then offer it with ``files.send``."""
        try:
            friend = request.query_params.get("friend")
            if not friend:
                raise ApiError("invalid_params", "missing parameter 'friend'")
            name = guard.upload_name(request.query_params.get("name"))
            if name is None:
                raise ApiError("invalid_params", "missing parameter 'name' (the file's name)")
            # Refuse before reading a byte what files.send would refuse after.
            self.control.chat.roster.resolve_friend(friend, "files can only go to accepted friends")
            # The announced size is checked against (and reserved on) the disk before a byte
            # is read; without one the upload could not be accounted for.
            length = request.headers.get("content-length", "")
            if not (length.isascii() and length.isdigit()):
                return JSONResponse(
                    {"error": ApiError("invalid_request", LENGTH_REQUIRED).to_json()}, 411
                )
            if int(length) > wire.MAX_FILE_SIZE:
                raise ApiError("too_large", f"the file exceeds {wire.MAX_FILE_SIZE} bytes")
            path = await self.uploads.stage(request.stream(), name, wire.MAX_FILE_SIZE, int(length))
            try:
                result = await Session.detached(self.control, "web").invoke(
                    "files.send", {"friend": friend, "path": str(path)}
                )
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self.uploads.discard(path.parent)
                raise
            finally:
                self.uploads.release(path)
        except ApiError as exc:
            return error_response(exc)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody reads it
        return JSONResponse(result)

    async def _download(self, request: Request) -> Response:
        tid = str(request.path_params.get("id", ""))
        missing = ApiError("not_found", "no received file has this transfer ID")
        if not guard.is_transfer_id(tid):
            return error_response(missing)
        listed = await Session.detached(self.control, "web").invoke("files.list", {})
        found = [t for t in listed["transfers"] if t.get("id") == tid]
        if not found or found[0].get("direction") != "in" or found[0].get("state") != "completed":
            return error_response(missing)
        path = found[0].get("path")
        st = await trio.to_thread.run_sync(_regular_file, path) if isinstance(path, str) else None
        if st is None or not isinstance(path, str):
            return error_response(ApiError("not_found", "the received file is no longer there"))
        return FileResponse(
            path,
            stat_result=st,
            media_type="application/octet-stream",
            headers={
                "content-disposition": guard.content_disposition(Path(path).name),
                "x-content-type-options": "nosniff",
            },
        )

    async def _friend_code(self, request: Request) -> Response:
        identity = await Session.detached(self.control, "web").invoke("identity.get", {})
        code = str(identity["friend_code"])
        # Drawn once per code: making the QR takes ~11 ms of Python (the GIL held even in a
        # worker thread; ~100 ms as a loading page saw it), which every page load would
        # otherwise take from the daemon.
        if self._qr is None or self._qr[0] != code:
            body = await trio.to_thread.run_sync(_qr_svg, code)
            self._qr = (code, Asset.of(body, "image/svg+xml"))
        return asset_response(self._qr[1], request)
