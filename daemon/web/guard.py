"""The web app's security decisions as pure functions (no I/O), so each is tested exhaustively.

Every request and WebSocket upgrade passes :func:`check_request` before it reaches a route:
the Host header must name this server (DNS rebinding), a state-changing request or an upgrade
must come from this server's own page (the Origin header: CSRF, cross-site WebSockets), and
everything but the app shell, its assets and the login needs the session cookie, which is
derived from the token. Also here: the headers every response carries, upload file names and
the Content-Disposition of downloads.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple
from urllib.parse import quote

from p2pchat.files import filenames

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; font-src 'self'; "
    "manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
"""On every response, errors and refused WebSocket upgrades included."""
NO_STORE: Final = (b"cache-control", b"no-store")

COOKIE_PREFIX: Final = "p2pchat_session_"
"""The session cookie is ``p2pchat_session_<port>``: browsers scope cookies by host, not by
port, so two daemons on one machine must not overwrite (or be sent) each other's cookie."""
COOKIE_LABEL: Final = b"p2pchat web session v1"
UNAUTHORIZED_CODE: Final = 1017
"""The JSON-RPC-style error code of a refused login or a missing/old session cookie."""

TOKEN_CHARS: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
"""32 bytes as URL-safe base64 without padding."""
SAFE_METHODS: Final = frozenset({"GET", "HEAD"})

LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "[::1]")

Authority = tuple[str, int]
"""A lower-case host (IPv6 in brackets) and a port."""

_HOST_NAME: Final = re.compile(r"^[a-z0-9.-]+$")
_HOST_V6: Final = re.compile(r"^\[[0-9a-f:.]+\]$")
_PORT: Final = re.compile(r"^[1-9][0-9]{0,4}$")


class Refusal(NamedTuple):
    """Why a request is refused: the HTTP status and a short text (``name`` for JSON)."""

    status: int
    message: str
    name: str = ""
    """Set when the refusal is a JSON error object (``unauthorized``), empty for plain text."""


UNKNOWN_HOST: Final = Refusal(421, "unknown Host")
FOREIGN_ORIGIN: Final = Refusal(403, "foreign Origin")
NO_SESSION: Final = Refusal(
    401, "no valid session: open the link `p2pchat web` prints", "unauthorized"
)
WRONG_TOKEN_MESSAGE: Final = "wrong or old token: open the link `p2pchat web` prints"


# --- Host and Origin -----------------------------------------------------------------------


def parse_authority(text: str) -> Authority | None:
    """``(host, port)`` of a Host header or an origin's authority (port 80 when absent), or
    None unless it is a plain ``host[:port]``: no user info, path, spaces or odd bytes."""
    if not text or not text.isascii():
        return None
    text = text.lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[: end + 1], text[end + 1 :]
        if not _HOST_V6.match(host):
            return None
    else:
        host = text.split(":", 1)[0]
        rest = text[len(host) :]
        if not _HOST_NAME.match(host):
            return None
    if not rest:
        return host, 80
    if not rest.startswith(":") or not _PORT.match(rest[1:]):
        return None
    port = int(rest[1:])
    return (host, port) if port <= 65535 else None


def allowed_authorities(port: int, extra_hosts: Iterable[str] = ()) -> frozenset[Authority]:
    """The names this server answers to: loopback on its port, plus ``extra_hosts`` (the
    configured non-loopback listen address; IPv6 without brackets)."""
    hosts = {*LOOPBACK_HOSTS}
    for host in extra_hosts:
        hosts.add(f"[{host.lower()}]" if ":" in host else host.lower())
    return frozenset((host, port) for host in hosts)


def _single(values: Sequence[str]) -> str | None:
    return values[0] if len(values) == 1 else None


def host_ok(values: Sequence[str], allowed: frozenset[Authority]) -> bool:
    """Exactly one Host header, naming this server."""
    value = _single(values)
    return value is not None and parse_authority(value) in allowed


def origin_ok(values: Sequence[str], allowed: frozenset[Authority]) -> bool:
    """Exactly one Origin header, ``http://`` plus an allowed authority (``null`` is not)."""
    value = _single(values)
    if value is None or not value.lower().startswith("http://"):
        return False
    return parse_authority(value[len("http://") :]) in allowed


# --- the token and the session cookie ------------------------------------------------------


