"""The direct TCP data connection of a session, and the threads its blocking pumps run on.

py-libp2p's stream is too slow for bulk data, so a session's records go over a plain TCP
connection from the sender to a port the receiver opened for it, when one can be made.

Anyone can connect to that port, and a friend names the port, so both ends are careful. The
receiver greets every connection with a fresh challenge (:func:`bulk.make_challenge`) and takes
the first one whose hello, bound to that challenge, proves the session key; a source address
may hold only a few of the pending slots. The sender dials only the IP its libp2p connection
comes from, only when that connection is direct and the friend announced that IP as a listen
address, and reports only "tcp" (the receiver's challenge checked out) or "stream" (anything
else, after the same delay), so a friend cannot use it to probe ports.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Final

import outcome
import trio
from libp2p.abc import INetStream
from libp2p.connection_types import ConnectionType
from libp2p.network.stream.net_stream import NetStream

from p2pchat.files import bulk

log = logging.getLogger(__name__)

DIRECT_CONNECT_TIMEOUT: Final = 3.0
"""The sender's limit for connecting and reading the receiver's challenge; a failed attempt
is answered only when it is up, so a refused port looks like a silent one."""
HELLO_TIMEOUT: Final = 5.0
MAX_PENDING_DATA_CONNECTIONS: Final = 16
MAX_PENDING_PER_SOURCE: Final = 4
"""Pending (not yet proven) connections one source IP may hold of the 16."""
MAX_PUMP_THREADS: Final = 16
BULK_NICENESS: Final = 10
"""How much lower than the rest of the daemon a data pump's thread runs (Unix niceness):
measured, chat p99 during a 512 MiB transfer fell from 69-206 ms to 32 ms with it."""


def direct_target(remote_ip: str | None, relayed: bool, announced: Sequence[str]) -> str | None:
    """The IP to dial for a direct data connection, or None: the libp2p connection's remote
    IP, if the connection is direct (a relayed one's IP is the relay's) and the friend
    announced that IP in one of its non-circuit listen addresses."""
    if remote_ip is None or relayed:
        return None
    try:
        remote = ipaddress.ip_address(remote_ip)
    except ValueError:
        return None
    for addr in announced:
        parts = addr.split("/")
        if len(parts) < 3 or parts[1] not in ("ip4", "ip6") or "p2p-circuit" in parts:
            continue
        try:
            if ipaddress.ip_address(parts[2]) == remote:
                return str(remote)
        except ValueError:
            continue
    return None


def stream_origin(stream: INetStream) -> tuple[str | None, bool]:
    """(remote IP, relayed?) of the connection ``stream`` runs on; unknown counts as relayed."""
    if not isinstance(stream, NetStream):
        return None, True
    remote = stream.get_remote_address()
    conn = stream.swarm_conn
    try:
        relayed = conn is None or conn.get_connection_type() is ConnectionType.RELAYED
        if conn is not None and not relayed:
            relayed = any("/p2p-circuit" in str(a) for a in conn.get_transport_addresses())
    except Exception:
        relayed = True
    return (remote[0] if remote else None), relayed


async def connect_direct(
    origin: tuple[str | None, bool],
    port: int,
    stall_timeout: float,
    sealer: bulk.RecordSealer,
    announced: Sequence[str],
) -> tuple[socket.socket, bytes] | None:
    """The sender's connection to the receiver's data ``port`` and the nonce to bind the
    hello to; None if there is no port, no address we may dial, or the receiver's challenge
    does not arrive (refused, silent, or wrong: all look alike, and take as long).
    ``origin``: (remote IP, relayed?) of the libp2p connection (:func:`stream_origin`)."""
    host = direct_target(*origin, announced)
    if not port or host is None:
        if port:
            log.info("direct path unavailable (not an announced direct address); using the stream")
        return None
    started = trio.current_time()
    try:
        with trio.fail_after(DIRECT_CONNECT_TIMEOUT):
            return await _connect_and_check(host, port, stall_timeout, sealer)
    except (OSError, ConnectionError, bulk.BulkError, trio.TooSlowError) as exc:
        log.debug("direct data path to %s:%d: %s", host, port, exc)
    await trio.sleep_until(started + DIRECT_CONNECT_TIMEOUT)
    log.info("direct path unavailable; using the stream")
    return None


async def _connect_and_check(
    host: str, port: int, stall_timeout: float, sealer: bulk.RecordSealer
) -> tuple[socket.socket, bytes]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    conn = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await conn.connect((host, port))
        nonce = await read_challenge(conn, sealer)
        return blocking(conn, stall_timeout), nonce
    finally:
        conn.close()  # a no-op once handed over


async def read_challenge(conn: trio.socket.SocketType, sealer: bulk.RecordSealer) -> bytes:
    """The sender's check of the receiver's challenge on a new data connection: the nonce to
    bind the hello to (BulkError if the challenge does not prove the session key)."""
    return sealer.answer_challenge(await _recv_exactly(conn, bulk.CHALLENGE_BYTES))


async def prove_hello(
    conn: trio.socket.SocketType, opener: bulk.RecordOpener
) -> tuple[bytes, bytes]:
    """The receiver's check of a new data connection: send a fresh challenge, read the first
    record and check it is a hello bound to that challenge. Returns (record, nonce) for
    ``opener.accept_hello``; raises BulkError or ConnectionError otherwise."""
    challenge, nonce = opener.challenge()
    await _send_all(conn, challenge)
    header = await _recv_exactly(conn, bulk.HEADER_BYTES)
    record = await _recv_exactly(conn, opener.record_length(header))
    opener.check_hello(record, nonce)
    return record, nonce


def blocking(conn: trio.socket.SocketType, stall_timeout: float) -> socket.socket:
    """Hand a proven data connection over to the blocking pumps (``conn`` is detached): a
    peer that stops reading or sending for ``stall_timeout`` ends the session."""
    sock = socket.socket(fileno=conn.detach())
    sock.setblocking(True)
    sock.settimeout(stall_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class PendingSlots:
    """The data port's pending connections: at most ``total``, and at most ``per_source``
    from one source IP, so that one host cannot fill them all (sans-IO)."""

    def __init__(
        self, total: int = MAX_PENDING_DATA_CONNECTIONS, per_source: int = MAX_PENDING_PER_SOURCE
    ) -> None:
        self.total = total
        self.per_source = per_source
        self._held: dict[str, int] = {}

    def admit(self, source: str) -> bool:
        held = self._held.get(source, 0)
        if held >= self.per_source or sum(self._held.values()) >= self.total:
            return False
        self._held[source] = held + 1
        return True

    def release(self, source: str) -> None:
        held = self._held.get(source, 0) - 1
        if held > 0:
            self._held[source] = held
        else:
            self._held.pop(source, None)


async def accept_direct(
    listener: trio.socket.SocketType, opener: bulk.RecordOpener, stall_timeout: float
) -> socket.socket:
    """Accept the sender's direct connection: the first one whose hello, bound to the
    challenge sent on that connection, proves the session key. Runs until one does (the
    caller bounds it). Connections are checked concurrently, each within its own time limit,
    so nobody connecting to the port (and saying nothing) can hold the sender's connection
    up, and a replayed hello fails; any other connection is closed and ignored."""
    winner: list[tuple[trio.socket.SocketType, bytes, bytes]] = []
    slots = PendingSlots()

    async def check(conn: trio.socket.SocketType, done: trio.CancelScope) -> None:
        try:
            with trio.fail_after(HELLO_TIMEOUT):
                record, nonce = await prove_hello(conn, opener)
        except (bulk.BulkError, ConnectionError, OSError, trio.TooSlowError) as exc:
            log.info("ignored a connection to the data port: %s", exc)
            conn.close()
            return
        except BaseException:
            conn.close()
            raise
        if winner:
            conn.close()
            return
        winner.append((conn, record, nonce))
        done.cancel()

    try:
        async with trio.open_nursery() as nursery:
            while True:
                conn, addr = await listener.accept()
                source = str(addr[0])
                if not slots.admit(source):
                    conn.close()
                    continue

                async def checked(
                    conn: trio.socket.SocketType = conn, source: str = source
                ) -> None:
                    try:
                        await check(conn, nursery.cancel_scope)
                    finally:
                        slots.release(source)

                nursery.start_soon(checked)
    except BaseException:
        for conn, _record, _nonce in winner:
            conn.close()
        raise
    if not winner:  # pragma: no cover - the nursery only ends through a winner
        raise ConnectionError("no valid data connection")
    conn, record, nonce = winner[0]
    try:
        opener.accept_hello(record, nonce)
        return blocking(conn, stall_timeout)
    finally:
        conn.close()  # a no-op once handed over


async def _recv_exactly(conn: trio.socket.SocketType, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        got = await conn.recv(n - len(data))
        if not got:
            raise ConnectionError("the connection closed early")
        data += got
    return bytes(data)


async def _send_all(conn: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await conn.send(view) :]


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
