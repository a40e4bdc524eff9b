"""A real receiving daemon against a hand-driven, befriended libp2p peer that lies in its file
offers and data: path names, oversending, a wrong hash, tampered records. Each case says what
the daemon must do; in every case nothing is written outside the incoming directory and no
finished file appears."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path

import blake3
import cbor2
import pytest
import trio
from libp2p.abc import INetStream

from p2pchat import wire
from p2pchat.files import bulk
from p2pchat.identity import Identity
from p2pchat.net.host import build_host
from tests.harness import Daemon, wait_for
from tests.peers import FakeFriend, call, connect, exchange, logged, running, wait_transfer

pytestmark = pytest.mark.daemons

MakeDaemon = Callable[..., Daemon]


def home_files(d: Daemon) -> set[str]:
    """Every file under the daemon's home except its own bookkeeping."""
    found = set()
    for root, _dirs, files in os.walk(d.home):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), d.home)
            found.add(rel)
    return found


def raw_offer(name: str, size: int = 10) -> bytes:
    """An offer frame built by hand, past our encoder's own checks."""
    body = cbor2.dumps(
        {"t": "file-offer", "id": os.urandom(16), "name": name, "size": size, "hash": bytes(32)}
    )
    return wire.encode_varint(len(body)) + body


async def test_offers_with_path_names_are_refused(make_daemon: MakeDaemon) -> None:
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    eve = FakeFriend()
    async with running(eve.host):
        await eve.befriend(alice)
        before = home_files(alice)
        for name in (
            "../evil",
            "../../etc/passwd",
            "/etc/passwd",
            "a/b",
            "..",
            ".",
            "x\\y",
            "a\x1b[2J",
        ):
            frames = await eve.offer(alice, raw_offer(name))
            assert frames and isinstance(frames[-1], wire.Refused), name
            assert frames[-1].code == wire.REFUSED_BAD_FRAME, name
        listed = (await call(alice, "files.list"))["transfers"]
        assert listed == []
        # Risky but legal names are accepted under a harmless name.
        for name, shown in (
            ("CON.txt", "_CON.txt"),
            (".bashrc", "bashrc"),
            ("a:b?.txt", "a_b_.txt"),
        ):
            tid = os.urandom(16)
            assert await eve.offer(alice, wire.FileOffer(tid, name, 5, bytes(32))) == [
                wire.Received()
            ]
            t = await wait_transfer(alice, tid, "offered")
            assert t["name"] == shown
        assert home_files(alice) - before <= {"p2pchat.db-wal", "p2pchat.db-shm"}
    assert (await call(alice, "status"))["peer_id"] == alice.peer_id


def sealed(get: wire.FileGet, chunks: list[bytes]) -> bytes:
    sealer = bulk.RecordSealer(get.suite, get.key, get.tid, get.offset)
    out = bytearray(sealer.hello())
    for chunk in chunks:
        record = bytearray(bulk.HEADER_BYTES + len(chunk) + bulk.TAG_BYTES)
        n = sealer.seal_into(memoryview(chunk), memoryview(record))
        out += record[:n]
    return bytes(out)


def tampered(get: wire.FileGet, chunk: bytes) -> bytes:
    data = bytearray(sealed(get, [chunk]))
    data[-1] ^= 0x01
    return bytes(data)


