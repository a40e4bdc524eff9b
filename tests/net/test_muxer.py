"""p2pchat.net.muxer: Yamux receive buffers bounded by the window, and a stream cap."""

from __future__ import annotations

import contextlib
import random
from types import SimpleNamespace
from typing import Any, cast

import libp2p.stream_muxer.muxer_multistream as muxer_multistream
import pytest
import trio
from libp2p.stream_muxer.exceptions import MuxedConnUnavailable

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


def test_buffer_accepts_up_to_the_window_and_refuses_more() -> None:
    m = fake_muxer(window=300 * 1024)
    buffers = _BoundedBuffers(cast(Any, m))
    buffers[1] = bytearray()
    limit = 300 * 1024 + muxer.WINDOW_SLACK_BYTES
    buffers[1].extend(b"x" * limit)
    assert len(buffers[1]) == limit
    with pytest.raises(YamuxLimitError, match="overran the receive window"):
        buffers[1].extend(b"x")
    assert len(buffers[1]) == limit  # nothing of the refused data was kept
    del buffers[1][:1000]
    buffers[1].extend(b"y" * 1000)  # room again once the reader consumed data


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


class _StuckConnection:
    """A secured connection whose peer takes no data (a frozen process, a dead link)."""

    is_initiator = True

    def __init__(self) -> None:
        self.closed = False

    async def write(self, data: bytes) -> None:
        await trio.sleep_forever()

    async def close(self) -> None:
        self.closed = True


async def test_a_frame_that_cannot_be_written_closes_the_connection(autojump_clock: Any) -> None:
    conn = _StuckConnection()
    yamux = BoundedYamux(cast(Any, conn), cast(Any, "peer"))
    started = trio.current_time()
    # The caller's own timeout does not cut the frame in half...
    with trio.move_on_after(1) as caller:
        with pytest.raises(MuxedConnUnavailable, match="timed out"):
            await yamux._write_frame(b"\x00" * 12)
    assert not caller.cancelled_caught
    # ...the frame deadline ends it, and the half-written connection is closed.
    assert trio.current_time() - started == pytest.approx(muxer.FRAME_WRITE_TIMEOUT)
    assert conn.closed


async def test_a_cancelled_caller_still_writes_the_whole_frame() -> None:
    written: list[bytes] = []

    class Slow(_StuckConnection):
        async def write(self, data: bytes) -> None:
            await trio.sleep(0.05)
            written.append(data)

    yamux = BoundedYamux(cast(Any, Slow()), cast(Any, "peer"))
    with trio.move_on_after(0.01) as caller:
        await yamux._write_frame(b"frame")
    assert caller.cancelled_caught  # the caller was cancelled, after the frame went out
    assert written == [b"frame"]
