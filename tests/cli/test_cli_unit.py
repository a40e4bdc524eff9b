"""Fast tests of the ``p2pchat`` CLI that need no real daemon.

The daemon side is played by a tiny in-test JSON-RPC server on the control socket (or, for
``daemon start/stop``, by a fake daemon module run as a subprocess), so these tests pin down
exactly what the CLI sends and how it reports what comes back.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cli import daemonctl
from cli.main import build_parser, main
from p2pchat import paths
from tests.harness import REPO, OutputLines

pytestmark = pytest.mark.timeout(60)


ALICE = "12D3KooWAbcdefghijkLmnopqrstuvwxyzABCDEFGHJKLMNPQRSTU"
MSG_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    monkeypatch.delenv(paths.PASSPHRASE_ENV, raising=False)


@pytest.fixture
def home() -> Iterator[Path]:
    """A short path (Unix socket paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="p2pc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- a fake daemon control server ----------------------------------------------------------


class RpcError(Exception):
    def __init__(self, code: int, name: str, message: str, **data: Any) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message, "data": {"name": name, **data}}


Handler = Callable[[dict[str, Any]], Any]


def _contact(peer_id: str = ALICE, name: str = "alice", **extra: Any) -> dict[str, Any]:
    contact = {
        "peer_id": peer_id,
        "name": name,
        "their_name": "",
        "display_name": name or peer_id[:12],
        "state": "friend",
        "online": False,
        "request_text": "",
        "addrs": [],
        "outbox": 0,
        "created_at": 0,
        "updated_at": 0,
    }
    contact.update(extra)
    return contact


def _message(**extra: Any) -> dict[str, Any]:
    msg = {
        "id": MSG_ID,
        "peer_id": ALICE,
        "direction": "out",
        "seq": 1,
        "text": "hi",
        "state": "pending",
        "sent_at": 1_700_000_000_000,
        "stored_at": 1_700_000_000_000,
        "delivered_at": None,
        "row": 1,
    }
    msg.update(extra)
    return msg


class FakeDaemon:
    """Answers JSON-RPC lines on ``<home>/control.sock`` from per-method handlers."""

    def __init__(self, home: Path, handlers: dict[str, Handler] | None = None) -> None:
        self.handlers: dict[str, Handler] = {
            "status": lambda p: {"peer_id": ALICE, "uptime_s": 5},
            "friends.list": lambda p: {"contacts": [_contact()]},
            "events.subscribe": lambda p: {"subscribed": True},
        }
        self.handlers.update(handlers or {})
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.subscribed = threading.Event()
        """Set when a client subscribes, before the reply leaves."""
        self.subscribe_answered = threading.Event()
        """Set once the reply to ``events.subscribe`` is sent: events pushed from then on
        come after it on that connection."""
        self._subscribers: list[socket.socket] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(os.fspath(home / "control.sock"))
        self._server.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket, obj: dict[str, Any]) -> None:
        with self._lock:
            conn.sendall(json.dumps(obj).encode() + b"\n")

    def _serve(self, conn: socket.socket) -> None:
        try:
            for line in conn.makefile("rb"):
                req = json.loads(line)
                method, params = req["method"], req.get("params") or {}
                self.calls.append((method, params))
                reply: dict[str, Any] = {"jsonrpc": "2.0", "id": req["id"]}
                try:
                    handler = self.handlers.get(method)
                    if handler is None:
                        raise RpcError(-32601, "method_not_found", f"no method {method}")
                    reply["result"] = handler(params)
                except RpcError as exc:
                    reply["error"] = exc.error
                if method == "events.subscribe":
                    # Like the daemon: subscribed before the reply leaves, so a client that
                    # acts on the reply can rely on it.
                    with self._lock:
                        self._subscribers.append(conn)
                    self.subscribed.set()
                self._send(conn, reply)
                if method == "events.subscribe":
                    self.subscribe_answered.set()
        except (OSError, ValueError):
            pass

    def push(self, event: dict[str, Any]) -> None:
        """Send an event notification to every subscribed connection."""
        with self._lock:
            subscribers = list(self._subscribers)
        for conn in subscribers:
            self._send(conn, {"jsonrpc": "2.0", "method": "event", "params": event})

    def drop_connections(self) -> None:
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def close(self) -> None:
        self._server.close()
        self.drop_connections()

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]


