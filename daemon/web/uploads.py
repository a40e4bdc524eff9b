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
"""Free space kept beyond an upload's announced size."""
FINISHED: Final = frozenset({"completed", "declined", "cancelled", "failed"})


class Uploads:
    """The staging directory. Each upload gets its own random subdirectory, so a name can
    never collide with (or point at) another upload's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._busy: set[Path] = set()
        """Directories being written or not yet offered: never swept."""

    def _make_dir(self, directory: Path) -> None:
        self.root.mkdir(mode=0o700, exist_ok=True)
        directory.mkdir(mode=0o700)

    async def check_space(self, size: int) -> None:
        """Refuse an upload of ``size`` bytes that cannot fit, before reading any of it."""
        await trio.to_thread.run_sync(lambda: self.root.mkdir(mode=0o700, exist_ok=True))
        free = await trio.to_thread.run_sync(free_bytes, self.root)
        if free < size + DISK_MARGIN:
            raise ApiError(
                "disk_full", f"not enough space for the upload: {size} bytes needed, {free} free"
            )

    async def stage(self, chunks: AsyncIterator[bytes], name: str, limit: int) -> Path:
        """Write ``chunks`` to a new staged file called ``name``; returns its path, which
        stays busy (unswept) until :meth:`release`. On any failure (the disk is full, more
        than ``limit`` bytes, the client went away) the partial file is deleted."""
        directory = self.root / secrets.token_hex(16)
        path = directory / name
        self._busy.add(directory)
        try:
            await trio.to_thread.run_sync(self._make_dir, directory)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = await trio.to_thread.run_sync(os.open, path, flags, 0o600)
            async with trio.wrap_file(os.fdopen(fd, "wb")) as f:
                size = 0
                pending = bytearray()
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise ApiError("too_large", f"the file is larger than {limit} bytes")
                    pending += chunk
                    if len(pending) >= WRITE_BATCH:
                        await f.write(bytes(pending))
                        pending.clear()
                if pending:
                    await f.write(bytes(pending))
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self.discard(directory)
            if isinstance(exc, OSError):
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    full = "the disk is full: the upload was not stored"
                    raise ApiError("disk_full", full) from None
                raise ApiError("file_error", f"cannot store the upload: {exc.strerror}") from None
            raise
        log.info("staged an upload of %d bytes as %s", size, path)
        return path

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
