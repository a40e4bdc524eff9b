"""Commands that follow the daemon's event stream: ``events``, ``chat`` and ``send --wait``;
and marking a conversation read, which ``chat`` and ``history`` do when they open it.

Each uses two connections: one subscribed to events (read by a background thread) and one for
calls, because on a subscribed connection :meth:`Client.call` would drop the events that arrive
before its answer.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import queue
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from p2pchat.api import ApiError, Client

from .output import err, fmt_event, fmt_message, out, print_json, print_json_line


class EventClient(Client):
    """A client that subscribes first and reads events afterwards, as separate steps.

    ``Client.events`` subscribes lazily on the first ``next()``, which blocks until an event
    arrives; callers here must know the subscription is live *before* they act (send a message,
    print history) so that no event falls in between.
    """

    def __enter__(self) -> EventClient:
        return self

    def subscribe(self) -> None:
        self.call("events.subscribe")
        self._sock.settimeout(None)

    def next_event(self) -> dict[str, Any]:
        """Block until the next event; raises ApiError when the daemon goes away."""
        while True:
            obj = self._read()
            params = obj.get("params")
            if obj.get("method") == "event" and isinstance(params, dict):
                return params

    def interrupt(self) -> None:
        """Wake a thread blocked in :meth:`next_event` (it then sees end of stream)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        # Closing the buffered reader waits for its lock, which a thread blocked reading
        # events holds: wake that thread first or close() deadlocks.
        self.interrupt()
        super().close()


_STOP = object()


def _pump(ev: EventClient, sink: queue.Queue[object]) -> None:
    """Thread body: move events into ``sink``; finish with the exception that ended it."""
    try:
        while True:
            sink.put(ev.next_event())
    except (ApiError, OSError, ValueError) as exc:
        sink.put(exc)


def _contact_names(client: Client) -> dict[str, str]:
    contacts = client.call("friends.list").get("contacts", [])
    return {str(c.get("peer_id")): str(c.get("display_name") or c.get("peer_id")) for c in contacts}


def mark_read(client: Client, friend: str) -> None:
    """Tell the daemon the conversation with ``friend`` was seen (``messages.read``: its unread
    count becomes 0). A daemon older than this CLI has no such method: nothing to mark."""
    try:
        client.call("messages.read", friend=friend)
    except ApiError as exc:
        if exc.name != "method_not_found":
            raise


class _ReadMarker:
    """Marks a conversation read from a thread with its own connection, each time the chat
    shows an incoming message; a burst of them becomes one call. A failure only stops the
    marking (losing the daemon is reported by the chat's event follower)."""

    def __init__(self, home: Path, friend: str) -> None:
        self._home = home
        self._friend = friend
        self._lock = threading.Lock()
        self._pending = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="p2pchat-read", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        with self._lock:
            self._pending = True
        self._wake.set()

    def stop(self) -> None:
        """Finish a requested mark (a message shown just before leaving), then end."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        client: Client | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                with self._lock:
                    pending, self._pending = self._pending, False
                if pending:
                    if client is None:
                        client = Client(self._home)
                    mark_read(client, self._friend)
                if self._stop.is_set():
                    return
        except (ApiError, OSError, ValueError):
            return
        finally:
            if client is not None:
                client.close()


# --- events --------------------------------------------------------------------------------


def run_events(home: Path, as_json: bool) -> int:
    """Print every event until Ctrl-C (or the daemon stops: exit 1)."""
    with Client(home) as client:
        names = {} if as_json else _contact_names(client)
    with EventClient(home) as ev:
        ev.subscribe()
        while True:
            event = ev.next_event()
            if as_json:
                print_json_line(event)
                continue
            contact = event.get("contact")
            if isinstance(contact, dict) and contact.get("peer_id"):
                names[str(contact["peer_id"])] = str(
                    contact.get("display_name") or contact["peer_id"]
                )
            out(fmt_event(event, names))


# --- send --wait ---------------------------------------------------------------------------


def send_and_wait(home: Path, friend: str, text: str, timeout: float, as_json: bool) -> int:
    """Send, print the id, then wait for ``message.delivered`` of that id."""
    with EventClient(home) as ev, Client(home) as client:
        ev.subscribe()
        result = client.call("messages.send", friend=friend, text=text)
        message = result["message"]
        msg_id = str(message["id"])
        if not as_json:
            out(msg_id)
        if message.get("state") == "delivered":
            if as_json:
                print_json(result)
            return 0
        events: queue.Queue[object] = queue.Queue()
        threading.Thread(target=_pump, args=(ev, events), daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                item = events.get(timeout=max(0.0, remaining)) if remaining > 0 else None
            except queue.Empty:
                item = None
            if item is None:
                if as_json:
                    print_json(result)
                err(
                    f"error: not delivered within {timeout:g} s; message {msg_id} stays queued "
                    "and will be delivered when the friend is reachable"
                )
                return 1
            if isinstance(item, BaseException):
                if as_json:
                    print_json(result)
                err(f"error: lost the event stream ({item}); the message stays queued")
                return 1
            assert isinstance(item, dict)
            delivered = item.get("message") or {}
            if item.get("type") == "message.delivered" and delivered.get("id") == msg_id:
                if as_json:
                    print_json({"message": delivered})
                else:
                    out("delivered")
                return 0


# --- chat ----------------------------------------------------------------------------------


def _resolve(client: Client, friend: str) -> tuple[str, str]:
    """(peer_id, display name) for ``friend``, following the daemon's naming rules.

    The API has no "resolve" method, so callers first let the daemon validate the name (any
    call taking ``friend`` does) and then look it up in ``friends.list`` here.
    """
    contacts: list[dict[str, Any]] = client.call("friends.list").get("contacts", [])

    def named(c: dict[str, Any]) -> str:
        return str(c.get("display_name") or c.get("peer_id"))

    for c in contacts:
        if c.get("peer_id") == friend:
            return str(c["peer_id"]), named(c)
    folded = friend.casefold()
    by_name = [
        c
        for c in contacts
        if folded
        in (str(c.get("name") or "").casefold(), str(c.get("their_name") or "").casefold())
    ]
    if len(by_name) == 1:
        return str(by_name[0]["peer_id"]), named(by_name[0])
    if len(friend) >= 4 and not by_name:
        by_prefix = [c for c in contacts if str(c.get("peer_id", "")).startswith(friend)]
        if len(by_prefix) == 1:
            return str(by_prefix[0]["peer_id"]), named(by_prefix[0])
        by_name = by_prefix
    if by_name:
        raise ApiError(
            "ambiguous",
            f"{friend!r} matches several contacts",
            {"candidates": [c.get("peer_id") for c in by_name]},
        )
    raise ApiError("not_found", f"no contact matches {friend!r}")


def _input_lines(wake_fd: int) -> Iterator[str]:
    """Lines typed or piped on stdin, ending at EOF or when ``wake_fd`` becomes readable.

    Reads the raw descriptor with select() so that a lost daemon connection can end the
    loop even while waiting for input; falls back to plain iteration when stdin is not a
    real file (e.g. replaced in tests).
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        for line in sys.stdin:
            yield line.rstrip("\r\n")
        return
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffered = ""
    while True:
        ready, _, _ = select.select([fd, wake_fd], [], [])
        if wake_fd in ready:
            return
        data = os.read(fd, 65536)
        if not data:
            buffered += decoder.decode(b"", final=True)
            if buffered:
                yield buffered.rstrip("\r")
            return
        buffered += decoder.decode(data)
        while "\n" in buffered:
            line, buffered = buffered.split("\n", 1)
            yield line.rstrip("\r")


