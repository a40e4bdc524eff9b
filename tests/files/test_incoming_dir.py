"""The incoming directory and the names in it (p2pchat.files.disk) on real files: a directory
others can write to is refused, and a symbolic link planted as a partial file or a final name
is never followed, fails clearly and costs no data."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from p2pchat.files import disk
from p2pchat.files.disk import UnsafeDirectory, UnsafeFile
from tests.harness import Daemon


def test_a_directory_made_here_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)  # mkdir alone would make it 0500: not even writable by us
    try:
        disk.prepare_incoming_dir(tmp_path / "incoming")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "incoming").st_mode) == 0o700
    disk.prepare_incoming_dir(tmp_path / "incoming")  # existing and fine: accepted


@pytest.mark.parametrize(("mode", "who"), [(0o770, "group"), (0o703, "others")])
def test_a_directory_others_can_write_to_is_refused(tmp_path: Path, mode: int, who: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(UnsafeDirectory) as err:
        disk.prepare_incoming_dir(shared)
    assert f"writable by its {who}" in str(err.value)
    assert f"chmod go-w {shared}" in str(err.value)
    assert stat.S_IMODE(os.stat(shared).st_mode) == mode  # a user's directory is not changed


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UnsafeDirectory, match="not a usable directory"):
        disk.prepare_incoming_dir(tmp_path / "f")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory of another user")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(UnsafeDirectory, match="belongs to another user"):
        disk.prepare_incoming_dir(theirs)


def victim(tmp_path: Path) -> Path:
    """A file elsewhere that a planted link points at."""
    target = tmp_path / "elsewhere" / "precious"
    target.parent.mkdir()
    target.write_bytes(b"precious data")
    return target


def test_symlink_planted_as_the_partial_file_is_not_followed(tmp_path: Path) -> None:
    target = victim(tmp_path)
    part = tmp_path / ".x.bin.0123.p2pchat-part"
    part.symlink_to(target)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        disk.open_partial(part)
    with pytest.raises(UnsafeFile):
        disk.link_no_replace(part, tmp_path / "x.bin")
    assert target.read_bytes() == b"precious data"
    assert not (tmp_path / "x.bin").exists()


def test_symlink_planted_as_the_final_name_after_a_crash(tmp_path: Path) -> None:
    """A crash between committing the final name and linking it; meanwhile a link to the
    partial file appears under that name. Recovery must not take the link for the
    published file (and then delete the only copy of the data)."""
    part = tmp_path / ".x.bin.0123.p2pchat-part"
    part.write_bytes(b"verified data")
    final = tmp_path / "x.bin"
    final.symlink_to(part)
    assert disk.publication_state(part, final) == "not begun"  # so: publish under a free name
    assert part.read_bytes() == b"verified data"


def test_symlink_as_the_final_name_with_the_partial_gone(tmp_path: Path) -> None:
    target = victim(tmp_path)
    final = tmp_path / "x.bin"
    final.symlink_to(target)
    with pytest.raises(UnsafeFile, match="not followed"):
        disk.publication_state(tmp_path / ".x.part", final)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        disk.hash_path(final)
    assert target.read_bytes() == b"precious data"


def test_regular_recovery_still_works(tmp_path: Path) -> None:
    part, final = tmp_path / ".x.part", tmp_path / "x.bin"
    part.write_bytes(b"data")
    fd = disk.open_partial(part)
    os.close(fd)
    disk.link_no_replace(part, final)
    assert disk.publication_state(part, final) == "linked"
    part.unlink()
    assert disk.publication_state(part, final) == "renamed"
    assert disk.hash_path(final) == blake3.blake3(b"data").digest()


@pytest.mark.daemons
def test_daemon_refuses_a_group_writable_incoming_dir(
    make_daemon: Callable[..., Daemon], short_tmp: Path
) -> None:
    """One daemon, which must stop at once with one clear line (no traceback)."""
    shared = short_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    alice = make_daemon("alice", False)
    alice.configure(incoming_dir=str(shared))
    alice.launch()
    assert alice.proc is not None
    try:
        code = alice.proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon started with a group-writable incoming_dir")
    assert code != 0
    log = alice.log_text()
    assert f"p2pchatd cannot run: incoming_dir {shared} is writable by its group" in log
    assert "Traceback" not in log
