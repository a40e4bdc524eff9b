"""File transfers between friends: the manager wires the pieces of :mod:`p2pchat.files` and
keeps them moving; user actions and the file protocol's streams come in here.

Protocol ``/p2pchat/file/2.0.0`` (docs/PROTOCOL.md), friends only. A stream carries either one
*notice* (``file-offer`` or ``file-end``, :mod:`.notices`) and its reply, or one *data
session*: the receiver's ``file-get`` (offset, cipher suite, a fresh session key, maybe a TCP
port), the sender's ``file-data`` naming the path, then sealed records (:mod:`.bulk`) either
on a direct TCP connection to that port or, if that cannot be made, on the libp2p stream
itself (:mod:`.sending`, :mod:`.receiving`).

The receiver drives: it asks for bytes from its last verified offset whenever both daemons
are up, so a transfer resumes by itself after either side was killed or the network dropped.
One :class:`FileLink` task per friend with work (owed notices, accepted incoming files)
keeps trying with backoff. A failed session is retried, a failed *verification* ends the
transfer.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
from pathlib import Path
from typing import Any, Final

import trio
from libp2p.abc import INetStream

from p2pchat import wire
from p2pchat.api import ApiError
from p2pchat.chat.reach import Reach
from p2pchat.chat.roster import Roster
from p2pchat.chat.service import Chat
from p2pchat.clock import now_ms
from p2pchat.events import EventBus
from p2pchat.files import filenames
from p2pchat.files.datapath import SourceChanged
from p2pchat.files.direct import MAX_PUMP_THREADS
from p2pchat.files.disk import (
    create_partial,
    free_bytes,
    hash_file,
    os_reason,
    prepare_incoming_dir,
)
from p2pchat.files.notices import NOTICE_TIMEOUT, Notices, RefusedForNow
from p2pchat.files.progress import ProgressReports
from p2pchat.files.receiving import Receiver
from p2pchat.files.sending import Sender
from p2pchat.files.state import TERMINAL, Direction, TEvent, TState
from p2pchat.files.store import OFFER_NOTICE, Transfer, TransferStore
from p2pchat.files.table import TransferTable, transfer_json
from p2pchat.identity import short
from p2pchat.net.link import Link, Links
from p2pchat.net.streams import (
    end_failed_stream,
    finish,
    log_stream_failure,
    read_one_frame,
    refuse,
)
from p2pchat.storage.database import DatabaseError

log = logging.getLogger(__name__)

STALL_TIMEOUT: Final = 30.0
"""Default: how long a data session may move less than ``sessions.STALL_MIN_BYTES``."""
DISK_MARGIN: Final = 16 * 1024 * 1024
"""Free space kept beyond an incoming file's size when accepting it."""


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


def wants_link(t: Transfer) -> bool:
    return t.notice is not None or (t.direction is Direction.IN and t.state is TState.ACTIVE)


