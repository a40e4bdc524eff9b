"""The web app against real daemons, over real sockets: each refusal, the headers, the
JSON-RPC API over a WebSocket, token rotation, uploads to a friend and downloads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from daemon.web.server import MAX_WEB_SESSIONS
from p2pchat.api import MAX_LINE_BYTES, ApiError
from tests.harness import Daemon, befriend, cli, ok, start_all, wait_for
from tests.web.client import Closed, Web, WsClient, cookie_name

pytestmark = pytest.mark.daemons

EVIL = "http://evil.example"
CSP_START = "default-src 'none'; script-src 'self';"


def open_web(d: Daemon) -> tuple[Web, str]:
    """The daemon's web app and its current token, from ``web.info``."""
    info = wait_for(lambda: d.call("web.info")["url"] and d.call("web.info"), what="web.info")
    assert info["enabled"] is True
    url, token = info["login_url"].split("#token=")
    assert url == info["url"] and url.startswith("http://127.0.0.1:") and url.endswith("/")
    return Web(int(url.rstrip("/").rsplit(":", 1)[1])), token


def assert_secured(headers: dict[str, str]) -> None:
    assert headers["content-security-policy"].startswith(CSP_START)
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


def raw_http(web: Web, request: str, timeout: float = 10) -> bytes:
    """Send ``request`` as is on a new connection; everything the server sends until it
    closes (the request should say ``Connection: close``)."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def next_event(ws: WsClient, kind: str) -> dict[str, object]:
    while True:
        message = ws.recv()
        if message.get("method") == "event" and message["params"]["type"] == kind:
            return dict(message["params"])


def test_refusals_websocket_api_and_token_rotation(make_daemon: Callable[..., Daemon]) -> None:
    a = make_daemon("a")
    web, token = open_web(a)
    port = web.port

    # Not logged in: the shell and its scripts load, with every security header; the API
    # refuses.
    shell = web.request("GET", "/")
    assert shell.status == 200 and shell.headers["content-type"].startswith("text/html")
    assert_secured(shell.headers)
    script = web.request("GET", "/static/app.js")
    assert script.status == 200 and script.body
    assert script.headers["content-type"].startswith("text/javascript")
    assert_secured(script.headers)
    refused = web.request("GET", "/api/session")
    assert refused.status == 401
    assert refused.json()["error"]["code"] == 1017
    assert refused.json()["error"]["data"]["name"] == "unauthorized"
    assert_secured(refused.headers)
    assert refused.headers["cache-control"] == "no-store"

    # Wrong token; the right token from a foreign page or with no Origin; a foreign Host.
    wrong = web.login("A" * 43)
    assert wrong.status == 403 and "set-cookie" not in wrong.headers
    assert wrong.json()["error"] == {
        "code": 1017,
        "message": "wrong or old token: open the link `p2pchat web` prints",
        "data": {"name": "unauthorized"},
    }
    login = json.dumps({"token": token}).encode()
    for origin in (EVIL, None, "null", f"http://127.0.0.1:{port + 1}"):
        foreign = web.request("POST", "/api/login", login, origin=origin)
        assert (foreign.status, foreign.body) == (403, b"foreign Origin"), origin
        assert "set-cookie" not in foreign.headers
    rebound = web.request("GET", "/", headers={"Host": f"evil.example:{port}"})
    assert (rebound.status, rebound.body) == (421, b"unknown Host")
    assert_secured(rebound.headers)
    assert web.request("POST", "/api/login", b"{", origin="ours").status == 400

    # The right token: a session cookie; the API answers.
    good = web.login(token)
    assert good.status == 204
    assert good.headers["set-cookie"] == (
        f"p2pchat_session_{port}={web.cookie}; HttpOnly; SameSite=Strict; Path=/"
    )
    assert token not in good.headers["set-cookie"]
    session = web.request("GET", "/api/session")
    assert session.status == 200 and session.json() == {"peer_id": a.peer_id}
    assert session.headers["cache-control"] == "no-store"
    assert web.request("GET", "/api/session", headers={"Host": "evil.example"}).status == 421
    assert web.request("GET", "/api/session", origin=EVIL).status == 403  # cross-origin read
    upload = f"/api/files?friend={a.peer_id}&name=x"
    assert web.request("POST", upload, b"data", origin=EVIL).status == 403
    assert web.request("POST", upload, b"data", origin=None).status == 403

    # WebSocket upgrades: foreign Origin, no Origin, no cookie, foreign Host.
    for kwargs, status in (
        ({"origin": EVIL}, 403),
        ({"origin": None}, 403),
        ({"cookie": ""}, 401),
        ({"cookie": "0" * 64}, 401),
        ({"host": f"evil.example:{port}"}, 421),
    ):
        ws = web.ws(**kwargs)
        assert ws.status == status, kwargs
        assert ws.reject_headers["x-content-type-options"] == "nosniff"
        ws.close()

    # The QR code of the friend code; a download that is not there.
    qr = web.request("GET", "/api/friend-code.svg")
    assert qr.status == 200 and qr.headers["content-type"].startswith("image/svg+xml")
    assert qr.body.lstrip().startswith(b"<svg") and b"<script" not in qr.body
    # Drawn once: the same drawing again, and a reload that has it gets 304 and no body.
    again = web.request("GET", "/api/friend-code.svg")
    assert again.body == qr.body and again.headers["etag"] == qr.headers["etag"]
    cached = web.request(
        "GET", "/api/friend-code.svg", headers={"If-None-Match": qr.headers["etag"]}
    )
    assert cached.status == 304 and cached.body == b""
    for tid in ("0" * 32, "zz", "..%2F..%2Fetc%2Fpasswd"):
        missing = web.request("GET", f"/api/files/{tid}/download")
        assert missing.status == 404, tid
        assert missing.json()["error"]["data"]["name"] == "not_found"

    # JSON-RPC over the WebSocket answers as the Unix socket does.
    ws = web.ws()
    assert ws.status == 101
    for method in ("identity.get", "friends.list", "requests.list", "files.list"):
        assert ws.call(method)["result"] == a.call(method), method
    # ... except that the page never gets the token (a stolen cookie must not give it).
    without_token = {**a.call("web.info"), "login_url": None}
    assert ws.call("web.info")["result"] == without_token
    status = ws.call("status")["result"]
    assert status.keys() == a.call("status").keys()
    assert status["web_url"] == f"http://127.0.0.1:{port}/"
    for method, params in (("no.such", {}), ("messages.send", {"friend": "nobody", "text": "x"})):
        reply = ws.call(method, **params)
        with pytest.raises(ApiError) as unix:
            a.call(method, **params)
        assert reply["error"]["code"] == unix.value.code
        assert reply["error"]["data"]["name"] == unix.value.name
    ws.send_text("not json")
    assert ws.recv()["error"]["code"] == -32700
    ws.send_text('{"jsonrpc": "2.0", "id": 7, "method": "web.info"}')
    assert ws.recv() == {"jsonrpc": "2.0", "id": 7, "result": without_token}
    big = web.ws()  # a message over 1 MiB closes that WebSocket ("message too big")
    with contextlib.suppress(OSError):  # the server may hang up before it has all
        big.send_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "x" * MAX_LINE_BYTES}))
    with pytest.raises(Closed) as too_big:
        big.recv()
    assert too_big.value.code == 1009
    big.close()

    # The CLI prints the link, and status shows the address (never the token).
    assert ok(cli(a.home, "web")).strip() == f"http://127.0.0.1:{port}/#token={token}"
    status_text = ok(cli(a.home, "status"))
    assert f"web:              http://127.0.0.1:{port}/" in status_text
    assert token not in status_text

    # A new token: the open WebSocket closes, the old cookie and token stop working.
    rotated = json.loads(ok(cli(a.home, "web", "--new-token", "--json")))
    new_token = rotated["login_url"].split("#token=")[1]
    assert new_token != token and rotated["url"] == f"http://127.0.0.1:{port}/"
    with pytest.raises(Closed) as closed:
        while True:
            ws.recv()
    assert closed.value.code == 4401
    ws.close()
    assert web.request("GET", "/api/session").status == 401
    assert web.ws().status == 401
    assert web.login(token).status == 403
    assert web.login(new_token).status == 204
    # Rotated from the page itself: the reply arrives (without the new token), then the
    # socket closes: log in again.
    ws = web.ws()
    reply = ws.call("web.new_token")["result"]
    assert reply == {"enabled": True, "url": f"http://127.0.0.1:{port}/", "login_url": None}
    with pytest.raises(Closed) as closed:
        ws.recv()
    assert closed.value.code == 4401
    ws.close()
    token = a.call("web.info")["login_url"].split("#token=")[1]
    assert token != new_token
    assert (a.home / "web-token").read_text().strip() == token
    assert (a.home / "web-token").stat().st_mode & 0o777 == 0o600

    # The port is kept in config.json; if it is taken at the next start, another one is
    # used and kept instead; the token survives restarts.
    config = a.home / "config.json"
    assert json.loads(config.read_text())["web_listen"] == f"127.0.0.1:{port}"
    a.stop()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        a.start()
        web2, token2 = open_web(a)
    assert web2.port != port and token2 == token
    assert json.loads(config.read_text())["web_listen"] == f"127.0.0.1:{web2.port}"
    assert web2.login(token).status == 204

    # Turned off: web.info says so, status has no address, the CLI explains.
    a.stop()
    a.configure(web=False)
    a.start()
    assert a.call("web.info") == {"enabled": False, "url": None, "login_url": None}
    assert a.call("status")["web_url"] is None
    result = cli(a.home, "web")
    assert result.returncode == 1 and "off" in result.stderr
    assert "web:              off" in ok(cli(a.home, "status"))


def test_upload_to_a_friend_and_download(make_daemon: Callable[..., Daemon]) -> None:
    a, b = start_all([make_daemon("a", start=False), make_daemon("b", start=False)])
    befriend(a, b)
    web_a, token_a = open_web(a)
    web_b, token_b = open_web(b)
    assert web_a.login(token_a).status == 204 and web_b.login(token_b).status == 204
    ws_b = web_b.ws()
    assert ws_b.call("events.subscribe")["result"] == {"subscribed": True}

    # Upload errors, before anything is stored.
    for query, status, name in (
        (f"friend={b.peer_id}", 400, "invalid_params"),
        (f"friend={b.peer_id}&name=", 400, "invalid_params"),
        ("name=x", 400, "invalid_params"),
        ("friend=nobody&name=x", 404, "not_found"),
    ):
        refused = web_a.request("POST", f"/api/files?{query}", b"data")
        assert refused.status == status, query
        assert refused.json()["error"]["data"]["name"] == name
    # No Content-Length (a chunked body): refused, since its size cannot be reserved.
    chunked = raw_http(
        web_a,
        f"POST /api/files?friend={b.peer_id}&name=x HTTP/1.1\r\nHost: 127.0.0.1:{web_a.port}\r\n"
        f"Origin: {web_a.origin}\r\nCookie: {cookie_name(web_a.port)}={web_a.cookie}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\ndata\r\n0\r\n\r\n",
    )
    head, _, body = chunked.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 411 "), head
    assert json.loads(body)["error"]["data"]["name"] == "invalid_request"
    uploads = a.home / "web-uploads"
    assert not uploads.exists() or not list(uploads.iterdir())

    # A hostile name is staged harmlessly, inside A's staging directory.
    data = os.urandom(3 * 1024 * 1024 + 123)
    sent = web_a.request("POST", f"/api/files?friend=b&name={quote('../../x', safe='')}", data)
    assert sent.status == 200, sent.body
    transfer = sent.json()["transfer"]
    staged = Path(transfer["path"])
    assert staged.parent.parent == uploads and staged.name == "_.._x"
    assert transfer["peer_id"] == b.peer_id and transfer["size"] == len(data)
    assert transfer["state"] == "offering" and transfer["name"] == "_.._x"
    assert staged.read_bytes() == data
    assert not (a.home.parent / "x").exists() and not (a.home / "x").exists()
    assert [t["id"] for t in a.call("files.list")["transfers"]] == [transfer["id"]]

    # B hears of it live over its WebSocket and accepts there; the bytes arrive intact.
    offered = next_event(ws_b, "transfer.offered")
    tid = offered["transfer"]["id"]  # type: ignore[index]
    assert tid == transfer["id"]
    # Nothing to download before it is accepted and complete.
    early = web_b.request("GET", f"/api/files/{tid}/download")
    assert early.status == 404 and early.json()["error"]["data"]["name"] == "not_found"
    assert ws_b.call("files.accept", id=tid)["result"]["transfer"]["state"] == "active"

    def received() -> dict[str, object] | None:
        for t in b.call("files.list")["transfers"]:
            if t["id"] == tid and t["state"] == "completed":
                return dict(t)
        return None

    done = wait_for(received, timeout=30, what="the upload to reach B")
    digest = hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(Path(str(done["path"])).read_bytes()).hexdigest() == digest
    # The staged copy goes once the transfer has ended.
    wait_for(lambda: not staged.parent.exists(), what="A to delete the staged upload")

    # B downloads it from the page: an attachment, never rendered.
    got = web_b.request("GET", f"/api/files/{tid}/download")
    assert got.status == 200 and hashlib.sha256(got.body).hexdigest() == digest
    assert got.headers["content-disposition"] == "attachment; filename*=UTF-8''_.._x"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-type"] == "application/octet-stream"
    assert_secured(got.headers)
    # Not for another's session, and not A's outgoing copy.
    assert web_b.request("GET", f"/api/files/{tid}/download", cookie=False).status == 401
    assert web_a.request("GET", f"/api/files/{tid}/download").status == 404
    ws_b.close()


def test_limits_and_a_client_that_stops_reading(make_daemon: Callable[..., Daemon]) -> None:
    """At most 32 WebSockets (the 33rd is accepted, then closed with 1013 so the page can
    tell why) and 128 HTTP connections; and clients that stop reading their responses
    cannot hold the daemon's shutdown (Hypercorn's writes are shielded from cancellation)."""
    a = make_daemon("a")
    web, token = open_web(a)
    assert web.login(token).status == 204

    # HTTP connections: 128 at once; the next is closed at once, unanswered.
    get = f"GET /static/app.js HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\n\r\n".encode()
    small = get.replace(b"/static/app.js", b"/api/session")
    wait_for(lambda: web.request("GET", "/api/session").status == 200, what="the server")

    held = [socket.create_connection(("127.0.0.1", web.port), timeout=10) for _ in range(140)]
    try:

        def answered(sock: socket.socket) -> bool:
            try:
                sock.sendall(small)
                return sock.recv(64).startswith(b"HTTP/1.1 401")
            except OSError:  # reset
                return False

        answers = [answered(sock) for sock in held]
        assert 100 <= sum(answers) <= 128 and not all(answers)
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: web.request("GET", "/").status == 200, what="connections to come free")

    # Closed connections may count for up to Hypercorn's keep-alive timeout (5 s).
    time.sleep(6)
    sockets = [web.ws() for _ in range(MAX_WEB_SESSIONS)]
    assert [ws.status for ws in sockets] == [101] * MAX_WEB_SESSIONS
    extra = web.ws()
    assert extra.status == 101
    with pytest.raises(Closed) as full:
        extra.recv()
    assert full.value.code == 1013
    extra.close()
    sockets.pop().close()

    def another() -> bool:
        ws = web.ws()
        try:
            return ws.status == 101 and ws.call("web.info")["result"]["enabled"] is True
        except Closed:
            return False
        finally:
            ws.close()

    wait_for(another, what="a WebSocket slot to come free")
    for ws in sockets:
        ws.close()

    # Clients that send request after request and never read a byte of the answers.
    stuck = []
    for _ in range(4):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", web.port))
        sock.sendall(get * 2000)
        stuck.append(sock)
    try:
        time.sleep(1)  # the server is blocked writing to them by now
        started = time.monotonic()
        assert a.stop(timeout=15) == 0
        assert time.monotonic() - started < 10
    finally:
        for sock in stuck:
            sock.close()
