"""p2pchat.net.muxer: Yamux receive buffers bounded by the window, and a stream cap."""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import libp2p.stream_muxer.muxer_multistream as muxer_multistream
import libp2p.stream_muxer.yamux.yamux as yamux
import pytest
import trio
import trio.testing
from libp2p.io.exceptions import ConnectionClosedError

from p2pchat.identity import Identity
from p2pchat.net import muxer
from p2pchat.net.host import Network
from p2pchat.net.muxer import BoundedYamux, YamuxLimitError, _BoundedBuffers


def fake_muxer(window: int) -> Any:
    return SimpleNamespace(
        peer_id="peer",
        is_initiator_value=False,
        streams={1: SimpleNamespace(target_recv_window=window)},
    )


def full_buffer(window: int = 300 * 1024) -> tuple[bytearray, int]:
    """Stream 1's receive buffer, filled to the most the peer may send, and that amount."""
    buffers = _BoundedBuffers(cast(Any, fake_muxer(window)))
    buffers[1] = bytearray()
    limit = window + muxer.WINDOW_SLACK_BYTES
    buffers[1].extend(b"x" * limit)
    return buffers[1], limit


def test_buffer_accepts_up_to_the_window_and_refuses_more() -> None:
    buffer, limit = full_buffer()
    assert len(buffer) == limit
    with pytest.raises(YamuxLimitError, match="overran the receive window"):
        buffer.extend(b"x")
    assert len(buffer) == limit  # nothing of the refused data was kept
    # The refused frame left a gap: nothing after it may reach the reader, even once there
    # is room again (py-libp2p still appends the frames already in flight). The reader gets
    # what came before, then the end of the stream.
    del buffer[:1000]
    with pytest.raises(YamuxLimitError, match="already overran"):
        buffer.extend(b"y" * 1000)
    assert len(buffer) == limit - 1000


def test_a_buffer_that_never_overran_takes_data_as_it_is_read() -> None:
    buffer, limit = full_buffer()
    del buffer[:1000]
    buffer.extend(b"y" * 1000)
    assert len(buffer) == limit


def test_libp2p_is_tuned_for_many_streams_on_one_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Receive windows stop growing at MAX_RECEIVE_WINDOW, and every libp2p TCP socket keeps
    little unsent data (so small frames never wait behind seconds of bulk). The stock values
    are put back first: an earlier test's host must not make this pass."""
    import libp2p.stream_muxer.yamux.yamux as yamux_module
    import libp2p.transport.tcp.tcp as libp2p_tcp
    from libp2p.io.trio import TrioTCPStream

    from p2pchat.net.host import build_host
    from p2pchat.net.tcp_tuning import TunedTCPStream

    monkeypatch.setattr(yamux_module, "MAX_WINDOW_SIZE", 16 * 1024 * 1024)
    monkeypatch.setattr(libp2p_tcp, "TrioTCPStream", TrioTCPStream)
    build_host(Identity.generate())
    assert yamux_module.MAX_WINDOW_SIZE == muxer.MAX_RECEIVE_WINDOW
    assert libp2p_tcp.TrioTCPStream is TunedTCPStream


async def test_a_tuned_stream_limits_its_unsent_data() -> None:
    import socket

    from p2pchat.net.tcp_tuning import NOTSENT_LOWAT, TunedTCPStream

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        before = stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
        TunedTCPStream(stream)
        after = stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
        assert before != NOTSENT_LOWAT and after == NOTSENT_LOWAT
    finally:
        await stream.aclose()
        for listener in listeners:
            await listener.aclose()


def test_small_windows_still_allow_the_default() -> None:
    m = fake_muxer(window=1)
    buffers = _BoundedBuffers(cast(Any, m))
    buffers[1] = bytearray(b"abc")
    buffers[1].extend(b"x" * (256 * 1024))
    assert bytes(buffers[1][:3]) == b"abc"


