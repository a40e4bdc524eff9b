"""Printing helpers and human formats shared by the commands.

Output goes through :func:`out`/:func:`err`, which look ``sys.stdout``/``sys.stderr`` up at call
time (so tests can capture them) and flush every line (so pipes see chat lines immediately).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_lock = threading.Lock()

SHORT_ID_LEN = 16
DELIVERED_MARK = "✓"
PENDING_MARK = "…"


def out(text: str = "") -> None:
    """Print a line to stdout and flush; safe to call from several threads."""
    with _lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def err(text: str) -> None:
    """Print a line to stderr and flush."""
    with _lock:
        sys.stdout.flush()
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def print_json(obj: Any) -> None:
    """Pretty JSON for ``--json`` (one document per command)."""
    out(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True))


def print_json_line(obj: Any) -> None:
    """Compact JSON, one object per line, for streams (``events --json``)."""
    out(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


def setup_stdio() -> None:
    """Line-buffer stdout and never crash on characters the terminal's encoding lacks."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue
        with contextlib.suppress(ValueError, OSError, TypeError):
            reconfigure(line_buffering=True, errors="replace")


def short_id(peer_id: str) -> str:
    """Enough of an ID to recognise it and to use as a unique prefix on the command line."""
    return peer_id[:SHORT_ID_LEN] if len(peer_id) > SHORT_ID_LEN else peer_id


def fmt_time(ms: int | float | None) -> str:
    """Local wall-clock time of a Unix-milliseconds timestamp."""
    if not ms:
        return "????-??-?? ??:??:??"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ms) / 1000.0))


def fmt_duration(seconds: float | int | None) -> str:
    """``1d 02h 03m 04s`` style, dropping leading zero units."""
    if seconds is None:
        return "?"
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m {secs:02d}s"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def contact_label(contact: Mapping[str, Any]) -> str:
    """``alice (12D3KooW…)``: a name people recognise plus an ID prefix they can type."""
    pid = str(contact.get("peer_id", ""))
    name = str(
        contact.get("display_name") or contact.get("name") or contact.get("their_name") or ""
    )
    if not name or name == pid or pid.startswith(name):
        return short_id(pid)
    return f"{name} ({short_id(pid)})"


def contact_name(contact: Mapping[str, Any]) -> str:
    """The display name alone (falling back to a short ID)."""
    pid = str(contact.get("peer_id", ""))
    return str(contact.get("display_name") or contact.get("name") or "") or short_id(pid)


def fmt_unread(contact: Mapping[str, Any]) -> str:
    """``3 unread`` for a contact with unread incoming messages, else empty."""
    try:
        count = int(contact.get("unread") or 0)
    except (TypeError, ValueError):
        return ""
    return f"{count} unread" if count > 0 else ""


def fmt_message(message: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """One history line: ``<time>  me -> ✓ text`` or ``<time>  alice: text``."""
    when = fmt_time(message.get("sent_at") or message.get("stored_at"))
    text = str(message.get("text", ""))
    if message.get("direction") == "out":
        mark = DELIVERED_MARK if message.get("state") == "delivered" else PENDING_MARK
        holders = message.get("holders") or 0
        if message.get("state") == "pending" and isinstance(holders, int) and holders > 0:
            where = "1 holder" if holders == 1 else f"{holders} holders"
            return f"{when}  me -> {mark} {text}  (stored for delivery at {where})"
        return f"{when}  me -> {mark} {text}"
    pid = str(message.get("peer_id", ""))
    return f"{when}  {names.get(pid) or short_id(pid)}: {text}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces (no trailing blanks)."""
    body = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *body]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def fmt_event(event: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """A human line for an event from ``events.subscribe``."""
    kind = str(event.get("type", "?"))
    contact = event.get("contact")
    who = contact_label(contact) if isinstance(contact, Mapping) else ""
    if kind == "message.received":
        msg = event.get("message") or {}
        local = dict(names)
        if isinstance(contact, Mapping):
            local[str(contact.get("peer_id", ""))] = contact_name(contact)
        return fmt_message(msg, local)
    if kind == "message.delivered":
        msg = event.get("message") or {}
        pid = str(msg.get("peer_id", ""))
        to = names.get(pid) or short_id(pid)
        return f"{DELIVERED_MARK} delivered to {to}: {msg.get('text', '')} [{msg.get('id', '')}]"
    if kind == "message.stored":
        msg = event.get("message") or {}
        pid = str(msg.get("peer_id", ""))
        to = names.get(pid) or short_id(pid)
        n = msg.get("holders", 0)
        return f"{PENDING_MARK} stored for delivery to {to} at {n} holder(s): {msg.get('text', '')}"
    if kind == "friend.request":
        text = str(contact.get("request_text", "")) if isinstance(contact, Mapping) else ""
        suffix = f": {text}" if text else ""
        return f"* friend request from {who}{suffix}"
    if kind == "friend.accepted":
        return f"* {who} is now your friend"
    if kind == "friend.removed":
        pid = str(event.get("peer_id", ""))
        return f"* {names.get(pid) or short_id(pid)} removed you as a friend"
    if kind == "friend.online":
        return f"* {who} is online"
    if kind == "friend.offline":
        return f"* {who} is offline"
    if kind == "contact.updated" and isinstance(contact, Mapping):
        return f"* {who}: {fmt_unread(contact) or 'all read'}"
    return f"* {kind}: {json.dumps(dict(event), ensure_ascii=False)}"