def is_token(text: str) -> bool:
    """Whether ``text`` has the form of a token (what the token file must hold)."""
    return bool(TOKEN_CHARS.match(text))


def token_ok(given: object, token: str) -> bool:
    """Whether a login's ``token`` is the current token (constant time)."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())


def session_cookie(token: str) -> str:
    """The cookie value for ``token``: a new token changes it, ending every session, and the
    cookie never reveals the token."""
    return hmac.new(token.encode(), COOKIE_LABEL, hashlib.sha256).hexdigest()


def cookie_name(port: int) -> str:
    """The session cookie's name for the server on ``port``."""
    return f"{COOKIE_PREFIX}{port}"


def set_cookie_header(token: str, port: int) -> str:
    return f"{cookie_name(port)}={session_cookie(token)}; HttpOnly; SameSite=Strict; Path=/"


def cookie_values(headers: Iterable[str], name: str) -> list[str]:
    """Every value of cookie ``name`` in the Cookie headers (a browser may send several)."""
    found: list[str] = []
    for header in headers:
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                found.append(value.strip())
    return found


def cookie_ok(headers: Iterable[str], expected: str, name: str) -> bool:
    """Whether any cookie ``name`` in the Cookie headers is the current one (constant time)."""
    want = expected.encode()
    ok = False
    for value in cookie_values(headers, name):
        ok |= hmac.compare_digest(value.encode("utf-8", "surrogatepass"), want)
    return ok


# --- the decision ----------------------------------------------------------------------------


def needs_session(path: str) -> bool:
    """Everything but the app shell, its assets and the login needs the cookie (deny by
    default: a new route is protected unless listed here)."""
    return not (path == "/" or path.startswith("/static/") or path == "/api/login")


def check_request(
    *,
    method: str | None,
    path: str,
    hosts: Sequence[str],
    origins: Sequence[str],
    cookies: Sequence[str],
    allowed: frozenset[Authority],
    expected_cookie: str,
    cookie_name: str,
) -> Refusal | None:
    """Whether to refuse a request (``method`` None: a WebSocket upgrade), checked in the
    order Host, Origin, session; None lets it through."""
    if not host_ok(hosts, allowed):
        return UNKNOWN_HOST
    if method is None or method not in SAFE_METHODS:
        if not origin_ok(origins, allowed):
            return FOREIGN_ORIGIN
    elif origins and not origin_ok(origins, allowed):
        return FOREIGN_ORIGIN  # a cross-origin read (fetch in cors mode) of our pages
    if needs_session(path) and not cookie_ok(cookies, expected_cookie, cookie_name):
        return NO_SESSION
    return None


def response_headers(path: str) -> list[tuple[bytes, bytes]]:
    """The headers added to every response for ``path``."""
    headers = list(SECURITY_HEADERS)
    if not path.startswith("/static/"):
        headers.append(NO_STORE)  # API answers (and the shell) are never cached
    return headers


# --- files -----------------------------------------------------------------------------------


def upload_name(raw: str | None) -> str | None:
    """The name an uploaded file is staged under: one harmless path component (no
    separators, ``..``, leading dots, control characters; the same rules as for a received
    file); None when there is no name."""
    if raw is None or not raw.strip():
        return None
    text = raw.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become "?"
    name = filenames.sanitize(text)
    if "/" in name or "\x00" in name or name in (".", ".."):  # sanitize rules these out
        return None
    return name


def content_disposition(name: str) -> str:
    """``attachment`` with the name percent-encoded (RFC 6266/8187): the browser saves the
    file instead of rendering it, and no byte of the name can break the header."""
    return "attachment; filename*=UTF-8''" + quote(name, safe="", errors="replace")


def is_transfer_id(text: str) -> bool:
    """A full transfer ID: 32 lower-case hex characters."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


_CONTENT_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".txt": "text/plain",
    ".md": "text/plain",
    ".wasm": "application/wasm",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".wav": "audio/wav",
    ".webm": "video/webm",
    ".mp4": "video/mp4",
}


def content_type(file_name: str) -> str:
    """An asset's Content-Type from a fixed table (never the system's mime.types): with
    ``nosniff`` the browser trusts it, so ``.js`` must be ``text/javascript``. Files without
    an extension (LICENSE) are text; unknown ones are opaque bytes."""
    base = file_name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot <= 0:
        return "text/plain"
    return _CONTENT_TYPES.get(base[dot:].lower(), "application/octet-stream")