def test_stream_cap_counts_only_streams_the_peer_opened() -> None:
    m = fake_muxer(window=0)
    m.is_initiator_value = True  # our streams are odd, the peer's even
    buffers = _BoundedBuffers(cast(Any, m))
    for n in range(muxer.MAX_STREAMS_PER_CONNECTION):
        buffers[2 * n + 2] = bytearray()  # the peer's
    buffers[2] = bytearray()  # replacing an existing stream's buffer is fine
    for n in range(10):
        buffers[2 * n + 1] = bytearray()  # ours: never refused (py-libp2p would leak them)
    with pytest.raises(YamuxLimitError, match="streams on one connection"):
        buffers[100_000] = bytearray()
    assert isinstance(YamuxLimitError("x"), OSError)  # fatal for the connection in py-libp2p


def test_install_makes_libp2p_build_bounded_yamux() -> None:
    muxer.install()
    assert muxer_multistream.Yamux is BoundedYamux


ECHO = "/p2pchat-test/echo/1.0.0"


async def _echo(stream: Any) -> None:
    try:
        while True:
            data = await stream.read(65536)
            if not data:
                break
            await stream.write(data)
    except Exception:
        pass
    finally:
        with contextlib.suppress(Exception):
            await stream.close()


async def test_cancelled_writes_do_not_break_the_connection() -> None:
    """Writes cancelled at random moments (timeouts, a nursery ending) leave the connection
    usable. In py-libp2p a frame cancelled after Noise encrypted it (or midway through the
    socket write) desynchronises the connection: the peer fails to decrypt the next frame
    ("Failed authentication of message") and every stream on the connection dies."""
    a, b = Network(Identity.generate()), Network(Identity.generate())
    b.set_handler(ECHO, _echo)
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


class _FakeSecureConn:
    """A secured connection under the test's control: ``incoming`` is what the peer sends,
    ``writable`` gates our writes (unset: the peer takes no data, like a frozen process)."""

    is_initiator = True

    def __init__(self, write_delay: float = 0.0) -> None:
        self.closed = False
        self.written: list[bytes] = []
        self.writable = trio.Event()
        self._closing = trio.Event()
        self.write_delay = write_delay
        self._send, self._receive = trio.open_memory_channel[bytes](100)
        self._pending = b""

    def feed(self, data: bytes) -> None:
        self._send.send_nowait(data)

    async def read(self, n: int = -1) -> bytes:
        if not self._pending:
            try:
                self._pending = await self._receive.receive()
            except trio.EndOfChannel:
                return b""
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

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


def _frame(typ: int, flags: int, stream_id: int, length: int, body: bytes = b"") -> bytes:
    return struct.pack(yamux.YAMUX_HEADER_FORMAT, 0, typ, flags, stream_id, length) + body


