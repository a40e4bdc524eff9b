"""A stranger that ignores Yamux flow control must not be able to make the daemon buffer
without bound (py-libp2p 0.8.1 does not enforce receive windows; p2pchat.net.muxer does)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2pchat import wire
from p2pchat.identity import Identity
from p2pchat.net.host import build_host
from tests.harness import Daemon
from tests.peers import call, connect, connected, running

pytestmark = pytest.mark.daemons

FLOOD_BYTES = 96 * 1024 * 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_window_overrun_closes_the_connection_not_the_daemon(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    assert alice.proc is not None
    before = rss_mb(alice.proc.pid)
    sent = 0
    async with running(build_host(Identity.generate())) as peer:
        await connect(peer, alice)
        stream = await peer.new_stream(
            ID.from_base58(alice.peer_id), [TProtocol(wire.MSG_PROTOCOL)]
        )
        # Pretend the daemon granted an enormous window, as a hostile peer would.
        stream.muxed_stream.send_window = 2**40  # type: ignore[attr-defined]
        chunk = b"\x00" * 65536
        with trio.move_on_after(60):
            try:
                while sent < FLOOD_BYTES:
                    await stream.write(chunk)
                    sent += len(chunk)
            except Exception:
                pass  # the daemon dropped us: the expected outcome
        # Wait for the daemon to close the connection (then it has dealt with the flood).
        with trio.move_on_after(10):
            while connected(peer, alice):
                await trio.sleep(0.05)
        still_connected = connected(peer, alice)
    growth = rss_mb(alice.proc.pid) - before
    assert growth < 40, f"daemon RSS grew by {growth:.0f} MB after {sent >> 20} MiB of flood"
    assert sent < FLOOD_BYTES or not still_connected, "the flood neither failed nor got us dropped"
    # Still serving, including new peers.
    assert (await call(alice, "status"))["peer_id"] == alice.peer_id
    async with running(build_host(Identity.generate())) as other:
        await connect(other, alice)
        assert connected(other, alice)
