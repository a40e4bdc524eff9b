"""The web app's security decisions (daemon/web/guard.py), one refusal at a time."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import unquote

import pytest

from daemon.web import guard
from p2pchat.config import parse_web_listen

PORT = 8123
ALLOWED = guard.allowed_authorities(PORT)
TOKEN = "A" * 43
COOKIE = guard.session_cookie(TOKEN)
GOOD_HOST = f"127.0.0.1:{PORT}"
GOOD_ORIGIN = f"http://127.0.0.1:{PORT}"


# --- authorities ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:8123", ("127.0.0.1", 8123)),
        ("LOCALHOST:8123", ("localhost", 8123)),
        ("[::1]:8123", ("[::1]", 8123)),
        ("[::1]", ("[::1]", 80)),
        ("127.0.0.1", ("127.0.0.1", 80)),
        ("example.com:65535", ("example.com", 65535)),
    ],
)
def test_authorities_parse(text: str, parsed: tuple[str, int]) -> None:
    assert guard.parse_authority(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":8123",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:08123",
        "127.0.0.1:65536",
        "127.0.0.1:81a",
        "127.0.0.1:+81",
        "127.0.0.1:8123/",
        "127.0.0.1:8123/path",
        "user@127.0.0.1:8123",
        "127.0.0.1 :8123",
        "127.0.0.1:8123:1",
        "::1:8123",
        "[::1",
        "[::1]8123",
        "[::1]:",
        "[evil.com]:8123",
        "127.0.0.1\x00:8123",
        "bücher.de:8123",
        "127.0.0.1:８１２３",
        "evil.com\\@127.0.0.1:8123",
    ],
)
def test_odd_authorities_are_not_parsed(text: str) -> None:
    assert guard.parse_authority(text) is None


def test_allowed_authorities_are_loopback_on_our_port_plus_the_configured_host() -> None:
    assert {("127.0.0.1", PORT), ("localhost", PORT), ("[::1]", PORT)} == ALLOWED
    extra = guard.allowed_authorities(PORT, ["192.168.1.5", "FE80::1"])
    assert ("192.168.1.5", PORT) in extra and ("[fe80::1]", PORT) in extra


@pytest.mark.parametrize(
    "host", [GOOD_HOST, f"localhost:{PORT}", f"[::1]:{PORT}", "LocalHost:8123"]
)
def test_our_hosts_pass(host: str) -> None:
    assert guard.host_ok([host], ALLOWED)


@pytest.mark.parametrize(
    "hosts",
    [
        [],  # HTTP/1.0 without Host
        ["evil.com"],
        [f"evil.com:{PORT}"],  # DNS rebinding: a foreign name resolving to 127.0.0.1
        ["127.0.0.1"],  # port 80, not ours
        ["127.0.0.1:8124"],
        ["127.0.0.2:8123"],
        [f"localhost.:{PORT}"],
        [f"0.0.0.0:{PORT}"],
        [GOOD_HOST, GOOD_HOST],  # two Host headers: ambiguous
        [GOOD_HOST, "evil.com"],
    ],
)
def test_foreign_hosts_are_refused(hosts: list[str]) -> None:
    assert not guard.host_ok(hosts, ALLOWED)


def test_port_80_is_implied_only_when_we_are_on_80() -> None:
    on_80 = guard.allowed_authorities(80)
    assert guard.host_ok(["127.0.0.1"], on_80) and guard.host_ok(["localhost:80"], on_80)
    assert guard.origin_ok(["http://localhost"], on_80)


@pytest.mark.parametrize(
    "origins",
    [
        [],
        ["null"],
        ["http://evil.com"],
        [f"http://evil.com:{PORT}"],
        [f"https://127.0.0.1:{PORT}"],
        [f"ws://127.0.0.1:{PORT}"],
        [f"http://127.0.0.1:{PORT}/"],
        [f"http://127.0.0.1:{PORT}/path"],
        ["http://127.0.0.1:8124"],
        [f"http://user@127.0.0.1:{PORT}"],
        [f"127.0.0.1:{PORT}"],
        [GOOD_ORIGIN, GOOD_ORIGIN],
        [GOOD_ORIGIN, "http://evil.com"],
        [f"file://127.0.0.1:{PORT}"],
    ],
)
def test_foreign_origins_are_refused(origins: list[str]) -> None:
    assert not guard.origin_ok(origins, ALLOWED)


@pytest.mark.parametrize(
    "origin",
    [GOOD_ORIGIN, f"http://localhost:{PORT}", f"http://[::1]:{PORT}", "HTTP://LOCALHOST:8123"],
)
def test_our_origins_pass(origin: str) -> None:
    assert guard.origin_ok([origin], ALLOWED)


# --- token and cookie --------------------------------------------------------------------------


def test_the_cookie_is_the_hmac_of_the_label_under_the_token() -> None:
    expected = hmac.new(TOKEN.encode(), b"p2pchat web session v1", hashlib.sha256).hexdigest()
    assert expected == COOKIE and TOKEN not in COOKIE
    assert guard.session_cookie("B" * 43) != COOKIE  # a new token ends every session
    assert guard.set_cookie_header(TOKEN, 8123) == (
        f"p2pchat_session_8123={COOKIE}; HttpOnly; SameSite=Strict; Path=/"
    )
    assert guard.cookie_name(8123) == "p2pchat_session_8123"


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ([f"p2pchat_session_8123={COOKIE}"], True),
        ([f"a=1; p2pchat_session_8123={COOKIE}; b=2"], True),
        ([f"a=1;p2pchat_session_8123={COOKIE}"], True),
        (["a=1", f"p2pchat_session_8123={COOKIE}"], True),  # several Cookie headers (HTTP/2)
        (
            [f"p2pchat_session_8123=old; p2pchat_session_8123={COOKIE}"],
            True,
        ),  # another path's cookie
        ([], False),
        (["p2pchat_session_8123="], False),
        ([f"p2pchat_session_8123={COOKIE[:-1]}"], False),
        ([f"p2pchat_session_8123={COOKIE.upper()}"], False),
        ([f"p2pchat_session_8123={COOKIE}x"], False),
        ([f"p2pchat_session_8123x={COOKIE}"], False),
        ([f"xp2pchat_session_8123={COOKIE}"], False),
        ([f"session={COOKIE}"], False),
        ([f"p2pchat_session={COOKIE}"], False),  # the unported name of older versions
        ([f"p2pchat_session_8124={COOKIE}"], False),  # another daemon's port
        ([f"p2pchat_session_812={COOKIE}"], False),
        ([f"p2pchat_session_8123={TOKEN}"], False),  # the token itself is not a cookie
        (["p2pchat_session_8123=\udcff"], False),
        (["garbage without equals"], False),
    ],
)
def test_cookie_check(headers: list[str], ok: bool) -> None:
    assert guard.cookie_ok(headers, COOKIE, "p2pchat_session_8123") is ok


@pytest.mark.parametrize(
    ("given", "ok"),
    [
        (TOKEN, True),
        (TOKEN + "A", False),
        (TOKEN[:-1], False),
        ("", False),
        (None, False),
        (123, False),
        ([TOKEN], False),
        ({"token": TOKEN}, False),
        (TOKEN.lower(), False),
        ("\udcff" * 43, False),
    ],
)
def test_token_check(given: object, ok: bool) -> None:
    assert guard.token_ok(given, TOKEN) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("A" * 43, True),
        ("aZ09-_" * 7 + "x", True),
        ("A" * 42, False),
        ("A" * 44, False),
        ("A" * 42 + "=", False),
        ("A" * 42 + "+", False),
        ("A" * 42 + "/", False),
        ("", False),
    ],
)
def test_token_form(text: str, ok: bool) -> None:
    assert guard.is_token(text) is ok


# --- the whole decision --------------------------------------------------------------------


def check(
    method: str | None,
    path: str,
    *,
    host: str | None = GOOD_HOST,
    origin: str | None = None,
    cookie: str | None = None,
) -> guard.Refusal | None:
    return guard.check_request(
        method=method,
        path=path,
        hosts=[host] if host is not None else [],
        origins=[origin] if origin is not None else [],
        cookies=[f"p2pchat_session_{PORT}={cookie}"] if cookie is not None else [],
        allowed=ALLOWED,
        expected_cookie=COOKIE,
        cookie_name=guard.cookie_name(PORT),
    )


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/vendor/x.js"])
def test_the_shell_and_assets_need_no_session(path: str) -> None:
    assert check("GET", path) is None
    assert check("HEAD", path) is None


@pytest.mark.parametrize(
    "path",
    [
        "/api/session",
        "/api/ws",
        "/api/files",
        "/api/files/" + "0" * 32 + "/download",
        "/api/friend-code.svg",
        "/api/anything-new",
        "/api",
        "/api/",
        "/api/login/x",
        "/static",
        "/index.html",
        "/favicon.ico",
        "/whatever",
    ],
)
def test_everything_else_needs_the_session(path: str) -> None:
    assert check("GET", path) == guard.NO_SESSION
    assert check("GET", path, cookie="0" * 64) == guard.NO_SESSION
    assert check("GET", path, cookie=COOKIE) is None


def test_login_needs_our_origin_but_no_session() -> None:
    assert check("POST", "/api/login", origin=GOOD_ORIGIN) is None
    assert check("POST", "/api/login") == guard.FOREIGN_ORIGIN
    assert check("POST", "/api/login", origin="http://evil.com") == guard.FOREIGN_ORIGIN
    assert check("POST", "/api/login", origin="null") == guard.FOREIGN_ORIGIN


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get", ""])
def test_unsafe_methods_need_our_origin(method: str) -> None:
    assert check(method, "/api/files", cookie=COOKIE) == guard.FOREIGN_ORIGIN
    assert check(method, "/api/files", cookie=COOKIE, origin="http://evil.com") == (
        guard.FOREIGN_ORIGIN
    )
    assert check(method, "/api/files", cookie=COOKIE, origin=GOOD_ORIGIN) is None


def test_a_websocket_upgrade_needs_our_origin_and_the_session() -> None:
    assert check(None, "/api/ws", cookie=COOKIE, origin=GOOD_ORIGIN) is None
    assert check(None, "/api/ws", cookie=COOKIE) == guard.FOREIGN_ORIGIN
    assert check(None, "/api/ws", cookie=COOKIE, origin="http://evil.com") == guard.FOREIGN_ORIGIN
    assert check(None, "/api/ws", origin=GOOD_ORIGIN) == guard.NO_SESSION
    assert check(None, "/api/ws", cookie=COOKIE, origin=GOOD_ORIGIN, host="evil.com") == (
        guard.UNKNOWN_HOST
    )


def test_a_cross_origin_read_is_refused_even_with_get() -> None:
    assert check("GET", "/api/session", cookie=COOKIE, origin="http://evil.com") == (
        guard.FOREIGN_ORIGIN
    )
    assert check("GET", "/api/session", cookie=COOKIE, origin=GOOD_ORIGIN) is None


def test_host_is_checked_first_then_origin_then_session() -> None:
    assert check("POST", "/api/files", host="evil.com") == guard.UNKNOWN_HOST
    assert check("GET", "/", host=None) == guard.UNKNOWN_HOST
    assert check("POST", "/api/files", origin="http://evil.com") == guard.FOREIGN_ORIGIN
    assert check("POST", "/api/files", origin=GOOD_ORIGIN) == guard.NO_SESSION
    assert guard.UNKNOWN_HOST.status == 421 and guard.FOREIGN_ORIGIN.status == 403
    assert guard.NO_SESSION.status == 401 and guard.NO_SESSION.name == "unauthorized"


def test_security_headers() -> None:
    api = dict(guard.response_headers("/api/session"))
    assert api[b"content-security-policy"] == guard.CSP.encode()
    assert api[b"x-content-type-options"] == b"nosniff"
    assert api[b"referrer-policy"] == b"no-referrer"
    assert api[b"x-frame-options"] == b"DENY"
    assert api[b"cache-control"] == b"no-store"
    assert b"cache-control" not in dict(guard.response_headers("/static/app.js"))
    for directive in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"):
        assert directive in guard.CSP
    assert "unsafe" not in guard.CSP and "http" not in guard.CSP  # no inline, no remote


# --- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("photo.jpg", "photo.jpg"),
        ("../../x", "_.._x"),
        ("/etc/passwd", "_etc_passwd"),
        ("..\\..\\boot.ini", "_.._boot.ini"),
        ("..", "file"),
        (".", "file"),
        (".bashrc", "bashrc"),
        ("a\x00b", "a_b"),
        ("a\nb\r.txt", "a_b_.txt"),
        ("CON.txt", "_CON.txt"),
        ("x.p2pchat-part", "x.p2pchat-part_"),
        ("bad\udcff.txt", "bad_.txt"),
        ("über résumé.pdf", "über résumé.pdf"),
        ("   ", None),
        ("", None),
        (None, None),
    ],
)
def test_upload_names_are_made_safe(raw: str | None, name: str | None) -> None:
    assert guard.upload_name(raw) == name


def test_long_upload_names_are_clipped() -> None:
    name = guard.upload_name("é" * 300 + ".txt")
    assert name is not None and name.endswith(".txt") and len(name.encode()) <= 200


@pytest.mark.parametrize(
    "name",
    [
        "plain.txt",
        'quote".txt',
        "semi;colon.txt",
        "new\r\nline: injected",
        "über.pdf",
        "100%.txt",
        "space name.txt",
        "'single'.txt",
        "\udcff.bin",
    ],
)
def test_content_disposition_is_an_attachment_that_cannot_break_the_header(name: str) -> None:
    header = guard.content_disposition(name)
    prefix = "attachment; filename*=UTF-8''"
    assert header.startswith(prefix)
    encoded = header[len(prefix) :]
    assert all(c.isalnum() or c in "%-._~" for c in encoded), encoded
    assert unquote(encoded) == name.encode("utf-8", "replace").decode()


def test_content_disposition_example() -> None:
    assert guard.content_disposition("a b.txt") == "attachment; filename*=UTF-8''a%20b.txt"


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("0123456789abcdef" * 2, True),
        ("0123456789ABCDEF" * 2, False),
        ("0" * 31, False),
        ("0" * 33, False),
        ("g" * 32, False),
        ("../" + "0" * 29, False),
        ("", False),
    ],
)
def test_transfer_ids(text: str, ok: bool) -> None:
    assert guard.is_transfer_id(text) is ok


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("app.js", "text/javascript"),
        ("vendor/preact.mjs", "text/javascript"),
        ("index.html", "text/html"),
        ("style.CSS", "text/css"),
        ("icon.svg", "image/svg+xml"),
        ("LICENSE", "text/plain"),
        ("vendor/LICENSE", "text/plain"),
        (".hidden", "text/plain"),
        ("data.bin", "application/octet-stream"),
        ("x.exe", "application/octet-stream"),
        ("font.woff2", "font/woff2"),
    ],
)
def test_asset_content_types(name: str, ctype: str) -> None:
    assert guard.content_type(name) == ctype


# --- config: web_listen --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
        ("localhost:8080", ("localhost", 8080)),
        ("LOCALHOST:1", ("localhost", 1)),
        ("[::1]:8080", ("::1", 8080)),
        ("[0:0::1]:8080", ("::1", 8080)),
        ("192.168.1.5:80", ("192.168.1.5", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_web_listen_values(text: str, parsed: tuple[str, int]) -> None:
    assert parse_web_listen(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:+1",
        "127.0.0.1:1e3",
        "127.0.0.1:٣",
        "example.com:80",  # a name DNS could point anywhere
        "localhost.:80",
        "::1:80",  # IPv6 needs brackets
        "[127.0.0.1]:80",
        "[fe80::1%eth0]:80",
        "127.0.0.01:80",
        ":80",
        "http://127.0.0.1:80",
    ],
)
def test_bad_web_listen_values(text: str) -> None:
    assert parse_web_listen(text) is None