@contextlib.asynccontextmanager
async def _running(conn: _FakeSecureConn) -> AsyncIterator[BoundedYamux]:
    mux = BoundedYamux(cast(Any, conn), cast(Any, "peer"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mux.start)
        await mux.event_started.wait()
        yield mux
        nursery.cancel_scope.cancel()


async def test_the_receive_loop_goes_on_reading_while_the_peer_takes_no_data() -> None:
    """Both peers sending while neither reads deadlocked py-libp2p: its receive loop waits
    to write a ping reply, so it stops reading, so the other side's loop waits too. Here the
    loop queues its answers and goes on: a stream the peer opens, and its data, still arrive
    while nothing can be written."""
    conn = _FakeSecureConn()
    with trio.fail_after(10):
        async with _running(conn) as mux:
            conn.feed(_frame(yamux.TYPE_PING, yamux.FLAG_SYN, 0, 7))
            conn.feed(_frame(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, 2, 0))
            conn.feed(_frame(yamux.TYPE_DATA, 0, 2, 5, b"hello"))
            stream = await mux.accept_stream()
            while bytes(mux.stream_buffers.get(2, b"")) != b"hello":
                await trio.sleep(0.01)
            assert stream.stream_id == 2
            assert conn.written == []  # the ping reply and the ACK wait for the socket
            conn.writable.set()
            while len(b"".join(conn.written)) < 24:
                await trio.sleep(0.01)
    ping_reply, ack = b"".join(conn.written)[:12], b"".join(conn.written)[12:24]
    assert ping_reply == _frame(yamux.TYPE_PING, yamux.FLAG_ACK, 0, 7)
    assert ack == _frame(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_ACK, 2, 0)


async def test_a_peer_that_asks_for_answers_but_takes_no_data_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(muxer, "MAX_PENDING_ANSWERS", 5)
    conn = _FakeSecureConn()
    with trio.fail_after(10):
        async with _running(conn) as mux:
            for n in range(10):
                conn.feed(_frame(yamux.TYPE_PING, yamux.FLAG_SYN, 0, n))
            await mux.event_shutting_down.wait()
    assert conn.written == []


async def test_a_frame_that_cannot_be_written_closes_the_connection(autojump_clock: Any) -> None:
    conn = _FakeSecureConn()
    async with _running(conn) as mux:
        started = trio.current_time()
        # The caller's own timeout does not cut the frame in half...
        with trio.move_on_after(1) as caller:
            with pytest.raises(ConnectionClosedError, match="timed out"):
                await mux._write_frame(b"\x00" * 12)
        assert not caller.cancelled_caught
        # ...the write deadline ends it, and the half-written connection is closed.
        assert trio.current_time() - started == pytest.approx(muxer.FRAME_WRITE_TIMEOUT)
        assert conn.closed
        with pytest.raises(ConnectionClosedError, match="timed out"):
            await mux._write_frame(b"\x00" * 12)  # and later writes fail at once


async def test_a_cancelled_caller_still_writes_the_whole_frame() -> None:
    conn = _FakeSecureConn(write_delay=0.05)
    conn.writable.set()
    async with _running(conn) as mux:
        with trio.move_on_after(0.01) as caller:
            await mux._write_frame(b"frame")
        assert caller.cancelled_caught  # the caller was cancelled, after the frame went out
        assert conn.written == [b"frame"]


async def test_a_caller_cancelled_while_another_writes_goes_on_once_its_frame_is_out() -> None:
    """A hang-up written as the daemon stops must not be left in the queue when the
    connection closes right after."""
    conn = _FakeSecureConn(write_delay=0.05)
    conn.writable.set()
    async with _running(conn) as mux, trio.open_nursery() as nursery:
        nursery.start_soon(mux._write_frame, b"first")
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.01) as caller:
            await mux._write_frame(b"second")
        assert caller.cancelled_caught
        assert conn.written == [b"first", b"second"]  # cancelled, once its frame was out


async def test_queued_frames_go_out_in_order_in_one_write() -> None:
    conn = _FakeSecureConn()
    async with _running(conn) as mux, trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(mux._write_frame, bytes([n]) * 3)
            await trio.testing.wait_all_tasks_blocked()  # each queues before the next starts
        await trio.sleep(0.01)
        conn.writable.set()
    # The first caller wrote its own frame; the four queued meanwhile went out together,
    # after it, in order.
    assert conn.written == [b"\x00" * 3, b"".join(bytes([n]) * 3 for n in range(1, 5))]


async def test_writes_after_the_connection_failed_raise() -> None:
    class Broken(_FakeSecureConn):
        async def write(self, data: bytes) -> None:
            raise ConnectionClosedError("reset by peer")

    conn = Broken()
    async with _running(conn) as mux:
        for _ in range(2):
            with pytest.raises(ConnectionClosedError, match="reset by peer"), trio.fail_after(5):
                await mux._write_frame(b"x")
        assert conn.closed  # a connection that cannot send is closed, so its reader ends too


async def test_a_tuned_stream_serves_small_reads_from_one_receive_in_order() -> None:
    """Noise's 2-byte lengths and bodies come from what one receive brought in, byte for byte,
    and the end of the connection is still b"" once everything was read."""
    from p2pchat.net.tcp_tuning import TunedTCPStream

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server_stream = await listeners[0].accept()
    payload = random.Random(5).randbytes(300_000)

    async def send() -> None:
        await client.send_all(payload)
        await client.aclose()

    try:
        tuned = TunedTCPStream(server_stream)  # type: ignore[arg-type]
        got = bytearray()
        sizes = [2, 65_519, 1, 7, 100_000, 3]
        i = 0
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while True:
                    want = sizes[i % len(sizes)]
                    i += 1
                    piece = await tuned.read(want)
                    assert len(piece) <= want
                    if not piece:
                        break
                    got += piece
        assert bytes(got) == payload
        assert await tuned.read(10) == b""
        assert await tuned.read(0) == b""
    finally:
        await server_stream.aclose()
        for listener in listeners:
            await listener.aclose()
