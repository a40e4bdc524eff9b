"""File transfers between friends: the trio adapter around the file frames, the transfer
state table, the record layer and the transfer store.

Protocol ``/p2pchat/file/1.0.0`` (docs/PROTOCOL.md), friends only. A stream carries either one
*notice* (``file-offer`` or ``file-end``) and its reply, or one *data session*: the receiver's
``file-get`` (offset, cipher suite, a fresh session key, maybe a TCP port), the sender's
``file-data`` naming the path, then sealed records (:mod:`p2pchat.files.bulk`) either on a
direct TCP connection to that port or, if that cannot be made, on the libp2p stream itself.

The receiver drives: it asks for bytes from its last verified offset whenever both daemons
are up, so a transfer resumes by itself after either side was killed or the network dropped.
One :class:`FileLink` task per friend with work (owed notices, accepted incoming files)
keeps trying with backoff. Sessions run in the manager's nursery; a failed session is retried,
a failed *verification* ends the transfer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final

import blake3
import outcome
import trio
from libp2p.abc import INetStream
from libp2p.network.stream.net_stream import NetStream

from p2pchat import wire
from p2pchat.api import ApiError
from p2pchat.chat.messages import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    Chat,
    Wakeup,
    _finish,
    _log_stream_failure,
    _read_one_frame,
    _refuse,
    _reset,
    end_failed_stream,
    now_ms,
    short,
)
from p2pchat.chat.store import ContactState
from p2pchat.events import EventBus
from p2pchat.files import bulk, filenames
from p2pchat.files.datapath import (
    Pacer,
    Progress,
    SourceChanged,
    paced_chunk,
    receive_records,
    send_records,
    write_at,
)
from p2pchat.files.state import (
    PEER_EVENTS,
    PEER_OUTCOME_EVENTS,
    TERMINAL,
    Direction,
    TEvent,
    TState,
    step,
)
from p2pchat.files.store import OFFER_NOTICE, Transfer, TransferStore
from p2pchat.locks import KeyedLocks
from p2pchat.net.host import read_some
from p2pchat.storage.database import DatabaseError

log = logging.getLogger(__name__)

NOTICE_TIMEOUT: Final = 10.0
GET_REPLY_TIMEOUT: Final = 15.0
DIRECT_CONNECT_TIMEOUT: Final = 3.0
HELLO_TIMEOUT: Final = 5.0
CHECKPOINT_INTERVAL: Final = 1.0
"""How often a receiving session makes its progress durable (fsync, then record the offset)."""
PROGRESS_INTERVAL: Final = 0.5
STREAM_CHUNK: Final = 64 * 1024
"""Plaintext per record on the libp2p-stream path: the stream is shared with chat."""
MAX_SESSIONS_PER_PEER: Final = 4
MAX_PENDING_DATA_CONNECTIONS: Final = 16
MAX_PUMP_THREADS: Final = 16
BULK_NICENESS: Final = 10
"""How much lower than the rest of the daemon a data pump's thread runs (Unix niceness):
measured, chat p99 during a 512 MiB transfer fell from 69-206 ms to 32 ms with it."""
MAX_NAME_TRIES: Final = 10_000
STALL_TIMEOUT: Final = 30.0
"""Default: a data session that moves less than ``STALL_MIN_BYTES`` in this long is
abandoned (and retried): a slow link is fine, a trickle that only holds the session is not."""
STALL_MIN_BYTES: Final = 4096
MAX_OPEN_OFFERS_PER_PEER: Final = 100
DISK_MARGIN: Final = 16 * 1024 * 1024
"""Free space kept beyond an incoming file's size when accepting it."""


class TransferFailed(Exception):
    """This transfer cannot succeed (bad data, changed source, no disk space): end it."""


@dataclasses.dataclass
class FilesConfig:
    incoming_dir: Path
    auto_accept_max_bytes: int = 0
    """Files from friends up to this size are accepted without asking (0: never)."""
    direct_host: str = "0.0.0.0"
    """Where a receiver listens for the direct data connection (the daemon's listen host)."""
    max_send_rate: int = 0
    """Bytes per second over all outgoing transfers; 0: no cap."""
    direct: bool = True
    """Offer and use direct TCP data connections (else only the libp2p stream)."""
    stall_timeout: float = STALL_TIMEOUT


def transfer_json(t: Transfer, *, online: bool | None = None) -> dict[str, Any]:
    return {
        "id": t.id_hex,
        "peer_id": t.peer_id,
        "direction": t.direction.value,
        "name": t.name,
        "size": t.size,
        "hash": t.hash.hex(),
        "state": t.state.value,
        "bytes": t.size if t.state is TState.COMPLETED else t.done_bytes,
        "path": t.source if t.direction is Direction.OUT else t.final_path,
        "data_path": t.data_path,
        "error": t.error,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }


