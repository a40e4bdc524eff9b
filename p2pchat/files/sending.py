"""The sender's side of a data session: answer a friend's ``file-get`` with the offered file
from the offset it asks for, on a direct TCP connection if one can be made (dialled, or
punched through NATs by a simultaneous open), else on the libp2p stream. The receiver drives;
the sender only checks that the request is for a transfer it may serve and that its file is
still the one it offered."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.net_stream import NetStream

from p2pchat import wire
from p2pchat.files import bulk
from p2pchat.files.datapath import Pacer, Progress, SourceChanged, paced_chunk, send_records
from p2pchat.files.direct import connect_direct, run_interruptibly, shutdown, stream_origin
from p2pchat.files.disk import open_source, os_reason
from p2pchat.files.progress import ProgressReports
from p2pchat.files.punch import PUNCH_BACKOFF, PunchPort, punch_as_sender, punchable
from p2pchat.files.sessions import Sessions, sole_error, watch_stall
from p2pchat.files.state import TERMINAL, Direction, TEvent, TState
from p2pchat.files.store import Transfer
from p2pchat.files.table import TransferTable, clip_utf8
from p2pchat.identity import short
from p2pchat.net.host import local_ips
from p2pchat.net.streams import finish, refuse, reset

log = logging.getLogger(__name__)

STREAM_CHUNK: Final = 65535 - 16 - 12 - bulk.HEADER_BYTES - bulk.TAG_BYTES
"""Plaintext per record on the libp2p-stream path (the stream is shared with chat): as much
as keeps a record, with its Yamux header, within one Noise message (65,535 bytes less its
tag). A 64 KiB chunk made each record two Yamux frames and two or three Noise messages."""
READ_AHEAD_BLOCK: Final = 1 << 20
"""The stream path reads the file in blocks of this much (whole records)."""
STREAM_READS_AHEAD: Final = 2
"""Blocks read ahead of what is being sent."""


class Sender:
    """Serves the data requests of one identity's outgoing transfers. ``pumps`` limits the
    pump threads (shared with the receiving side); ``max_send_rate`` caps all sessions
    together (bytes per second, 0 for none); ``announced(peer)`` gives the friend's announced
    listen addresses (from the roster)."""

    def __init__(
        self,
        *,
        table: TransferTable,
        reports: ProgressReports,
        pumps: trio.CapacityLimiter,
        max_send_rate: int,
        direct: bool,
        stall_timeout: float,
        announced: Callable[[str], Sequence[str]],
    ) -> None:
        self.table = table
        self.announced = announced
        """A friend's announced listen addresses: the only IPs a direct connection may go to."""
        self.reports = reports
        self.pumps = pumps
        self.max_send_rate = max_send_rate
        self.direct = direct
        self.stall_timeout = stall_timeout
        self.sessions = Sessions()
        self._pacer = Pacer(max_send_rate)
        self._punch_failed: dict[str, float] = {}
        """Friend -> until when (trio clock) no punch is tried to it, after one failed."""

    async def serve_get(self, stream: INetStream, peer: str, get: wire.FileGet) -> None:
        t = self.table.get(get.tid)
        if t is None or t.peer_id != peer or t.direction is not Direction.OUT:
            await refuse(stream, wire.REFUSED_UNKNOWN, "no such transfer")
            return
        if get.offset > t.size:
            raise wire.FrameError("offset beyond the end of the file")
        scope = trio.CancelScope()
        async with self.table.locked(t.tid):
            # Decided under the lock, so a cancel committed meanwhile is seen here and a
            # session registered here is cancelled by any later end.
            t = self.table[t.tid]
            if t.state in TERMINAL:
                await _end(stream, wire.FileEnd(t.tid, _outcome(t.state), clip_utf8(t.error)))
                return
            assert t.source is not None
            try:
                source = await trio.to_thread.run_sync(open_source, t.source, t.size, t.mtime_ns)
            except (OSError, SourceChanged) as exc:
                reason = f"the file can no longer be sent: {os_reason(exc)}"
                await self.table.apply(t.tid, TEvent.FAILED, reason=reason)
                await _end(stream, wire.FileEnd(t.tid, "failed", clip_utf8(reason)))
                return
            try:
                # The sender's "active" is informational (the receiver drives): no fsync.
                await self.table.apply(
                    t.tid, TEvent.DATA_REQUESTED, durable=False, done_bytes=get.offset
                )
            except BaseException:
                source.close()
                raise
            # From here to the registration nothing awaits, so the count is exact.
            if t.tid not in self.sessions and self.sessions.full(peer):
                source.close()
                await refuse(stream, wire.REFUSED_BUSY, "too many transfers at once")
                return
            # A session already running is cancelled: the receiver restarted it.
            self.sessions.add(t.tid, peer, scope)
        with scope, source:
            try:
                await self._session(stream, t, get, source)
            finally:
                if self.sessions.remove(t.tid, scope):
                    self.reports.forget(t.tid)
        if scope.cancelled_caught:
            await reset(stream)

    async def _session(
        self, stream: INetStream, t: Transfer, get: wire.FileGet, source: Any
    ) -> None:
        sealer = bulk.RecordSealer(get.suite, get.key, t.tid, get.offset)
        progress = Progress(get.offset)
        self.reports.track(t.tid, progress)
        direct = None
        path = "stream"
        if self.direct:
            origin = stream_origin(stream)
            announced = self.announced(t.peer_id)
            direct = await connect_direct(origin, get.port, self.stall_timeout, sealer, announced)
            path = "tcp"
            if direct is None and get.punch:
                direct = await self._punch(stream, t, get, origin, sealer)
                path = "punched"
        sock, binding = direct if direct is not None else (None, b"")
        # Owned from here: every way out closes it (a reset stream, a newer file-get).
        with sock if sock is not None else contextlib.nullcontext():
            if sock is None:
                path = "stream"
            await stream.write(wire.encode(wire.FileData(t.tid, path)))
            await self.table.record(t.tid, data_path=path)
            await trio.to_thread.run_sync(source.seek, get.offset)
            log.info(
                "sending %s to %s via %s from byte %d", t.name, short(t.peer_id), path, get.offset
            )
            chunk = paced_chunk(self.max_send_rate)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch_stall, progress, self.stall_timeout)
                    if sock is not None:
                        stop = threading.Event()
                        await run_interruptibly(
                            lambda: send_records(
                                sock,
                                sealer,
                                source,
                                t.size,
                                progress,
                                self._pacer,
                                chunk,
                                stop,
                                binding,
                            ),
                            lambda: _stop(stop, sock),
                            self.pumps,
                        )
                    else:
                        await self._send_on_stream(
                            stream, sealer, source, t.size, progress, min(chunk, STREAM_CHUNK)
                        )
                    nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                inner = sole_error(group)
                if isinstance(inner, SourceChanged):
                    await self.table.fail(t.tid, str(inner))
                raise inner from None
            finally:
                await self.table.record(t.tid, done_bytes=progress.bytes)
            log.info(
                "sent %s to %s via %s up to byte %d", t.name, short(t.peer_id), path, progress.bytes
            )
            await finish(stream)

    async def _punch(
        self,
        stream: INetStream,
        t: Transfer,
        get: wire.FileGet,
        origin: tuple[str | None, bool],
        sealer: bulk.RecordSealer,
    ) -> tuple[socket.socket, bytes] | None:
        """A connection punched through the NATs between us (PROTOCOL.md §6.3), or None: only
        over a direct libp2p connection to another host (:func:`punchable`), and not again
        soon to a friend it failed for."""
        ip, relayed = origin
        failed = self._punch_failed.get(t.peer_id)
        soon = failed is not None and trio.current_time() < failed
        if soon or not punchable(ip, relayed, local_ips()):
            return None
        assert ip is not None
        with PunchPort(ip) as held:
            await stream.write(wire.encode(wire.FilePunch(t.tid, held.port)))
            punched = await punch_as_sender(held, (ip, get.punch), self.stall_timeout, sealer)
        if punched is None:
            log.info("could not punch a data connection to %s; using the stream", short(t.peer_id))
            self._punch_failed[t.peer_id] = trio.current_time() + PUNCH_BACKOFF
        else:
            self._punch_failed.pop(t.peer_id, None)
        return punched

    async def _send_on_stream(
        self,
        stream: INetStream,
        sealer: bulk.RecordSealer,
        source: Any,
        size: int,
        progress: Progress,
        chunk_size: int,
    ) -> None:
        await stream.write(sealer.hello())
        record = bytearray(bulk.HEADER_BYTES + chunk_size + bulk.TAG_BYTES)
        # The file is read ahead, in blocks of many records, by a task and a thread of its
        # own: one thread hop per 64 KiB record, each before its write, held the stream up.
        send, receive = trio.open_memory_channel[bytes](STREAM_READS_AHEAD)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_ahead, send, source, sealer.offset, size, chunk_size)
            async with receive:
                async for block in receive:
                    view = memoryview(block)
                    for start in range(0, len(view), chunk_size):
                        n = sealer.seal_into(view[start : start + chunk_size], memoryview(record))
                        wait = self._pacer.reserve(n)
                        if wait > 0:
                            await trio.sleep(wait)
                        with trio.move_on_after(self.stall_timeout) as waited:
                            await stream.write(bytes(record[:n]))
                        if waited.cancelled_caught:
                            raise ConnectionError(f"no data moved for {self.stall_timeout:g} s")
                        progress.bytes = sealer.offset
                        progress.wire += n
        if isinstance(stream, NetStream):
            await stream.close_write()


async def _read_ahead(
    blocks: trio.MemorySendChannel[bytes], source: Any, offset: int, size: int, chunk_size: int
) -> None:
    """Read ``source`` from ``offset`` (where it is positioned) to ``size`` into ``blocks``,
    a whole number of records' worth at a time (the last one shorter)."""
    block_size = max(chunk_size, READ_AHEAD_BLOCK // chunk_size * chunk_size)
    async with blocks:
        while offset < size:
            want = min(block_size, size - offset)
            block = await trio.to_thread.run_sync(source.read, want)
            if len(block) < want:
                raise SourceChanged("the file is shorter than when it was offered")
            offset += want
            await blocks.send(block)


async def _end(stream: INetStream, end: wire.FileEnd) -> None:
    """Answer a data request for a transfer that has ended."""
    await stream.write(wire.encode(end))
    await finish(stream)


def _outcome(state: TState) -> str:
    return {
        TState.COMPLETED: "completed",
        TState.DECLINED: "declined",
        TState.CANCELLED: "cancelled",
    }.get(state, "failed")


def _stop(stop: threading.Event, sock: socket.socket) -> None:
    stop.set()
    shutdown(sock)