@pytest.fixture
def fake(home: Path) -> Iterator[FakeDaemon]:
    server = FakeDaemon(home)
    yield server
    server.close()


def run(home: Path, *argv: str) -> int:
    return main(["--home", str(home), *argv])


# --- argument parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["init", "--passphrase-file", "pw"], {"passphrase_file": "pw"}),
        (["id", "--json"], {"json": True}),
        (
            ["daemon", "start", "--listen", "/ip4/0.0.0.0/tcp/1", "--listen", "/ip6/::/tcp/1"],
            {"listen": ["/ip4/0.0.0.0/tcp/1", "/ip6/::/tcp/1"], "foreground": False},
        ),
        (["daemon", "start", "--foreground"], {"foreground": True, "listen": None}),
        (["daemon", "stop"], {}),
        (["daemon", "status", "--json"], {"json": True}),
        (["status"], {"json": False}),
        (
            ["friends", "add", "p2pchat:abc", "--name", "Bob", "--message", "hi"],
            {"id": "p2pchat:abc", "name": "Bob", "message": "hi"},
        ),
        (["friends", "list", "--json"], {"json": True}),
        (["friends", "remove", "bob"], {"friend": "bob"}),
        (["friends", "block", "bob"], {"friend": "bob"}),
        (["friends", "unblock", "bob"], {"friend": "bob"}),
        (["friends", "rename", "bob", "Robert"], {"friend": "bob", "name": "Robert"}),
        (["requests", "--json"], {"json": True}),
        (["accept", "bob"], {"friend": "bob"}),
        (["decline", "bob"], {"friend": "bob"}),
        (["send", "bob", "hello", "there"], {"friend": "bob", "text": ["hello", "there"]}),
        (
            ["send", "--wait", "--timeout", "2.5", "bob", "-"],
            {"wait": True, "timeout": 2.5, "text": ["-"]},
        ),
        (["history", "bob", "--limit", "5", "--json"], {"limit": 5, "json": True}),
        (["chat", "bob"], {"friend": "bob", "history": 20}),
        (["events", "--json"], {"json": True}),
    ],
)
def test_parser_accepts_every_command(argv: list[str], expected: dict[str, Any]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)
    for key, value in expected.items():
        assert getattr(args, key) == value


def test_home_option_before_or_after_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["--home", "/a", "status"]).home == "/a"
    assert parser.parse_args(["status", "--home", "/b"]).home == "/b"
    assert parser.parse_args(["status"]).home is None


def test_home_from_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.HOME_ENV, str(home / "envhome"))
    assert main(["init"]) == 0
    assert (home / "envhome" / paths.KEY_FILE).exists()


