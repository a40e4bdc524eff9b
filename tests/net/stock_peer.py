"""A stock py-libp2p peer (its own Yamux, Noise, TCP; nothing of p2pchat's) for interop tests.

``python stock_peer.py serve`` prints its multiaddr and echoes every stream of
``/p2pchat-test/echo/1.0.0`` until killed: each stream's bytes come back, then its end.
``python stock_peer.py send ADDR SIZE STREAMS`` dials ADDR, sends SIZE random bytes on each
of STREAMS concurrent echo streams, half-closes each, checks the echo is byte for byte what
was sent and ends, then prints "ok" and the bytes moved.
"""

from __future__ import annotations

import random
import sys

import multiaddr
import trio
from libp2p import generate_new_ed25519_identity, new_host
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

ECHO = TProtocol("/p2pchat-test/echo/1.0.0")


def stock_host():  # type: ignore[no-untyped-def]
    key_pair = generate_new_ed25519_identity()
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
    )


async def echo(stream) -> None:  # type: ignore[no-untyped-def]
    try:
        while True:
            data = await stream.read(65536)
            if not data:
                break
            await stream.write(data)
    except StreamEOF:
        pass
    await stream.close()


async def serve() -> None:
    host = stock_host()
    host.set_stream_handler(ECHO, echo)
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        print(f"{host.get_transport_addrs()[0]}/p2p/{host.get_id()}", flush=True)
        await trio.sleep_forever()


async def send(addr: str, size: int, streams: int) -> None:
    host = stock_host()
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        await host.connect(info)

        async def one(n: int) -> None:
            payload = random.Random(n).randbytes(size)
            stream = await host.new_stream(info.peer_id, [ECHO])
            got = bytearray()

            async def reader() -> None:
                try:
                    while True:
                        got.extend(await stream.read(65536))
                except StreamEOF:
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                for at in range(0, size, 50_000):
                    await stream.write(payload[at : at + 50_000])
                await stream.close()
            assert bytes(got) == payload, f"stream {n}: {len(got)} bytes back of {size}"

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for n in range(streams):
                    nursery.start_soon(one, n)
        print("ok", size * streams, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        trio.run(serve)
    else:
        trio.run(send, sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
