"""p2pchat.net.tcp_tuning: little unsent data per libp2p socket, and reads served from one
large receive."""

from __future__ import annotations

import random

import pytest
import trio

from p2pchat.identity import Identity


def test_build_host_tunes_every_libp2p_tcp_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every libp2p TCP socket keeps little unsent data (so small frames never wait behind
    seconds of bulk). The stock value is put back first: an earlier test's host must not make
    this pass."""
    import libp2p.transport.tcp.tcp as libp2p_tcp
    from libp2p.io.trio import TrioTCPStream

    from p2pchat.net.host import build_host
    from p2pchat.net.tcp_tuning import TunedTCPStream

    monkeypatch.setattr(libp2p_tcp, "TrioTCPStream", TrioTCPStream)
    build_host(Identity.generate())
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