@pytest.mark.parametrize(
    "argv",
    [[], ["friends"], ["daemon"], ["bogus"], ["send", "bob"], ["history", "x", "--limit", "0"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "friends" in capsys.readouterr().out


# --- init and id without a daemon ----------------------------------------------------------


def test_init_creates_private_key_and_refuses_to_overwrite(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = home / "new"
    assert run(target, "init") == 0
    peer_id = capsys.readouterr().out.strip()
    assert peer_id.startswith("12D3KooW")
    key = target / paths.KEY_FILE
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()

    assert run(target, "init") == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == peer_id
    assert "already exists" in captured.err
    assert key.read_bytes() == before


def test_init_with_passphrase_encrypts(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nacl.pwhash

    from p2pchat import identity

    fast = functools.partial(
        identity.save_identity,
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
    )
    monkeypatch.setattr(identity, "save_identity", fast)
    pw = home / "pw"
    pw.write_text("correct horse\n")
    assert run(home, "init", "--passphrase-file", str(pw)) == 0
    peer_id = capsys.readouterr().out.strip()
    assert identity.key_file_is_encrypted(home / paths.KEY_FILE)
    assert identity.load_identity(home / paths.KEY_FILE, b"correct horse").peer_id == peer_id

    # Existing encrypted key: the same passphrase (from the environment) verifies it ...
    monkeypatch.setenv(paths.PASSPHRASE_ENV, "correct horse")
    assert run(home, "init") == 0
    assert capsys.readouterr().out.strip() == peer_id
    # ... a wrong one is an error, and the file is left alone.
    monkeypatch.setenv(paths.PASSPHRASE_ENV, "wrong")
    assert run(home, "init") == 1
    assert "passphrase" in capsys.readouterr().err
    assert identity.key_file_is_encrypted(home / paths.KEY_FILE)
    # Without one, the ID recorded in the file is shown.
    monkeypatch.delenv(paths.PASSPHRASE_ENV)
    assert run(home, "init") == 0
    assert capsys.readouterr().out.strip() == peer_id


def test_id_without_daemon_reads_key_file(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "init") == 0
    peer_id = capsys.readouterr().out.strip()
    assert run(home, "id") == 0
    captured = capsys.readouterr()
    assert peer_id in captured.out
    assert "not running" in captured.err

    assert run(home, "id", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["peer_id"] == peer_id
    assert doc["friend_code"] is None

    # A new invite needs the daemon (it owns the secret): no quiet fallback to the key file.
    assert run(home, "id", "--new-invite") == 2
    assert "not running" in capsys.readouterr().err


def test_id_without_daemon_or_key_exits_2(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "id") == 2
    assert "not running" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["friends", "list"],
        ["friends", "add", ALICE],
        ["send", "alice", "hi"],
        ["history", "alice"],
        ["requests"],
        ["events"],
        ["chat", "alice"],
    ],
)
def test_commands_need_daemon(
    home: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(home, *argv) == 2
    message = capsys.readouterr().err
    assert "not running" in message
    assert "daemon start" in message


def test_daemon_status_and_stop_when_not_running(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(home, "daemon", "status") == 3
    assert "not running" in capsys.readouterr().out
    assert run(home, "daemon", "status", "--json") == 3
    assert json.loads(capsys.readouterr().out)["running"] is False
    assert run(home, "daemon", "stop") == 0
    assert "not running" in capsys.readouterr().out


# --- against the fake control server -------------------------------------------------------


def test_friends_add_sends_method_and_params(
    home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.handlers["friends.add"] = lambda p: {"contact": _contact(state="outgoing")}
    assert run(home, "friends", "add", ALICE, "--name", "alice", "--message", "hello!") == 0
    assert fake.calls[-1] == ("friends.add", {"id": ALICE, "name": "alice", "message": "hello!"})
    assert "request sent" in capsys.readouterr().out

    assert run(home, "friends", "add", "p2pchat:xyz") == 0
    assert fake.calls[-1] == ("friends.add", {"id": "p2pchat:xyz"})


def test_error_response_exits_1_with_message(
    home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(params: dict[str, Any]) -> Any:
        raise RpcError(1001, "invalid_id", "friend code checksum does not match")

    fake.handlers["friends.add"] = refuse
    assert run(home, "friends", "add", "p2pchat:typo") == 1
    captured = capsys.readouterr()
    assert "error: friend code checksum does not match" in captured.err
    assert captured.out == ""


def test_ambiguous_lists_candidates(
    home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    def ambiguous(params: dict[str, Any]) -> Any:
        raise RpcError(1003, "ambiguous", "'12D3' matches 2 contacts", candidates=["P1", "P2"])

    fake.handlers["friends.remove"] = ambiguous
    assert run(home, "friends", "remove", "12D3") == 1
    err = capsys.readouterr().err
    assert "matches 2 contacts" in err
    assert "P1" in err
    assert "P2" in err


@pytest.mark.parametrize(
    ("argv", "method", "params"),
    [
        (["friends", "remove", "alice"], "friends.remove", {"friend": "alice"}),
        (["friends", "block", "alice"], "friends.block", {"friend": "alice"}),
        (["friends", "unblock", "alice"], "friends.unblock", {"friend": "alice"}),
        (["friends", "rename", "alice", "Al"], "friends.rename", {"friend": "alice", "name": "Al"}),
        (["accept", "bob"], "requests.accept", {"friend": "bob"}),
        (["decline", "bob"], "requests.decline", {"friend": "bob"}),
        (
            ["send", "alice", "hello", "world"],
            "messages.send",
            {"friend": "alice", "text": "hello world"},
        ),
        (["history", "alice", "--limit", "3"], "messages.history", {"friend": "alice", "limit": 3}),
        (["requests"], "requests.list", {}),
        (["status"], "status", {}),
        (["id"], "identity.get", {}),
        (["id", "--new-invite"], "invite.rotate", {}),
    ],
)
def test_commands_map_to_methods(
    home: Path, fake: FakeDaemon, argv: list[str], method: str, params: dict[str, Any]
) -> None:
    fake.handlers.update(
        {
            "friends.remove": lambda p: {"peer_id": ALICE},
            "friends.block": lambda p: {"contact": _contact(state="blocked")},
            "friends.unblock": lambda p: {"peer_id": ALICE},
            "friends.rename": lambda p: {"contact": _contact(name=p["name"])},
            "requests.accept": lambda p: {"contact": _contact()},
            "requests.decline": lambda p: {"peer_id": ALICE},
            "requests.list": lambda p: {"requests": [_contact(state="incoming")]},
            "messages.send": lambda p: {"message": _message(text=p["text"])},
            "messages.history": lambda p: {"messages": [_message()]},
            "identity.get": lambda p: {"peer_id": ALICE, "friend_code": "p2pchat:x", "addrs": []},
            "invite.rotate": lambda p: {"peer_id": ALICE, "friend_code": "p2pchat:y", "addrs": []},
        }
    )
    assert run(home, *argv) == 0
    assert (method, params) in fake.calls


def test_block_unknown_id_falls_back_to_id_param(home: Path, fake: FakeDaemon) -> None:
    def block(params: dict[str, Any]) -> Any:
        if "friend" in params:
            raise RpcError(1002, "not_found", "no contact matches")
        return {"contact": _contact(state="blocked")}

    fake.handlers["friends.block"] = block
    assert run(home, "friends", "block", ALICE) == 0
    assert fake.calls[-1] == ("friends.block", {"id": ALICE})


def test_friends_list_table(
    home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.handlers["friends.list"] = lambda p: {
        "contacts": [_contact(online=True, outbox=3), _contact("12D3KooWZz" + "9" * 42, "bob")]
    }
    assert run(home, "friends", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "STATE", "ONLINE", "OUTBOX"]
    assert lines[1].split() == ["alice", ALICE[:16], "friend", "online", "3"]
    assert lines[2].split()[0] == "bob"
    assert lines[2].split()[3] == "offline"

    assert run(home, "friends", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)["contacts"][0]["outbox"] == 3


def test_send_prints_id_and_reads_stdin(
    home: Path,
    fake: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    fake.handlers["messages.send"] = lambda p: {"message": _message(text=p["text"])}
    monkeypatch.setattr(sys, "stdin", io.StringIO("line one\nline two\n"))
    assert run(home, "send", "alice", "-") == 0
    assert capsys.readouterr().out.strip() == MSG_ID
    assert fake.calls[-1] == ("messages.send", {"friend": "alice", "text": "line one\nline two"})


def test_history_format(home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.handlers["messages.history"] = lambda p: {
        "messages": [
            _message(text="sent and delivered", state="delivered"),
            _message(text="still queued"),
            _message(direction="in", state="received", text="hello back"),
        ]
    }
    assert run(home, "history", "alice") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("  me -> ✓ sent and delivered")
    assert lines[1].endswith("  me -> … still queued")
    assert lines[2].endswith("  alice: hello back")
    assert lines[0][:4].isdigit()


def test_send_wait_until_delivered(
    home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    def send(params: dict[str, Any]) -> Any:
        assert fake.subscribed.is_set(), "must subscribe before sending"
        delivered = {"type": "message.delivered", "message": _message(state="delivered")}
        other = {"type": "message.delivered", "message": _message(id="f" * 32)}
        threading.Timer(0.05, fake.push, args=(other,)).start()
        threading.Timer(0.1, fake.push, args=(delivered,)).start()
        return {"message": _message(text=params["text"])}

    fake.handlers["messages.send"] = send
    assert run(home, "send", "--wait", "--timeout", "10", "alice", "hi") == 0
    out = capsys.readouterr().out
    assert MSG_ID in out
    assert "delivered" in out


def test_send_wait_timeout_exits_1(
    home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.handlers["messages.send"] = lambda p: {"message": _message()}
    assert run(home, "send", "--wait", "--timeout", "0.2", "alice", "hi") == 1
    captured = capsys.readouterr()
    assert MSG_ID in captured.out
    assert "queued" in captured.err


def test_events_json_stream(
    home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    def feed() -> None:
        # Pushed before the reply, the event would be skipped by the client's call().
        fake.subscribe_answered.wait(10)
        fake.push({"type": "friend.online", "contact": _contact()})
        # No wait needed: the event is already on its way, and the client reads everything
        # queued on a Unix socket before it sees the end of the stream.
        fake.drop_connections()

    threading.Thread(target=feed, daemon=True).start()
    assert run(home, "events", "--json") == 1  # the stream ended: the daemon went away
    captured = capsys.readouterr()
    first = json.loads(captured.out.splitlines()[0])
    assert first["type"] == "friend.online"
    assert "closed the connection" in captured.err


# --- chat in a subprocess (a real pipe on stdin) -------------------------------------------


def _spawn_cli(home: Path, *argv: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "--home", str(home), *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def test_chat_prints_history_and_live_messages_and_sends_lines(
    home: Path, fake: FakeDaemon
) -> None:
    fake.handlers["messages.history"] = lambda p: {
        "messages": [_message(direction="in", state="received", text="earlier message")]
    }
    fake.handlers["messages.send"] = lambda p: {"message": _message(text=p["text"])}
    proc = _spawn_cli(home, "chat", "alice")
    assert proc.stdin is not None
    try:
        lines = OutputLines(proc.stdout)
        lines.wait_line("alice: earlier message")
        assert fake.subscribed.wait(10)
        # An incoming message is shown while the chat waits for input.
        fake.push(
            {
                "type": "message.received",
                "message": _message(id="e" * 32, direction="in", text="live one"),
                "contact": _contact(),
            }
        )
        lines.wait_line("alice: live one")
        fake.push({"type": "friend.online", "contact": _contact(online=True)})
        lines.wait_line("alice is online")
        proc.stdin.write("first line\n\n/help\nsecond line\n")
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    sent = [p["text"] for m, p in fake.calls if m == "messages.send"]
    assert sent == ["first line", "second line"]
    assert all(p["friend"] == ALICE for m, p in fake.calls if m == "messages.send")


def test_chat_quit_command(home: Path, fake: FakeDaemon) -> None:
    fake.handlers["messages.history"] = lambda p: {"messages": []}
    fake.handlers["messages.send"] = lambda p: {"message": _message(text=p["text"])}
    proc = _spawn_cli(home, "chat", "alice")
    assert proc.stdin is not None
    try:
        proc.stdin.write("one\n/quit\nnever sent\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    assert [p["text"] for m, p in fake.calls if m == "messages.send"] == ["one"]


def test_chat_exits_1_when_daemon_goes_away(home: Path, fake: FakeDaemon) -> None:
    fake.handlers["messages.history"] = lambda p: {
        "messages": [_message(direction="in", state="received", text="earlier message")]
    }
    proc = _spawn_cli(home, "chat", "alice")
    try:
        # The history is printed last before the chat follows events and waits for input:
        # from here on, losing the daemon can only be noticed by the chat itself.
        OutputLines(proc.stdout).wait_line("alice: earlier message")
        assert fake.subscribed.is_set()
        assert fake.methods().count("messages.history") == 2  # the name check, then the history
        fake.drop_connections()  # stdin stays open: the chat must notice on its own
        assert proc.wait(timeout=10) == 1
        assert proc.stderr is not None
        assert "lost the connection" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_chat_unknown_friend(
    home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    def history(params: dict[str, Any]) -> Any:
        raise RpcError(1002, "not_found", f"no contact matches {params['friend']!r}")

    fake.handlers["messages.history"] = history
    assert run(home, "chat", "nobody") == 1
    assert "no contact matches 'nobody'" in capsys.readouterr().err


# --- unread counts and marking conversations read ------------------------------------------


def _read(p: dict[str, Any]) -> Any:
    return {"contact": _contact(unread=0)}


def test_friends_list_shows_unread_counts_where_there_are_some(
    home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.handlers["friends.list"] = lambda p: {
        "contacts": [
            _contact(online=True, unread=3),
            _contact("12D3KooWZz" + "9" * 42, "bob", unread=0),
            _contact("12D3KooWYy" + "8" * 42, "carol"),  # an older daemon: no `unread`
        ]
    }
    assert run(home, "friends", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "STATE", "ONLINE", "OUTBOX"]
    assert lines[1].split() == ["alice", ALICE[:16], "friend", "online", "0", "3", "unread"]
    assert lines[2].split()[-1] == "0" and "unread" not in lines[2]
    assert "unread" not in lines[3]
    assert all(line == line.rstrip() for line in lines)
    assert run(home, "friends", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)["contacts"][0]["unread"] == 3


def test_history_marks_the_conversation_read_first(home: Path, fake: FakeDaemon) -> None:
    def history(p: dict[str, Any]) -> Any:
        assert fake.methods()[-2] == "messages.read", "read before fetching the history"
        return {"messages": [_message(direction="in", state="received")]}

    fake.handlers.update({"messages.history": history, "messages.read": _read})
    assert run(home, "history", "alice") == 0
    assert ("messages.read", {"friend": "alice"}) in fake.calls
    assert run(home, "history", "alice", "--json") == 0
    assert fake.methods().count("messages.read") == 2


def test_history_paging_back_does_not_mark_read(home: Path, fake: FakeDaemon) -> None:
    fake.handlers.update(
        {"messages.history": lambda p: {"messages": [_message()]}, "messages.read": _read}
    )
    assert run(home, "history", "alice", "--before", "10") == 0
    assert "messages.read" not in fake.methods()


def test_history_with_a_daemon_that_has_no_read_marks(
    home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CLI newer than the running daemon: ``messages.read`` is unknown there; the
    history is shown all the same."""
    fake.handlers["messages.history"] = lambda p: {"messages": [_message(text="still here")]}
    assert run(home, "history", "alice") == 0
    assert "still here" in capsys.readouterr().out


def test_history_read_errors_are_the_commands_errors(
    home: Path, fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    def read(p: dict[str, Any]) -> Any:
        raise RpcError(1002, "not_found", f"no contact matches {p['friend']!r}")

    fake.handlers.update({"messages.read": read, "messages.history": read})
    assert run(home, "history", "nobody") == 1
    assert "no contact matches 'nobody'" in capsys.readouterr().err


def test_chat_marks_read_on_opening_and_as_messages_arrive(home: Path, fake: FakeDaemon) -> None:
    read_calls = threading.Semaphore(0)

    def read(p: dict[str, Any]) -> Any:
        read_calls.release()
        return _read(p)

    fake.handlers.update(
        {
            "messages.history": lambda p: {"messages": []},
            "messages.read": read,
            "messages.send": lambda p: {"message": _message(text=p["text"])},
        }
    )
    proc = _spawn_cli(home, "chat", "alice")
    assert proc.stdin is not None
    try:
        lines = OutputLines(proc.stdout)
        assert read_calls.acquire(timeout=10), "opening the chat reads the conversation"
        assert fake.subscribed.is_set(), "subscribed first: nothing arrives unseen"
        assert ("messages.read", {"friend": ALICE}) in fake.calls
        # A message from someone else is not this conversation's.
        fake.push(
            {
                "type": "message.received",
                "message": _message(id="d" * 32, direction="in", peer_id="12D3KooWOther"),
                "contact": _contact("12D3KooWOther", "other"),
            }
        )
        fake.push(
            {
                "type": "message.received",
                "message": _message(id="e" * 32, direction="in", text="live one"),
                "contact": _contact(unread=1),
            }
        )
        lines.wait_line("alice: live one")
        assert read_calls.acquire(timeout=10), "a message shown in the chat is read"
        proc.stdin.write("/quit\n")
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    reads = [p for m, p in fake.calls if m == "messages.read"]
    assert reads == [{"friend": ALICE}, {"friend": ALICE}]


def test_unread_formats() -> None:
    from cli.output import fmt_event, fmt_unread

    assert fmt_unread({"unread": 3}) == "3 unread"
    assert fmt_unread({"unread": 0}) == ""
    assert fmt_unread({}) == ""
    assert fmt_unread({"unread": "junk"}) == ""
    assert fmt_event({"type": "contact.updated", "contact": _contact(unread=0)}, {}) == (
        f"* alice ({ALICE[:16]}): all read"
    )
    assert fmt_event({"type": "contact.updated", "contact": _contact(unread=2)}, {}).endswith(
        ": 2 unread"
    )


# --- daemon start/stop/status with a fake daemon process -----------------------------------

FAKE_DAEMON = textwrap.dedent(
    """
    import argparse, json, os, socket, sys, time

    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--passphrase-file")
    args = parser.parse_args()
    log = open(os.path.join(args.home, "p2pchatd.log"), "a")
    if os.environ.get("FAKE_FAIL"):
        for i in range(30):
            log.write(f"noise {i}\\n")
        log.write("fatal: cannot listen on the address\\n")
        sys.exit(3)
    pid_file = os.path.join(args.home, "p2pchatd.pid")
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    path = os.path.join(args.home, "control.sock")
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    started = time.time()
    while True:
        conn, _ = server.accept()
        for line in conn.makefile("rb"):
            req = json.loads(line)
            result = {"peer_id": "12D3KooWfake", "uptime_s": int(time.time() - started),
                      "argv": sys.argv[1:]}
            conn.sendall(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": result})
                         .encode() + b"\\n")
            if req["method"] == "daemon.shutdown" and not os.environ.get("FAKE_STUBBORN"):
                os.unlink(path)
                os.unlink(pid_file)
                sys.exit(0)
        conn.close()
    """
)


@pytest.fixture
def fake_daemon_module(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    moddir = home / "mod"
    moddir.mkdir()
    (moddir / "fake_p2pchatd.py").write_text(FAKE_DAEMON)
    monkeypatch.setattr(daemonctl, "DAEMON_MODULE", "fake_p2pchatd")
    monkeypatch.setenv("PYTHONPATH", str(moddir))
    data = home / "d"
    yield data
    pid = daemonctl.read_pid(data)
    if pid and daemonctl.pid_alive(pid):
        os.kill(pid, 9)


def test_daemon_start_status_stop(
    fake_daemon_module: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = fake_daemon_module
    assert run(data, "daemon", "start", "--listen", "/ip4/127.0.0.1/tcp/0") == 0
    out = capsys.readouterr().out
    assert "started" in out
    assert "12D3KooWfake" in out
    pid = daemonctl.read_pid(data)
    assert pid is not None
    assert f"pid {pid}" in out
    assert stat.S_IMODE(data.stat().st_mode) == 0o700

    assert run(data, "daemon", "start") == 0
    assert "already running" in capsys.readouterr().out

    assert run(data, "daemon", "status", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["running"] is True
    assert doc["pid"] == pid
    assert doc["status"]["argv"] == ["--home", str(data), "--listen", "/ip4/127.0.0.1/tcp/0"]

    assert run(data, "daemon", "stop") == 0
    assert "stopped" in capsys.readouterr().out
    assert not daemonctl.pid_alive(pid)
    assert run(data, "daemon", "status") == 3


def test_daemon_start_failure_shows_log_tail(
    fake_daemon_module: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "1")
    assert run(fake_daemon_module, "daemon", "start") == 1
    err = capsys.readouterr().err
    assert "exited" in err
    assert "fatal: cannot listen on the address" in err
    assert "noise 29" in err
    assert "noise 5\n" not in err  # only the tail


def test_daemon_stop_falls_back_to_sigterm(
    fake_daemon_module: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_STUBBORN", "1")
    monkeypatch.setattr(daemonctl, "STOP_TIMEOUT_S", 0.3)
    data = fake_daemon_module
    assert run(data, "daemon", "start") == 0
    pid = daemonctl.read_pid(data)
    assert pid is not None
    assert run(data, "daemon", "stop") == 0
    assert "SIGTERM" in capsys.readouterr().err
    assert not daemonctl.pid_alive(pid)


def test_daemon_start_refuses_encrypted_key_without_passphrase(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / paths.KEY_FILE).write_text(json.dumps({"version": 1, "sealed_seed": "x"}))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: no prompt
    assert run(home, "daemon", "start") == 1
    assert "passphrase" in capsys.readouterr().err


# --- file-transfer formatting ---------------------------------------------------------------


def test_file_sizes_and_progress_lines() -> None:
    from cli import files

    assert files.fmt_size(0) == "0 B"
    assert files.fmt_size(1023) == "1023 B"
    assert files.fmt_size(1536) == "1.5 KiB"
    assert files.fmt_size(512 << 20) == "512.0 MiB"
    assert files.fmt_eta(None) == "--:--"
    assert files.fmt_eta(65) == "1:05"
    assert files.fmt_eta(3725) == "1:02:05"
    line = files.progress_line("a.bin", 50, 200, 100.0)
    assert line.startswith("[" + "#" * 6 + "." * 18 + "]")
    assert " 25.0%" in line and "100 B/s" in line and "ETA 0:02" in line and line.endswith("a.bin")
    assert " 100.0%" in files.progress_line("empty", 0, 0, None)
    assert "-- /s" in files.progress_line("x", 0, 10, 0)


def test_transfer_rows_show_direction_progress_and_path() -> None:
    from cli import files

    rows = files._rows(
        [
            {
                "id": "ab" * 16,
                "peer_id": "12D3KooWabc",
                "direction": "in",
                "name": "f.txt",
                "size": 2048,
                "bytes": 1024,
                "state": "active",
                "data_path": "tcp",
                "error": "",
            },
            {
                "id": "cd" * 16,
                "peer_id": "12D3KooWxyz",
                "direction": "out",
                "name": "g",
                "size": 0,
                "bytes": 0,
                "state": "failed",
                "data_path": None,
                "error": "disk full",
            },
        ],
        {"12D3KooWabc": "alice"},
    )
    assert rows[0] == ["abababababab", "<- alice", "f.txt", "2.0 KiB", "50%", "tcp", "active"]
    assert rows[1][1] == "-> 12D3KooWxyz" and rows[1][4] == "100%" and rows[1][5] == "-"
    assert rows[1][6] == "failed (disk full)"