def hash_file(path: str) -> tuple[bytes, int, int]:
    """(BLAKE3 digest, size, mtime_ns) of a regular file, checked unchanged while hashing.
    Blocking: run it in a thread."""
    _require_regular(path)  # before opening: opening a FIFO would block
    with open(path, "rb", buffering=0) as f:
        before = os.fstat(f.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise SourceChanged(f"{path} is not a regular file")
        try:
            hasher = _hash_prefix(f.fileno(), before.st_size)
        except ConnectionError:
            raise SourceChanged(f"{path} shrank while it was being hashed") from None
        after = os.fstat(f.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise SourceChanged(f"{path} changed while it was being hashed")
    return hasher.digest(), after.st_size, after.st_mtime_ns


def _require_regular(path: str) -> None:
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise SourceChanged(f"{path} is not a regular file")


def _hash_prefix(fd: int, length: int) -> Any:
    """A BLAKE3 hasher over the first ``length`` bytes of ``fd`` (a file to offer, or a
    partial file when resuming); ConnectionError if it is shorter."""
    hasher = blake3.blake3()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    offset = 0
    while offset < length:
        n = os.preadv(fd, [view[: min(len(buf), length - offset)]], offset)
        if n <= 0:
            raise ConnectionError("partial file is shorter than recorded")
        hasher.update(view[:n])
        offset += n
    return hasher


def _create_partial(path: Path) -> None:
    """Create the (empty) partial file; never follow or replace anything already there.
    Not fsynced: if a crash loses it, the transfer starts again from zero (_open_partial)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged user may still write in ``directory``'s filesystem."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _unlink_and_sync_dir(path: Path | None, directory: Path) -> None:
    """Remove ``path`` (the partial file's second name) and make the directory durable."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _link_no_replace(part: Path, final: Path) -> None:
    """Make ``final`` name the verified partial file, failing if ``final`` exists.

    A hard link is atomic and never replaces anything. Filesystems without hard links
    (FAT, some network and FUSE mounts) get an exclusive placeholder instead, which the
    partial file then replaces: still never someone else's file."""
    try:
        os.link(part, final)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
    os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    os.replace(part, final)


def _publication_state(part: Path | None, final: Path) -> str:
    """Where an interrupted publication got to: "linked" (both names point at one file),
    "renamed" (only the final name exists) or "not begun"."""
    part_exists = part is not None and part.exists()
    if not final.exists():
        return "not begun"
    if part_exists:
        assert part is not None
        return "linked" if os.path.samefile(part, final) else "not begun"
    return "renamed"


def _hash_path(path: Path) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return bytes(_hash_prefix(f.fileno(), os.fstat(f.fileno()).st_size).digest())


class TransferManager:
    """All file transfers of one identity. ``load()`` before listening, then run it in a
    nursery with ``nursery.start(manager.run)``."""

    def __init__(
        self, *, chat: Chat, store: TransferStore, events: EventBus, config: FilesConfig
    ) -> None:
        self.chat = chat
        self.store = store
        self.events = events
        self.config = config
        self._transfers: dict[bytes, Transfer] = {}
        self._links: dict[str, FileLink] = {}
        self._receiving: dict[bytes, trio.CancelScope] = {}
        self._sending: dict[bytes, trio.CancelScope] = {}
        self._progress: dict[bytes, tuple[Progress, float, int]] = {}
        # Per transfer (key: its ID) and per peer's offers (key: the peer ID's bytes).
        self._locks: KeyedLocks[bytes] = KeyedLocks()
        self._nursery: trio.Nursery | None = None
        self._pacer = Pacer(config.max_send_rate)
        # Pump threads hold their thread for a whole session: their own limit, so they can
        # never use up the threads that API calls and checkpoints need.
        self._pumps = trio.CapacityLimiter(MAX_PUMP_THREADS)
        self._direct_failed: set[bytes] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def load(self) -> None:
        self.config.incoming_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for t in await self.store.all():
            self._transfers[t.tid] = t
        self.chat.net.set_handler(wire.FILE_PROTOCOL, self.chat._budgeted("file", self._serve))
        self.chat.add_connection_listener(self._connection_changed)
        self.chat.add_unfriend_listener(self._unfriended)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for peer in {t.peer_id for t in self._transfers.values() if t.state not in TERMINAL}:
                if not self.chat._is_friend(peer):  # the friendship ended while we were down
                    nursery.start_soon(self._end_with, peer)
            for peer in {t.peer_id for t in self._transfers.values() if self._wants_link(t)}:
                self._ensure_link(peer)
            nursery.start_soon(self._report_progress)
            task_status.started()
            await trio.sleep_forever()

    def _wants_link(self, t: Transfer) -> bool:
        return t.notice is not None or (t.direction is Direction.IN and t.state is TState.ACTIVE)

    def _ensure_link(self, peer: str) -> None:
        if self._nursery is None:
            return
        link = self._links.get(peer)
        if link is None:
            link = FileLink(self, peer)
            self._links[peer] = link
            self._nursery.start_soon(link.run, name=f"file-link-{short(peer)}")
        link.wake()

    def _unfriended(self, peer: str) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._end_with, peer)

    async def _end_with(self, peer: str) -> None:
        """End every open transfer with ``peer``, who is no longer a friend."""
        for t in [t for t in self._transfers.values() if t.peer_id == peer]:
            if t.state in TERMINAL:
                continue
            try:
                async with self._locked(t.tid):
                    await self._apply(t.tid, TEvent.UNFRIENDED, reason="no longer friends")
            except Exception as exc:  # retried at the next start; never stops the manager
                log.error("could not end transfer %s with %s: %s", t.id_hex, short(peer), exc)

    def _connection_changed(self, peer: str, up: bool) -> None:
        link = self._links.get(peer)
        if link is not None:
            link.network_changed()
        elif up and any(
            t.peer_id == peer and self._wants_link(t) for t in self._transfers.values()
        ):
            self._ensure_link(peer)

    # --- state changes ---------------------------------------------------------------------

    def _locked(self, key: bytes) -> AbstractAsyncContextManager[None]:
        """Serialise state changes of one transfer (key: its ID), or the offers of one peer
        (key: its ID's bytes)."""
        return self._locks.hold(key)

    async def _apply(
        self, tid: bytes, event: TEvent, *, reason: str = "", durable: bool = True, **fields: Any
    ) -> Transfer | None:
        """Apply ``event`` (caller holds the transfer's lock). Returns the updated transfer, or
        None if the event does not apply (peer events on finished transfers)."""
        t = self._transfers.get(tid)
        if t is None:
            return None
        tr = step(t.direction, t.state, event)
        if tr is None:
            return None
        if tr.notify is not None:
            fields["notice"] = tr.notify
            fields["notice_reason"] = clip_utf8(reason)
        if reason and (
            tr.state is TState.FAILED or event in PEER_EVENTS or event is TEvent.UNFRIENDED
        ):
            fields.setdefault("error", reason)  # why it ended, when the user did not do it
        if tr.drop_partial and t.part_path:
            await trio.to_thread.run_sync(_unlink_quietly, t.part_path)
            fields["part_path"] = None
        updated = await self.store.update(tid, now_ms(), state=tr.state, durable=durable, **fields)
        assert updated is not None
        self._transfers[tid] = updated
        if tr.state in TERMINAL:
            for scopes in (self._receiving, self._sending):
                scope = scopes.get(tid)
                if scope is not None:
                    scope.cancel()
        log.log(
            logging.INFO if tr.state is not t.state else logging.DEBUG,
            "transfer %s (%s %s): %s -> %s%s",
            updated.id_hex[:12],
            t.direction.value,
            short(t.peer_id),
            t.state.value,
            tr.state.value,
            f" ({reason})" if reason else "",
        )
        if tr.state is not t.state or tr.notify is not None:
            self.events.publish("transfer.updated", transfer=transfer_json(updated))
        if self._wants_link(updated):
            self._ensure_link(updated.peer_id)
        return updated

    # --- user actions ------------------------------------------------------------------------

    def resolve(self, text: str) -> Transfer:
        query = text.strip().lower()
        if len(query) < 4:
            raise ApiError("invalid_params", "give at least 4 characters of the transfer ID")
        matches = [t for t in self._transfers.values() if t.id_hex.startswith(query)]
        if not matches:
            raise ApiError("not_found", f"no transfer has an ID starting {query!r}")
        if len(matches) > 1:
            raise ApiError("ambiguous", f"several transfers start with {query!r}; type more")
        return matches[0]

    def active_count(self) -> int:
        """Transfers not finished yet (offers waiting for a decision included)."""
        return sum(1 for t in self._transfers.values() if t.state not in TERMINAL)

    def list_json(self) -> list[dict[str, Any]]:
        return [transfer_json(self._live(t)) for t in self._transfers.values()]

    def _live(self, t: Transfer) -> Transfer:
        progress = self._progress.get(t.tid)
        if progress is None or t.state is not TState.ACTIVE:
            return t
        return _with(t, done_bytes=progress[0].bytes)

    async def send_file(self, friend: str, path: str) -> dict[str, Any]:
        contact = self.chat.resolve(friend)
        if contact.state is not ContactState.FRIEND:
            raise ApiError(
                "not_friend",
                f"{contact.display_name or short(contact.peer_id)} is not a friend: "
                "files can only go to accepted friends",
            )
        if not os.path.isabs(path):
            raise ApiError("invalid_params", f"the path must be absolute: {path!r}")
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                "file_error",
                f"cannot send {path!r}: its path is not valid UTF-8 (rename the file)",
            ) from None
        try:
            digest, size, mtime_ns = await trio.to_thread.run_sync(hash_file, path)
        except (OSError, SourceChanged) as exc:
            raise ApiError("file_error", f"cannot send {path}: {_os_reason(exc)}") from None
        if size > wire.MAX_FILE_SIZE:
            raise ApiError("too_large", f"{path} is larger than {wire.MAX_FILE_SIZE} bytes")
        name = filenames.sanitize(os.path.basename(path))
        now = now_ms()
        t = Transfer(
            tid=os.urandom(wire.TRANSFER_ID_BYTES),
            peer_id=contact.peer_id,
            direction=Direction.OUT,
            name=name,
            size=size,
            hash=digest,
            state=TState.OFFERING,
            created_at=now,
            updated_at=now,
            source=path,
            mtime_ns=mtime_ns,
            notice=OFFER_NOTICE,
        )
        try:
            await self.store.create(t)
        except DatabaseError as exc:
            raise ApiError("storage_error", str(exc)) from None
        self._transfers[t.tid] = t
        log.info("offering %s (%d bytes) to %s", name, size, short(contact.peer_id))
        self.events.publish("transfer.updated", transfer=transfer_json(t))
        self._ensure_link(contact.peer_id)
        return transfer_json(t)

    async def accept(self, text: str) -> dict[str, Any]:
        t = self.resolve(text)
        async with self._locked(t.tid):
            t = self._transfers[t.tid]
            if t.direction is not Direction.IN or t.state is not TState.OFFERED:
                raise ApiError("invalid_state", f"transfer {t.id_hex[:12]} is {t.state.value}")
            updated = await self._accept_locked(t)
        return transfer_json(updated)

    async def _accept_locked(self, t: Transfer) -> Transfer:
        directory = self.config.incoming_dir
        free = await trio.to_thread.run_sync(free_bytes, directory)
        if free < t.size + DISK_MARGIN:
            raise ApiError(
                "disk_full",
                f"not enough space in {directory} for {t.name}: {t.size} bytes needed, {free} free",
            )
        part = directory / filenames.partial_name(t.name, t.id_hex)
        try:
            await trio.to_thread.run_sync(_create_partial, part)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ApiError(
                    "disk_full", f"not enough space in {directory} for {t.name}"
                ) from None
            raise ApiError("file_error", f"cannot create {part}: {_os_reason(exc)}") from None
        updated = await self._apply(t.tid, TEvent.USER_ACCEPT, part_path=str(part), done_bytes=0)
        assert updated is not None
        return updated

    async def decline(self, text: str) -> dict[str, Any]:
        return await self._user_end(text, TEvent.USER_DECLINE)

    async def cancel(self, text: str) -> dict[str, Any]:
        return await self._user_end(text, TEvent.USER_CANCEL)

    async def _user_end(self, text: str, event: TEvent) -> dict[str, Any]:
        t = self.resolve(text)
        async with self._locked(t.tid):
            t = self._transfers[t.tid]
            reason = "declined by the user" if event is TEvent.USER_DECLINE else "cancelled"
            updated = await self._apply(t.tid, event, reason=reason)
            if updated is None:
                raise ApiError(
                    "invalid_state",
                    f"cannot {event.value} transfer {t.id_hex[:12]}: it is {t.state.value}",
                )
        return transfer_json(updated)

    # --- serving the file protocol ---------------------------------------------------------

    async def _serve(self, stream: INetStream, peer: str) -> None:
        if not self.chat._is_friend(peer):
            log.info("refused a file stream from %s: not a friend", short(peer))
            await _refuse(stream, wire.REFUSED_NOT_FRIEND, "you are not a friend of this peer")
            return
        try:
            with trio.fail_after(NOTICE_TIMEOUT):
                frame = await _read_one_frame(stream)
            if isinstance(frame, wire.FileGet):
                await self._serve_get(stream, peer, frame)
                return
            with trio.fail_after(NOTICE_TIMEOUT):
                if isinstance(frame, wire.FileOffer):
                    reply = await self._on_offer(peer, frame)
                elif isinstance(frame, wire.FileEnd):
                    reply = await self._on_end(peer, frame)
                else:
                    raise wire.FrameError(f"unexpected {type(frame).__name__} on file stream")
                await stream.write(wire.encode(reply))
            await _finish(stream)
        except Exception as exc:
            await end_failed_stream(stream, exc, "file", peer)

    async def _on_offer(self, peer: str, frame: wire.FileOffer) -> wire.Frame:
        # Everything under one lock per peer's offers, so concurrent offers (a repeat of the
        # same ID, or a burst) are checked against what is really stored.
        async with self._locked(peer.encode()):
            return await self._on_offer_locked(peer, frame)

    async def _on_offer_locked(self, peer: str, frame: wire.FileOffer) -> wire.Frame:
        existing = self._transfers.get(frame.tid)
        if existing is not None:
            if existing.peer_id == peer and existing.direction is Direction.IN:
                return wire.Received()  # a repeated offer whose receipt was lost
            return wire.Refused(wire.REFUSED_BAD_FRAME, "transfer ID already in use")
        open_offers = sum(
            1
            for t in self._transfers.values()
            if t.peer_id == peer and t.direction is Direction.IN and t.state not in TERMINAL
        )
        if open_offers >= MAX_OPEN_OFFERS_PER_PEER:
            return wire.Refused(wire.REFUSED_FULL, "too many open file offers")
        now = now_ms()
        t = Transfer(
            tid=frame.tid,
            peer_id=peer,
            direction=Direction.IN,
            name=filenames.sanitize(frame.name),
            size=frame.size,
            hash=frame.hash,
            state=TState.OFFERED,
            created_at=now,
            updated_at=now,
        )
        async with self._locked(t.tid):
            stored, created = await self.store.create(t)
            if not created:  # the ID is taken in the database (cannot be in the cache)
                return wire.Refused(wire.REFUSED_BAD_FRAME, "transfer ID already in use")
            self._transfers[t.tid] = stored
            log.info("file offer %s (%d bytes) from %s", t.name, t.size, short(peer))
            self.events.publish("transfer.offered", transfer=transfer_json(t))
            limit = self.config.auto_accept_max_bytes
            if limit > 0 and t.size <= limit:
                try:
                    await self._accept_locked(t)
                except ApiError as exc:
                    log.warning("could not auto-accept %s: %s", t.name, exc.message)
        return wire.Received()

    async def _on_end(self, peer: str, frame: wire.FileEnd) -> wire.Frame:
        t = self._transfers.get(frame.tid)
        if t is None or t.peer_id != peer:
            return wire.Received()  # e.g. a cancel for an offer that never arrived
        if frame.outcome == "completed" and t.direction is not Direction.OUT:
            raise wire.FrameError("only a receiver may report completion")
        if frame.outcome == "declined" and t.direction is not Direction.OUT:
            raise wire.FrameError("only a receiver may decline")
        async with self._locked(t.tid):
            reason = f"{frame.outcome} by the friend" + (
                f": {frame.reason}" if frame.reason else ""
            )
            await self._apply(t.tid, PEER_OUTCOME_EVENTS[frame.outcome], reason=reason)
        return wire.Received()

    # --- sender side of a data session -------------------------------------------------------

    async def _serve_get(self, stream: INetStream, peer: str, get: wire.FileGet) -> None:
        t = self._transfers.get(get.tid)
        if t is None or t.peer_id != peer or t.direction is not Direction.OUT:
            await _refuse(stream, wire.REFUSED_UNKNOWN, "no such transfer")
            return
        if get.offset > t.size:
            raise wire.FrameError("offset beyond the end of the file")
        scope = trio.CancelScope()
        async with self._locked(t.tid):
            # Decided under the lock, so a cancel committed meanwhile is seen here and a
            # session registered here is cancelled by any later end.
            t = self._transfers[t.tid]
            if t.state in TERMINAL:
                end = wire.FileEnd(t.tid, _outcome(t.state), clip_utf8(t.error))
                await stream.write(wire.encode(end))
                await _finish(stream)
                return
            try:
                source = await trio.to_thread.run_sync(_open_source, t)
            except (OSError, SourceChanged) as exc:
                reason = f"the file can no longer be sent: {_os_reason(exc)}"
                await self._apply(t.tid, TEvent.FAILED, reason=reason)
                end = wire.FileEnd(t.tid, "failed", clip_utf8(reason))
                await stream.write(wire.encode(end))
                await _finish(stream)
                return
            try:
                # The sender's "active" is informational (the receiver drives): no fsync.
                await self._apply(
                    t.tid, TEvent.DATA_REQUESTED, durable=False, done_bytes=get.offset
                )
            except BaseException:
                source.close()
                raise
            # From here to the registration nothing awaits, so the count is exact.
            old = self._sending.get(t.tid)
            sessions = sum(1 for tid in self._sending if self._transfers[tid].peer_id == peer)
            if old is None and sessions >= MAX_SESSIONS_PER_PEER:
                source.close()
                await _refuse(stream, wire.REFUSED_BUSY, "too many transfers at once")
                return
            if old is not None:
                old.cancel()  # the receiver restarted the session: this one replaces it
            self._sending[t.tid] = scope
        with scope, source:
            try:
                await self._send_session(stream, t, get, source)
            finally:
                if self._sending.get(t.tid) is scope:
                    del self._sending[t.tid]
                    self._progress.pop(t.tid, None)
        if scope.cancelled_caught:
            await _reset(stream)

    async def _send_session(
        self, stream: INetStream, t: Transfer, get: wire.FileGet, source: Any
    ) -> None:
        sealer = bulk.RecordSealer(get.suite, get.key, t.tid, get.offset)
        progress = Progress(get.offset)
        self._progress[t.tid] = (progress, time.monotonic(), get.offset)
        sock = await self._connect_direct(stream, get.port)
        path = "tcp" if sock is not None else "stream"
        await stream.write(wire.encode(wire.FileData(t.tid, path)))
        await self.store.update(t.tid, now_ms(), data_path=path, durable=False)
        self._transfers[t.tid] = _with(self._transfers[t.tid], data_path=path)
        await trio.to_thread.run_sync(source.seek, get.offset)
        log.info("sending %s to %s via %s from byte %d", t.name, short(t.peer_id), path, get.offset)
        chunk = paced_chunk(self.config.max_send_rate)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_stall, progress, self.config.stall_timeout)
                if sock is not None:
                    with sock:
                        stop = threading.Event()
                        await _run_interruptibly(
                            lambda: send_records(
                                sock, sealer, source, t.size, progress, self._pacer, chunk, stop
                            ),
                            lambda: _stop(stop, sock),
                            self._pumps,
                        )
                else:
                    await self._send_on_stream(
                        stream, sealer, source, t.size, progress, min(chunk, STREAM_CHUNK)
                    )
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            inner = _sole(group)
            if isinstance(inner, SourceChanged):
                await self._fail(t.tid, str(inner))
            raise inner from None
        except SourceChanged as exc:
            await self._fail(t.tid, str(exc))
            raise
        finally:
            await self.store.update(t.tid, now_ms(), done_bytes=progress.bytes, durable=False)
            if t.tid in self._transfers:
                self._transfers[t.tid] = _with(self._transfers[t.tid], done_bytes=progress.bytes)
        log.info(
            "sent %s to %s via %s up to byte %d", t.name, short(t.peer_id), path, progress.bytes
        )
        await _finish(stream)

    async def _connect_direct(self, stream: INetStream, port: int) -> socket.socket | None:
        remote = stream.get_remote_address() if isinstance(stream, NetStream) else None
        if not port or remote is None or not self.config.direct:
            return None
        host = remote[0]
        stall = self.config.stall_timeout

        def connect() -> socket.socket:
            sock = socket.create_connection((host, port), timeout=DIRECT_CONNECT_TIMEOUT)
            sock.settimeout(stall)  # a receiver that stops reading ends the session
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

        try:
            return await trio.to_thread.run_sync(connect)  # bounded by its timeout
        except OSError as exc:
            log.info("no direct data path to %s:%d (%s); using the libp2p stream", host, port, exc)
            return None

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
        while sealer.offset < size:
            want = min(chunk_size, size - sealer.offset)
            chunk = await trio.to_thread.run_sync(source.read, want)
            if len(chunk) < want:
                raise SourceChanged("the file is shorter than when it was offered")
            n = sealer.seal_into(memoryview(chunk), memoryview(record))
            wait = self._pacer.reserve(n)
            if wait > 0:
                await trio.sleep(wait)
            with trio.move_on_after(self.config.stall_timeout) as waited:
                await stream.write(bytes(record[:n]))
            if waited.cancelled_caught:
                raise ConnectionError(f"no data moved for {self.config.stall_timeout:g} s")
            progress.bytes = sealer.offset
            progress.wire += n
        if isinstance(stream, NetStream):
            await stream.close_write()

    # --- receiver side of a data session -----------------------------------------------------

    def _start_receiving(self, t: Transfer) -> None:
        if t.tid in self._receiving or self._nursery is None:
            return
        running = sum(1 for tid in self._receiving if self._transfers[tid].peer_id == t.peer_id)
        if running >= MAX_SESSIONS_PER_PEER:
            return
        scope = trio.CancelScope()
        self._receiving[t.tid] = scope
        self._nursery.start_soon(self._receive, t.tid, scope, name=f"receive-{t.id_hex[:12]}")

    async def _receive(self, tid: bytes, scope: trio.CancelScope) -> None:
        """One receive session; every way it can end is handled here (nothing escapes into
        the manager's nursery, which would stop the daemon)."""
        try:
            with scope:
                try:
                    await self._receive_session(tid)
                except BaseExceptionGroup as group:
                    raise _sole(group) from None
        except (TransferFailed, bulk.BulkError) as exc:
            log.warning("transfer %s failed: %s", tid.hex()[:12], exc)
            await self._fail(tid, str(exc))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                await self._fail(tid, "disk full")
            else:
                _log_stream_failure(
                    exc, "receiving from %s", self._transfers[tid].peer_id, level=logging.INFO
                )
        except Exception as exc:
            _log_stream_failure(
                exc, "receiving from %s", self._transfers[tid].peer_id, level=logging.INFO
            )
        finally:
            if self._receiving.get(tid) is scope:
                del self._receiving[tid]
            progress = self._progress.pop(tid, None)
            t = self._transfers.get(tid)
            if t is not None:
                link = self._links.get(t.peer_id)
                if link is not None:
                    link.session_ended(progress is not None and progress[0].bytes > progress[2])

    async def _fail(self, tid: bytes, reason: str) -> None:
        """End a transfer as failed; if even that cannot be stored, log it (the transfer
        stays as it was and is retried), never raise."""
        try:
            async with self._locked(tid):
                await self._apply(tid, TEvent.FAILED, reason=reason)
        except Exception as exc:  # this is the last resort: never let it escape
            log.error("could not record that transfer %s failed (%s): %s", tid.hex(), reason, exc)

    async def _receive_session(self, tid: bytes) -> None:
        t = self._transfers[tid]
        if t.final_path is not None and await self._resume_publish(t):
            return
        if t.part_path is None:
            raise TransferFailed("the partial file is missing")
        part = Path(t.part_path)
        fd = await trio.to_thread.run_sync(_open_partial, part)
        try:
            offset = t.done_bytes
            try:
                hasher = await trio.to_thread.run_sync(_hash_prefix, fd, offset)
            except ConnectionError:
                offset, hasher = 0, blake3.blake3()
            if offset < t.size:
                await self._pull(t, fd, offset, hasher)
            await trio.to_thread.run_sync(os.fsync, fd)
        finally:
            os.close(fd)
        # Everything is in and on disk. From here a failure (e.g. publishing) is no progress,
        # so the retry backs off instead of re-reading the file at once, again and again.
        self._progress.pop(tid, None)
        if t.done_bytes != t.size:
            updated = await self.store.update(tid, now_ms(), done_bytes=t.size, durable=False)
            if updated is not None:
                self._transfers[tid] = updated
        if hasher.digest() != t.hash:
            raise TransferFailed("the received file does not match the offered hash")
        await self._publish(t, part)

    async def _publish(self, t: Transfer, part: Path) -> None:
        """Give the verified partial file its final name, never replacing an existing file.

        Under the transfer's lock, so a cancel cannot slip in between. The chosen name is
        committed before the link is made, so a daemon killed anywhere in here finds out on
        restart what it had done (:meth:`_resume_publish`)."""
        directory = self.config.incoming_dir
        async with self._locked(t.tid):
            if self._transfers[t.tid].state is not TState.ACTIVE:
                return  # cancelled or failed meanwhile: that already removed the partial file
            for n in range(MAX_NAME_TRIES):
                final = directory / (t.name if n == 0 else filenames.numbered(t.name, n))
                if await trio.to_thread.run_sync(os.path.lexists, final):
                    continue
                # Not fsynced on its own (the completion below is): it survives a killed
                # daemon, and losing it to a power cut costs at most a duplicate copy.
                updated = await self.store.update(
                    t.tid, now_ms(), final_path=str(final), durable=False
                )
                if updated is not None:
                    self._transfers[t.tid] = updated
                try:
                    await trio.to_thread.run_sync(_link_no_replace, part, final)
                except FileExistsError:
                    continue
                break
            else:
                raise TransferFailed(f"no free name for {t.name} in {directory}")
            await trio.to_thread.run_sync(_unlink_and_sync_dir, part, directory)
            await self._apply(
                t.tid, TEvent.VERIFIED, final_path=str(final), part_path=None, done_bytes=t.size
            )
        log.info("received %s from %s into %s", t.name, short(t.peer_id), final)

    async def _resume_publish(self, t: Transfer) -> bool:
        """Finish a publication a crash interrupted; False if it had not really begun."""
        assert t.final_path is not None
        final = Path(t.final_path)
        part = Path(t.part_path) if t.part_path else None
        state = await trio.to_thread.run_sync(_publication_state, part, final)
        if state == "linked":  # both names, one file: the data was verified before the link
            await trio.to_thread.run_sync(_unlink_and_sync_dir, part, final.parent)
        elif state == "renamed":  # only the final name is left: check it is our file
            digest = await trio.to_thread.run_sync(_hash_path, final)
            if digest != t.hash:
                raise TransferFailed("the partial file disappeared")
        else:
            return False
        async with self._locked(t.tid):
            await self._apply(
                t.tid, TEvent.VERIFIED, final_path=str(final), part_path=None, done_bytes=t.size
            )
        log.info("finished publishing %s into %s after a restart", t.name, final)
        return True

    async def _pull(self, t: Transfer, fd: int, offset: int, hasher: Any) -> None:
        suite = bulk.preferred_suite()
        key = os.urandom(wire.BULK_KEY_BYTES)
        opener = bulk.RecordOpener(suite, key, t.tid, offset, t.size)
        listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with listener:
            port = 0
            # After a direct attempt that failed, one session on the stream path (anyone can
            # connect to the port; a crowd of silent connections must not stall a transfer).
            direct = self.config.direct and t.tid not in self._direct_failed
            self._direct_failed.discard(t.tid)
            if direct:
                try:
                    await listener.bind((self.config.direct_host, 0))
                    listener.listen(16)
                    port = listener.getsockname()[1]
                except OSError as exc:
                    log.info("no direct data port (%s); using the libp2p stream", exc)
            stream = await self.chat.net.open_stream(t.peer_id, wire.FILE_PROTOCOL)
            try:
                await stream.write(wire.encode(wire.FileGet(t.tid, offset, suite, key, port)))
                with trio.fail_after(GET_REPLY_TIMEOUT):
                    reply = await _read_one_frame_buffered(stream)
                if isinstance(reply, wire.FileEnd):
                    async with self._locked(t.tid):
                        await self._apply(
                            t.tid,
                            PEER_OUTCOME_EVENTS[reply.outcome],
                            reason=f"{reply.outcome} by the friend: {reply.reason}",
                        )
                    raise _Ended
                if isinstance(reply, wire.Refused):
                    if reply.code == wire.REFUSED_UNKNOWN:
                        raise TransferFailed("the sender does not know this transfer")
                    raise ConnectionError(f"sender refused: {reply.reason}")
                if not isinstance(reply, wire.FileData) or reply.tid != t.tid:
                    raise wire.FrameError("expected file-data")
                progress = Progress(offset)
                self._progress[t.tid] = (progress, time.monotonic(), offset)
                await self.store.update(t.tid, now_ms(), data_path=reply.path, durable=False)
                self._transfers[t.tid] = _with(self._transfers[t.tid], data_path=reply.path)
                started = time.monotonic()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._checkpoints, t.tid, fd, progress)
                    if reply.path == "tcp":
                        try:
                            sock = await _accept_direct(listener, opener, self.config.stall_timeout)
                        except trio.TooSlowError:
                            self._direct_failed.add(t.tid)
                            raise ConnectionError("no direct data connection arrived") from None
                        with sock:
                            await _run_interruptibly(
                                lambda: receive_records(sock, opener, fd, hasher, progress),
                                lambda: _shutdown(sock),
                                self._pumps,
                            )
                    else:
                        await self._receive_on_stream(stream, opener, fd, hasher, progress)
                    nursery.cancel_scope.cancel()
                elapsed = max(time.monotonic() - started, 1e-9)
                log.info(
                    "received %d bytes of %s via %s in %.3f s (%.0f MB/s)",
                    progress.bytes - offset,
                    t.name,
                    reply.path,
                    elapsed,
                    (progress.bytes - offset) / elapsed / 1e6,
                )
            except _Ended:
                return
            finally:
                await _reset(stream)

    async def _receive_on_stream(
        self,
        stream: INetStream,
        opener: bulk.RecordOpener,
        fd: int,
        hasher: Any,
        progress: Progress,
    ) -> None:
        while not opener.done:
            with trio.move_on_after(self.config.stall_timeout) as waited:
                data = await read_some(stream, 256 * 1024)
            if waited.cancelled_caught:
                raise ConnectionError(f"no data for {self.config.stall_timeout:g} s")
            progress.wire += len(data)
            if not data:
                raise ConnectionError("the data stream ended early")
            offset = opener.offset
            chunks = opener.feed(data)
            if chunks:
                await trio.to_thread.run_sync(_write_chunks, fd, offset, chunks, hasher)
                progress.bytes = opener.offset
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
            elif time.monotonic() - last_change > self.config.stall_timeout:
                raise ConnectionError(f"no data for {self.config.stall_timeout:g} s")
            t = self._transfers.get(tid)
            if t is not None:
                free = await trio.to_thread.run_sync(free_bytes, self.config.incoming_dir)
                if free < t.size - written:
                    raise TransferFailed(
                        f"disk full: {t.size - written} more bytes needed, {free} free"
                    )
            await trio.to_thread.run_sync(os.fsync, fd)
            await self.store.update(tid, now_ms(), done_bytes=written, durable=False)
            t = self._transfers.get(tid)
            if t is not None:
                self._transfers[tid] = _with(t, done_bytes=written)

    async def _report_progress(self) -> None:
        last: dict[bytes, int] = {}
        while True:
            await trio.sleep(PROGRESS_INTERVAL)
            for tid, (progress, started, start_bytes) in list(self._progress.items()):
                t = self._transfers.get(tid)
                if t is None or last.get(tid) == progress.bytes:
                    continue
                last[tid] = progress.bytes
                elapsed = max(time.monotonic() - started, 1e-6)
                self.events.publish(
                    "transfer.progress",
                    id=t.id_hex,
                    direction=t.direction.value,
                    bytes=progress.bytes,
                    size=t.size,
                    rate=round((progress.bytes - start_bytes) / elapsed),
                )
            for tid in list(last):
                if tid not in self._progress:
                    del last[tid]

    # --- owed notices (used by FileLink) -----------------------------------------------------

    def owed(self, peer: str) -> list[Transfer]:
        return [t for t in self._transfers.values() if t.peer_id == peer and t.notice is not None]

    def to_receive(self, peer: str) -> list[Transfer]:
        return [
            t
            for t in self._transfers.values()
            if t.peer_id == peer and t.direction is Direction.IN and t.state is TState.ACTIVE
        ]

    async def deliver_notice(self, t: Transfer) -> None:
        notice = t.notice
        assert notice is not None
        frame: wire.Frame
        if notice == OFFER_NOTICE:
            frame = wire.FileOffer(t.tid, t.name, t.size, t.hash)
        else:
            frame = wire.FileEnd(t.tid, notice, clip_utf8(t.notice_reason))
        stream = await self.chat.net.open_stream(t.peer_id, wire.FILE_PROTOCOL)
        try:
            with trio.fail_after(NOTICE_TIMEOUT):
                await stream.write(wire.encode(frame))
                reply = await _read_one_frame(stream)
        finally:
            await _reset(stream)
        async with self._locked(t.tid):
            if isinstance(reply, wire.Refused):
                if reply.code in (wire.REFUSED_FULL, wire.REFUSED_RATE_LIMITED):
                    raise trio.TooSlowError(f"{notice} refused for now: {reply.reason}")
                log.info("%s for %s refused: %s", notice, t.id_hex[:12], reply.reason)
                await self.store.clear_notice(t.tid, notice)
                self._refresh_notice(t.tid, notice)
                if notice == OFFER_NOTICE:
                    await self._apply(t.tid, TEvent.FAILED, reason=f"offer refused: {reply.reason}")
                return
            await self.store.clear_notice(t.tid, notice)
            self._refresh_notice(t.tid, notice)
            if notice == OFFER_NOTICE:
                await self._apply(t.tid, TEvent.OFFER_DELIVERED)

    def _refresh_notice(self, tid: bytes, notice: str) -> None:
        t = self._transfers.get(tid)
        if t is not None and t.notice == notice:
            self._transfers[tid] = _with(t, notice=None)


