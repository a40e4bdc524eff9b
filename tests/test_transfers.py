"""File transfers between real p2pchatd processes on 127.0.0.1, driven through the control API."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Daemon, befriend, wait_for

pytestmark = pytest.mark.daemons

MakeDaemon = Callable[..., Daemon]


def make_file(path: Path, size: int, seed: int = 1) -> Path:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def find(d: Daemon, tid: str) -> dict[str, Any] | None:
    for t in d.call("files.list")["transfers"]:
        if t["id"] == tid:
            return dict(t)
    return None


def transfer(d: Daemon, tid: str) -> dict[str, Any]:
    t = find(d, tid)
    assert t is not None, f"{d.name} has no transfer {tid}"
    return t


def wait_state(d: Daemon, tid: str, state: str, timeout: float = 60.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        t = find(d, tid)
        if t is None:
            return None
        if t["state"] in ("failed", "cancelled", "declined") and t["state"] != state:
            raise AssertionError(f"{d.name}: transfer ended {t['state']}: {t['error']}")
        return t if t["state"] == state else None

    return wait_for(check, timeout=timeout, what=f"{d.name}: transfer {tid[:8]} {state}")


def incoming_files(d: Daemon) -> list[str]:
    return sorted(os.listdir(d.home / "incoming"))


@pytest.fixture
def pair(make_daemon: MakeDaemon) -> tuple[Daemon, Daemon]:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    befriend(alice, bob)
    return alice, bob


def send_and_accept(alice: Daemon, bob: Daemon, path: Path) -> str:
    tid = str(alice.call("files.send", friend=bob.peer_id, path=str(path))["transfer"]["id"])
    wait_state(bob, tid, "offered")
    bob.call("files.accept", id=tid[:8])
    return tid


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 20) + 17, 40 << 20])
def test_files_arrive_byte_identical(
    pair: tuple[Daemon, Daemon], short_tmp: Path, size: int
) -> None:
    alice, bob = pair
    src = make_file(short_tmp / "report.bin", size, seed=size)
    tid = send_and_accept(alice, bob, src)
    done = wait_state(bob, tid, "completed")
    wait_state(alice, tid, "completed")
    assert done["path"] == str(bob.home / "incoming" / "report.bin")
    assert digest(Path(done["path"])) == digest(src)
    assert incoming_files(bob) == ["report.bin"]  # no partial file left behind
    if size > 1 << 20:
        assert done["data_path"] == "tcp"