CHAT_HELP = "type a message and press Enter to send; /quit or Ctrl-D to leave"


def send_typed_lines(wake_fd: int, send: Callable[[str], None]) -> int:
    """Send each line typed (or piped) with ``send`` until ``/quit`` or the end of input;
    how many the daemon refused (each is reported). A lost daemon ends it with the error."""
    failures = 0
    for line in _input_lines(wake_fd):
        if line.strip() in ("/quit", "/exit"):
            break
        if line.strip() == "/help":
            err(CHAT_HELP)
            continue
        if not line.strip():
            continue
        try:
            send(line)
        except ApiError as exc:
            if exc.name == "daemon_not_running" or "closed the connection" in exc.message:
                raise
            failures += 1
            err(f"error: {exc.message}")
    return failures


def run_chat(home: Path, friend: str, history: int, receipts: bool) -> int:
    """Interactive conversation: live incoming messages, one sent message per input line."""
    with Client(home) as client, EventClient(home) as ev:
        # Let the daemon validate the name first (not_found / ambiguous come from it).
        client.call("messages.history", friend=friend, limit=1)
        peer_id, name = _resolve(client, friend)
        ev.subscribe()  # before reading history, so nothing falls between the two
        # Opening the conversation reads it. Marked before the history is fetched, so a
        # message can only be marked read once it is on its way here (history or event).
        mark_read(client, peer_id)
        shown: set[str] = set()
        names = {peer_id: name}
        err(f"chatting with {name} ({peer_id}); {CHAT_HELP}")
        if history > 0:
            past = client.call("messages.history", friend=peer_id, limit=history)
            for m in past.get("messages", []):
                shown.add(str(m.get("id")))
                out(fmt_message(m, names))

        sent: dict[str, str] = {}
        lost = threading.Event()
        wake_r, wake_w = os.pipe()

        def follow() -> None:
            try:
                while True:
                    event = ev.next_event()
                    kind = event.get("type")
                    msg = event.get("message") or {}
                    contact = event.get("contact") or {}
                    if kind == "message.received" and msg.get("peer_id") == peer_id:
                        if str(msg.get("id")) not in shown:
                            out(fmt_message(msg, names))
                        marker.request()  # seen here: not unread
                    elif kind == "message.delivered" and msg.get("peer_id") == peer_id:
                        if receipts:
                            text = sent.get(str(msg.get("id")), str(msg.get("text", "")))
                            out(f"  ✓ delivered: {text}")
                    elif kind in ("friend.online", "friend.offline") and (
                        contact.get("peer_id") == peer_id
                    ):
                        state = "online" if kind == "friend.online" else "offline"
                        out(f"* {name} is {state}")
                    elif kind == "friend.removed" and event.get("peer_id") == peer_id:
                        out(f"* {name} removed you as a friend")
            except (ApiError, OSError, ValueError):
                if not stopping.is_set():
                    lost.set()
                    with contextlib.suppress(OSError):
                        os.write(wake_w, b"x")

        stopping = threading.Event()
        marker = _ReadMarker(home, peer_id)
        marker.start()
        follower = threading.Thread(target=follow, name="p2pchat-events", daemon=True)
        follower.start()

        def send(line: str) -> None:
            result = client.call("messages.send", friend=peer_id, text=line)
            sent[str(result["message"]["id"])] = line

        try:
            failures = send_typed_lines(wake_r, send)
        finally:
            stopping.set()
            ev.interrupt()
            follower.join(timeout=2)
            marker.stop()
            os.close(wake_r)
            os.close(wake_w)
        if lost.is_set():
            err("error: lost the connection to the daemon")
            return 1
        return 1 if failures else 0
