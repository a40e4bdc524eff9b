"""``p2pchatd``: the long-running daemon process around a :class:`p2pchat.node.Node`.

It owns the data directory (lock, pid file, log file, key, config, database, control socket),
runs the node, the control API server and the web app (:mod:`daemon.web`, unless the config
turns it off) in one nursery, and shuts down cleanly on SIGTERM, SIGINT or
``daemon.shutdown``.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import logging
import logging.handlers
import os
import queue
import signal
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

import trio

from p2pchat import __version__
from p2pchat.api import socket_path
from p2pchat.config import ConfigError, bootstrap_problem, load_config
from p2pchat.identity import Identity, IdentityError, load_identity, save_identity
from p2pchat.net import lean
from p2pchat.paths import (
    KEY_FILE,
    LOG_FILE,
    PID_FILE,
    ensure_home,
    read_passphrase,
    resolve_home,
)

if TYPE_CHECKING:
    from daemon.web.server import WebServer

log = logging.getLogger("p2pchatd")

EXIT_USAGE = 2
EXIT_ALREADY_RUNNING = 3
STOP_GRACE = 3.0
"""Seconds a stopping daemon gives what must still reach friends (a call's hang-up)."""
EXIT_IDENTITY = 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="p2pchatd", description="p2pchat daemon (runs in the foreground)"
    )
    parser.add_argument("--home", help="data directory (default: $P2PCHAT_HOME or the platform's)")
    parser.add_argument(
        "--listen",
        action="append",
        metavar="MULTIADDR",
        help="listen address, repeatable (default: the config's, initially /ip4/0.0.0.0/tcp/0)",
    )
    parser.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="MULTIADDR",
        help="a daemon to join the network through (/ip4/.../tcp/.../p2p/<ID>), repeatable; "
        "added to the config's 'bootstrap' list for this run",
    )
    parser.add_argument("--passphrase-file", help="file whose first line unlocks the key")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("P2PCHAT_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )
    parser.add_argument("--version", action="version", version=f"p2pchatd {__version__}")
    return parser.parse_args(argv)


def setup_logging(home: Path, level: str) -> logging.handlers.QueueListener:
    """Log to ``<home>/p2pchatd.log`` and stderr from a helper thread: the trio thread only
    enqueues records, so a slow disk never stalls the event loop. Stop the returned listener
    at exit to flush."""
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    file_handler = logging.handlers.RotatingFileHandler(
        home / LOG_FILE, maxBytes=10 * 1024 * 1024, backupCount=3
    )
    file_handler.setFormatter(fmt)
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(fmt)
    listener = logging.handlers.QueueListener(
        queue.SimpleQueue(), file_handler, stderr_handler, respect_handler_level=True
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(listener.queue))
    root.setLevel(level)
    # py-libp2p logs expected network failures at ERROR; keep them out of a user's log
    # unless debugging.
    logging.getLogger("libp2p").setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)
    logging.getLogger("multiaddr").setLevel(logging.WARNING)
    # aiortc and aioice log every ICE check and DTLS step at INFO.
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    listener.start()
    return listener


def _operator_error(exc: BaseException) -> BaseException | None:
    """The first error in ``exc`` (or its exception groups) that an operator can act on,
    so it is logged as one clear line instead of a traceback."""
    from daemon.control import ControlSocketError
    from p2pchat.files.disk import UnsafeDirectory
    from p2pchat.node import ListenError
    from p2pchat.storage.database import DatabaseError

    if isinstance(exc, ListenError | ControlSocketError | DatabaseError | UnsafeDirectory):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _operator_error(inner)
            if found is not None:
                return found
    return None


