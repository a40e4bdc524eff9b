"""A direct data connection between friends behind NATs: a TCP simultaneous open.

When the sender cannot dial the receiver's data port (the receiver is behind a NAT that drops
unsolicited connections), each side holds a fresh local port, tells the other its number over
the libp2p stream, and both connect at once, from that port, to the other's public IP (the
libp2p connection's remote address) and port. Each side's outgoing SYN opens its own NAT for
the other's, and TCP's simultaneous open turns the two SYNs into one connection. It needs NATs
that map a local port to the same public port whatever the destination, and keep its number
(endpoint-independent, port-preserving: the kind DCUtR already punched the libp2p connection
through); behind a symmetric NAT it fails within :data:`PUNCH_TIMEOUT` and the records take the
libp2p stream. The connection is then proven exactly like the direct one (challenge, bound
hello: :func:`direct.prove_hello`), so reaching the port proves nothing by itself.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
from collections.abc import Iterable
from typing import Final

import trio

from p2pchat.files import bulk
from p2pchat.files.direct import (
    HELLO_TIMEOUT,
    blocking,
    prove_hello,
    read_challenge,
)
from p2pchat.net.addrpolicy import Target, classify_ip

log = logging.getLogger(__name__)

PUNCH_TIMEOUT: Final = 5.0
"""The sender's limit for the whole simultaneous open and the receiver's challenge; a failed
attempt is answered only when it is up (as for the direct dial)."""
RETRY_DELAY: Final = 0.05
"""After a refused attempt (the other side's SYN met a port not yet connecting, and its host
answered with a reset), about how long before the next one from the same port (jittered by
half either way)."""
PUNCH_BACKOFF: Final = 600.0
"""After a punch to a friend failed, how long the sender goes straight to the stream path for
that friend (its NAT is likely symmetric; each attempt would cost a session 5 s)."""


PUNCHABLE: Final = frozenset({Target.PUBLIC, Target.LAN, Target.DOCUMENTATION})
"""Where a punch may connect: another host's public or LAN address (documentation ranges:
the NAT lab). Never this machine (loopback, its own addresses, or a proxy showing as one:
there is no NAT to open there, and a friend must not make us probe our own ports), nor
unspecified, multicast or reserved addresses."""


def punchable(ip: str | None, relayed: bool, own_ips: Iterable[str] = ()) -> bool:
    """Whether a libp2p connection with remote ``ip`` may carry a punch: only a direct one
    (a relayed one's IP is the relay's), to an address in :data:`PUNCHABLE` (``own_ips``:
    this machine's addresses)."""
    if ip is None or relayed:
        return False
    return classify_ip(ip, own_ips) in PUNCHABLE


class PunchPort:
    """A local TCP port held for one simultaneous open, and the socket bound to it.

    The socket is bound but neither listening nor connected: nobody can connect to it, and it
    answers only the SYN of the connection it is opening. After a refused attempt the next one
    needs a fresh socket on the same port (``SO_REUSEADDR``)."""

    def __init__(self, ip: str) -> None:
        self.family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self._sock: socket.socket | None = self._bind(0)
        self.port: int = self._sock.getsockname()[1]

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::" if self.family == socket.AF_INET6 else "0.0.0.0", port))
        except BaseException:
            sock.close()
            raise
        return sock

    def take(self) -> trio.socket.SocketType:
        """The socket for the next attempt (the first one, then a fresh one on the port)."""
        sock, self._sock = self._sock, None
        if sock is None:
            sock = self._bind(self.port)
        return trio.socket.from_stdlib_socket(sock)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> PunchPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def simultaneous_open(held: PunchPort, remote: tuple[str, int]) -> trio.socket.SocketType:
    """Connect from ``held``'s port to ``remote`` until a connection opens; the caller bounds
    the time. An attempt whose SYN a NAT drops stays pending (the kernel resends it) and
    succeeds when the other side's SYN arrives; a refused one is tried again shortly."""
    attempts = 0
    while True:
        attempts += 1
        sock = held.take()
        try:
            await sock.connect(remote)
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT):
                log.debug("simultaneous open to %s:%d: %s", remote[0], remote[1], exc)
            # Jittered: two sides both refused on a fixed period would keep their phase and
            # might never be in SYN-SENT at the same moment.
            await trio.sleep(RETRY_DELAY * random.uniform(0.5, 1.5))
            continue
        except BaseException:
            sock.close()
            raise
        log.debug("simultaneous open to %s:%d after %d attempts", *remote, attempts)
        return sock


async def punch_as_sender(
    held: PunchPort,
    remote: tuple[str, int],
    stall_timeout: float,
    sealer: bulk.RecordSealer,
) -> tuple[socket.socket, bytes] | None:
    """The sender's punched connection and the nonce to bind its hello to, or None when no
    connection opened or the receiver's challenge did not check out within PUNCH_TIMEOUT
    (answered only when that is up, like a failed direct dial)."""
    started = trio.current_time()
    try:
        with trio.fail_after(PUNCH_TIMEOUT):
            conn = await simultaneous_open(held, remote)
            try:
                nonce = await read_challenge(conn, sealer)
                return blocking(conn, stall_timeout), nonce
            finally:
                conn.close()  # a no-op once handed over
    except (OSError, ConnectionError, bulk.BulkError, trio.TooSlowError) as exc:
        log.debug("punched data path to %s:%d: %s", remote[0], remote[1], exc)
    await trio.sleep_until(started + PUNCH_TIMEOUT)
    return None


async def punch_as_receiver(
    held: PunchPort,
    remote: tuple[str, int],
    opener: bulk.RecordOpener,
    stall_timeout: float,
) -> socket.socket:
    """The receiver's side: open the connection (within PUNCH_TIMEOUT, as the sender),
    send the challenge and take the sender's hello bound to it (within HELLO_TIMEOUT of the
    connection opening). Raises (TooSlowError, ConnectionError, BulkError, OSError) if not."""
    with trio.fail_after(PUNCH_TIMEOUT):
        conn = await simultaneous_open(held, remote)
    try:
        with trio.fail_after(HELLO_TIMEOUT):
            record, nonce = await prove_hello(conn, opener)
        opener.accept_hello(record, nonce)
        return blocking(conn, stall_timeout)
    finally:
        conn.close()  # a no-op once handed over
