"""The receiver's side of a data session, which drives the transfer: ask the sender for the
file from the last verified offset, take its records on a direct connection or the stream,
make progress durable every second, and publish the verified file under a name of its own.

A session that fails is retried by the friend's link, from the last checkpoint; only bad
data, a wrong hash or a full disk end the transfer. Publishing commits the chosen name before
making it, so that a daemon killed while publishing finishes the job when it restarts.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import blake3
import trio
from libp2p.abc import INetStream

from p2pchat import wire
from p2pchat.files import bulk, filenames
from p2pchat.files.datapath import Progress, WriteBehind, receive_records
from p2pchat.files.direct import (
    HELLO_TIMEOUT,
    accept_direct,
    run_interruptibly,
    shutdown,
    stream_origin,
)
from p2pchat.files.disk import (
    UnsafeFile,
    free_bytes,
    hash_path,
    hash_prefix,
    link_no_replace,
    open_partial,
    publication_state,
    unlink_and_sync_dir,
    write_chunks,
)
from p2pchat.files.progress import ProgressReports
from p2pchat.files.punch import PUNCH_TIMEOUT, PunchPort, punch_as_receiver, punchable
from p2pchat.files.sessions import STALL_MIN_BYTES, Sessions, sole_error
from p2pchat.files.state import PEER_OUTCOME_EVENTS, Direction, TEvent, TState
from p2pchat.files.store import Transfer
from p2pchat.files.table import TransferTable
from p2pchat.identity import short
from p2pchat.net.host import Network, local_ips
from p2pchat.net.streams import log_stream_failure, read_some, reset

log = logging.getLogger(__name__)

GET_REPLY_TIMEOUT: Final = 15.0
STREAM_WRITES_QUEUED: Final = 16
"""Verified reads of the stream path (each at most 256 KiB of chunks) waiting for the disk."""
CHECKPOINT_INTERVAL: Final = 1.0
"""How often a receiving session makes its progress durable (fsync, then record the offset)."""
MAX_NAME_TRIES: Final = 10_000


class TransferFailed(Exception):
    """This transfer cannot succeed (bad data, changed source, no disk space): end it."""


class SessionMoved(ConnectionError):
    """A session on a relayed stream was ended because a direct connection to the friend
    appeared: the next session (at once, it moved bytes) takes the direct path."""


class Receiver:
    """Runs the receive sessions of one identity's incoming transfers, at most one per
    transfer. ``on_session_end(peer, moved)`` hears of each session that ended, and whether
    it moved any bytes."""

    def __init__(
        self,
        *,
        table: TransferTable,
        reports: ProgressReports,
        net: Network,
        pumps: trio.CapacityLimiter,
        incoming_dir: Path,
        direct_host: str,
        direct: bool,
        stall_timeout: float,
        on_session_end: Callable[[str, bool], None],
    ) -> None:
        self.table = table
        self.reports = reports
        self.net = net
        self.pumps = pumps
        self.incoming_dir = incoming_dir
        self.direct_host = direct_host
        self.direct = direct
        self.stall_timeout = stall_timeout
        self._on_session_end = on_session_end
        self.sessions = Sessions()
        self._direct_failed: set[bytes] = set()
        self._movable: dict[bytes, tuple[str, trio.CancelScope]] = {}
        """Sessions receiving on a relayed libp2p stream: transfer -> (friend, the scope that
        ends it when a direct connection to that friend appears)."""
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the sessions :meth:`start` starts, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def to_receive(self, peer: str) -> list[Transfer]:
        return [
            t
            for t in self.table.of_peer(peer)
            if t.direction is Direction.IN and t.state is TState.ACTIVE
        ]

    def connection_opened(self, peer: str) -> None:
        """A connection to ``peer`` opened: if it is direct, sessions from ``peer`` on a
        relayed stream end now, to go on from their last checkpoint on the direct connection
        (dialled or punched, at full speed, and not cut off by the relay's limits)."""
        movable = [scope for p, scope in self._movable.values() if p == peer]
        if not movable or "direct" not in self.net.connection_kinds(peer):
            return
        log.info("a direct connection to %s appeared: moving its transfers to it", short(peer))
        for scope in movable:
            scope.cancel()

    def start(self, t: Transfer) -> None:
        """Start a session for ``t`` unless one runs or its sender has too many."""
        if t.tid in self.sessions or self._nursery is None or self.sessions.full(t.peer_id):
            return
        scope = trio.CancelScope()
        self.sessions.add(t.tid, t.peer_id, scope)
        self._nursery.start_soon(self._receive, t.tid, scope, name=f"receive-{t.id_hex[:12]}")

    async def _receive(self, tid: bytes, scope: trio.CancelScope) -> None:
        """One receive session; every way it can end is handled here (nothing escapes into
        the nursery, which would stop the daemon)."""
        try:
            with scope:
                try:
                    await self._session(tid)
                except BaseExceptionGroup as group:
                    raise sole_error(group) from None
        except (TransferFailed, bulk.BulkError, UnsafeFile) as exc:
            log.warning("transfer %s failed: %s", tid.hex()[:12], exc)
            await self.table.fail(tid, str(exc))
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                await self.table.fail(tid, "disk full")
            else:
                peer = self.table[tid].peer_id
                log_stream_failure(exc, "receiving from %s", peer, level=logging.INFO)
        finally:
            self.sessions.remove(tid, scope)
            moved = self.reports.forget(tid)
            t = self.table.get(tid)
            if t is not None:
                self._on_session_end(t.peer_id, moved)

    async def _session(self, tid: bytes) -> None:
        t = self.table[tid]
        if t.final_path is not None and await self._resume_publish(t):
            return
        if t.part_path is None:
            raise TransferFailed("the partial file is missing")
        part = Path(t.part_path)
        fd = await trio.to_thread.run_sync(open_partial, part)
        try:
            offset = t.done_bytes
            try:
                hasher = await trio.to_thread.run_sync(hash_prefix, fd, offset)
            except ConnectionError:
                offset, hasher = 0, blake3.blake3()
            if offset < t.size:
                await self._pull(t, fd, offset, hasher)
            await trio.to_thread.run_sync(os.fsync, fd)
        finally:
            os.close(fd)
        # Everything is in and on disk. From here a failure (e.g. publishing) is no progress,
        # so the retry backs off instead of re-reading the file at once, again and again.
        self.reports.forget(tid)
        if t.done_bytes != t.size:
            await self.table.record(tid, done_bytes=t.size)
        if hasher.digest() != t.hash:
            raise TransferFailed("the received file does not match the offered hash")
        await self._publish(t, part)

    async def _pull(self, t: Transfer, fd: int, offset: int, hasher: Any) -> None:
        """Ask the sender for the file from ``offset`` and write what it sends into ``fd``."""
        suite = bulk.preferred_suite()
        key = os.urandom(wire.BULK_KEY_BYTES)
        opener = bulk.RecordOpener(suite, key, t.tid, offset, t.size)
        listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with listener, contextlib.ExitStack() as held:
            port = await self._open_data_port(t, listener)
            stream = await self.net.open_stream(t.peer_id, wire.FILE_PROTOCOL)
            try:
                origin = stream_origin(stream)
                punch = self._punch_port(origin, held) if port else None
                sock: socket.socket | None = None
                async with trio.open_nursery() as accepting:
                    # Accepting starts before the request goes out: the sender reads our
                    # challenge before it answers, so that it says "tcp" only once it has
                    # reached us (and nothing else on that port).
                    arrived: list[socket.socket] = []
                    ready = trio.Event()
                    if port:
                        accepting.start_soon(self._accept, listener, opener, held, arrived, ready)
                    get = wire.FileGet(
                        t.tid, offset, suite, key, port, punch[1].port if punch else 0
                    )
                    await stream.write(wire.encode(get))
                    with trio.fail_after(GET_REPLY_TIMEOUT):
                        reply = await _read_one_frame_buffered(stream)
                    punched: list[socket.socket] = []
                    punch_ready: trio.Event | None = None
                    if isinstance(reply, wire.FilePunch):
                        if punch is None or reply.tid != t.tid:
                            raise wire.FrameError("file-punch without a punch port asked for")
                        punch_ready = trio.Event()
                        remote = (punch[0], reply.port)
                        accepting.start_soon(
                            self._punch, punch[1], remote, opener, held, punched, punch_ready
                        )
                        with trio.fail_after(PUNCH_TIMEOUT + GET_REPLY_TIMEOUT):
                            reply = await _read_one_frame_buffered(stream)
                    if isinstance(reply, wire.FileData) and reply.path == "tcp":
                        sock = await self._wait_direct(t, port, arrived, ready)
                    elif isinstance(reply, wire.FileData) and reply.path == "punched":
                        if punch_ready is None:
                            raise wire.FrameError("file-data 'punched' without a file-punch")
                        sock = await self._wait_direct(t, port, punched, punch_ready)
                    accepting.cancel_scope.cancel()
                if isinstance(reply, wire.FileEnd):
                    async with self.table.locked(t.tid):
                        await self.table.apply(
                            t.tid,
                            PEER_OUTCOME_EVENTS[reply.outcome],
                            reason=f"{reply.outcome} by the friend: {reply.reason}",
                        )
                    return
                if isinstance(reply, wire.Refused):
                    if reply.code == wire.REFUSED_UNKNOWN:
                        raise TransferFailed("the sender does not know this transfer")
                    raise ConnectionError(f"sender refused: {reply.reason}")
                if not isinstance(reply, wire.FileData) or reply.tid != t.tid:
                    raise wire.FrameError("expected file-data")
                progress = Progress(offset)
                self.reports.track(t.tid, progress)
                await self.table.record(t.tid, data_path=reply.path)
                started = time.monotonic()
                moving = trio.CancelScope()
                if sock is None and origin[1]:  # on a relayed stream: movable
                    self._movable[t.tid] = (t.peer_id, moving)
                    if "direct" in self.net.connection_kinds(t.peer_id):
                        moving.cancel()  # one opened before we were listening for it
                try:
                    with moving:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._checkpoints, t.tid, fd, progress)
                            if sock is not None:
                                await self._receive_direct(sock, opener, fd, hasher, progress)
                            else:
                                await self._receive_on_stream(stream, opener, fd, hasher, progress)
                            nursery.cancel_scope.cancel()
                finally:
                    self._movable.pop(t.tid, None)
                if moving.cancelled_caught:
                    raise SessionMoved(
                        f"{t.name}: on to a direct connection after byte {progress.bytes}"
                    )
                elapsed = max(time.monotonic() - started, 1e-9)
                log.info(
                    "received %d bytes of %s via %s in %.3f s (%.0f MB/s)",
                    progress.bytes - offset,
                    t.name,
                    reply.path,
                    elapsed,
                    (progress.bytes - offset) / elapsed / 1e6,
                )
            finally:
                await reset(stream)

    async def _open_data_port(self, t: Transfer, listener: trio.socket.SocketType) -> int:
        """The port the sender may connect to for this session, or 0 for none."""
        # After a direct attempt that failed, one session on the stream path (anyone can
        # connect to the port; a crowd of silent connections must not stall a transfer).
        direct = self.direct and t.tid not in self._direct_failed
        self._direct_failed.discard(t.tid)
        if not direct:
            return 0
        try:
            await listener.bind((self.direct_host, 0))
            listener.listen(16)
            port: int = listener.getsockname()[1]
        except OSError as exc:
            log.info("no direct data port (%s); using the libp2p stream", exc)
            return 0
        return port

    async def _accept(
        self,
        listener: trio.socket.SocketType,
        opener: bulk.RecordOpener,
        held: contextlib.ExitStack,
        arrived: list[socket.socket],
        ready: trio.Event,
    ) -> None:
        """Accept the direct connection into ``arrived`` (closed with ``held``)."""
        sock = await accept_direct(listener, opener, self.stall_timeout)
        _arrived(sock, held, arrived, ready)

    def _punch_port(
        self, origin: tuple[str | None, bool], held: contextlib.ExitStack
    ) -> tuple[str, PunchPort] | None:
        """The friend's IP and a local port held (closed with ``held``) for a simultaneous
        open through NATs, or None: only over a direct libp2p connection to another host,
        whose remote IP is the friend's (or its NAT's): :func:`punchable`."""
        ip, relayed = origin
        if not punchable(ip, relayed, local_ips()):
            return None
        assert ip is not None
        try:
            return ip, held.enter_context(PunchPort(ip))
        except OSError as exc:
            log.info("no punch port (%s)", exc)
            return None

    async def _punch(
        self,
        punch: PunchPort,
        remote: tuple[str, int],
        opener: bulk.RecordOpener,
        held: contextlib.ExitStack,
        arrived: list[socket.socket],
        ready: trio.Event,
    ) -> None:
        """Open the punched connection into ``arrived`` (closed with ``held``). One that
        does not open or does not prove itself (whatever answered there: the sender's NAT
        may map that port to anything) is ignored, as on the data port: the sender's
        ``file-data`` then says ``stream``, or the wait for it fails and the next session
        asks without a port. Never an end of the transfer."""
        try:
            sock = await punch_as_receiver(punch, remote, opener, self.stall_timeout)
        except (bulk.BulkError, ConnectionError, OSError, trio.TooSlowError) as exc:
            log.info("no punched data connection to %s:%d: %s", remote[0], remote[1], exc)
            return
        _arrived(sock, held, arrived, ready)

    async def _wait_direct(
        self, t: Transfer, port: int, arrived: list[socket.socket], ready: trio.Event
    ) -> socket.socket:
        """The direct (or punched) connection the sender said it made; ConnectionError if
        none proves itself within ``HELLO_TIMEOUT`` (the next session then uses the stream)."""
        if not port:
            raise ConnectionError("the sender chose the direct path, but no port was offered")
        with trio.move_on_after(HELLO_TIMEOUT):
            await ready.wait()
        if not arrived:
            self._direct_failed.add(t.tid)
            raise ConnectionError("no direct data connection arrived")
        return arrived[0]

    async def _receive_direct(
        self,
        sock: socket.socket,
        opener: bulk.RecordOpener,
        fd: int,
        hasher: Any,
        progress: Progress,
    ) -> None:
        await run_interruptibly(
            lambda: receive_records(sock, opener, fd, hasher, progress),
            lambda: shutdown(sock),
            self.pumps,
        )

    async def _receive_on_stream(
        self,
        stream: INetStream,
        opener: bulk.RecordOpener,
        fd: int,
        hasher: Any,
        progress: Progress,
    ) -> None:
        # The disk writes run beside the reads (a task and a thread of their own), so the
        # stream is read, and its window reopened, while earlier chunks are being written:
        # one after the other, each write held the stream up (the pipe stood idle).
        send, receive = trio.open_memory_channel[tuple[int, list[bytes]]](STREAM_WRITES_QUEUED)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write_in_order, receive, fd, hasher, progress)
            async with send:
                while not opener.done:
                    with trio.move_on_after(self.stall_timeout) as waited:
                        data = await read_some(stream, 256 * 1024)
                    if waited.cancelled_caught:
                        raise ConnectionError(f"no data for {self.stall_timeout:g} s")
                    progress.wire += len(data)
                    if not data:
                        raise ConnectionError("the data stream ended early")
                    offset = opener.offset
                    chunks = opener.feed(data)
                    if chunks:
                        await send.send((offset, chunks))
                with trio.move_on_after(2.0) as waited:
                    extra = await read_some(stream, 1)
                    if extra:
                        raise bulk.BulkError("peer sent more than the offered size")
                if waited.cancelled_caught:
                    raise bulk.BulkError("the sender did not end the data stream")

    async def _checkpoints(self, tid: bytes, fd: int, progress: Progress) -> None:
        """Make received bytes durable and record how many: fsync first, so the recorded
        offset never runs ahead of what is on disk. Also watch the free space, so that a disk
        filling up (by this transfer or anything else) ends the transfer before a write fails
        halfway. And give up on a session that moves no record for the stall timeout."""
        last_moved, last_change = progress.wire, time.monotonic()
        while True:
            await trio.sleep(CHECKPOINT_INTERVAL)
            written = progress.bytes
            if progress.wire - last_moved >= STALL_MIN_BYTES:
                last_moved, last_change = progress.wire, time.monotonic()
            elif time.monotonic() - last_change > self.stall_timeout:
                raise ConnectionError(f"no data for {self.stall_timeout:g} s")
            t = self.table.get(tid)
            if t is not None:
                free = await trio.to_thread.run_sync(free_bytes, self.incoming_dir)
                if free < t.size - written:
                    raise TransferFailed(
                        f"disk full: {t.size - written} more bytes needed, {free} free"
                    )
            await trio.to_thread.run_sync(os.fsync, fd)
            await self.table.record(tid, done_bytes=written)

    async def _publish(self, t: Transfer, part: Path) -> None:
        """Give the verified partial file its final name, never replacing an existing file.

        Under the transfer's lock, so a cancel cannot slip in between. The chosen name is
        committed before the link is made, so a daemon killed anywhere in here finds out on
        restart what it had done (:meth:`_resume_publish`)."""
        directory = self.incoming_dir
        async with self.table.locked(t.tid):
            if self.table[t.tid].state is not TState.ACTIVE:
                return  # cancelled or failed meanwhile: that already removed the partial file
            for n in range(MAX_NAME_TRIES):
                final = directory / (t.name if n == 0 else filenames.numbered(t.name, n))
                if await trio.to_thread.run_sync(os.path.lexists, final):
                    continue
                # Not fsynced on its own (the completion below is): it survives a killed
                # daemon, and losing it to a power cut costs at most a duplicate copy.
                await self.table.record(t.tid, final_path=str(final))
                try:
                    await trio.to_thread.run_sync(link_no_replace, part, final)
                except FileExistsError:
                    continue
                break
            else:
                raise TransferFailed(f"no free name for {t.name} in {directory}")
            await trio.to_thread.run_sync(unlink_and_sync_dir, part, directory)
            await self._verified(t, final)
        log.info("received %s from %s into %s", t.name, short(t.peer_id), final)

    async def _resume_publish(self, t: Transfer) -> bool:
        """Finish a publication a crash interrupted; False if it had not really begun."""
        assert t.final_path is not None
        final = Path(t.final_path)
        part = Path(t.part_path) if t.part_path else None
        state = await trio.to_thread.run_sync(publication_state, part, final)
        if state == "linked":  # both names, one file: the data was verified before the link
            await trio.to_thread.run_sync(unlink_and_sync_dir, part, final.parent)
        elif state == "renamed":  # only the final name is left: check it is our file
            digest = await trio.to_thread.run_sync(hash_path, final)
            if digest != t.hash:
                raise TransferFailed("the partial file disappeared")
        else:
            return False
        async with self.table.locked(t.tid):
            await self._verified(t, final)
        log.info("finished publishing %s into %s after a restart", t.name, final)
        return True

    async def _verified(self, t: Transfer, final: Path) -> None:
        """The file is published under ``final`` (caller holds the transfer's lock)."""
        await self.table.apply(
            t.tid, TEvent.VERIFIED, final_path=str(final), part_path=None, done_bytes=t.size
        )


