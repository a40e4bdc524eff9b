"""The direct data path against a hostile network, over real sockets on 127.0.0.0/8 (no
daemon): the sender dials only an announced direct address and reports every failure alike,
a captured hello cannot be replayed on another connection, and one source address cannot
take every pending slot of the data port."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import blake3
import pytest
import trio

from p2pchat.files import bulk, datapath, direct

TID = b"\x11" * 16
KEY = b"\x22" * 32
SUITE = "aes-256-gcm"
HERE = ("127.0.0.1", False)  # a direct libp2p connection from 127.0.0.1
ANNOUNCED = ("/ip4/127.0.0.1/tcp/4001",)


def sealer() -> bulk.RecordSealer:
    return bulk.RecordSealer(SUITE, KEY, TID, 0)


def opener(size: int) -> bulk.RecordOpener:
    return bulk.RecordOpener(SUITE, KEY, TID, 0, size)


def listener_on() -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


async def listening(sock: trio.socket.SocketType, host: str = "127.0.0.1") -> int:
    await sock.bind((host, 0))
    sock.listen(64)
    port: int = sock.getsockname()[1]
    return port


def free_port() -> int:
    """A port nothing listens on (connecting is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- 1. where the sender dials, and what it reports ------------------------------------------


def test_direct_target_only_an_announced_direct_ip() -> None:
    assert direct.direct_target("127.0.0.1", False, ANNOUNCED) == "127.0.0.1"
    assert direct.direct_target("192.0.2.7", False, ["/ip4/192.0.2.7/tcp/1/p2p/QmX"]) == (
        "192.0.2.7"
    )
    # Not announced, relayed (the remote IP is then the relay's), or only as a circuit.
    assert direct.direct_target("127.0.0.1", False, ["/ip4/10.1.1.1/tcp/4001"]) is None
    assert direct.direct_target("127.0.0.1", True, ANNOUNCED) is None
    circuit = "/ip4/127.0.0.1/tcp/4001/p2p/QmRelay/p2p-circuit"
    assert direct.direct_target("127.0.0.1", False, [circuit]) is None
    assert direct.direct_target(None, False, ANNOUNCED) is None
    assert direct.direct_target("127.0.0.1", False, ["garbage", "/ip4/x/tcp/1", "/dns4/a"]) is None


async def test_no_dial_to_an_address_the_friend_did_not_announce() -> None:
    """The friend names a port; we never connect to it unless the libp2p connection is direct
    and comes from an IP the friend announced (the port here would answer correctly)."""
    accepted: list[object] = []
    with listener_on() as lst:
        port = await listening(lst)

        async def count_accepts() -> None:
            while True:
                conn, _ = await lst.accept()
                accepted.append(conn)
                conn.close()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(count_accepts)
                for origin, announced in (
                    (HERE, ["/ip4/10.1.1.1/tcp/4001"]),  # not announced
                    (("127.0.0.1", True), ANNOUNCED),  # relayed: that IP is the relay's
                    (HERE, ["/ip4/127.0.0.1/tcp/4001/p2p/QmR/p2p-circuit"]),
                ):
                    got = await direct.connect_direct(origin, port, 5.0, sealer(), announced)
                    assert got is None
                await trio.sleep(0.2)
                nursery.cancel_scope.cancel()
    assert accepted == []


async def test_refused_silent_and_wrong_ports_look_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """A friend naming a port learns nothing from the outcome: refused, silent, and something
    else answering all give "no direct path", each after the same time."""
    monkeypatch.setattr(direct, "DIRECT_CONNECT_TIMEOUT", 0.6)
    refused_port = free_port()
    with listener_on() as silent, listener_on() as wrong:
        silent_port = await listening(silent)  # the kernel accepts; nobody ever speaks
        wrong_port = await listening(wrong)

        async def answer_wrong() -> None:
            while True:
                conn, _ = await wrong.accept()
                await conn.send(os.urandom(bulk.CHALLENGE_BYTES))  # not the receiver

        elapsed: dict[str, float] = {}
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_wrong)
                for name, port in (
                    ("refused", refused_port),
                    ("silent", silent_port),
                    ("wrong", wrong_port),
                ):
                    started = time.monotonic()
                    got = await direct.connect_direct(HERE, port, 5.0, sealer(), ANNOUNCED)
                    elapsed[name] = time.monotonic() - started
                    assert got is None, name
                nursery.cancel_scope.cancel()
    for name, seconds in elapsed.items():
        assert 0.6 <= seconds < 1.2, (name, elapsed)