async def deliver(
    stream: INetStream, get: wire.FileGet, path: str, payload: bytes, *, announce: bool = True
) -> None:
    """Answer a data request on ``path`` with ``payload`` (hello and records), end our side
    cleanly, and hold the session open until the daemon ends it: it has then read and judged
    everything we sent. ``announce=False``: the ``file-data`` answer was already sent."""
    if announce:
        await stream.write(wire.encode(wire.FileData(get.tid, path)))
    # (If the daemon never ended it, the test's own wait for the transfer's state says so.)
    with trio.move_on_after(15):
        if path == "tcp":
            async with await trio.open_tcp_stream("127.0.0.1", get.port) as data:
                # The daemon's challenge comes first; the hello must be bound to its nonce.
                challenge = b""
                while len(challenge) < bulk.CHALLENGE_BYTES:
                    challenge += await data.receive_some(bulk.CHALLENGE_BYTES - len(challenge))
                sealer = bulk.RecordSealer(get.suite, get.key, get.tid, get.offset)
                hello = sealer.hello(sealer.answer_challenge(challenge))
                await data.send_all(hello + payload[len(hello) :])
                with contextlib.suppress(trio.BrokenResourceError):  # closed or reset
                    await data.send_eof()
                    while await data.receive_some():
                        pass
        else:
            await stream.write(payload)
            await stream.close_write()
            with contextlib.suppress(Exception):  # end of stream or reset: both end it
                while await stream.read(65536):
                    pass
    with contextlib.suppress(Exception):
        await stream.close()


CONTENT = os.urandom(1000)


@pytest.mark.parametrize("path", ["stream", "tcp"])
@pytest.mark.parametrize(
    ("case", "offered_hash", "payload", "error"),
    [
        (
            "oversend",
            blake3.blake3(CONTENT).digest(),
            lambda get: sealed(get, [CONTENT + b"extra bytes"]),
            "more than the offered size",
        ),
        (
            "oversend-after-end",
            blake3.blake3(CONTENT).digest(),
            lambda get: sealed(get, [CONTENT, b"more"]),
            "more than the offered size",
        ),
        (
            "wrong-hash",
            blake3.blake3(b"something else").digest(),
            lambda get: sealed(get, [CONTENT]),
            "does not match the offered hash",
        ),
        (
            "tampered",
            blake3.blake3(CONTENT).digest(),
            lambda get: tampered(get, CONTENT),
            "failed authentication",
        ),
    ],
)
async def test_bad_data_fails_the_transfer_and_leaves_no_file(
    make_daemon: MakeDaemon,
    path: str,
    case: str,
    offered_hash: bytes,
    payload: Callable[[wire.FileGet], bytes],
    error: str,
) -> None:
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    eve = FakeFriend()

    async def on_get(stream: INetStream, get: wire.FileGet) -> None:
        await deliver(stream, get, path, payload(get))

    eve.on_get = on_get
    async with running(eve.host):
        await eve.befriend(alice)
        tid = os.urandom(16)
        offer = wire.FileOffer(tid, "data.bin", len(CONTENT), offered_hash)
        await eve.offer_accepted(alice, offer)
        failed = await wait_transfer(alice, tid, "failed")
        assert error in failed["error"]
        incoming = Path(alice.home / "incoming")
        assert os.listdir(incoming) == []  # neither the file nor its partial
        # The daemon tells the sender it failed, and asks for the data only once.
        with trio.fail_after(15):
            while not eve.ends:
                await trio.sleep(0.05)
        assert eve.ends[0].outcome == "failed"
        assert len(eve.gets) == 1


async def test_stranger_connecting_to_the_data_port_is_ignored(make_daemon: MakeDaemon) -> None:
    """Anyone may connect to a receiver's open data port; only the holder of the session key
    gets its bytes written."""
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    eve = FakeFriend()
    content = os.urandom(5000)

    async def on_get(stream: INetStream, get: wire.FileGet) -> None:
        # Once told the data comes over TCP, the daemon looks at whoever connects to its port.
        await stream.write(wire.encode(wire.FileData(get.tid, "tcp")))
        intruder = socket.create_connection(("127.0.0.1", get.port), timeout=5)
        wrong_key = wire.FileGet(get.tid, get.offset, get.suite, os.urandom(32), get.port)
        intruder.sendall(sealed(wrong_key, [b"x" * len(content)]))
        # The daemon has looked at the intruder's hello and turned it away before the real
        # sender connects.
        await logged(alice, "ignored a connection to the data port")
        intruder.close()
        await deliver(stream, get, "tcp", sealed(get, [content]), announce=False)

    eve.on_get = on_get
    async with running(eve.host):
        await eve.befriend(alice)
        tid = os.urandom(16)
        offer = wire.FileOffer(tid, "ok.bin", len(content), blake3.blake3(content).digest())
        await eve.offer_accepted(alice, offer)
        done = await wait_transfer(alice, tid, "completed")
        assert Path(done["path"]).read_bytes() == content
    assert len(eve.gets) == 1  # the intruder did not cost the sender its session


