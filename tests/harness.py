"""Real ``p2pchatd`` processes for tests: start, stop, kill -9, restart, and talk to them
through the same control API the CLI uses, or through the CLI itself; and the waits that
synchronise a test with them (on something observable, never on a fixed sleep)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import trio

from p2pchat import wire
from p2pchat.api import ApiError, Client, DaemonNotRunning

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (ApiError, OSError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


def assert_stays(
    predicate: Callable[[], object],
    seconds: float,
    interval: float = 0.1,
    what: str = "condition",
) -> None:
    """Check ``predicate`` throughout ``seconds`` (for tests whose point is that nothing
    happens for a while); fail as soon as it is false."""
    deadline = time.monotonic() + seconds
    while True:
        assert predicate(), f"{what} stopped holding"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


class Daemon:
    """One p2pchatd process with its own data directory, listening on 127.0.0.1."""

    def __init__(
        self,
        home: Path,
        name: str = "",
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        self.home = home
        self.prefix = list(prefix or [])
        """Command prefix, e.g. ``ip netns exec NS`` to run the daemon in a namespace."""
        self.name = name or home.name
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, **(env or {})}
        self.env.pop("P2PCHAT_HOME", None)
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = home / "config.json"
        if not config.exists():
            # Loopback only; the daemon pins the OS-chosen port here on first start, so
            # restarts come back on the same address.
            config.write_text(
                json.dumps({"listen": ["/ip4/127.0.0.1/tcp/0"], "name": self.name, "mdns": False})
            )
        self.peer_id = ""

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, *args: str) -> Daemon:
        return self.launch(*args).wait_started()

    def launch(self, *args: str) -> Daemon:
        """Start the process without waiting for it (see :meth:`wait_started`)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.home / "stdout.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "daemon.main", "--home", str(self.home), *args],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        log.close()
        return self

    def wait_started(self) -> Daemon:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                status = self.call("status")
                self.peer_id = status["peer_id"]
                return self
            except DaemonNotRunning:
                time.sleep(0.05)
        raise AssertionError(f"daemon {self.name} did not start:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        try:
            self.call("daemon.shutdown")
        except (ApiError, OSError):
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def restart(self) -> Daemon:
        self.stop()
        return self.start()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout=5)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)

    def configure(self, **fields: Any) -> Daemon:
        """Merge ``fields`` into config.json (read at the next start)."""
        path = self.home / "config.json"
        config = json.loads(path.read_text())
        config.update(fields)
        path.write_text(json.dumps(config))
        return self

    # --- API --------------------------------------------------------------------------

    def bootstrap_addr(self) -> str:
        """This daemon's first address as a ``--bootstrap`` argument."""
        return f"{self.call('identity.get')['addrs'][0]}/p2p/{self.peer_id}"

    def client(self, timeout: float | None = 30.0) -> Client:
        return Client(self.home, timeout=timeout)

    def call(self, method: str, **params: Any) -> Any:
        with self.client() as c:
            return c.call(method, **params)

    def log_text(self) -> str:
        try:
            return (self.home / "p2pchatd.log").read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def code(self) -> str:
        return str(self.call("identity.get")["friend_code"])

    def history(self, friend: str, limit: int = 1000) -> list[dict[str, Any]]:
        return list(self.call("messages.history", friend=friend, limit=limit)["messages"])

    def contact(self, peer_id: str) -> dict[str, Any] | None:
        for c in self.call("friends.list")["contacts"] + self.call("requests.list")["requests"]:
            if c["peer_id"] == peer_id:
                return dict(c)
        return None


START_WAVE: Final = 12
"""Daemons started at once: 28 starting together on 2 cores (each imports ~1.5 s of CPU
worth of modules) left the first beyond ``START_TIMEOUT``; in waves the whole takes as long."""


# --- file transfers, through the API -------------------------------------------------------


def find(d: Daemon, tid: str) -> dict[str, Any] | None:
    for t in d.call("files.list")["transfers"]:
        if t["id"] == tid:
            return dict(t)
    return None


def transfer(d: Daemon, tid: str) -> dict[str, Any]:
    t = find(d, tid)
    assert t is not None, f"{d.name} has no transfer {tid}"
    return t


