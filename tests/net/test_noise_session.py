"""p2pchat.net.noise_session: Noise transport messages after py-libp2p's handshake.

Real handshakes over an in-memory byte pipe, against py-libp2p's own transport and ours;
the network tests (tests/net/test_yamux_connection.py) run it against stock py-libp2p in
another process too."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.security.noise.transport import Transport as StockNoise
from libp2p.security.secure_session import SecureSession

from p2pchat.identity import Identity
from p2pchat.net import noise_session
from p2pchat.net.host import key_pair_of
from p2pchat.net.noise_session import (
    LeanNoiseSession,
    LeanNoiseTransport,
    NoiseMessageRejected,
)

pytestmark = pytest.mark.timeout(60)


class _Pipe:
    """One end of an in-memory byte pipe, as py-libp2p's raw connections read and write.
    ``chunk`` caps what one read returns (1: every message arrives byte by byte)."""

    def __init__(self, stream: Any, chunk: int = 1 << 20) -> None:
        self.stream = stream
        self.chunk = chunk
        self.tamper: int | None = None  # flip a bit of the byte at this offset of writes
        self.sent = 0

    async def read(self, n: int | None = None) -> bytes:
        try:
            return bytes(await self.stream.receive_some(min(n or self.chunk, self.chunk)))
        except trio.ClosedResourceError:
            return b""

    async def write(self, data: bytes) -> None:
        if self.tamper is not None and self.sent <= self.tamper < self.sent + len(data):
            at = self.tamper - self.sent
            data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
        self.sent += len(data)
        await self.stream.send_all(data)

    async def close(self) -> None:
        await self.stream.aclose()

    def get_remote_address(self) -> None:
        return None


def _transport(kind: type[StockNoise]) -> tuple[StockNoise, ID]:
    identity = Identity.generate()
    key_pair = key_pair_of(identity)
    transport = kind(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    return transport, ID.from_pubkey(key_pair.public_key)


async def _pair(
    dialler: type[StockNoise], listener: type[StockNoise]
) -> tuple[Any, Any, _Pipe, _Pipe]:
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a_pipe, b_pipe = _Pipe(a_stream), _Pipe(b_stream)
    out_t, _ = _transport(dialler)
    in_t, in_id = _transport(listener)
    results: dict[str, Any] = {}

    async def outbound() -> None:
        results["a"] = await out_t.secure_outbound(RawConnection(a_pipe, True), in_id)

    async def inbound() -> None:
        results["b"] = await in_t.secure_inbound(RawConnection(b_pipe, False))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbound)
            nursery.start_soon(inbound)
    return results["a"], results["b"], a_pipe, b_pipe


@pytest.mark.parametrize(
    ("dialler", "listener"),
    [
        (LeanNoiseTransport, LeanNoiseTransport),
        (LeanNoiseTransport, StockNoise),
        (StockNoise, LeanNoiseTransport),
    ],
)
async def test_messages_cross_both_ways_with_stock_or_lean_peers(
    dialler: type[StockNoise], listener: type[StockNoise]
) -> None:
    a, b, _, _ = await _pair(dialler, listener)
    assert isinstance(a, LeanNoiseSession) == (dialler is LeanNoiseTransport)
    assert isinstance(b, LeanNoiseSession) == (listener is LeanNoiseTransport)
    assert a.remote_peer == b.local_peer and b.remote_peer == a.local_peer
    rng = random.Random(1)
    big = rng.randbytes(300_000)  # five messages
    with trio.fail_after(10):
        await a.write(b"hello")
        assert await b.read(None) == b"hello"
        if isinstance(a, LeanNoiseSession):  # (stock py-libp2p takes one for the end)
            await b.write(b"")  # an empty message carries nothing: the next one is read
            await b.write(b"next")
            assert await a.read(None) == b"next"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.write, big)
            got = await b.read(len(big))  # read(n) reads exactly n, across messages
        assert got == big
        await b.write(b"0123456789")
        assert await a.read(3) == b"012"  # the rest of the message stays for later reads
        assert await a.read(None) == b"3456789"


async def test_a_message_arriving_byte_by_byte_is_read_whole() -> None:
    a, b, _, b_pipe = await _pair(LeanNoiseTransport, LeanNoiseTransport)
    b_pipe.chunk = 1  # after the handshake (py-libp2p's own reads give up on 1-byte pieces)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.write, b"x" * 1000 + b"y" * 1000)
            assert await b.read(2000) == b"x" * 1000 + b"y" * 1000


async def test_a_tampered_message_is_rejected_and_nothing_of_it_read() -> None:
    a, b, a_pipe, _ = await _pair(LeanNoiseTransport, LeanNoiseTransport)
    a_pipe.tamper = a_pipe.sent + 2 + 5  # inside the next message's ciphertext
    with trio.fail_after(10):
        await a.write(b"pay 100 to alice")
        with pytest.raises(NoiseMessageRejected, match="authentication"):
            await b.read(None)
    assert issubclass(NoiseMessageRejected, ConnectionClosedError)  # fatal for the muxer


async def test_the_end_of_the_connection_is_reported() -> None:
    a, b, a_pipe, _ = await _pair(LeanNoiseTransport, LeanNoiseTransport)
    with trio.fail_after(10):
        await a.write(b"last")
        await a_pipe.close()
        assert await b.read(None) == b"last"
        with pytest.raises(ConnectionClosedError):
            await b.read(None)


async def test_a_connection_cut_inside_a_message_is_an_error() -> None:
    _, b, a_pipe, _ = await _pair(LeanNoiseTransport, LeanNoiseTransport)
    with trio.fail_after(10):
        await a_pipe.write(b"\x01\x00" + b"z" * 10)  # says 256 bytes, sends 10
        await a_pipe.close()
        with pytest.raises(ConnectionClosedError, match="inside a Noise message"):
            await b.read(None)


async def test_exhausted_nonces_refuse_to_send() -> None:
    a, _, _, _ = await _pair(LeanNoiseTransport, LeanNoiseTransport)
    a._sealer._nonce = noise_session.MAX_NONCE
    with pytest.raises(NoiseMessageRejected, match="nonces exhausted"):
        await a.write(b"x")


async def test_a_session_of_another_cipher_suite_stays_stock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(noise_session, "SUITE", b"Noise_XX_25519_AESGCM_SHA256")
    a, b, _, _ = await _pair(LeanNoiseTransport, LeanNoiseTransport)
    assert type(a) is SecureSession and type(b) is SecureSession
    with trio.fail_after(10):
        await a.write(b"still works")
        assert await b.read(None) == b"still works"