async def test_file_stream_from_a_stranger_is_refused(make_daemon: MakeDaemon) -> None:
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    async with running(build_host(Identity.generate())) as stranger:
        await connect(stranger, alice)
        frames = await exchange(
            stranger,
            alice,
            wire.FILE_PROTOCOL,
            wire.encode(wire.FileOffer(os.urandom(16), "a.txt", 3, bytes(32))),
        )
        assert frames and isinstance(frames[-1], wire.Refused)
        assert frames[-1].code == wire.REFUSED_NOT_FRIEND
    assert (await call(alice, "files.list"))["transfers"] == []


async def test_a_sender_that_keeps_refusing_is_not_hammered(make_daemon: MakeDaemon) -> None:
    """A data request refused with `busy` is retried with a growing backoff, not in a loop."""
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    eve = FakeFriend()

    async def on_get(stream: INetStream, get: wire.FileGet) -> None:
        await stream.write(wire.encode(wire.Refused(wire.REFUSED_BUSY, "busy")))
        await stream.close()

    eve.on_get = on_get
    async with running(eve.host):
        await eve.befriend(alice)
        tid = os.urandom(16)
        await eve.offer_accepted(alice, wire.FileOffer(tid, "x.bin", 100, bytes(32)))
        with trio.fail_after(20):
            while len(eve.gets) < 3:
                await trio.sleep(0.05)
        # Backoff from 0.5 s, doubling: the requests are never back to back (as in a loop),
        # each wait is longer than the one before, and the transfer is still waiting.
        first, second = (b - a for a, b in itertools.pairwise(eve.get_times[:3]))
        assert first >= 0.4 and second >= 1.5 * first, (first, second)
        assert (await wait_transfer(alice, tid, "active"))["bytes"] == 0


async def test_concurrent_offers_with_one_id_store_exactly_one(make_daemon: MakeDaemon) -> None:
    """Two offers with the same ID at once (a lie, or a resend racing its original): one is
    stored, the other answered without effect, and memory agrees with the database."""
    alice = await trio.to_thread.run_sync(make_daemon, "alice", False)
    alice.configure(auto_accept_max_bytes=1000)
    await trio.to_thread.run_sync(alice.start)
    eve = FakeFriend()
    async with running(eve.host):
        await eve.befriend(alice)
        tid = os.urandom(16)
        small = wire.FileOffer(tid, "cat.jpg", 10, bytes(32))
        huge = wire.FileOffer(tid, "huge.bin", 10**12, bytes(32))
        replies: list[list[wire.Frame]] = []

        async def offer(frame: wire.FileOffer) -> None:
            replies.append(await eve.offer(alice, frame))

        async with trio.open_nursery() as nursery:
            for frame in (small, huge, small, huge):
                nursery.start_soon(offer, frame)
        # Whichever came first is stored; every other one is a repeat of its ID from the
        # same friend, answered `received` without effect.
        assert replies == [[wire.Received()]] * 4, replies
        listed = (await call(alice, "files.list"))["transfers"]
        assert len(listed) == 1
        before = {k: listed[0][k] for k in ("name", "size", "state")}
    await trio.to_thread.run_sync(alice.restart)
    after = (await call(alice, "files.list"))["transfers"]
    assert [{k: t[k] for k in ("name", "size", "state")} for t in after] == [before]