def lock_home(home: Path) -> IO[str] | None:
    """Hold an exclusive lock on the data directory for the life of the process; None if
    another daemon holds it."""
    lock = open(home / "p2pchatd.lock", "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def load_or_create_identity(home: Path, passphrase: bytes | None) -> Identity:
    key_path = home / KEY_FILE
    if key_path.exists():
        return load_identity(key_path, passphrase)
    identity = Identity.generate()
    save_identity(identity, key_path, passphrase)
    log.info("created a new identity %s in %s", identity.peer_id, key_path)
    return identity


async def run_daemon(
    home: Path, identity: Identity, listen: list[str] | None, bootstrap: list[str]
) -> None:
    from daemon.control import ControlServer
    from p2pchat.node import Node

    config = load_config(home)
    node = Node(identity, home, config, listen_override=listen, extra_bootstrap=bootstrap)
    async with trio.open_nursery() as nursery:

        async def stop() -> None:
            """Say what must still reach friends (a call's hang-up), then stop everything."""
            with trio.move_on_after(STOP_GRACE):
                try:
                    await node.before_stop()
                except Exception as exc:  # stopping must not fail on a goodbye
                    log.warning("before stopping: %s", exc)
            nursery.cancel_scope.cancel()

        def shutdown() -> None:
            # Let the reply to ``daemon.shutdown`` reach the client before everything stops.
            async def stop_soon() -> None:
                await trio.sleep(0.05)
                await stop()

            nursery.start_soon(stop_soon)

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    await stop()
                    return

        nursery.start_soon(watch_signals)
        await nursery.start(node.run)
        server = ControlServer(node, shutdown)
        web: WebServer | None = None
        if config.web:
            from daemon.web.server import WebServer

            # Known to the control server before it accepts anyone: ``status`` and
            # ``web.info`` wait for the web server's address instead of saying it is off.
            web = server.web = WebServer(server, home, config)
        else:
            from daemon.web.off import WebOff

            server.web = WebOff(home)
        await nursery.start(server.serve, socket_path(home))
        log.info("control API on %s", socket_path(home))
        if web is not None:
            await nursery.start(web.serve)
        # Everything built so far (modules, the libp2p host, caches) lives as long as the
        # daemon: move it out of the garbage collector's sight. A full collection then scans
        # only what came later, instead of pausing the event loop for tens of ms (measured:
        # 24 ms for the imports alone) in the middle of a chat or a transfer.
        gc.collect()
        gc.freeze()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before anything imports libp2p: leave out the parts of it the daemon never runs.
    lean.install()
    os.umask(0o077)  # everything the daemon writes is private to the user
    home = ensure_home(resolve_home(args.home))
    log_listener = setup_logging(home, args.log_level)
    try:
        return _run(args, home)
    finally:
        log_listener.stop()


def _run(args: argparse.Namespace, home: Path) -> int:
    lock = lock_home(home)
    if lock is None:
        log.error("another daemon is already running with data directory %s", home)
        return EXIT_ALREADY_RUNNING
    pid_path = home / PID_FILE
    try:
        try:
            passphrase = read_passphrase(args.passphrase_file)
        except OSError as exc:
            log.error("cannot read the passphrase file: %s", exc)
            return EXIT_IDENTITY
        try:
            identity = load_or_create_identity(home, passphrase)
        except IdentityError as exc:
            log.error("%s", exc)
            return EXIT_IDENTITY
        try:
            load_config(home)
        except ConfigError as exc:
            log.error("%s", exc)
            return EXIT_USAGE
        for addr in args.bootstrap:
            problem = bootstrap_problem(addr)
            if problem is not None:
                log.error("--bootstrap: %s", problem)
                return EXIT_USAGE
        pid_path.write_text(f"{os.getpid()}\n")
        log.info("p2pchatd %s starting (pid %d, home %s)", __version__, os.getpid(), home)
        try:
            trio.run(run_daemon, home, identity, args.listen, args.bootstrap)
        except KeyboardInterrupt:
            pass
        except Exception as exc:
            known = _operator_error(exc)
            if known is not None:
                log.error("p2pchatd cannot run: %s", known)
            else:
                log.exception("p2pchatd stopped by an error: %s", exc)
            return 1
        log.info("p2pchatd stopped")
        return 0
    finally:
        try:
            if pid_path.read_text().strip() == str(os.getpid()):
                pid_path.unlink()
        except OSError:
            pass
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