class TransferManager:
    """All file transfers of one identity. ``load()`` before listening, then run it in a
    nursery with ``nursery.start(manager.run)``."""

    def __init__(
        self, *, chat: Chat, store: TransferStore, events: EventBus, config: FilesConfig
    ) -> None:
        self.chat = chat
        self.events = events
        self.config = config
        self.table = TransferTable(store, events, self._changed)
        self.reports = ProgressReports(self.table, events)
        # Pump threads hold their thread for a whole session: their own limit, so they can
        # never use up the threads that API calls and checkpoints need.
        pumps = trio.CapacityLimiter(MAX_PUMP_THREADS)
        self.sender = Sender(
            table=self.table,
            reports=self.reports,
            pumps=pumps,
            max_send_rate=config.max_send_rate,
            direct=config.direct,
            stall_timeout=config.stall_timeout,
            announced=self._announced_addrs,
        )
        self.receiver = Receiver(
            table=self.table,
            reports=self.reports,
            net=chat.net,
            pumps=pumps,
            incoming_dir=config.incoming_dir,
            direct_host=config.direct_host,
            direct=config.direct,
            stall_timeout=config.stall_timeout,
            on_session_end=self._session_ended,
        )
        self.notices = Notices(
            table=self.table,
            net=chat.net,
            events=events,
            on_offered=self._auto_accept,
            quotas=chat.quotas,
        )
        self._links: Links[FileLink] = Links(
            lambda peer: FileLink(
                peer,
                roster=chat.roster,
                reach=chat.reach,
                notices=self.notices,
                receiver=self.receiver,
            )
        )
        self._nursery: trio.Nursery | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def load(self) -> None:
        await trio.to_thread.run_sync(prepare_incoming_dir, self.config.incoming_dir)
        await self.table.load()
        self.chat.net.set_handler(
            wire.FILE_PROTOCOL, self.chat.inbound.handler("file", self._serve)
        )
        self.chat.roster.add_connection_listener(self._connection_changed)
        self.chat.roster.add_unfriend_listener(self._unfriended)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for peer in {t.peer_id for t in self.table.all() if t.state not in TERMINAL}:
                if not self.chat.roster.is_friend(peer):  # the friendship ended while we were down
                    nursery.start_soon(self._end_with, peer)
            await nursery.start(self.receiver.run)

            def start_links() -> None:
                for peer in {t.peer_id for t in self.table.all() if wants_link(t)}:
                    self._ensure_link(peer)

            await nursery.start(self._links.run, start_links)
            nursery.start_soon(self.reports.run)
            task_status.started()
            await trio.sleep_forever()

    def _announced_addrs(self, peer: str) -> tuple[str, ...]:
        """The addresses a friend announced (hello, friendship, its record): the sender's
        direct data connection may only go to one of their IPs."""
        contact = self.chat.roster.get(peer)
        return tuple(contact.addrs) if contact is not None else ()

    def _ensure_link(self, peer: str) -> None:
        link = self._links.ensure(peer)
        if link is not None:
            link.retry_now()

    def _changed(self, t: Transfer) -> None:
        """A committed state change: an end stops the transfer's session (registered under
        the lock, so none can start after it), and new work wakes the friend's link."""
        if t.state in TERMINAL:
            self.sender.sessions.cancel(t.tid)
            self.receiver.sessions.cancel(t.tid)
        if wants_link(t):
            self._ensure_link(t.peer_id)

    def _session_ended(self, peer: str, moved: bool) -> None:
        link = self._links.get(peer)
        if link is not None:
            link.session_ended(moved)

    def _unfriended(self, peer: str) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._end_with, peer)

    async def _end_with(self, peer: str) -> None:
        """End every open transfer with ``peer``, who is no longer a friend."""
        for t in self.table.of_peer(peer):
            if t.state in TERMINAL:
                continue
            try:
                async with self.table.locked(t.tid):
                    await self.table.apply(t.tid, TEvent.UNFRIENDED, reason="no longer friends")
            except Exception as exc:  # retried at the next start; never stops the manager
                log.error("could not end transfer %s with %s: %s", t.id_hex, short(peer), exc)

    def _connection_changed(self, peer: str, up: bool) -> None:
        if up:
            self.receiver.connection_opened(peer)
        link = self._links.get(peer)
        if link is not None:
            link.network_changed()
        elif up:
            self._ensure_link(peer)

    # --- user actions ------------------------------------------------------------------------

    def resolve(self, text: str) -> Transfer:
        query = text.strip().lower()
        if len(query) < 4:
            raise ApiError("invalid_params", "give at least 4 characters of the transfer ID")
        matches = [t for t in self.table.all() if t.id_hex.startswith(query)]
        if not matches:
            raise ApiError("not_found", f"no transfer has an ID starting {query!r}")
        if len(matches) > 1:
            raise ApiError("ambiguous", f"several transfers start with {query!r}; type more")
        return matches[0]

    def active_count(self) -> int:
        """Transfers not finished yet (offers waiting for a decision included)."""
        return sum(1 for t in self.table.all() if t.state not in TERMINAL)

    def list_json(self) -> list[dict[str, Any]]:
        return [transfer_json(self.reports.live(t)) for t in self.table.all()]

    async def send_file(self, friend: str, path: str) -> dict[str, Any]:
        contact = self.chat.roster.resolve_friend(friend, "files can only go to accepted friends")
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
            raise ApiError("file_error", f"cannot send {path}: {os_reason(exc)}") from None
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
            await self.table.add(t)  # a random ID: never taken
        except DatabaseError as exc:
            raise ApiError("storage_error", str(exc)) from None
        log.info("offering %s (%d bytes) to %s", name, size, short(contact.peer_id))
        self.events.publish("transfer.updated", transfer=transfer_json(t))
        self._ensure_link(contact.peer_id)
        return transfer_json(t)

    async def accept(self, text: str) -> dict[str, Any]:
        t = self.resolve(text)
        async with self.table.locked(t.tid):
            t = self.table[t.tid]
            if t.direction is not Direction.IN or t.state is not TState.OFFERED:
                raise ApiError("invalid_state", f"transfer {t.id_hex[:12]} is {t.state.value}")
            updated = await self._accept_locked(t)
        return transfer_json(updated)

    async def _auto_accept(self, t: Transfer) -> None:
        """A new offer (its transfer locked): accept it if it is small enough."""
        limit = self.config.auto_accept_max_bytes
        if limit > 0 and t.size <= limit:
            try:
                await self._accept_locked(t)
            except ApiError as exc:
                log.warning("could not auto-accept %s: %s", t.name, exc.message)

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
            await trio.to_thread.run_sync(create_partial, part)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ApiError(
                    "disk_full", f"not enough space in {directory} for {t.name}"
                ) from None
            raise ApiError("file_error", f"cannot create {part}: {os_reason(exc)}") from None
        updated = await self.table.apply(
            t.tid, TEvent.USER_ACCEPT, part_path=str(part), done_bytes=0
        )
        assert updated is not None
        return updated

    async def decline(self, text: str) -> dict[str, Any]:
        return await self._user_end(text, TEvent.USER_DECLINE)

    async def cancel(self, text: str) -> dict[str, Any]:
        return await self._user_end(text, TEvent.USER_CANCEL)

    async def _user_end(self, text: str, event: TEvent) -> dict[str, Any]:
        t = self.resolve(text)
        async with self.table.locked(t.tid):
            t = self.table[t.tid]
            reason = "declined by the user" if event is TEvent.USER_DECLINE else "cancelled"
            updated = await self.table.apply(t.tid, event, reason=reason)
            if updated is None:
                raise ApiError(
                    "invalid_state",
                    f"cannot {event.value} transfer {t.id_hex[:12]}: it is {t.state.value}",
                )
        return transfer_json(updated)

    # --- the file protocol -----------------------------------------------------------------

    async def _serve(self, stream: INetStream, peer: str) -> None:
        if not self.chat.roster.is_friend(peer):
            log.info("refused a file stream from %s: not a friend", short(peer))
            await refuse(stream, wire.REFUSED_NOT_FRIEND, "you are not a friend of this peer")
            return
        try:
            with trio.fail_after(NOTICE_TIMEOUT):
                frame = await read_one_frame(stream)
            if isinstance(frame, wire.FileGet):
                await self.sender.serve_get(stream, peer, frame)
                return
            with trio.fail_after(NOTICE_TIMEOUT):
                reply = await self.notices.answer(peer, frame)
                await stream.write(wire.encode(reply))
            await finish(stream)
        except Exception as exc:
            await end_failed_stream(stream, exc, "file", peer)