class _Ended(Exception):
    """The sender reported the transfer ended; its state is applied already."""


class FileLink:
    """Keeps one friend's transfers moving: connect with backoff, deliver owed notices,
    start receive sessions for accepted files."""

    def __init__(self, manager: TransferManager, peer: str) -> None:
        self.manager = manager
        self.peer = peer
        self._wake = Wakeup()
        self._backoff = BACKOFF_MIN
        self._failures = 0

    def wake(self) -> None:
        self._wake.set()

    def network_changed(self) -> None:
        self._backoff = BACKOFF_MIN
        self._wake.set()

    def session_ended(self, progressed: bool) -> None:
        """A receive session ended. One that moved bytes is retried at once; one that did
        not waits out the growing backoff (a sender that keeps refusing, a path that keeps
        failing), so the link never spins."""
        if progressed:
            self._backoff = BACKOFF_MIN
            self._wake.set()

    async def run(self) -> None:
        m = self.manager
        try:
            while True:
                owed = m.owed(self.peer)
                receiving = m.to_receive(self.peer)
                if not owed and not receiving:
                    return
                try:
                    progressed = await self._step(owed, receiving)
                except Exception as exc:
                    _log_stream_failure(exc, "file link to %s", self.peer, level=logging.INFO)
                    progressed = False
                if progressed:
                    self._backoff = BACKOFF_MIN
                    continue
                await self._wake.wait(self._backoff)
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        finally:
            m._links.pop(self.peer, None)

    async def _step(self, owed: list[Transfer], receiving: list[Transfer]) -> bool:
        m = self.manager
        contact = m.chat._contacts.get(self.peer)
        if contact is None or contact.state is not ContactState.FRIEND:
            return False  # not while they are not a friend; woken when that changes
        if not m.chat.net.is_connected(self.peer) and (
            not contact.addrs or not await m.chat.net.dial(self.peer, contact.addrs)
        ):
            return False
        delivered = 0
        for t in owed:
            try:
                await m.deliver_notice(t)
                delivered += 1
            except Exception as exc:  # one undeliverable notice must not hold up the others
                _log_stream_failure(exc, "file notice to %s", self.peer, level=logging.INFO)
        for t in receiving:
            if t.tid not in m._receiving:
                m._start_receiving(t)
        # Delivered notices: look again at once. Otherwise wait: a session that ends wakes
        # us, and one that made no progress leaves the backoff growing, so a sender that
        # keeps refusing is not hammered.
        return delivered > 0


