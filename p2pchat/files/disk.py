"""The blocking file operations of transfers (run them in threads): hashing, partial files,
and publishing a received file so that it never replaces or follows anything already there.

The incoming directory must be the user's own and writable by nobody else
(:func:`prepare_incoming_dir`); even so, no name in it is ever followed if it is a symbolic
link (``O_NOFOLLOW``, ``lstat``): not the partial file, not a final name found after a crash."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from pathlib import Path
from typing import Any

import blake3

from p2pchat.files.datapath import SourceChanged, write_at

log = logging.getLogger(__name__)


def hash_file(path: str) -> tuple[bytes, int, int]:
    """(BLAKE3 digest, size, mtime_ns) of a regular file, checked unchanged while hashing."""
    _require_regular(path)  # before opening: opening a FIFO would block
    with open(path, "rb", buffering=0) as f:
        before = os.fstat(f.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise SourceChanged(f"{path} is not a regular file")
        try:
            hasher = hash_prefix(f.fileno(), before.st_size)
        except ConnectionError:
            raise SourceChanged(f"{path} shrank while it was being hashed") from None
        after = os.fstat(f.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise SourceChanged(f"{path} changed while it was being hashed")
    return hasher.digest(), after.st_size, after.st_mtime_ns


def _require_regular(path: str) -> None:
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise SourceChanged(f"{path} is not a regular file")


def hash_prefix(fd: int, length: int) -> Any:
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


def hash_path(path: Path) -> bytes:
    """BLAKE3 of the regular file at ``path`` (never through a symbolic link)."""
    fd = _open_no_follow(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path} is not a regular file")
        return bytes(hash_prefix(fd, st.st_size).digest())
    finally:
        os.close(fd)


class UnsafeDirectory(Exception):
    """The incoming directory is not safe to receive into: the daemon refuses to start."""


class UnsafeFile(Exception):
    """A name in the incoming directory is a symbolic link or not a regular file: it is not
    followed, and the transfer fails with this message."""


def prepare_incoming_dir(directory: Path) -> None:
    """Create the incoming directory (mode 0700) if it is missing; refuse, with an error
    saying what to do, one that is not a directory, not owned by this user, or writable by
    its group or others (they could plant files or links where received files go).

    A directory made here is set to 0700 whatever the umask; an existing one, the default
    or one the user set in ``incoming_dir``, is never changed, only refused."""
    created = False
    try:
        directory.mkdir(mode=0o700, parents=True)
        created = True
    except FileExistsError:
        pass
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise UnsafeDirectory(
            f"incoming_dir {directory} is not a usable directory: {os_reason(exc)}"
        ) from None
    try:
        if created:
            os.fchmod(fd, 0o700)
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise UnsafeDirectory(
                f"incoming_dir {directory} belongs to another user (uid {st.st_uid}); "
                "received files must go to a directory of your own"
            )
        writable = [who for who, bit in (("group", 0o020), ("others", 0o002)) if st.st_mode & bit]
        if writable:
            raise UnsafeDirectory(
                f"incoming_dir {directory} is writable by its {' and '.join(writable)} (mode "
                f"{stat.S_IMODE(st.st_mode):04o}), so they could plant files or links there; "
                f"run 'chmod go-w {directory}' or set another incoming_dir"
            )
    finally:
        os.close(fd)


def _open_no_follow(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symbolic link at ``path`` (a clear error instead)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(f"{path} is a symbolic link; it was not followed") from None
        raise


def open_source(path: str, size: int, mtime_ns: int | None) -> Any:
    """Open the file being sent, checking it is still the file that was offered."""
    _require_regular(path)
    f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the session
    st = os.fstat(f.fileno())
    if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
        f.close()
        raise SourceChanged("the file changed since it was offered")
    return f


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged user may still write in ``directory``'s filesystem."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def create_partial(path: Path) -> None:
    """Create the (empty) partial file; never follow or replace anything already there.
    Not fsynced: if a crash loses it, the transfer starts again from zero (open_partial)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


def open_partial(part: Path) -> int:
    """Open the partial file, creating it again (empty) if it is gone: lost in a crash or
    deleted by someone. A shorter file than recorded makes the session start from zero
    (hash_prefix raises)."""
    try:
        fd = _open_no_follow(part, os.O_RDWR)
    except FileNotFoundError:
        log.warning("partial file %s is gone; receiving from the start", part)
        fd = _open_no_follow(part, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeFile(f"{part} is not a regular file")
    return fd


def write_chunks(fd: int, offset: int, chunks: list[bytes], hasher: Any) -> None:
    for chunk in chunks:
        write_at(fd, memoryview(chunk), offset)
        hasher.update(chunk)
        offset += len(chunk)


def unlink_quietly(path: str) -> None:
    """Delete a partial file; failing to (it is gone, or the disk went read-only) must not
    stop the state change that asked for it."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not delete the partial file %s: %s", path, exc)


def link_no_replace(part: Path, final: Path) -> None:
    """Make ``final`` name the verified partial file, failing if ``final`` exists.

    A hard link is atomic and never replaces anything. Filesystems without hard links
    (FAT, some network and FUSE mounts) get an exclusive placeholder instead, which the
    partial file then replaces: still never someone else's file. Neither name is followed
    if it is a symbolic link (``part`` must be a regular file)."""
    if not stat.S_ISREG(os.lstat(part).st_mode):
        raise UnsafeFile(f"{part} is not a regular file (a symbolic link?); it was not followed")
    try:
        os.link(part, final, follow_symlinks=False)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
    os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    os.replace(part, final)


def unlink_and_sync_dir(path: Path | None, directory: Path) -> None:
    """Remove ``path`` (the partial file's second name) and make the directory durable."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def publication_state(part: Path | None, final: Path) -> str:
    """Where an interrupted publication got to: "linked" (both names are one regular file),
    "renamed" (only the final name exists, a regular file) or "not begun". Symbolic links
    are never followed: a link planted under the final name is someone else's file, so
    publishing has "not begun" (it then picks a free name); with the partial file gone it
    raises :class:`UnsafeFile`."""
    final_st = _lstat(final)
    if final_st is None:
        return "not begun"
    part_st = _lstat(part) if part is not None else None
    if part_st is not None:
        same = (part_st.st_dev, part_st.st_ino) == (final_st.st_dev, final_st.st_ino)
        return "linked" if same and stat.S_ISREG(part_st.st_mode) else "not begun"
    if not stat.S_ISREG(final_st.st_mode):
        raise UnsafeFile(f"{final} is not a regular file (a symbolic link?); it was not followed")
    return "renamed"


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def os_reason(exc: BaseException) -> str:
    """What went wrong, as a user reads it (``strerror`` without the errno)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)
