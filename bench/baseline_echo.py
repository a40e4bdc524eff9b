"""Baseline peer for the benchmarks: a bare py-libp2p host (TCP, Noise, Yamux) that echoes.

Run as a separate process by bench_chat.py, so the baseline crosses processes like the
daemons do. Prints its full multiaddr on stdout, then serves until killed. With ``--lean``
it first leaves out the parts of py-libp2p the daemon leaves out (p2pchat/net/lean.py), so
the idle memory of the two can be told apart from what py-libp2p itself costs.
"""

from __future__ import annotations

import sys
from pathlib import Path

if "--lean" in sys.argv[1:]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from p2pchat.net import lean

    lean.install()

import multiaddr
import trio
from libp2p import generate_new_ed25519_identity, new_host
from libp2p.abc import INetStream
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

ECHO = TProtocol("/bench/echo/1.0.0")


def bare_host():  # type: ignore[no-untyped-def]
    key_pair = generate_new_ed25519_identity()
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
    )


async def echo(stream: INetStream) -> None:
    try:
        while True:
            data = await stream.read(65536)
            if not data:
                break
            await stream.write(data)
    except StreamError:
        pass


async def main() -> None:
    host = bare_host()
    host.set_stream_handler(ECHO, echo)
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        print(f"{host.get_transport_addrs()[0]}/p2p/{host.get_id()}", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        sys.exit(0)