class FileLink(Link):
    """Keeps one friend's transfers moving: reach the friend, deliver owed file notices,
    start receive sessions for accepted files."""

    kind = "file-link"
    what = "file link"

    def __init__(
        self, peer: str, *, roster: Roster, reach: Reach, notices: Notices, receiver: Receiver
    ) -> None:
        super().__init__(peer)
        self.roster = roster
        self.reach = reach
        self.notices = notices
        self.receiver = receiver

    def wanted(self) -> bool:
        return bool(self.notices.owed(self.peer) or self.receiver.to_receive(self.peer))

    def session_ended(self, progressed: bool) -> None:
        """A receive session ended. One that moved bytes is retried at once; one that did
        not waits out the growing backoff (a sender that keeps refusing, a path that keeps
        failing), so the link never spins."""
        if progressed:
            self.network_changed()

    async def step(self) -> bool:
        if not self.roster.is_friend(self.peer):
            return False  # not while they are not a friend; woken when that changes
        if not await self.reach.reach(self.peer):
            return False
        delivered = 0
        refused_kinds: set[str] = set()
        for t in self.notices.owed(self.peer):
            if t.notice in refused_kinds:
                continue  # the friend is full for these now: after the backoff
            try:
                await self.notices.deliver(t)
                delivered += 1
            except RefusedForNow as exc:
                log.info("file notices to %s wait: %s", short(self.peer), exc)
                refused_kinds.add(t.notice or "")
            except Exception as exc:  # one undeliverable notice must not hold up the others
                log_stream_failure(exc, "file notice to %s", self.peer, level=logging.INFO)
        for t in self.receiver.to_receive(self.peer):
            self.receiver.start(t)
        # Delivered notices: look again at once. Otherwise wait: a session that ends wakes
        # us, and one that made no progress leaves the backoff growing, so a sender that
        # keeps refusing is not hammered.
        return delivered > 0
