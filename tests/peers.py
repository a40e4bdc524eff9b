"""Hand-driven libp2p peers in the test process, against real daemons: run a host, connect
it, talk raw protocol frames, and a befriended peer whose file protocol a test scripts.

The daemon harness (:mod:`tests.harness`) is blocking; everything here runs in trio, so the
helpers that call the daemon move the blocking call to a thread and keep our own peer's
handlers running meanwhile."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import cbor2
import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from p2pchat import wire
from p2pchat.identity import Identity
from p2pchat.net.host import build_host
from tests.harness import Daemon, wait_for

DataHandler = Callable[[INetStream, wire.FileGet], Awaitable[None]]


async def call(d: Daemon, method: str, **params: Any) -> Any:
    """The harness is blocking; keep the trio loop (and our peer's handlers) running."""
    return await trio.to_thread.run_sync(partial(d.call, method, **params))


async def logged(d: Daemon, text: str) -> None:
    """Wait until the daemon's log (written by a helper thread) contains ``text``."""
    await trio.to_thread.run_sync(
        partial(wait_for, lambda: text in d.log_text(), what=f"log line {text!r}")
    )


@asynccontextmanager
async def running(host: IHost) -> AsyncIterator[IHost]:
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        yield host


async def connect(host: IHost, d: Daemon) -> None:
    status = await call(d, "status")
    addr = multiaddr.Multiaddr(status["listen_addrs"][0])
    await host.get_network().dial_addr(addr, ID.from_base58(d.peer_id))


def connected(host: IHost, d: Daemon) -> bool:
    """Whether ``host`` has a connection to the daemon open now."""
    return bool(host.get_network().get_connections(ID.from_base58(d.peer_id)))


async def read_frames(stream: INetStream, timeout: float = 10) -> list[wire.Frame]:
    """Everything the daemon sends until it closes or resets the stream."""
    decoder = wire.FrameDecoder()
    frames: list[wire.Frame] = []
    with trio.fail_after(timeout):
        while True:
            try:
                data = await stream.read(65536)
            except StreamEOF:
                return frames
            except Exception:
                return frames  # reset
            if not data:
                return frames
            frames.extend(decoder.feed(data))


async def read_frames_one(stream: INetStream) -> wire.Frame:
    """The first frame the daemon sends on ``stream``."""
    decoder = wire.FrameDecoder()
    with trio.fail_after(10):
        while True:
            frames = decoder.feed(await stream.read(65536))
            if frames:
                return frames[0]


async def exchange(host: IHost, d: Daemon, protocol: str, payload: bytes) -> list[wire.Frame]:
    """Open a ``protocol`` stream, send ``payload``, return every frame of the reply."""
    stream = await host.new_stream(ID.from_base58(d.peer_id), [TProtocol(protocol)])
    await stream.write(payload)
    frames = await read_frames(stream)
    with contextlib.suppress(Exception):
        await stream.close()  # so the daemon frees the stream now, not after its grace time
    return frames


def raw_frame(obj: object) -> bytes:
    """A length-prefixed CBOR body that bypasses our encoder's own validation."""
    body = cbor2.dumps(obj)
    return wire.encode_varint(len(body)) + body


async def wait_transfer(d: Daemon, tid: bytes, state: str) -> dict[str, Any]:
    """The daemon's transfer ``tid`` once it is in ``state``."""

    def check() -> dict[str, Any] | None:
        for t in d.call("files.list")["transfers"]:
            if t["id"] == tid.hex() and t["state"] == state:
                return dict(t)
        return None

    found: dict[str, Any] = await trio.to_thread.run_sync(
        partial(wait_for, check, timeout=20, what=f"transfer {state}")
    )
    return found


class FakeFriend:
    """A befriended peer whose file-protocol behaviour each test scripts."""

    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.host = build_host(self.identity)
        self.on_get: DataHandler | None = None
        self.gets: list[wire.FileGet] = []
        self.get_times: list[float] = []
        """When each ``file-get`` arrived (trio's clock), in step with :attr:`gets`."""
        self.ends: list[wire.FileEnd] = []
        self.host.set_stream_handler(TProtocol(wire.FRIEND_PROTOCOL), self._friend_stream)
        self.host.set_stream_handler(TProtocol(wire.FILE_PROTOCOL), self._file_stream)
        self.accepted = trio.Event()

    async def _friend_stream(self, stream: INetStream) -> None:
        frame = await read_frames_one(stream)
        if isinstance(frame, wire.FriendAccept):
            self.accepted.set()
        await stream.write(wire.encode(wire.Received()))
        await stream.close()

    async def _file_stream(self, stream: INetStream) -> None:
        frame = await read_frames_one(stream)
        if isinstance(frame, wire.FileGet):
            self.gets.append(frame)
            self.get_times.append(trio.current_time())
            assert self.on_get is not None
            await self.on_get(stream, frame)
        elif isinstance(frame, wire.FileEnd):
            self.ends.append(frame)
            await stream.write(wire.encode(wire.Received()))
            await stream.close()

    async def befriend(self, d: Daemon) -> None:
        await connect(self.host, d)
        addrs = tuple(str(a) for a in self.host.get_transport_addrs())
        reply = await exchange(
            self.host, d, wire.FRIEND_PROTOCOL, wire.encode(wire.FriendRequest("eve", "", addrs))
        )
        assert reply == [wire.Received()]
        await call(d, "requests.accept", friend=self.identity.peer_id)
        with trio.fail_after(15):
            await self.accepted.wait()

    async def offer_accepted(self, d: Daemon, offer: wire.FileOffer) -> None:
        """Offer a file, see the daemon store it, and have its user accept it."""
        assert await self.offer(d, offer) == [wire.Received()]
        await wait_transfer(d, offer.tid, "offered")
        accepted = (await call(d, "files.accept", id=offer.tid.hex()))["transfer"]
        assert (accepted["id"], accepted["state"]) == (offer.tid.hex(), "active"), accepted

    async def offer(self, d: Daemon, frame: wire.FileOffer | bytes) -> list[wire.Frame]:
        payload = frame if isinstance(frame, bytes) else wire.encode(frame)
        return await exchange(self.host, d, wire.FILE_PROTOCOL, payload)