# --- small helpers -------------------------------------------------------------------------


def _with(t: Transfer, **fields: Any) -> Transfer:
    return dataclasses.replace(t, **fields)


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error inside a nursery's group (cancellations of siblings dropped); a
    group of cancellations only gives its first, which re-raised is still a cancellation."""
    errors = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
    if not errors:
        return group.exceptions[0]
    if len(errors) == 1:
        inner = errors[0]
        return _sole(inner) if isinstance(inner, BaseExceptionGroup) else inner
    return group


def _outcome(state: TState) -> str:
    return {
        TState.COMPLETED: "completed",
        TState.DECLINED: "declined",
        TState.CANCELLED: "cancelled",
    }.get(state, "failed")


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)


def _unlink_quietly(path: str) -> None:
    """Delete a partial file; failing to (it is gone, or the disk went read-only) must not
    stop the state change that asked for it."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not delete the partial file %s: %s", path, exc)


def clip_utf8(text: str, limit: int = wire.MAX_REASON_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (wire limits count bytes)."""
    return text.encode("utf-8", "replace")[:limit].decode("utf-8", "ignore")


def _open_source(t: Transfer) -> Any:
    """Open the file being sent, checking it is still the file that was offered."""
    assert t.source is not None
    _require_regular(t.source)
    f = open(t.source, "rb", buffering=0)  # noqa: SIM115 - closed by the session
    st = os.fstat(f.fileno())
    if (st.st_size, st.st_mtime_ns) != (t.size, t.mtime_ns):
        f.close()
        raise SourceChanged("the file changed since it was offered")
    return f


def _open_partial(part: Path) -> int:
    """Open the partial file, creating it again (empty) if it is gone: lost in a crash or
    deleted by someone. A shorter file than recorded makes the session start from zero
    (_hash_prefix raises)."""
    try:
        return os.open(part, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        log.warning("partial file %s is gone; receiving from the start", part)
        return os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


def _write_chunks(fd: int, offset: int, chunks: list[bytes], hasher: Any) -> None:
    for chunk in chunks:
        write_at(fd, memoryview(chunk), offset)
        hasher.update(chunk)
        offset += len(chunk)


def _stop(stop: threading.Event, sock: socket.socket) -> None:
    stop.set()
    _shutdown(sock)


async def _watch_stall(progress: Progress, timeout: float) -> None:
    """Raise if fewer than ``STALL_MIN_BYTES`` move on the wire in ``timeout`` (a peer that
    keeps a session open but moves nothing, or only a trickle)."""
    last_moved, last_change = progress.wire, time.monotonic()
    while True:
        await trio.sleep(1.0)
        if progress.wire - last_moved >= STALL_MIN_BYTES:
            last_moved, last_change = progress.wire, time.monotonic()
        elif time.monotonic() - last_change > timeout:
            raise ConnectionError(f"no data moved for {timeout:g} s")


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


async def _run_interruptibly(
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


async def _accept_direct(
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
    frames = decoder.feed(bytes(prefix))
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
