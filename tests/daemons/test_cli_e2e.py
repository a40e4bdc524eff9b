"""The CLI against real daemons: what a person types, start to finish."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from p2pchat.chat.friendship import ContactState
from p2pchat.chat.store import ChatStore
from p2pchat.identity import Identity
from p2pchat.storage.schema import open_database
from tests.harness import REPO, Daemon, OutputLines, befriend, cli, ok, spawn_cli, wait_for

pytestmark = pytest.mark.daemons


def test_daemon_lifecycle_through_the_cli(short_tmp: Path) -> None:
    home = short_tmp / "carol"
    # Not running: says so, says how to start it, non-zero exit.
    result = cli(home, "status")
    assert result.returncode == 2
    assert "not running" in result.stderr and "daemon start" in result.stderr

    out = ok(cli(home, "daemon", "start", "--listen", "/ip4/127.0.0.1/tcp/0"))
    assert "12D3KooW" in out
    status = json.loads(ok(cli(home, "status", "--json")))
    assert status["peer_id"].startswith("12D3KooW")
    assert status["at_rest"] == "plain"  # no passphrase: encryption would add nothing
    assert (home.stat().st_mode & 0o777) == 0o700
    for name in ("identity.key", "p2pchat.db", "control.sock"):
        assert ((home / name).stat().st_mode & 0o777) == 0o600, name
    assert ok(cli(home, "daemon", "status")).strip()

    ok(cli(home, "daemon", "stop"))
    assert cli(home, "daemon", "status").returncode == 3
    assert not (home / "control.sock").exists()
    assert not (home / "p2pchatd.pid").exists()


def test_befriend_chat_and_history_through_the_cli(make_daemon: object) -> None:
    alice: Daemon = make_daemon("alice")  # type: ignore[operator]
    bob: Daemon = make_daemon("bob")  # type: ignore[operator]
    code = json.loads(ok(cli(bob.home, "id", "--json")))["friend_code"]

    # A typo in the code is refused and nothing is added.
    typo = code[:-3] + ("a" if code[-3] != "a" else "b") + code[-2:]
    bad = cli(alice.home, "friends", "add", typo)
    assert bad.returncode == 1 and "mistyped" in bad.stderr
    assert json.loads(ok(cli(alice.home, "friends", "list", "--json")))["contacts"] == []

    ok(cli(alice.home, "friends", "add", code, "--name", "bob", "--message", "hi from alice"))
    requests = wait_for(
        lambda: json.loads(ok(cli(bob.home, "requests", "--json")))["requests"],
        what="the request",
    )
    assert requests[0]["request_text"] == "hi from alice"
    ok(cli(bob.home, "friends", "rename", alice.peer_id, "alice"))
    ok(cli(bob.home, "accept", "alice"))
    wait_for(
        lambda: '"friend"' in ok(cli(alice.home, "friends", "list", "--json")), what="friendship"
    )

    ok(cli(alice.home, "send", "bob", "hello", "bob", "--wait", "--timeout", "15"))

    # Interactive chat with a piped stdin: bob's typed lines go out, alice's arrive live.
    chat = spawn_cli(bob.home, "chat", "alice", stdin=True)
    try:
        assert chat.stdin is not None and chat.stderr is not None
        lines = OutputLines(chat.stdout)
        chat.stdin.write("hi alice, typed in chat\n")
        chat.stdin.flush()
        wait_for(
            lambda: any(m["text"] == "hi alice, typed in chat" for m in alice.history("bob")),
            what="chat line at alice",
        )
        ok(cli(alice.home, "send", "bob", "live reply"))
        lines.wait_line("live reply")  # arrived while the chat was open
        chat.stdin.write("/quit\n")
        chat.stdin.close()
        chat.wait(timeout=15)
        errors = chat.stderr.read()
        out = lines.text()
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
    assert chat.returncode == 0, errors
    assert "hello bob" in out  # the history shown on entry
    assert "live reply" in out

    history = ok(cli(alice.home, "history", "bob"))
    for text in ("hello bob", "hi alice, typed in chat", "live reply"):
        assert text in history
    hist = json.loads(ok(cli(alice.home, "history", "bob", "--json")))["messages"]
    assert [m["text"] for m in hist] == ["hello bob", "hi alice, typed in chat", "live reply"]


def test_passphrase_protected_key(short_tmp: Path) -> None:
    home = short_tmp / "dave"
    secret = short_tmp / "pass"
    secret.write_text("correct horse\n")
    ok(cli(home, "init", "--passphrase-file", str(secret)))
    key = json.loads((home / "identity.key").read_text())
    assert "sealed_seed" in key and "seed" not in key
    # A database from before encryption at rest: plain, holding a friend request.
    marker = "plain-request-4b1d"

    async def plain_database() -> None:
        async with open_database(home / "p2pchat.db") as db:
            await ChatStore(db).put_contact(
                Identity.generate().peer_id,
                state=ContactState.INCOMING,
                now=1,
                request_text=marker,
            )

    trio.run(plain_database)
    assert marker.encode() in (home / "p2pchat.db").read_bytes()

    d = Daemon(home, "dave")
    # Without the passphrase the daemon refuses to start, saying why.
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.main", "--home", str(home)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "P2PCHAT_PASSPHRASE"},
    )
    assert proc.returncode != 0
    assert "passphrase" in proc.stderr
    wrong = cli(home, "daemon", "start", env={"P2PCHAT_PASSPHRASE": "wrong"})
    assert wrong.returncode != 0
    try:
        d.env["P2PCHAT_PASSPHRASE"] = "correct horse"
        d.start()
        assert d.peer_id == key["peer_id"]
        # Migrated to an encrypted database, the request kept; nothing readable on disk.
        status = d.call("status")
        assert status["at_rest"] == "encrypted" and status["pending_requests"] == 1
        assert "history at rest:  encrypted" in ok(cli(home, "status"))
        assert (home / "p2pchat.db").read_bytes()[:16] != b"SQLite format 3\x00"
        for name in ("p2pchat.db", "p2pchat.db-wal"):
            if (home / name).exists():
                assert marker.encode() not in (home / name).read_bytes(), name
        assert not (home / "p2pchat.db.encrypting").exists()
    finally:
        d.close()


def test_sigterm_shuts_down_cleanly(make_daemon: object) -> None:
    d: Daemon = make_daemon("erin")  # type: ignore[operator]
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0
    assert not (d.home / "p2pchatd.pid").exists()
    assert not (d.home / "control.sock").exists()
    assert "received SIGTERM, shutting down" in d.log_text()
    assert "p2pchatd stopped" in d.log_text()


def test_control_api_survives_malformed_requests(make_daemon: object) -> None:
    """Bad input on the control socket gets an error reply (or a closed connection for an
    over-long line); the daemon keeps serving every time."""
    import socket as socketlib

    d: Daemon = make_daemon("frank")  # type: ignore[operator]
    cases = [
        (b'{"jsonrpc":"2.0","id":"\\ud800","method":"status"}', "result"),
        (b'{"jsonrpc":"2.0","id":1,"method":"status","params":' + b"[" * 200_000, "parse_error"),
        (b"not json at all", "parse_error"),
        (b"[1, 2, 3]", "invalid_request"),
        (b'{"jsonrpc":"2.0","id":[1],"method":"status"}', "result"),
        (b'{"jsonrpc":"2.0","id":2,"method":"no.such"}', "method_not_found"),
        (
            b'{"jsonrpc":"2.0","id":3,"method":"messages.send","params":{"friend":1}}',
            "invalid_params",
        ),
        (
            b'{"jsonrpc":"2.0","id":4,"method":"friends.add","params":{"id":"x\\u001b[31m"}}',
            "invalid_id",
        ),
    ]
    for line, expected in cases:
        with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as sock:
            sock.settimeout(15)
            sock.connect(str(d.home / "control.sock"))
            sock.sendall(line + b"\n")
            reply = json.loads(sock.makefile("rb").readline())
        if expected == "result":
            assert "result" in reply, (line[:60], reply)
            assert reply["id"] is None or isinstance(reply["id"], str | int)
        else:
            assert reply["error"]["data"]["name"] == expected, (line[:60], reply)
    with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(str(d.home / "control.sock"))
        with contextlib.suppress(OSError):  # the daemon may hang up mid-line
            sock.sendall(b"x" * (2 * 1024 * 1024))
        reply = sock.makefile("rb").readline()
        assert not reply or json.loads(reply)["error"]["data"]["name"] == "invalid_request"
    assert d.proc is not None and d.proc.poll() is None
    assert d.call("status")["peer_id"] == d.peer_id


def test_file_transfer_through_the_cli(make_daemon: object) -> None:
    """send-file --wait shows progress and ends when the friend's daemon verified the file;
    transfers lists both sides; accept-file takes an ID prefix."""
    alice = make_daemon("alice")  # type: ignore[operator]
    bob = make_daemon("bob")  # type: ignore[operator]
    befriend(alice, bob)
    src = alice.home / "holiday photos.tar"
    src.write_bytes(os.urandom(3 << 20))
    watcher = spawn_cli(bob.home, "transfers", "--watch")
    watch_lines = OutputLines(watcher.stdout)
    # It prints the transfers open so far once it is subscribed: from then on it sees all.
    watch_lines.wait_line("no active transfers")
    sender = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "--home",
            str(alice.home),
            "send-file",
            "bob",
            str(src),
            "--wait",
            "--timeout",
            "60",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        listing = wait_for(
            lambda: "holiday photos.tar" in (out := ok(cli(bob.home, "transfers"))) and out,
            what="the offer at bob",
        )
        assert "offered" in listing and "<- alice" in listing
        tid = listing.splitlines()[1].split()[0]
        assert json.loads(ok(cli(bob.home, "status", "--json")))["transfers_active"] == 1
        assert "accepted holiday photos.tar" in ok(cli(bob.home, "accept-file", tid[:6]))
        stdout, stderr = sender.communicate(timeout=60)
    finally:
        if sender.poll() is None:
            sender.kill()
    assert sender.returncode == 0, stderr
    watcher.terminate()
    watcher.wait(timeout=10)
    watched = watch_lines.text()
    assert watcher.stderr is not None
    watcher.stderr.close()
    assert "offers holiday photos.tar" in watched and "accept-file" in watched
    assert "completed" in watched and "verified" in watched
    assert "completed" in stdout and "verified" in stdout
    assert "waiting for the friend to accept" in stderr
    received = bob.home / "incoming" / "holiday photos.tar"
    assert received.read_bytes() == src.read_bytes()
    assert "transfers:        0 open" in ok(cli(bob.home, "status"))
    listed = json.loads(ok(cli(alice.home, "transfers", "--json")))["transfers"]
    assert [t["state"] for t in listed] == ["completed"]
    result = cli(bob.home, "cancel-file", tid)
    assert result.returncode == 1 and "completed" in result.stderr
    result = cli(bob.home, "accept-file", "zz")
    assert result.returncode == 1 and "at least 4" in result.stderr
