"""Real ``p2pchatd`` processes for tests: start, stop, kill -9, restart, and talk to them
through the same control API the CLI uses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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


def start_all(daemons: list[Daemon], *args: str) -> list[Daemon]:
    """Start several daemons at once (in parallel), returning when all answer."""
    for d in daemons:
        d.launch(*args)
    for d in daemons:
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
