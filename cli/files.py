"""File-transfer commands: ``send-file``, ``transfers``, ``accept-file``, ``decline-file``,
``cancel-file``. Live views (``send-file --wait``, ``transfers --watch``) follow the event
stream on a subscribed connection opened *before* acting, so no event is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from p2pchat.api import ApiError, Client

from .live import EventClient
from .output import err, out, print_json, print_json_line, short_id, table

FINISHED = ("completed", "declined", "cancelled", "failed")
BAR_WIDTH = 24


def fmt_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def fmt_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or seconds > 99 * 3600:
        return "--:--"
    total = int(seconds + 0.5)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_line(name: str, done: int, size: int, rate: float | None) -> str:
    """``[#####.......]  42%  118.3 MiB/s  ETA 0:03  name``: one line, for a bar or a log."""
    fraction = 1.0 if size == 0 else min(1.0, done / size)
    filled = int(fraction * BAR_WIDTH)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    speed = f"{fmt_size(rate)}/s" if rate else "-- /s"
    eta = fmt_eta((size - done) / rate if rate else None)
    return f"[{bar}] {fraction * 100:5.1f}%  {speed:>12}  ETA {eta}  {name}"


class ProgressView:
    """Redraws one line on a terminal; elsewhere prints a line at most every few seconds."""

    def __init__(self, interval: float = 2.0) -> None:
        self.tty = sys.stderr.isatty()
        self.interval = interval
        self._last = 0.0
        self._width = 0

    def show(self, line: str, *, force: bool = False) -> None:
        if self.tty:
            pad = max(0, self._width - len(line))
            sys.stderr.write("\r" + line + " " * pad)
            sys.stderr.flush()
            self._width = len(line)
            return
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            err(line)

    def done(self) -> None:
        if self.tty and self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._width = 0


def _names(client: Client) -> dict[str, str]:
    contacts = client.call("friends.list").get("contacts") or []
    return {
        str(c.get("peer_id")): str(c.get("display_name") or c.get("name") or "") or "?"
        for c in contacts
    }


def _finished_text(t: Mapping[str, Any]) -> str:
    state = str(t.get("state"))
    name = str(t.get("name"))
    if state == "completed":
        where = f" -> {t['path']}" if t.get("direction") == "in" and t.get("path") else ""
        return f"{name}: completed, {fmt_size(int(t.get('size', 0)))} verified{where}"
    reason = f" ({t['error']})" if t.get("error") else ""
    return f"{name}: {state}{reason}"


def cmd_send_file(home: Path, args: argparse.Namespace) -> int:
    path = os.path.abspath(args.path)
    if not args.wait:
        with Client(home) as client:
            result = client.call("files.send", friend=args.friend, path=path)
        if args.json:
            print_json(result)
        else:
            t = result["transfer"]
            out(t["id"])
            err(
                f"offered {t['name']} ({fmt_size(t['size'])}); it is sent once they accept "
                "(watch it with: p2pchat transfers --watch)"
            )
        return 0
    with EventClient(home, timeout=30) as events, Client(home) as client:
        events.subscribe()
        t = client.call("files.send", friend=args.friend, path=path)["transfer"]
        return _follow(events, client, t, args.timeout, args.json)


def _follow(
    events: EventClient, client: Client, t: dict[str, Any], timeout: float | None, as_json: bool
) -> int:
    tid = t["id"]
    view = ProgressView()
    if not as_json:
        err(f"offered {t['name']} ({fmt_size(t['size'])}); waiting for the friend to accept")
    deadline = None if timeout is None else time.monotonic() + timeout
    state = t
    while state.get("state") not in FINISHED:
        if deadline is not None and time.monotonic() > deadline:
            view.done()
            err(f"error: timed out after {timeout:g}s; the transfer goes on in the background")
            return 1
        try:
            event = events.next_event()
        except ApiError:
            view.done()
            err("error: the daemon went away")
            return 1
        kind = event.get("type")
        if kind == "transfer.progress" and event.get("id") == tid:
            if as_json:
                print_json_line(event)
            else:
                view.show(
                    progress_line(
                        str(t["name"]),
                        int(event.get("bytes", 0)),
                        int(event.get("size", 0)),
                        float(event.get("rate") or 0),
                    )
                )
        elif kind == "transfer.updated" and (event.get("transfer") or {}).get("id") == tid:
            state = event["transfer"]
            if as_json:
                print_json_line(event)
            elif state.get("state") == "active" and not view.tty:
                err(f"{t['name']}: accepted, sending")
    view.done()
    if not as_json:
        line = _finished_text(state)
        (out if state.get("state") == "completed" else err)(line)
    return 0 if state.get("state") == "completed" else 1


def _rows(transfers: list[dict[str, Any]], names: Mapping[str, str]) -> list[list[str]]:
    rows = []
    for t in transfers:
        size = int(t.get("size", 0))
        done = int(t.get("bytes", 0))
        percent = "100%" if size == 0 else f"{min(100.0, 100 * done / size):.0f}%"
        peer = str(t.get("peer_id", ""))
        arrow = "->" if t.get("direction") == "out" else "<-"
        rows.append(
            [
                str(t.get("id", ""))[:12],
                f"{arrow} {names.get(peer) or short_id(peer)}",
                str(t.get("name", "")),
                fmt_size(size),
                percent,
                str(t.get("data_path") or "-"),
                str(t.get("state", "")) + (f" ({t['error']})" if t.get("error") else ""),
            ]
        )
    return rows


HEADERS = ["ID", "FRIEND", "NAME", "SIZE", "DONE", "VIA", "STATE"]


def cmd_transfers(home: Path, args: argparse.Namespace) -> int:
    if args.watch:
        return _watch(home, args.json)
    with Client(home) as client:
        result = client.call("files.list")
        if args.json:
            print_json(result)
            return 0
        names = _names(client)
    transfers = result.get("transfers") or []
    if not transfers:
        out("no transfers")
        return 0
    for line in table(HEADERS, _rows(transfers, names)):
        out(line)
    return 0


def _watch(home: Path, as_json: bool) -> int:
    """Print each change as it happens, until Ctrl-C."""
    with EventClient(home, timeout=30) as events, Client(home) as client:
        events.subscribe()
        known = {t["id"]: t for t in client.call("files.list").get("transfers") or []}
        names = _names(client)
        if not as_json:
            active = [t for t in known.values() if t.get("state") not in FINISHED]
            lines = table(HEADERS, _rows(active, names)) if active else ["no active transfers"]
            for line in lines:
                out(line)
        last_print: dict[str, float] = {}
        while True:
            try:
                event = events.next_event()
            except ApiError:
                err("the daemon went away")
                return 1
            kind = str(event.get("type", ""))
            if not kind.startswith("transfer."):
                continue
            if as_json:
                print_json_line(event)
                continue
            if kind == "transfer.progress":
                tid = str(event.get("id"))
                now = time.monotonic()
                if now - last_print.get(tid, 0.0) < 1.0:
                    continue
                last_print[tid] = now
                name = str((known.get(tid) or {}).get("name", tid[:12]))
                out(
                    tid[:12]
                    + "  "
                    + progress_line(
                        name,
                        int(event.get("bytes", 0)),
                        int(event.get("size", 0)),
                        float(event.get("rate") or 0),
                    )
                )
            else:
                t = event.get("transfer") or {}
                known[str(t.get("id"))] = t
                if kind == "transfer.offered":
                    peer = str(t.get("peer_id", ""))
                    out(
                        f"{str(t.get('id'))[:12]}  {names.get(peer) or short_id(peer)} offers "
                        f"{t.get('name')} ({fmt_size(int(t.get('size', 0)))}): "
                        f"p2pchat accept-file {str(t.get('id'))[:12]}"
                    )
                else:
                    text = (
                        _finished_text(t)
                        if t.get("state") in FINISHED
                        else f"{t.get('name')}: {t.get('state')}"
                    )
                    out(f"{str(t.get('id'))[:12]}  {text}")


def cmd_file_action(method: str, verb: str) -> Any:
    def handler(home: Path, args: argparse.Namespace) -> int:
        with Client(home) as client:
            result = client.call(method, id=args.id)
        if args.json:
            print_json(result)
        else:
            t = result["transfer"]
            out(f"{verb} {t['name']} [{t['id'][:12]}]: {t['state']}")
        return 0

    return handler
