"""Blocking pumps that move one session's records over a direct TCP connection.

They run on a dedicated, lower-priority thread (``direct.run_interruptibly``), never on
the trio loop: the copy, the AEAD and the hashing release the GIL, so a transfer at hundreds of
MB/s leaves the daemon's event loop (and chat latency) alone. The caller interrupts a pump by
shutting its socket down; the blocked ``send``/``recv`` then returns and the pump raises.

Record format and checks are in :mod:`p2pchat.files.bulk`; these functions only do I/O around it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import threading
import time
from typing import Any, Protocol

from p2pchat.files.bulk import (
    HEADER_BYTES,
    MAX_CHUNK,
    MAX_RECORD,
    BulkError,
    RecordOpener,
    RecordSealer,
)

END_GRACE = 2.0
"""After the last byte, how long the receiver waits for the sender's end of stream."""


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


class Progress:
    """Counters shared between a pump thread (writer) and the trio side (reader).

    ``bytes``: file bytes through whole records (sent, or verified and written). ``wire``:
    every byte moved on the connection, partial records included, which is what the stall
    watchdogs watch, so that a slow link that moves a record in more than the stall timeout
    still counts as alive."""

    def __init__(self, start: int) -> None:
        self.bytes = start
        self.wire = 0


MIN_PACED_CHUNK = 16 << 10


def paced_chunk(rate: int) -> int:
    """Plaintext per record for a send-rate cap: about a quarter second's worth, so a capped
    transfer still moves a record well within the receiver's stall limit, and a cancel is
    not held up by a long sleep."""
    if rate <= 0:
        return MAX_CHUNK
    return min(MAX_CHUNK, max(MIN_PACED_CHUNK, rate // 4))


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


_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_AFTER = 4


def _load_sync_file_range() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


class WriteBehind:
    """Streams received data to the disk as it arrives instead of letting hundreds of MB of
    dirty pages pile up in the page cache.

    Why: on a journaling filesystem an ``fsync`` of the chat database waits for the file's
    dirty data too, so a backlog turns into chat stalls of 100 ms and more during a transfer
    (measured). Every ``WINDOW`` bytes, writeback of the new window starts (asynchronously)
    and the writer waits until the window ``LAG`` windows back is on disk, which bounds the
    backlog to about ``LAG + 1`` windows. Linux only (``sync_file_range``); elsewhere a
    no-op. (Measured: a file preallocated with ``fallocate`` made this 3x slower, since each
    window's unwritten extents must be converted; so partial files are not preallocated.)
    """

    WINDOW = 4 << 20
    LAG = 2

    def __init__(self, fd: int, offset: int) -> None:
        self._fd = fd
        self._started = offset  # writeback started for everything before this
        self._windows: list[tuple[int, int]] = []  # writeback started, not yet waited for

    def wrote_up_to(self, end: int) -> None:
        if _sync_file_range is None or end - self._started < self.WINDOW:
            return
        _sync_file_range(self._fd, self._started, end - self._started, _SYNC_FILE_RANGE_WRITE)
        self._windows.append((self._started, end))
        self._started = end
        while len(self._windows) > self.LAG:
            start, stop = self._windows.pop(0)
            _sync_file_range(
                self._fd,
                start,
                stop - start,
                _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER,
            )


class SourceChanged(Exception):
    """The file being sent no longer has the offered length."""


def send_records(
    sock: socket.socket,
    sealer: RecordSealer,
    source: Readable,
    size: int,
    progress: Progress,
    pacer: Pacer,
    chunk_size: int = MAX_CHUNK,
    stop: threading.Event | None = None,
    binding: bytes = b"",
) -> None:
    """Send the hello (bound to ``binding``, the receiver's challenge nonce), then the file
    from ``sealer.offset`` to ``size``; then end the stream.

    ``source`` is an unbuffered binary file positioned at ``sealer.offset``.
    """
    # Each chunk is read straight into the record buffer and sealed in place (the AEAD
    # output starts where its input does): one copy fewer per byte.
    record = bytearray(HEADER_BYTES + MAX_RECORD)
    record_view = memoryview(record)
    chunk_view = record_view[HEADER_BYTES : HEADER_BYTES + chunk_size]
    _send_full(sock, memoryview(sealer.hello(binding)), progress)
    while sealer.offset < size:
        want = min(chunk_size, size - sealer.offset)
        got = _read_full(source, chunk_view[:want])
        if got < want:
            raise SourceChanged("the file is shorter than when it was offered")
        n = sealer.seal_into(chunk_view[:got], record_view)
        wait = pacer.reserve(n)
        while wait > 0:  # in slices, so that ``stop`` is noticed soon
            if stop is not None and stop.is_set():
                raise ConnectionError("stopped")
            time.sleep(min(wait, 0.25))
            wait -= 0.25
        _send_full(sock, record_view[:n], progress)
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
    header_view = memoryview(bytearray(HEADER_BYTES))
    buffer = memoryview(bytearray(MAX_RECORD))
    behind = WriteBehind(fd, opener.offset)
    # Hashing stays on this thread: a separate hashing thread measured no faster on two
    # cores (both were busy anyway) and added GIL hand-offs that the event loop then waits on.
    while not opener.done:
        _recv_full(sock, header_view, progress)
        length = opener.record_length(header_view)
        record_view = buffer[:length]
        _recv_full(sock, record_view, progress)
        offset = opener.offset
        # Opened in place (the plaintext overwrites its ciphertext): one copy fewer.
        n = opener.open_into(record_view, record_view)
        if n:
            write_at(fd, record_view[:n], offset)
            hasher.update(record_view[:n])
            progress.bytes = opener.offset
            behind.wrote_up_to(opener.offset)
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


def _recv_full(sock: socket.socket, view: memoryview, progress: Progress) -> None:
    """Fill ``view``. The socket's timeout bounds each call, not the whole record."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("the data connection ended early")
        got += n
        progress.wire += n


def _send_full(sock: socket.socket, view: memoryview, progress: Progress) -> None:
    """Send all of ``view``. Not ``sendall``, whose timeout bounds the whole record: on a
    slow link a 1 MiB record may take longer than that and still be moving."""
    sent = 0
    while sent < len(view):
        n = sock.send(view[sent:])
        sent += n
        progress.wire += n


def write_at(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
