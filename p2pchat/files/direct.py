"""The direct TCP data connection of a session, and the threads its blocking pumps run on.

py-libp2p's stream is too slow for bulk data, so a session's records go over a plain TCP
connection from the sender to a port the receiver opened for it, when one can be made. Anyone
can connect to that port: the receiver takes the first connection whose hello proves it holds
the session key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Final

import outcome
import trio
from libp2p.abc import INetStream
from libp2p.network.stream.net_stream import NetStream

from p2pchat.files import bulk

log = logging.getLogger(__name__)

DIRECT_CONNECT_TIMEOUT: Final = 3.0
HELLO_TIMEOUT: Final = 5.0
MAX_PENDING_DATA_CONNECTIONS: Final = 16
MAX_PUMP_THREADS: Final = 16
BULK_NICENESS: Final = 10
"""How much lower than the rest of the daemon a data pump's thread runs (Unix niceness):
measured, chat p99 during a 512 MiB transfer fell from 69-206 ms to 32 ms with it."""


async def connect_direct(
    stream: INetStream, port: int, stall_timeout: float
) -> socket.socket | None:
    """The sender's connection to the receiver's data ``port``, at the address its libp2p
    stream comes from; None if there is no port or no connection can be made."""
    remote = stream.get_remote_address() if isinstance(stream, NetStream) else None
    if not port or remote is None:
        return None
    host = remote[0]

    def connect() -> socket.socket:
        sock = socket.create_connection((host, port), timeout=DIRECT_CONNECT_TIMEOUT)
        sock.settimeout(stall_timeout)  # a receiver that stops reading ends the session
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    try:
        return await trio.to_thread.run_sync(connect)  # bounded by its timeout
    except OSError as exc:
        log.info("no direct data path to %s:%d (%s); using the libp2p stream", host, port, exc)
        return None


async def accept_direct(
    listener: trio.socket.SocketType, opener: bulk.RecordOpener, stall_timeout: float
) -> socket.socket:
    """Accept the sender's direct connection: the first one whose hello proves it holds the
    session key. Connections are checked concurrently, each within its own time limit, so
    nobody connecting to the port (and saying nothing) can hold the sender's connection up;
    any other connection is closed and ignored."""
    winner: list[tuple[trio.socket.SocketType, bytes]] = []

    async def check(conn: trio.socket.SocketType, done: trio.CancelScope) -> None:
        try:
            with trio.fail_after(HELLO_TIMEOUT):
                header = await _recv_exactly(conn, bulk.HEADER_BYTES)
                length = opener.record_length(header)
                record = await _recv_exactly(conn, length)
            opener.check_hello(record)
        except (bulk.BulkError, ConnectionError, OSError, trio.TooSlowError) as exc:
            log.info("ignored a connection to the data port: %s", exc)
            conn.close()
            return
        if winner:
            conn.close()
            return
        winner.append((conn, record))
        done.cancel()

    with trio.fail_after(HELLO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            pending = trio.CapacityLimiter(MAX_PENDING_DATA_CONNECTIONS)
            while True:
                conn, _addr = await listener.accept()
                if pending.available_tokens == 0:
                    conn.close()
                    continue

                async def checked(conn: trio.socket.SocketType = conn) -> None:
                    async with pending:
                        await check(conn, nursery.cancel_scope)

                nursery.start_soon(checked)
    if not winner:  # pragma: no cover - the nursery only ends through a winner or timeout
        raise ConnectionError("no valid data connection")
    conn, record = winner[0]
    opener.open_into(memoryview(record), memoryview(bytearray(len(record))))
    sock = socket.socket(fileno=conn.detach())
    sock.settimeout(stall_timeout)  # a sender that stops sending ends the session
    return sock


async def _recv_exactly(conn: trio.socket.SocketType, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        got = await conn.recv(n - len(data))
        if not got:
            raise ConnectionError("closed before the hello")
        data += got
    return bytes(data)


def shutdown(sock: socket.socket) -> None:
    """Interrupt a pump blocked on ``sock``."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


async def run_interruptibly(
    work: Callable[[], None], interrupt: Callable[[], None], limiter: trio.CapacityLimiter
) -> None:
    """Run blocking ``work`` on a thread of its own (within ``limiter``); if cancelled
    meanwhile, ``interrupt`` it (shut its socket) and wait for the thread to stop, so no
    thread outlives its owner. The error the interrupted thread then raises is its owner's
    doing, so the cancellation is what propagates, not that error.

    A dedicated thread rather than trio's thread cache, because it runs at a lower CPU
    priority (``BULK_NICENESS``): on a busy machine the chat's threads then get the CPU
    first, and a cached thread would keep that priority for whatever job came next."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    result: list[outcome.Outcome[None]] = []

    def body() -> None:
        with contextlib.suppress(OSError):  # lowering one's own priority is always allowed
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICENESS)
        captured = outcome.capture(work)

        def report() -> None:
            result.append(captured)
            done.set()

        token.run_sync_soon(report)

    async with limiter:
        threading.Thread(target=body, name="p2pchat-pump", daemon=True).start()
        try:
            await done.wait()
        except trio.Cancelled:
            interrupt()
            with trio.CancelScope(shield=True):
                await done.wait()
            raise
    result[0].unwrap()
