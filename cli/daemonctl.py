"""``p2pchat daemon start|stop|status``: run ``p2pchatd`` in the background and manage it.

The daemon is started as ``python -m daemon.main`` in a new session with its standard streams
on /dev/null (it keeps its own log in ``<home>/p2pchatd.log``); readiness is "the control
socket answers ``status``", so there is no race with the daemon's own start-up.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2pchat import paths
from p2pchat.api import ApiError, Client, DaemonNotRunning

from .output import err, fmt_duration, out, print_json

DAEMON_MODULE = "daemon.main"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
TERM_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 15
_POLL_S = 0.1


def _project_root() -> Path:
    """The directory holding the ``cli``/``daemon`` packages (for running from a checkout)."""
    return Path(__file__).resolve().parent.parent


def daemon_command(
    home: Path, listen: list[str], passphrase_file: str | None, bootstrap: Sequence[str] = ()
) -> list[str]:
    """The argv that runs p2pchatd for ``home`` with this interpreter."""
    cmd = [sys.executable, "-m", DAEMON_MODULE, "--home", os.fspath(home)]
    for addr in listen:
        cmd += ["--listen", addr]
    for addr in bootstrap:
        cmd += ["--bootstrap", addr]
    if passphrase_file:
        cmd += ["--passphrase-file", os.path.abspath(passphrase_file)]
    return cmd


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment, plus the checkout on PYTHONPATH so ``-m daemon.main`` resolves from
    any working directory even when the project is not pip-installed."""
    env = dict(os.environ)
    root = _project_root()
    if (root / "daemon").is_dir():
        parts = [os.fspath(root)]
        if env.get("PYTHONPATH"):
            parts.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(parts)
    env.update(extra)
    return env


