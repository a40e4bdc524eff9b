"""A tiny blocking HTTP and WebSocket client for the web app's tests (http.client, and
wsproto over a plain socket): every header is under the test's control, hostile ones too."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)


def cookie_name(port: int) -> str:
    """The session cookie's name: one per port (browsers share cookies across ports)."""
    return f"p2pchat_session_{port}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Web:
    """The web app of one daemon, at ``http://127.0.0.1:PORT``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self.cookie = ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        headers: dict[str, str] | None = None,
        origin: str | None = "ours",
        cookie: bool = True,
        timeout: float = 30,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            sent = dict(headers or {})
            if origin is not None:
                sent.setdefault("Origin", self.origin if origin == "ours" else origin)
            if cookie and self.cookie:
                sent.setdefault("Cookie", f"{cookie_name(self.port)}={self.cookie}")
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        finally:
            conn.close()

    def login(self, token: str) -> Reply:
        reply = self.request("POST", "/api/login", json.dumps({"token": token}).encode())
        if reply.status == 204:
            cookie = reply.headers["set-cookie"].split(";", 1)[0]
            self.cookie = cookie.split("=", 1)[1]
        return reply

    def ws(self, **kwargs: Any) -> WsClient:
        kwargs.setdefault("origin", self.origin)
        kwargs.setdefault("cookie", self.cookie)
        return WsClient(self.port, **kwargs)


class Closed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"closed with code {code}")
        self.code = code


class WsClient:
    """One WebSocket to ``/api/ws``; ``status`` is 101 once accepted, else the refusal's."""

    def __init__(
        self,
        port: int,
        *,
        origin: str | None,
        cookie: str,
        host: str | None = None,
        timeout: float = 15,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = WSConnection(ConnectionType.CLIENT)
        extra: list[tuple[str, str]] = []
        if origin is not None:
            extra.append(("Origin", origin))
        if cookie:
            extra.append(("Cookie", f"{cookie_name(port)}={cookie}"))
        request = Request(host=host or f"127.0.0.1:{port}", target="/api/ws", extra_headers=extra)
        self.sock.sendall(self.conn.send(request))
        self.status = 0
        self.reject_body = b""
        self.reject_headers: dict[str, str] = {}
        self._pending: list[Any] = []
        self._next_id = 1
        self._eof = False
        done = False
        while not done:
            for event in self._events():
                if isinstance(event, AcceptConnection):
                    self.status, done = 101, True
                elif isinstance(event, RejectConnection):
                    self.status = event.status_code
                    self.reject_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                    done = not event.has_body
                elif isinstance(event, RejectData):
                    self.reject_body += event.data
                    done = event.body_finished
                else:
                    self._pending.append(event)

    def _events(self) -> list[Any]:
        data = self.sock.recv(65536)
        if not data:
            self._eof = True
        self.conn.receive_data(data or None)
        events = list(self.conn.events())
        if not events and self._eof:
            raise Closed(1006)  # the connection ended without a close frame
        return events

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.conn.send(TextMessage(data=text)))

    def recv(self) -> dict[str, Any]:
        """The next message as JSON; raises :class:`Closed` when the server closes."""
        text = ""
        while True:
            while self._pending:
                event = self._pending.pop(0)
                if isinstance(event, TextMessage):
                    text += event.data
                    if event.message_finished:
                        return dict(json.loads(text))
                elif isinstance(event, Ping):
                    # A Close read in the same batch already ended the connection for sending.
                    if self.conn.state == ConnectionState.OPEN:
                        self.sock.sendall(self.conn.send(event.response()))
                elif isinstance(event, CloseConnection):
                    raise Closed(event.code)
            self._pending.extend(self._events())

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a request; return its response (events before it are skipped)."""
        req_id = self._next_id
        self._next_id += 1
        self.send_text(
            json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})
        )
        while True:
            reply = self.recv()
            if reply.get("id") == req_id:
                return reply

    def close(self) -> None:
        self.sock.close()