def pump_into(sock: socket.socket, op: bulk.RecordOpener, dst: Path) -> bytes:
    fd = os.open(dst, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        hasher = blake3.blake3()
        datapath.receive_records(sock, op, fd, hasher, datapath.Progress(0))
        return bytes(hasher.digest())
    finally:
        os.close(fd)


def send_in_thread(
    sock: socket.socket, seal: bulk.RecordSealer, src: Path, size: int, binding: bytes
) -> threading.Thread:
    def send() -> None:
        with sock, open(src, "rb", buffering=0) as f:
            datapath.send_records(
                sock, seal, f, size, datapath.Progress(0), datapath.Pacer(0), 1 << 16, None, binding
            )

    thread = threading.Thread(target=send)
    thread.start()
    return thread


async def test_real_session_over_the_direct_path(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = tmp_path / "src"
    src.write_bytes(data)
    op = opener(len(data))
    with trio.fail_after(20), listener_on() as lst:
        port = await listening(lst)
        async with trio.open_nursery() as nursery:
            accepted: list[socket.socket] = []

            async def accept() -> None:
                accepted.append(await direct.accept_direct(lst, op, 5.0))

            nursery.start_soon(accept)
            got = await direct.connect_direct(HERE, port, 5.0, sealer(), ANNOUNCED)
            assert got is not None
            sock, binding = got
            seal = sealer()
            thread = send_in_thread(sock, seal, src, len(data), binding)
        with accepted[0] as received:
            digest = await trio.to_thread.run_sync(pump_into, received, op, tmp_path / "dst")
        thread.join(5)
    assert (tmp_path / "dst").read_bytes() == data
    assert digest == blake3.blake3(data).digest()


# --- 2. a captured hello replayed on another connection ------------------------------------


async def test_replayed_hello_does_not_take_the_slot(tmp_path: Path) -> None:
    """A sniffer sees a real session's opening bytes on the wire (here: a forwarding proxy
    records them, and holds them back as if the real packet were delayed), replays them on
    a connection of its own: it is turned away, and the real session still goes through."""
    data = os.urandom(200_000)
    src = tmp_path / "src"
    src.write_bytes(data)
    op = opener(len(data))
    captured = bytearray()
    replayed = trio.Event()
    hello_bytes = bulk.HEADER_BYTES + len(TID) + bulk.TAG_BYTES

    with trio.fail_after(30), listener_on() as lst, listener_on() as proxy:
        port = await listening(lst)
        proxy_port = await listening(proxy)

        async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[await sock.send(view) :]

        async def pipe(a: trio.socket.SocketType, b: trio.socket.SocketType) -> None:
            while chunk := await a.recv(65536):
                await send_all(b, chunk)
            b.shutdown(socket.SHUT_WR)

        async def pipe_up(client: trio.socket.SocketType, upstream: trio.socket.SocketType) -> None:
            first = bytearray()
            while len(first) < hello_bytes:
                chunk = await client.recv(65536)
                assert chunk, "the sender closed before its hello"
                first += chunk
            captured.extend(first[:hello_bytes])
            await replayed.wait()  # the real hello arrives only after the replay
            await send_all(upstream, bytes(first))
            await pipe(client, upstream)

        async def forward() -> None:
            client, _ = await proxy.accept()
            upstream = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            await upstream.connect(("127.0.0.1", port))
            with client, upstream:
                async with trio.open_nursery() as n:
                    n.start_soon(pipe_up, client, upstream)
                    n.start_soon(pipe, upstream, client)

        async def replay() -> None:
            while len(captured) < hello_bytes:
                await trio.sleep(0.01)
            attacker = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with attacker:
                await attacker.connect(("127.0.0.1", port))
                challenge = b""
                while len(challenge) < bulk.CHALLENGE_BYTES:
                    challenge += await attacker.recv(bulk.CHALLENGE_BYTES)
                await send_all(attacker, bytes(captured))
                # Turned away: the receiver closes the connection at once. (Had the replay
                # won, the receiver would be waiting for records on it, sending nothing.)
                answer: bytes | None = None
                with trio.move_on_after(3):
                    answer = await attacker.recv(100)
                assert answer == b"", "the replayed hello took the data port's slot"
            replayed.set()

        accepted: list[socket.socket] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)

            async def accept() -> None:
                accepted.append(await direct.accept_direct(lst, op, 5.0))

            nursery.start_soon(accept)
            nursery.start_soon(replay)
            got = await direct.connect_direct(HERE, proxy_port, 5.0, sealer(), ANNOUNCED)
            assert got is not None
            sock, binding = got
            thread = send_in_thread(sock, sealer(), src, len(data), binding)
            while not accepted:
                await trio.sleep(0.01)
            with accepted[0] as received:
                digest = await trio.to_thread.run_sync(pump_into, received, op, tmp_path / "dst")
            thread.join(5)
            nursery.cancel_scope.cancel()
    assert replayed.is_set()
    assert digest == blake3.blake3(data).digest()
    assert (tmp_path / "dst").read_bytes() == data


def test_hello_is_bound_to_its_challenge() -> None:
    challenge, nonce = opener(10).challenge()
    seal = sealer()
    assert seal.answer_challenge(challenge) == nonce
    hello = seal.hello(nonce)[bulk.HEADER_BYTES :]
    op = opener(10)
    op.check_hello(hello, nonce)
    _other_challenge, other_nonce = op.challenge()
    with pytest.raises(bulk.BulkError):
        op.check_hello(hello, other_nonce)
    with pytest.raises(bulk.BulkError):
        op.check_hello(hello)  # nor is it a stream-path hello
    with pytest.raises(bulk.BulkError):  # a challenge made without the key
        seal.answer_challenge(os.urandom(bulk.CHALLENGE_BYTES))
    with pytest.raises(bulk.BulkError):  # another session's receiver
        bulk.RecordSealer(SUITE, os.urandom(32), TID, 0).answer_challenge(challenge)


# --- 4. pending slots per source address ---------------------------------------------------


def test_pending_slots_are_bounded_per_source_and_in_all() -> None:
    slots = direct.PendingSlots(total=6, per_source=4)
    assert all(slots.admit("10.0.0.1") for _ in range(4))
    assert not slots.admit("10.0.0.1")
    assert slots.admit("10.0.0.2") and slots.admit("10.0.0.2")
    assert not slots.admit("10.0.0.3")  # all 6 taken
    slots.release("10.0.0.1")
    assert slots.admit("10.0.0.3")
    assert not slots.admit("10.0.0.1")


async def test_one_source_cannot_take_every_pending_slot(tmp_path: Path) -> None:
    """One host opens many connections to the data port and says nothing; a connection from
    another address (127.0.0.2) still gets a slot and wins, long before the silent ones time
    out."""
    op = opener(10)
    held: list[socket.socket] = []
    with trio.fail_after(20), listener_on() as lst:
        port = await listening(lst)
        async with trio.open_nursery() as nursery:
            accepted: list[socket.socket] = []

            async def accept() -> None:
                accepted.append(await direct.accept_direct(lst, op, 5.0))

            nursery.start_soon(accept)
            for _ in range(direct.MAX_PENDING_DATA_CONNECTIONS + 4):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                held.append(s)
            # The daemon greets the first few of them and closes the rest at once.
            greeted = closed = 0
            for s in held:
                got = await trio.to_thread.run_sync(s.recv, 100)
                if got:
                    greeted += 1
                else:
                    closed += 1
            assert greeted == direct.MAX_PENDING_PER_SOURCE
            started = time.monotonic()

            def honest() -> socket.socket:
                c = socket.socket()
                c.bind(("127.0.0.2", 0))
                c.settimeout(5)
                c.connect(("127.0.0.1", port))
                challenge = b""
                while len(challenge) < bulk.CHALLENGE_BYTES:
                    got = c.recv(bulk.CHALLENGE_BYTES - len(challenge))
                    assert got, "the data port closed an honest connection: no slot left"
                    challenge += got
                seal = sealer()
                c.sendall(seal.hello(seal.answer_challenge(challenge)))
                return c

            client = await trio.to_thread.run_sync(honest)
            while not accepted:
                await trio.sleep(0.01)
        with client, accepted[0] as won:
            assert won.getpeername()[0] == "127.0.0.2"
        assert time.monotonic() - started < direct.HELLO_TIMEOUT
    for s in held:
        s.close()
