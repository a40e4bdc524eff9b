"""Files the page uploads, staged on disk until their transfer ends.

A browser cannot hand the daemon a path, only bytes, so an upload is streamed to
``<home>/web-uploads/<32 hex>/<safe name>`` (never held in memory) and then offered with
``files.send`` like any other file. The staged copy is deleted when its transfer reaches a
finished state, and at start for transfers that ended while the daemon was down.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Final

import trio

from p2pchat.api import ApiError
from p2pchat.files.disk import free_bytes

log = logging.getLogger(__name__)

WRITE_BATCH: Final = 1 << 20
"""Bytes gathered before one write: one thread hop per MiB, not per network chunk."""
DISK_MARGIN: Final = 16 * 1024 * 1024
"""Free space always kept: beyond an upload's announced size (and every other upload's still
to come) before it starts, and at every write batch while it is written."""
FINISHED: Final = frozenset({"completed", "declined", "cancelled", "failed"})


class Uploads:
    """The staging directory. Each upload gets its own random subdirectory, so a name can
    never collide with (or point at) another upload's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._busy: set[Path] = set()
        """Directories being written or not yet offered: never swept."""
        self._reserved: dict[Path, int] = {}
        """Uploads in progress: the bytes each has announced and not written yet."""

    def _make_dir(self, directory: Path) -> None:
        self.root.mkdir(mode=0o700, exist_ok=True)
        directory.mkdir(mode=0o700)

    def reserved(self) -> int:
        """Bytes that uploads in progress have announced and not written yet."""
        return sum(self._reserved.values())

    async def _free(self) -> int:
        return await trio.to_thread.run_sync(free_bytes, self.root)

    async def check_space(self, size: int) -> None:
        """Refuse an upload of ``size`` bytes that cannot fit beside those in progress,
        before reading any of it."""
        await trio.to_thread.run_sync(lambda: self.root.mkdir(mode=0o700, exist_ok=True))
        free = await self._free()
        reserved = self.reserved()
        if free < size + reserved + DISK_MARGIN:
            raise ApiError(
                "disk_full",
                f"not enough space for the upload: {size} bytes needed, {free} free"
                + (f" ({reserved} promised to uploads in progress)" if reserved else ""),
            )

    async def stage(
        self, chunks: AsyncIterator[bytes], name: str, limit: int, size: int | None = None
    ) -> Path:
        """Write ``chunks`` to a new staged file called ``name``; returns its path, which
        stays busy (unswept) until :meth:`release`. ``size`` (the announced length) is
        checked against the free space first and reserved while the upload runs; before each
        write batch the free space is checked again. On any failure (the disk is full, more
        than ``limit`` bytes, the client went away) the partial file is deleted."""
        directory = self.root / secrets.token_hex(16)
        path = directory / name
        self._busy.add(directory)
        try:
            if size is not None:
                await self.check_space(size)
                self._reserved[directory] = size  # no await since the check: it holds
            await trio.to_thread.run_sync(self._make_dir, directory)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = await trio.to_thread.run_sync(os.open, path, flags, 0o600)
            async with trio.wrap_file(os.fdopen(fd, "wb")) as f:
                written = 0
                pending = bytearray()
                async for chunk in chunks:
                    written += len(chunk)
                    if written > limit:
                        raise ApiError("too_large", f"the file is larger than {limit} bytes")
                    pending += chunk
                    if len(pending) >= WRITE_BATCH:
                        await self._write(f, directory, pending)
                if pending:
                    await self._write(f, directory, pending)
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self.discard(directory)
            if isinstance(exc, OSError):
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    full = "the disk is full: the upload was not stored"
                    raise ApiError("disk_full", full) from None
                raise ApiError("file_error", f"cannot store the upload: {exc.strerror}") from None
            raise
        finally:
            self._reserved.pop(directory, None)
        log.info("staged an upload of %d bytes as %s", written, path)
        return path

    async def _write(self, f: Any, directory: Path, pending: bytearray) -> None:
        """Write one batch, unless that leaves less than the margin (others' reservations
        counted): the disk may have filled up since the upload began."""
        free = await self._free()
        others = self.reserved() - self._reserved.get(directory, 0)
        if free < len(pending) + others + DISK_MARGIN:
            raise ApiError("disk_full", "the disk is (nearly) full: the upload was not stored")
        await f.write(bytes(pending))
        if directory in self._reserved:
            self._reserved[directory] = max(0, self._reserved[directory] - len(pending))
        pending.clear()

    def release(self, path: Path) -> None:
        """The staged file is offered (or discarded): sweeps may consider it."""
        self._busy.discard(path.parent)

    def staged_dir(self, path: Any) -> Path | None:
        """The staging directory holding ``path`` (a transfer's), or None if it is not one
        of ours."""
        if not isinstance(path, str):
            return None
        parent = Path(path).parent
        return parent if parent.parent == self.root else None

    async def discard(self, directory: Path) -> None:
        if directory.parent != self.root:  # never delete anything outside the staging root
            return
        await trio.to_thread.run_sync(lambda: shutil.rmtree(directory, ignore_errors=True))
        self._busy.discard(directory)

    async def sweep(self, transfers: Iterable[dict[str, Any]]) -> None:
        """Delete every staged directory that no open outgoing transfer reads from."""
        keep = {
            self.staged_dir(t.get("path"))
            for t in transfers
            if t.get("direction") == "out" and t.get("state") not in FINISHED
        }

        def stale() -> list[Path]:
            try:
                entries = list(self.root.iterdir())
            except FileNotFoundError:
                return []
            return [e for e in entries if e not in keep and e not in self._busy]

        for directory in await trio.to_thread.run_sync(stale):
            log.info("deleting staged upload %s (its transfer has ended)", directory.name)
            await self.discard(directory)

    async def watch(self, events: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        """Delete a staged copy as soon as its transfer ends; returns when the channel
        closes (the bus dropped us: the caller sweeps and subscribes again)."""
        async with events:
            async for event in events:
                if event.get("type") != "transfer.updated":
                    continue
                t = event.get("transfer")
                if not isinstance(t, dict) or t.get("direction") != "out":
                    continue
                directory = self.staged_dir(t.get("path"))
                if directory is not None and t.get("state") in FINISHED:
                    log.info("transfer %s ended: deleting its staged upload", t.get("id"))
                    await self.discard(directory)