def wait_state(d: Daemon, tid: str, state: str, timeout: float = 60.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        t = find(d, tid)
        if t is None:
            return None
        if t["state"] in ("failed", "cancelled", "declined") and t["state"] != state:
            raise AssertionError(f"{d.name}: transfer ended {t['state']}: {t['error']}")
        return t if t["state"] == state else None

    return wait_for(check, timeout=timeout, what=f"{d.name}: transfer {tid[:8]} {state}")


def start_all(daemons: list[Daemon], *args: str) -> list[Daemon]:
    """Start several daemons in parallel (``START_WAVE`` at a time), returning when all
    answer."""
    for first in range(0, len(daemons), START_WAVE):
        wave = daemons[first : first + START_WAVE]
        for d in wave:
            d.launch(*args)
        for d in wave:
            d.wait_started()
    return daemons


def befriend(a: Daemon, b: Daemon) -> None:
    """A asks B by friend code, B accepts; returns when both see each other as friends."""
    a.call("friends.add", id=b.code(), name=b.name, message=f"hi from {a.name}")
    wait_for(lambda: b.call("requests.list")["requests"], what=f"{b.name} to get the request")
    b.call("requests.accept", friend=a.peer_id)
    wait_for(
        lambda: (a.contact(b.peer_id) or {}).get("state") == "friend",
        what=f"{a.name} to see the accept",
    )
    wait_for(
        lambda: (b.contact(a.peer_id) or {}).get("state") == "friend",
        what=f"{b.name} to be friends",
    )


def befriend_by_id(a: Daemon, b: Daemon, text: str, timeout: float = 30) -> None:
    """A adds B knowing only its bare ID (no address hint); B accepts; A's message arrives."""
    a.call("friends.add", id=b.peer_id, name=b.name, message="hi")
    wait_for(
        lambda: any(r["peer_id"] == a.peer_id for r in b.call("requests.list")["requests"]),
        timeout=timeout,
        what=f"{b.name} to get {a.name}'s request",
    )
    b.call("requests.accept", friend=a.peer_id)
    wait_for(
        lambda: (a.contact(b.peer_id) or {}).get("state") == "friend",
        timeout=timeout,
        what=f"{a.name} to see the accept",
    )
    send_and_wait(a, b, text, timeout)


def send_and_wait(a: Daemon, b: Daemon, text: str, timeout: float = 15) -> None:
    """A sends B ``text``; returns once B has stored it."""
    a.call("messages.send", friend=b.peer_id, text=text)
    wait_for(
        lambda: any(m["text"] == text for m in b.history(a.peer_id)),
        timeout=timeout,
        what=f"{b.name} to receive {text!r}",
    )


def send_and_wait_delivered(sender: Daemon, friend: str, text: str, timeout: float = 30) -> None:
    """``sender`` sends ``friend`` (anything ``friend`` params take) ``text``; returns once
    the friend's acknowledgement made it ``delivered`` at the sender."""
    sent = sender.call("messages.send", friend=friend, text=text)["message"]["id"]
    wait_for(
        lambda: any(
            m["id"] == sent and m["state"] == "delivered" for m in sender.history(friend, 20)
        ),
        timeout=timeout,
        what=f"{text!r} delivered",
    )


# --- the CLI ----------------------------------------------------------------------------


def cli(
    home: Path,
    *args: str,
    stdin: str | None = None,
    timeout: float = 30,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one ``p2pchat`` command against the daemon of ``home`` and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "--home", str(home), *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The command's stdout, once it is sure that it succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    return result.stdout


def spawn_cli(home: Path, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    """Start a long-running ``p2pchat`` command (``chat``, ``events``, ``--watch``); read
    its output with :class:`OutputLines`."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "--home", str(home), *args],
        cwd=REPO,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class OutputLines:
    """The lines a child process writes to one pipe, collected by a thread as they come, so a
    test can wait for a line that says the process is ready (the CLI flushes every line)."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self._lines: list[str] = []
        self._seen = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_line(self, needle: str, timeout: float = 15.0) -> str:
        """The next line (after the previous match) containing ``needle``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(self._seen, len(self._lines)):
                    if needle in self._lines[i]:
                        self._seen = i + 1
                        return self._lines[i]
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():  # late, or nothing more to come
                    raise AssertionError(f"{needle!r} not in output: {self._lines}")
                self._cond.wait(min(left, 0.1))

    def text(self, timeout: float = 15.0) -> str:
        """Everything, once the process has closed the pipe (it exited)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the process still writes to the pipe"
        with self._cond:
            return "".join(line + "\n" for line in self._lines)


class FakeClock:
    """An injectable clock for sans-IO classes: time moves only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeStream:
    """Enough of a libp2p stream for the message protocol's receiving side: each element of
    ``reads`` is what one read returns (one read = one batch); what we write is decoded."""

    def __init__(self, *reads: list[wire.Frame]) -> None:
        self._data = [b"".join(wire.encode(f) for f in frames) for frames in reads]
        self.written: list[wire.Frame] = []
        self._decoder = wire.FrameDecoder()

    async def read(self, n: int = -1) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._data.pop(0) if self._data else b""

    async def write(self, data: bytes) -> None:
        self.written.extend(self._decoder.feed(data))

    async def close(self) -> None:
        pass

    async def reset(self) -> None:
        pass

    def acked(self) -> list[int]:
        return [
            int.from_bytes(i, "big")
            for f in self.written
            if isinstance(f, wire.Ack)
            for i in f.msg_ids
        ]

    def refused(self) -> str | None:
        codes = [f.code for f in self.written if isinstance(f, wire.Refused)]
        return codes[-1] if codes else None