def read_pid(home: Path) -> int | None:
    """The pid recorded by the daemon, or None if absent or garbled."""
    try:
        text = (home / paths.PID_FILE).read_text().strip()
    except OSError:
        return None
    try:
        pid = int(text.split()[0]) if text else 0
    except ValueError:
        return None
    return pid if pid > 0 else None


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists (reaping it first if it is our own exited child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _looks_like_daemon(pid: int) -> bool:
    """Best-effort guard against signalling an unrelated process that reused a stale pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"p2pchatd" in cmdline or DAEMON_MODULE.encode() in cmdline


def query_status(home: Path, timeout: float = 5.0) -> dict[str, Any] | None:
    """The daemon's ``status`` result, or None if nothing answers on the control socket."""
    try:
        with Client(home, timeout=timeout) as client:
            result = client.call("status")
    except DaemonNotRunning:
        return None
    return result if isinstance(result, dict) else {}


def _log_tail(log: Path, offset: int, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines the daemon appended to its log since ``offset``."""
    try:
        with log.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(offset if 0 <= offset <= size else 0)
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def key_is_encrypted(home: Path) -> bool:
    """Whether the key file is passphrase-protected (read as JSON: no crypto import needed)."""
    try:
        doc = json.loads((home / paths.KEY_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "sealed_seed" in doc


def cmd_start(
    home: Path,
    listen: list[str],
    passphrase_file: str | None,
    foreground: bool,
    bootstrap: Sequence[str] = (),
) -> int:
    status = query_status(home)
    if status is not None:
        pid = read_pid(home)
        out(f"p2pchatd is already running for {home} (pid {pid or '?'})")
        out(f"ID: {status.get('peer_id', '?')}")
        return 0
    paths.ensure_home(home)
    extra_env: dict[str, str] = {}
    if passphrase_file:
        if not os.path.isfile(passphrase_file):
            err(f"error: passphrase file {passphrase_file} does not exist")
            return 1
    elif key_is_encrypted(home) and not os.environ.get(paths.PASSPHRASE_ENV):
        if not sys.stdin.isatty():
            err(
                "error: the identity key is protected by a passphrase: give "
                f"--passphrase-file FILE or set {paths.PASSPHRASE_ENV}"
            )
            return 1
        extra_env[paths.PASSPHRASE_ENV] = getpass.getpass("passphrase for the identity key: ")
    cmd = daemon_command(home, listen, passphrase_file, bootstrap)
    env = _child_env(extra_env)
    if foreground:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, cmd, env)
    log = home / paths.LOG_FILE
    try:
        log_offset = log.stat().st_size
    except OSError:
        log_offset = 0
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        cwd=os.fspath(home),
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        code = proc.poll()
        if code == 0 and (status := query_status(home, timeout=2.0)) is not None:
            # It handed over to another process (forked itself): the socket is what counts.
            out(f"p2pchatd started (pid {read_pid(home) or '?'}), home {home}")
            out(f"ID: {status.get('peer_id', '?')}")
            return 0
        if code is not None:
            err(f"error: p2pchatd exited during start-up (exit code {code})")
            tail = _log_tail(log, log_offset)
            if tail:
                err(f"last lines of {log}:")
                for line in tail:
                    err(f"  {line}")
            else:
                err(
                    f"it wrote nothing to {log}; run `p2pchat --home {home} daemon start "
                    "--foreground` to see its output"
                )
            return 1
        try:
            with Client(home, timeout=2.0) as client:
                status = client.call("status")
        except (ApiError, OSError, ValueError):
            status = None
        if isinstance(status, dict):
            out(f"p2pchatd started (pid {proc.pid}), home {home}")
            out(f"ID: {status.get('peer_id', '?')}")
            return 0
        if time.monotonic() >= deadline:
            err(
                f"error: p2pchatd (pid {proc.pid}) did not answer on its control socket within "
                f"{START_TIMEOUT_S:g} s; see {log}"
            )
            return 1
        time.sleep(_POLL_S)


def _wait_gone(home: Path, pid: int | None, timeout: float) -> bool:
    """Wait until the daemon process (or, without a pid, its control socket) is gone."""
    deadline = time.monotonic() + timeout
    while True:
        gone = not pid_alive(pid) if pid else query_status(home, timeout=1.0) is None
        if gone:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


def _terminate(pid: int) -> bool:
    """SIGTERM, then SIGKILL: the fallback when a clean shutdown did not finish in time."""
    for sig, wait in ((signal.SIGTERM, TERM_TIMEOUT_S), (signal.SIGKILL, TERM_TIMEOUT_S)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(_POLL_S)
    return not pid_alive(pid)


def _terminate_and_report(pid: int) -> int:
    if _terminate(pid):
        out("p2pchatd stopped")
        return 0
    err(f"error: could not stop p2pchatd (pid {pid})")
    return 1


def cmd_stop(home: Path) -> int:
    pid = read_pid(home)
    try:
        with Client(home, timeout=10.0) as client:
            client.call("daemon.shutdown")
    except DaemonNotRunning:
        if pid and pid_alive(pid) and _looks_like_daemon(pid):
            err(f"p2pchatd (pid {pid}) does not answer on its control socket; terminating it")
            return _terminate_and_report(pid)
        out(f"p2pchatd is not running for {home}")
        return 0
    except ApiError as exc:
        # The daemon may close the connection before answering; what counts is that it exits.
        if "closed the connection" not in exc.message:
            raise
    if _wait_gone(home, pid, STOP_TIMEOUT_S):
        out("p2pchatd stopped")
        return 0
    if pid is None:
        err(f"error: p2pchatd did not stop within {STOP_TIMEOUT_S:g} s and wrote no pid file")
        return 1
    err(f"p2pchatd (pid {pid}) did not stop within {STOP_TIMEOUT_S:g} s; sending SIGTERM")
    return _terminate_and_report(pid)


NOT_RUNNING_EXIT = 3


def cmd_status(home: Path, as_json: bool) -> int:
    status = query_status(home)
    pid = read_pid(home)
    if status is None:
        if as_json:
            print_json({"running": False, "home": os.fspath(home)})
        else:
            out(f"p2pchatd is not running for {home}")
        return NOT_RUNNING_EXIT
    if as_json:
        print_json({"running": True, "pid": pid, "status": status})
        return 0
    out(f"p2pchatd is running (pid {pid or '?'})")
    out(f"ID:      {status.get('peer_id', '?')}")
    out(f"uptime:  {fmt_duration(status.get('uptime_s'))}")
    out(f"home:    {status.get('home') or home}")
    return 0
