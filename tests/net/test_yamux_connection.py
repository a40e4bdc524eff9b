"""p2pchat.net.yamux.connection: the trio adapter py-libp2p runs for every connection.

Against a secure channel under the test's control (frames byte for byte), between real
p2pchat hosts, and against stock py-libp2p in another process, both ways."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import libp2p.stream_muxer.muxer_multistream as muxer_multistream
import pytest
import trio
import trio.testing
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamReset

from p2pchat.identity import Identity
from p2pchat.net import compat
from p2pchat.net.host import Network
from p2pchat.net.yamux import connection
from p2pchat.net.yamux import frames as fr
from p2pchat.net.yamux.connection import LeanYamux
from tests.net.echo import ECHO, echo, echo_through

pytestmark = pytest.mark.timeout(120)

STOCK_PEER = Path(__file__).with_name("stock_peer.py")


def test_install_makes_libp2p_build_lean_yamux() -> None:
    compat.install_lean_yamux()
    assert muxer_multistream.Yamux is LeanYamux


class _FakeSecureConn:
    """A secured connection under the test's control: ``feed`` is what the peer sends,
    ``writable`` gates our writes (unset: the peer takes no data, like a frozen process)."""

    is_initiator = True

    def __init__(self, write_delay: float = 0.0) -> None:
        self.closed = False
        self.written: list[bytes] = []
        self.writable = trio.Event()
        self._closing = trio.Event()
        self.write_delay = write_delay
        self._send, self._receive = trio.open_memory_channel[bytes](1000)

    def feed(self, data: bytes) -> None:
        self._send.send_nowait(data)

    async def read(self, n: int | None = None) -> bytes:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionClosedError("closed") from None

    async def write(self, data: bytes) -> None:
        async with trio.open_nursery() as nursery:  # a closed socket wakes a blocked writer
            nursery.start_soon(self._cancel_when, self.writable, nursery.cancel_scope)
            nursery.start_soon(self._cancel_when, self._closing, nursery.cancel_scope)
        if self.closed:
            raise ConnectionClosedError("socket closed")
        await trio.sleep(self.write_delay)
        self.written.append(data)

    @staticmethod
    async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
        await event.wait()
        scope.cancel()

    async def close(self) -> None:
        self.closed = True
        self._closing.set()
        self._send.close()

    def get_remote_address(self) -> tuple[str, int]:
        return ("127.0.0.1", 1)


def _frame(kind: int, flags: int, sid: int, length: int, body: bytes = b"") -> bytes:
    return fr.encode(kind, flags, sid, length) + body


@contextlib.asynccontextmanager
async def _running(conn: _FakeSecureConn) -> AsyncIterator[LeanYamux]:
    closed: list[bool] = []

    async def on_close() -> None:
        closed.append(True)

    mux = LeanYamux(cast(Any, conn), cast(Any, "peer"), on_close=on_close)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mux.start)
        await mux.event_started.wait()
        yield mux
        nursery.cancel_scope.cancel()
    if mux.is_closed:
        assert closed == [True]  # py-libp2p heard of the end, once


async def test_the_receive_loop_goes_on_reading_while_the_peer_takes_no_data() -> None:
    """Both peers sending while neither reads deadlocked py-libp2p: its receive loop waits
    to write a ping reply, so it stops reading, so the other side's loop waits too. Here the
    loop queues its answers and goes on: a stream the peer opens, and its data, still arrive
    while nothing can be written."""
    conn = _FakeSecureConn()
    with trio.fail_after(10):
        async with _running(conn) as mux:
            conn.feed(_frame(fr.PING, fr.SYN, 0, 7))
            conn.feed(_frame(fr.WINDOW_UPDATE, fr.SYN, 2, 0))
            conn.feed(_frame(fr.DATA, 0, 2, 5, b"hello"))
            stream = await mux.accept_stream()
            assert await stream.read(100) == b"hello"
            assert conn.written == []  # the ping reply and the ACK wait for the socket
            conn.writable.set()
            while len(b"".join(conn.written)) < 24:
                await trio.sleep(0.01)
    written = b"".join(conn.written)
    assert written[:12] == _frame(fr.PING, fr.ACK, 0, 7)
    assert written[12:24] == _frame(fr.WINDOW_UPDATE, fr.ACK, 2, 0)


async def test_a_peer_that_asks_for_answers_but_takes_no_data_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "MAX_UNWRITTEN_ANSWERS", 5 * fr.HEADER_SIZE)
    conn = _FakeSecureConn()
    with trio.fail_after(10):
        async with _running(conn) as mux:
            for n in range(10):
                conn.feed(_frame(fr.PING, fr.SYN, 0, n))
            await mux.event_closed.wait()
    assert conn.closed and conn.written == []


async def test_a_stranger_overrunning_the_window_is_sent_go_away_and_closed() -> None:
    conn = _FakeSecureConn()
    conn.writable.set()
    with trio.fail_after(10):
        async with _running(conn) as mux:
            conn.feed(_frame(fr.WINDOW_UPDATE, fr.SYN, 2, 0))
            stream = await mux.accept_stream()
            conn.feed(_frame(fr.DATA, 0, 2, 5, b"early"))
            conn.feed(fr.encode(fr.DATA, 0, 2, fr.INITIAL_WINDOW))  # 5 bytes too many
            await mux.event_closed.wait()
            # What came before the violation is still read; then the stream is reset.
            assert await stream.read(100) == b"early"
            with pytest.raises(MuxedStreamReset):
                await stream.read(100)
    written = b"".join(conn.written)
    assert written.endswith(_frame(fr.GO_AWAY, 0, 0, fr.GO_AWAY_PROTOCOL_ERROR))
    assert conn.closed


async def test_a_write_that_cannot_go_out_closes_the_connection(autojump_clock: Any) -> None:
    conn = _FakeSecureConn()
    async with _running(conn) as mux:
        started = trio.current_time()
        # The caller's own timeout does not cut the frame in half...
        with trio.move_on_after(1) as caller, pytest.raises(MuxedConnUnavailable_or_closed()):
            await mux.open_stream()
        assert not caller.cancelled_caught
        # ...the write deadline ends it, and the half-written connection is closed.
        assert trio.current_time() - started == pytest.approx(connection.WRITE_TIMEOUT)
        await mux.event_closed.wait()
        assert conn.closed
        with pytest.raises(MuxedConnUnavailable_or_closed()):
            await mux.open_stream()  # and later writes fail at once


def MuxedConnUnavailable_or_closed() -> tuple[type[BaseException], ...]:
    from libp2p.stream_muxer.exceptions import MuxedConnUnavailable, MuxedStreamError

    return (MuxedConnUnavailable, MuxedStreamError)


async def test_a_cancelled_caller_still_writes_the_whole_frame() -> None:
    conn = _FakeSecureConn(write_delay=0.05)
    conn.writable.set()
    async with _running(conn) as mux:
        stream = await mux.open_stream()
        conn.written.clear()
        with trio.move_on_after(0.01) as caller:
            await stream.write(b"frame")
        assert caller.cancelled_caught  # the caller was cancelled, after the frame went out
        assert conn.written == [_frame(fr.DATA, 0, 1, 5, b"frame")]


async def test_a_caller_cancelled_while_another_writes_goes_on_once_its_frame_is_out() -> None:
    """A hang-up written as the daemon stops must not be left in the queue when the
    connection closes right after."""
    conn = _FakeSecureConn(write_delay=0.05)
    conn.writable.set()
    async with _running(conn) as mux:
        first, second = await mux.open_stream(), await mux.open_stream()
        conn.written.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.write, b"first")
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.01) as caller:
                await second.write(b"second")
            assert caller.cancelled_caught
            assert b"".join(conn.written) == _frame(fr.DATA, 0, 1, 5, b"first") + _frame(
                fr.DATA, 0, 3, 6, b"second"
            )


async def test_frames_queued_behind_a_writer_go_out_in_order_in_one_write() -> None:
    conn = _FakeSecureConn()
    async with _running(conn) as mux:
        conn.writable.set()
        streams = [await mux.open_stream() for _ in range(5)]
        conn.written.clear()
        conn.writable = trio.Event()
        async with trio.open_nursery() as nursery:
            for n, stream in enumerate(streams):
                nursery.start_soon(stream.write, bytes([n]) * 3)
                await trio.testing.wait_all_tasks_blocked()  # each queues before the next
            conn.writable.set()
    # The first caller wrote its own frame; the four queued meanwhile went out together,
    # after it, in order.
    frames = [_frame(fr.DATA, 0, 2 * n + 1, 3, bytes([n]) * 3) for n in range(5)]
    assert conn.written == [frames[0], b"".join(frames[1:])]


async def test_writes_after_the_connection_failed_raise() -> None:
    class Broken(_FakeSecureConn):
        async def write(self, data: bytes) -> None:
            raise ConnectionClosedError("reset by peer")

    conn = Broken()
    async with _running(conn) as mux:
        for _ in range(2):
            with pytest.raises(MuxedConnUnavailable_or_closed()), trio.fail_after(5):
                await mux.open_stream()
        await mux.event_closed.wait()
        assert conn.closed  # a connection that cannot send is closed, so its reader ends too


async def test_eof_and_reset_reach_the_reader_after_the_data() -> None:
    conn = _FakeSecureConn()
    conn.writable.set()
    async with _running(conn) as mux:
        conn.feed(_frame(fr.WINDOW_UPDATE, fr.SYN, 2, 0) + _frame(fr.DATA, fr.FIN, 2, 3, b"bye"))
        conn.feed(_frame(fr.WINDOW_UPDATE, fr.SYN, 4, 0) + _frame(fr.DATA, fr.RST, 4, 2, b"hi"))
        ended, reset = await mux.accept_stream(), await mux.accept_stream()
        assert await ended.read(-1) == b"bye"
        with pytest.raises(MuxedStreamEOF):
            await ended.read(10)
        assert await reset.read(1) == b"h" and await reset.read(None) == b"i"
        with pytest.raises(MuxedStreamReset):
            await reset.read(10)
        with pytest.raises(MuxedStreamReset):
            await reset.write(b"x")


async def test_a_writer_waits_for_window_and_a_silent_peer_resets_it(autojump_clock: Any) -> None:
    conn = _FakeSecureConn()
    conn.writable.set()
    async with _running(conn) as mux:
        stream = await mux.open_stream()
        with pytest.raises(MuxedStreamReset, match="granted no window"):
            await stream.write(b"x" * (fr.INITIAL_WINDOW + 1))
        assert b"".join(conn.written).endswith(_frame(fr.WINDOW_UPDATE, fr.RST, 1, 0))


async def test_a_granted_window_lets_the_writer_finish() -> None:
    conn = _FakeSecureConn()
    conn.writable.set()
    async with _running(conn) as mux:
        stream = await mux.open_stream()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.write, b"x" * (fr.INITIAL_WINDOW + 10))
                while stream.send_window:
                    await trio.sleep(0.01)
                conn.feed(_frame(fr.WINDOW_UPDATE, 0, 1, 10))
        sent = b"".join(conn.written)
        assert sent.count(b"x") == fr.INITIAL_WINDOW + 10


async def test_the_peer_closing_the_channel_resets_streams_and_ends_accept() -> None:
    conn = _FakeSecureConn()
    conn.writable.set()
    async with _running(conn) as mux:
        stream = await mux.open_stream()
        await conn.close()
        with trio.fail_after(5):
            await mux.event_closed.wait()
            with pytest.raises(MuxedStreamReset):
                await stream.read(10)
            with pytest.raises(MuxedConnUnavailable_or_closed()):
                await mux.accept_stream()
        assert not mux.is_established


async def test_reads_of_any_size_return_the_bytes_in_order() -> None:
    """Small reads (a length prefix), reads across frames, and "all there is" reads."""
    rng = random.Random(3)
    payload = rng.randbytes(200_000)
    conn = _FakeSecureConn()
    conn.writable.set()
    async with _running(conn) as mux:
        conn.feed(_frame(fr.WINDOW_UPDATE, fr.SYN, 2, 0))
        at = 0
        while at < len(payload):
            size = rng.randint(1, 30_000)
            conn.feed(_frame(fr.DATA, 0, 2, len(payload[at : at + size]), payload[at : at + size]))
            at += size
        conn.feed(_frame(fr.WINDOW_UPDATE, fr.FIN, 2, 0))
        stream = await mux.accept_stream()
        got = bytearray()
        with trio.fail_after(10):
            while True:
                try:
                    piece = await stream.read(rng.choice([1, 2, 7, 1000, 65_535, -1]))
                except MuxedStreamEOF:
                    break
                got += piece
        assert bytes(got) == payload


def test_a_relayed_connection_sends_what_fits_one_frame_of_the_outer_one() -> None:
    from libp2p.connection_types import ConnectionType

    from p2pchat.net.yamux.session import MAX_FRAME_PAYLOAD

    class Relayed(_FakeSecureConn):
        def get_connection_type(self) -> ConnectionType:
            return ConnectionType.RELAYED

    direct = LeanYamux(cast(Any, _FakeSecureConn()), cast(Any, "peer"))
    relayed = LeanYamux(cast(Any, Relayed()), cast(Any, "peer"))
    assert direct._batch == 65535 - 16 == MAX_FRAME_PAYLOAD + fr.HEADER_SIZE
    # One inner Noise message: 2-byte length + plaintext + 16-byte tag = one outer frame.
    assert 2 + relayed._batch + 16 == MAX_FRAME_PAYLOAD
    assert relayed._session.max_frame_payload == relayed._batch - fr.HEADER_SIZE


async def test_a_read_is_never_cancelled_once_it_took_data() -> None:
    """The window update a read makes due is left to the sender task: a read never waits
    to write, so a cancellation cannot land after the bytes were taken (they would be lost,
    and the framing on top broken)."""
    conn = _FakeSecureConn()  # takes no data: a window update could not go out
    async with _running(conn) as mux:
        conn.feed(_frame(fr.WINDOW_UPDATE, fr.SYN, 2, 0))
        stream = await mux.accept_stream()
        payload = random.Random(2).randbytes(200_000)  # more than half the window: an update
        for at in range(0, len(payload), 50_000):
            conn.feed(_frame(fr.DATA, 0, 2, 50_000, payload[at : at + 50_000]))
        while stream._buffered < len(payload):
            await trio.sleep(0.01)
        with trio.CancelScope() as scope:
            scope.cancel()  # already cancelled: nothing is taken
            await stream.read(-1)
        assert scope.cancelled_caught and stream._buffered == len(payload)
        with trio.move_on_after(0.5) as scope:
            got = await stream.read(-1)
        assert not scope.cancelled_caught and got == payload
        # The ACK and the window update are queued for the sender; nothing could be written.
        assert mux._session.control_queued == 2 * fr.HEADER_SIZE and mux._done == (0, 0)
        conn.writable.set()  # (so the sender's write ends before its 30 s deadline)


async def test_a_cancelled_open_stream_resets_the_stream_it_opened() -> None:
    conn = _FakeSecureConn(write_delay=0.05)
    conn.writable.set()
    async with _running(conn) as mux:
        with trio.move_on_after(0.01) as caller:
            await mux.open_stream()
        assert caller.cancelled_caught
        with trio.fail_after(5):
            while _frame(fr.WINDOW_UPDATE, fr.RST, 1, 0) not in b"".join(conn.written):
                await trio.sleep(0.01)
        assert b"".join(conn.written).startswith(_frame(fr.WINDOW_UPDATE, fr.SYN, 1, 0))
        assert 1 not in mux._streams


async def test_a_stream_the_peer_never_closes_is_reset_after_the_timeout(
    autojump_clock: Any,
) -> None:
    conn = _FakeSecureConn()
    conn.writable.set()
    async with _running(conn) as mux:
        stream = await mux.open_stream()
        await stream.close()
        conn.feed(_frame(fr.DATA, 0, 1, 4, b"more"))  # the peer sends on, never a FIN
        await trio.sleep(connection.HALF_CLOSED_TIMEOUT * 0.9)
        assert 1 in mux._streams  # half-closed is a legal state for a while...
        await trio.sleep(connection.HALF_CLOSED_TIMEOUT * 0.3)
        assert 1 not in mux._streams  # ...not for ever
        assert b"".join(conn.written).endswith(_frame(fr.WINDOW_UPDATE, fr.RST, 1, 0))


async def test_a_stream_that_ended_cleanly_reads_as_ended_after_the_connection_goes() -> None:
    conn = _FakeSecureConn()
    conn.writable.set()
    async with _running(conn) as mux:
        conn.feed(_frame(fr.WINDOW_UPDATE, fr.SYN, 2, 0) + _frame(fr.DATA, fr.FIN, 2, 2, b"ok"))
        stream = await mux.accept_stream()
        await conn.close()
        await mux.event_closed.wait()
        assert await stream.read(10) == b"ok"
        with pytest.raises(MuxedStreamEOF):  # not "reset": the peer said everything
            await stream.read(10)


async def test_tiny_frames_cost_about_their_bytes_in_memory() -> None:
    conn = _FakeSecureConn()
    conn.writable.set()
    async with _running(conn) as mux:
        conn.feed(_frame(fr.WINDOW_UPDATE, fr.SYN, 2, 0))
        stream = await mux.accept_stream()
        conn.feed(b"".join(_frame(fr.DATA, 0, 2, 1, bytes([n % 256])) for n in range(200_000)))
        with trio.fail_after(10):
            while stream._buffered < 200_000:
                await trio.sleep(0.01)
        assert len(stream._chunks) <= 200_000 // connection.MERGE_UP_TO + 2
        assert await stream.read(-1) == bytes(n % 256 for n in range(200_000))


# --- between real hosts -----------------------------------------------------------------------


async def test_cancelled_writes_do_not_break_the_connection() -> None:
    """Writes cancelled at random moments (timeouts, a nursery ending) leave the connection
    usable: a frame cut after encryption would make the peer fail to decrypt the next one
    ("Failed authentication of message") and every stream on the connection would die."""
    a, b = Network(Identity.generate()), Network(Identity.generate())
    b.set_handler(ECHO, echo)
    rng = random.Random(7)
    with trio.fail_after(60):
        async with a.run(["/ip4/127.0.0.1/tcp/0"]), b.run(["/ip4/127.0.0.1/tcp/0"]):
            assert await a.dial(b.identity.peer_id, b.listen_addrs())

            async def writer() -> None:
                stream = await a.open_stream(b.identity.peer_id, ECHO)
                for _ in range(40):
                    with trio.move_on_after(rng.uniform(0, 0.002)):
                        await stream.write(b"x" * rng.randint(1, 20_000))
                        await stream.read(65536)
                with contextlib.suppress(Exception):
                    await stream.reset()

            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(writer)

            # The same connection still carries a fresh stream both ways.
            assert a.is_connected(b.identity.peer_id)
            stream = await a.open_stream(b.identity.peer_id, ECHO)
            await stream.write(b"still there?")
            got = b""
            with trio.fail_after(5):
                while len(got) < len(b"still there?"):
                    got += await stream.read(64)
            assert got == b"still there?"


# --- against stock py-libp2p --------------------------------------------------------------------


async def test_interop_p2pchat_dials_stock_py_libp2p() -> None:
    """Stock py-libp2p (its own Yamux) echoes 4 concurrent 3 MB streams for us: windows,
    frames, half-close and ACKs agree both ways."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(STOCK_PEER), "serve"], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(30):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(4096)
        addr = line.decode().strip()
        network = Network(Identity.generate())
        with trio.fail_after(90):
            async with network.run(["/ip4/127.0.0.1/tcp/0"]):
                peer = addr.rsplit("/p2p/", 1)[1]
                assert await network.dial(peer, [addr.rsplit("/p2p/", 1)[0]])
                await echo_through(network, peer, 3_000_000, 4)
    finally:
        process.kill()
        await process.wait()


async def test_interop_stock_py_libp2p_dials_p2pchat() -> None:
    network = Network(Identity.generate())
    network.set_handler(ECHO, echo)
    with trio.fail_after(90):
        async with network.run(["/ip4/127.0.0.1/tcp/0"]):
            addr = f"{network.listen_addrs()[0]}/p2p/{network.identity.peer_id}"
            done = await trio.run_process(
                [sys.executable, str(STOCK_PEER), "send", addr, "3000000", "4"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().split() == ["ok", "12000000"]