async def test_a_silent_sender_is_dropped_and_retried(make_daemon: MakeDaemon) -> None:
    """A sender that sends the hello and then nothing does not hold the transfer forever:
    after the stall timeout the session is dropped and asked for again."""
    alice = await trio.to_thread.run_sync(make_daemon, "alice", False)
    alice.configure(transfer_stall_timeout=2)
    await trio.to_thread.run_sync(alice.start)
    eve = FakeFriend()

    async def on_get(stream: INetStream, get: wire.FileGet) -> None:
        sealer = bulk.RecordSealer(get.suite, get.key, get.tid, get.offset)
        await stream.write(wire.encode(wire.FileData(get.tid, "stream")))
        await stream.write(sealer.hello())
        await trio.sleep(30)  # then silence (the point): the 2 s stall timeout must end it

    eve.on_get = on_get
    async with running(eve.host):
        await eve.befriend(alice)
        tid = os.urandom(16)
        await eve.offer_accepted(alice, wire.FileOffer(tid, "slow.bin", 100, bytes(32)))
        with trio.fail_after(20):
            while len(eve.gets) < 2:
                await trio.sleep(0.1)
        assert (await wait_transfer(alice, tid, "active"))["bytes"] == 0
    await trio.to_thread.run_sync(partial(wait_for, lambda: "no data for 2 s" in alice.log_text()))


async def test_sender_answering_that_the_transfer_ended_is_believed(
    make_daemon: MakeDaemon,
) -> None:
    """A data request answered with file-end (the sender cancelled meanwhile) ends the
    transfer as the sender says, removes the partial file, and asks no more."""
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    eve = FakeFriend()

    async def on_get(stream: INetStream, get: wire.FileGet) -> None:
        await stream.write(wire.encode(wire.FileEnd(get.tid, "cancelled", "changed my mind")))
        await stream.close()

    eve.on_get = on_get
    async with running(eve.host):
        await eve.befriend(alice)
        tid = os.urandom(16)
        await eve.offer_accepted(alice, wire.FileOffer(tid, "gone.bin", 100, bytes(32)))
        ended = await wait_transfer(alice, tid, "cancelled")
        assert "changed my mind" in ended["error"] and ended["bytes"] == 0
        # Nothing may happen from here on: 1.5 s is three times the first retry's backoff,
        # in which a daemon that did not believe the sender would ask again.
        await trio.sleep(1.5)
        assert len(eve.gets) == 1 and eve.ends == []
        assert os.listdir(alice.home / "incoming") == []
        after = (await call(alice, "files.list"))["transfers"]
        assert [(t["state"], t["bytes"]) for t in after] == [("cancelled", 0)]


async def test_an_unasked_punch_is_a_bad_frame_and_costs_nothing(make_daemon: MakeDaemon) -> None:
    """On loopback the receiver offers no punch port (there is no NAT to open). A sender that
    answers `file-punch` anyway, or claims the `punched` path with no punch before it, has
    sent a malformed session: it is dropped and asked again, and the file still arrives when
    the sender behaves."""
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    eve = FakeFriend()
    content = os.urandom(20_000)

    async def on_get(stream: INetStream, get: wire.FileGet) -> None:
        if len(eve.gets) == 1:
            await stream.write(wire.encode(wire.FilePunch(get.tid, 40000)))
            await trio.sleep(5)
        elif len(eve.gets) == 2:
            await stream.write(wire.encode(wire.FileData(get.tid, "punched")))
            await trio.sleep(5)
        else:
            await deliver(stream, get, "stream", sealed(get, [content]))

    eve.on_get = on_get
    async with running(eve.host):
        await eve.befriend(alice)
        tid = os.urandom(16)
        offer = wire.FileOffer(tid, "p.bin", len(content), blake3.blake3(content).digest())
        await eve.offer_accepted(alice, offer)
        done = await wait_transfer(alice, tid, "completed")
        assert Path(done["path"]).read_bytes() == content
        assert done["data_path"] == "stream"
    assert [g.punch for g in eve.gets] == [0, 0, 0]
    text = await trio.to_thread.run_sync(alice.log_text)
    assert "file-punch without a punch port asked for" in text
    assert "file-data 'punched' without a file-punch" in text
