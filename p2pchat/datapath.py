"""Blocking pumps that move one session's records over a direct TCP connection.

They run in a worker thread (``trio.to_thread``), never on the trio loop: the copy, the AEAD
and the hashing release the GIL, so a transfer at hundreds of MB/s leaves the daemon's event
loop (and chat latency) alone. The caller interrupts a pump by shutting its socket down; the
blocked ``send``/``recv`` then returns and the pump raises.

Record format and checks are in :mod:`p2pchat.bulk`; these functions only do I/O around it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Protocol

from p2pchat.bulk import HEADER_BYTES, MAX_CHUNK, MAX_RECORD, BulkError, RecordOpener, RecordSealer

END_GRACE = 2.0
"""After the last byte, how long the receiver waits for the sender's end of stream."""


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


class Progress:
    """Byte counter shared between a pump thread (writer) and the trio side (reader)."""

    def __init__(self, start: int) -> None:
        self.bytes = start


class Pacer:
    """The configured cap on sending speed (bytes per second, 0 for none), shared by all
    sessions and safe to use from several threads."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def reserve(self, nbytes: int) -> float:
        """Seconds to wait before sending ``nbytes`` to stay under the cap."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now)
            self._next = start + nbytes / self.rate
            return start - now


class SourceChanged(Exception):
    """The file being sent no longer has the offered length."""


def send_records(
    sock: socket.socket,
    sealer: RecordSealer,
    source: Readable,
    size: int,
    progress: Progress,
    pacer: Pacer,
) -> None:
    """Send the hello, then the file from ``sealer.offset`` to ``size``; then end the stream.

    ``source`` is an unbuffered binary file positioned at ``sealer.offset``.
    """
    chunk = bytearray(MAX_CHUNK)
    record = bytearray(HEADER_BYTES + MAX_RECORD)
    chunk_view, record_view = memoryview(chunk), memoryview(record)
    sock.sendall(sealer.hello())
    while sealer.offset < size:
        want = min(MAX_CHUNK, size - sealer.offset)
        got = _read_full(source, chunk_view[:want])
        if got < want:
            raise SourceChanged("the file is shorter than when it was offered")
        n = sealer.seal_into(chunk_view[:got], record_view)
        wait = pacer.reserve(n)
        if wait > 0:
            time.sleep(wait)
        sock.sendall(record_view[:n])
        progress.bytes = sealer.offset
    sock.shutdown(socket.SHUT_WR)


def receive_records(
    sock: socket.socket,
    opener: RecordOpener,
    fd: int,
    hasher: Any,
    progress: Progress,
) -> None:
    """Receive, authenticate and write records at their offsets in ``fd`` until the whole
    file is in, hashing it on the way; then require the sender's clean end of stream.

    Raises :class:`BulkError` for bad records or oversending, :class:`ConnectionError` if the
    connection ends early, :class:`OSError` (e.g. ENOSPC) if writing fails.
    """
    header = bytearray(HEADER_BYTES)
    record = bytearray(MAX_RECORD)
    out = bytearray(MAX_CHUNK)
    header_view, record_view, out_view = memoryview(header), memoryview(record), memoryview(out)
    while not opener.done:
        _recv_full(sock, header_view)
        length = opener.record_length(header_view)
        _recv_full(sock, record_view[:length])
        offset = opener.offset
        n = opener.open_into(record_view[:length], out_view)
        if n:
            _write_full(fd, out_view[:n], offset)
            hasher.update(out_view[:n])
            progress.bytes = opener.offset
    sock.settimeout(END_GRACE)
    try:
        extra = sock.recv(1)
    except TimeoutError:
        raise BulkError("the sender did not end the data stream") from None
    if extra:
        raise BulkError("peer sent more than the offered size")


def _read_full(source: Readable, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = source.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _recv_full(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("the data connection ended early")
        got += n


def _write_full(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
