"""The web app against real daemons, over real sockets: each refusal, the headers, the
JSON-RPC API over a WebSocket, token rotation, uploads to a friend and downloads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from p2pchat.api import MAX_LINE_BYTES, ApiError
from tests.harness import Daemon, befriend, cli, ok, start_all, wait_for
from tests.web.client import Closed, Web, WsClient

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


def next_event(ws: WsClient, kind: str) -> dict[str, object]:
    while True:
        message = ws.recv()
        if message.get("method") == "event" and message["params"]["type"] == kind:
            return dict(message["params"])


def test_refusals_websocket_api_and_token_rotation(make_daemon: Callable[..., Daemon]) -> None:
    a = make_daemon("a")
    web, token = open_web(a)
    port = web.port

    # Not logged in: the shell loads (404 while the page's files are not installed), with
    # every security header; the API refuses.
    shell = web.request("GET", "/")
    assert shell.status in (200, 404)
    assert_secured(shell.headers)
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
        f"p2pchat_session={web.cookie}; HttpOnly; SameSite=Strict; Path=/"
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
    for tid in ("0" * 32, "zz", "..%2F..%2Fetc%2Fpasswd"):
        missing = web.request("GET", f"/api/files/{tid}/download")
        assert missing.status == 404, tid
        assert missing.json()["error"]["data"]["name"] == "not_found"

    # JSON-RPC over the WebSocket answers as the Unix socket does.
    ws = web.ws()
    assert ws.status == 101
    for method in ("identity.get", "friends.list", "requests.list", "files.list", "web.info"):
        assert ws.call(method)["result"] == a.call(method), method
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
    assert ws.recv() == {"jsonrpc": "2.0", "id": 7, "result": a.call("web.info")}
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
    # Rotated from the page itself: the reply arrives, then the socket closes.
    ws = web.ws()
    reply = ws.call("web.new_token")["result"]
    with pytest.raises(Closed):
        ws.recv()
    ws.close()
    token = reply["login_url"].split("#token=")[1]
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