async def _read_one_frame_buffered(stream: INetStream) -> wire.Frame:
    """Read exactly one frame without consuming bytes after it (records may follow)."""
    prefix = bytearray()
    while True:
        byte = await read_some(stream, 1)
        if not byte:
            raise wire.FrameError("stream ended before a frame")
        prefix += byte
        if not byte[0] & 0x80:
            break
        if len(prefix) >= 5:
            raise wire.FrameError("length prefix too long")
    decoder = wire.FrameDecoder()
    decoder.feed(bytes(prefix))
    length = 0
    for i, b in enumerate(prefix):
        length |= (b & 0x7F) << (7 * i)
    if length > wire.MAX_FRAME_BYTES:
        raise wire.FrameError("frame too long")
    body = bytearray()
    while len(body) < length:
        chunk = await read_some(stream, length - len(body))
        if not chunk:
            raise wire.FrameError("stream ended inside a frame")
        body += chunk
    frames = decoder.feed(bytes(body))
    if len(frames) != 1:
        raise wire.FrameError("expected one frame")
    return frames[0]


async def _write_in_order(
    batches: trio.MemoryReceiveChannel[tuple[int, list[bytes]]],
    fd: int,
    hasher: Any,
    progress: Progress,
) -> None:
    """Write verified chunks at their offsets and hash them, in the order they came, taking
    whatever queued up meanwhile in one thread hop; ``progress.bytes`` counts only what was
    written (checkpoints make it durable). Written behind (:class:`WriteBehind`) as on the
    direct path, so that the chat database's fsync never waits for a backlog of file data."""
    behind: WriteBehind | None = None
    async with batches:
        async for first in batches:
            queued = [first]
            while True:
                try:
                    queued.append(batches.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if behind is None:
                behind = WriteBehind(fd, first[0])
            progress.bytes = await trio.to_thread.run_sync(_write_all, fd, queued, hasher, behind)


def _write_all(
    fd: int, queued: list[tuple[int, list[bytes]]], hasher: Any, behind: WriteBehind
) -> int:
    """Write and hash ``queued`` in order; the file offset written up to."""
    end = 0
    for offset, chunks in queued:
        write_chunks(fd, offset, chunks, hasher)
        end = offset + sum(len(c) for c in chunks)
        behind.wrote_up_to(end)
    return end


def _arrived(
    sock: socket.socket, held: contextlib.ExitStack, arrived: list[socket.socket], ready: trio.Event
) -> None:
    held.enter_context(sock)
    arrived.append(sock)
    ready.set()
