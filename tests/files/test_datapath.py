"""The blocking data-path pumps (p2pchat.files.datapath) over real sockets and files, and the
helpers of the data sessions: disk (p2pchat.files.disk), stall watchdog (no daemon)."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from pathlib import Path

import blake3
import pytest

from p2pchat.files import bulk, datapath, disk
from p2pchat.files.disk import hash_path, publication_state
from p2pchat.files.table import clip_utf8

TID = b"\x05" * 16
KEY = b"\x06" * 32


def pump(src: Path, dst: Path, size: int, *, offer: int | None = None) -> bytes:
    """Send ``src`` through a socket pair into ``dst``; returns the receiver's digest."""
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    def send() -> None:
        try:
            with open(src, "rb", buffering=0) as f:
                sealer = bulk.RecordSealer("aes-256-gcm", KEY, TID, 0)
                datapath.send_records(
                    a, sealer, f, size, datapath.Progress(0), datapath.Pacer(0), 1 << 16
                )
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            a.close()

    sender = threading.Thread(target=send)
    sender.start()
    hasher = blake3.blake3()
    fd = os.open(dst, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        opener = bulk.RecordOpener("aes-256-gcm", KEY, TID, 0, offer if offer is not None else size)
        datapath.receive_records(b, opener, fd, hasher, datapath.Progress(0))
    finally:
        os.close(fd)
        b.close()
        sender.join(10)
    return hasher.digest()


def test_round_trip_through_real_sockets_and_files(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 123)
    src = tmp_path / "src"
    src.write_bytes(data)
    digest = pump(src, tmp_path / "dst", len(data))
    assert (tmp_path / "dst").read_bytes() == data
    assert digest == blake3.blake3(data).digest()


def receive_raw(tmp_path: Path, data: bytes, offered: int) -> None:
    """Feed ``data`` (then silence, the socket left open) to a receiving pump."""
    a, b = socket.socketpair()
    a.sendall(data)
    fd = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        opener = bulk.RecordOpener("aes-256-gcm", KEY, TID, 0, offered)
        datapath.receive_records(b, opener, fd, blake3.blake3(), datapath.Progress(0))
    finally:
        os.close(fd)
        a.close()
        b.close()


def sealed(chunk: bytes) -> bytes:
    """The hello and one record holding ``chunk``."""
    sealer = bulk.RecordSealer("aes-256-gcm", KEY, TID, 0)
    hello = sealer.hello()
    record = bytearray(len(chunk) + 100)
    n = sealer.seal_into(memoryview(chunk), memoryview(record))
    return hello + bytes(record[:n])


def test_a_byte_after_the_end_is_oversending(tmp_path: Path) -> None:
    with pytest.raises(bulk.BulkError, match="more than the offered size"):
        receive_raw(tmp_path, sealed(b"x" * 1000) + b"!", 1000)


def test_a_sender_that_never_ends_its_stream_is_refused(tmp_path: Path) -> None:
    with pytest.raises(bulk.BulkError, match="did not end"):
        receive_raw(tmp_path, sealed(b"y" * 100), 100)


def test_a_sender_that_stops_early_is_a_connection_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 1000)
    with pytest.raises(ConnectionError):
        pump(src, tmp_path / "dst", 1000, offer=2000)


def test_a_shrunken_source_is_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 100)
    a, b = socket.socketpair()
    with a, b, open(src, "rb", buffering=0) as f, pytest.raises(datapath.SourceChanged):
        sealer = bulk.RecordSealer("aes-256-gcm", KEY, TID, 0)
        datapath.send_records(a, sealer, f, 200, datapath.Progress(0), datapath.Pacer(0))


def test_pacer_spreads_sends_and_a_stop_interrupts_its_sleep(tmp_path: Path) -> None:
    pacer = datapath.Pacer(100_000)
    assert pacer.reserve(50_000) == pytest.approx(0.0, abs=0.01)
    assert pacer.reserve(50_000) == pytest.approx(0.5, abs=0.05)
    assert datapath.Pacer(0).reserve(10**9) == 0.0
    src = tmp_path / "src"
    src.write_bytes(b"x" * 200_000)
    stop = threading.Event()
    stop.set()
    a, b = socket.socketpair()
    started = time.monotonic()
    with a, b, open(src, "rb", buffering=0) as f, pytest.raises(ConnectionError):
        sealer = bulk.RecordSealer("aes-256-gcm", KEY, TID, 0)
        slow = datapath.Pacer(1000)
        slow.reserve(10_000)  # ten seconds booked ahead
        datapath.send_records(a, sealer, f, 200_000, datapath.Progress(0), slow, 16_384, stop)
    assert time.monotonic() - started < 1.0


def test_paced_chunks_fit_the_rate() -> None:
    assert datapath.paced_chunk(0) == bulk.MAX_CHUNK
    assert datapath.paced_chunk(64 * 1024) == datapath.MIN_PACED_CHUNK
    assert datapath.paced_chunk(1 << 22) == 1 << 20
    assert datapath.paced_chunk(1 << 30) == bulk.MAX_CHUNK


def test_clip_utf8_counts_bytes_and_never_splits_a_character() -> None:
    text = "é" * 150  # 300 bytes
    clipped = clip_utf8(text)
    assert len(clipped.encode()) <= 200 and clipped == "é" * 100
    assert clip_utf8("a" + "€" * 100, 5) == "a€"


def test_publication_states(tmp_path: Path) -> None:
    part, final = tmp_path / ".f.part", tmp_path / "f"
    assert publication_state(part, final) == "not begun"
    part.write_bytes(b"data")
    assert publication_state(part, final) == "not begun"
    os.link(part, final)
    assert publication_state(part, final) == "linked"
    part.unlink()
    assert publication_state(part, final) == "renamed"
    assert hash_path(final) == blake3.blake3(b"data").digest()
    other = tmp_path / ".other.part"
    other.write_bytes(b"data")
    assert publication_state(other, final) == "not begun"  # a different file of that name


def test_link_no_replace_falls_back_where_hard_links_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part, final = tmp_path / ".a.part", tmp_path / "a"
    part.write_bytes(b"verified")
    final.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        disk.link_no_replace(part, final)
    assert final.read_bytes() == b"someone else's"

    def no_links(src: object, dst: object, **_kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(disk.os, "link", no_links)
    with pytest.raises(FileExistsError):
        disk.link_no_replace(part, final)  # the placeholder is exclusive too
    assert final.read_bytes() == b"someone else's"
    other = tmp_path / "b"
    disk.link_no_replace(part, other)
    assert other.read_bytes() == b"verified" and not part.exists()


async def test_stall_watchdog_tolerates_slow_links_not_trickles() -> None:
    import trio

    from p2pchat.files.sessions import STALL_MIN_BYTES, watch_stall

    slow = datapath.Progress(0)

    async def slow_link() -> None:
        while True:
            await trio.sleep(0.5)
            slow.wire += STALL_MIN_BYTES  # well under a record per timeout, but moving

    with trio.move_on_after(4.5) as kept_alive:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_link)
            await watch_stall(slow, 2.0)
    assert kept_alive.cancelled_caught

    trickle = datapath.Progress(0)

    async def trickling() -> None:
        while True:
            await trio.sleep(0.5)
            trickle.wire += 1

    stalled: list[BaseException] = []
    with trio.fail_after(6):
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickling)
                await watch_stall(trickle, 2.0)
        except* ConnectionError as group:
            stalled.extend(group.exceptions)
    assert stalled and "no data moved for 2 s" in str(stalled[0])
