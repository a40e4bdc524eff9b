"""The echo protocol the interop tests speak with other libp2p implementations."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import trio

from p2pchat.net.host import Network

ECHO = "/p2pchat-test/echo/1.0.0"


async def echo(stream: Any) -> None:
    """A stream handler: every byte back, then the end."""
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


async def echo_through(network: Network, peer: str, size: int, streams: int) -> None:
    """``streams`` concurrent echo streams to ``peer``, ``size`` random bytes each, half-closed;
    every byte must come back."""

    async def one(n: int) -> None:
        payload = random.Random(n).randbytes(size)
        stream = await network.open_stream(peer, ECHO)
        got = bytearray()

        async def reader() -> None:
            with contextlib.suppress(Exception):  # StreamEOF ends it
                while True:
                    got.extend(await stream.read(65536))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for at in range(0, size, 100_000):
                await stream.write(payload[at : at + 100_000])
            await stream.close()
        assert bytes(got) == payload, f"stream {n}: {len(got)} of {size} bytes came back"

    async with trio.open_nursery() as nursery:
        for n in range(streams):
            nursery.start_soon(one, n)
