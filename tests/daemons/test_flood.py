"""Floods a daemon must survive: a stranger that ignores Yamux flow control must not be able
to make it buffer without bound (py-libp2p 0.8.1's own Yamux does not enforce receive windows;
p2pchat.net.yamux does), and a friend that keeps drawing refusals is disconnected for a
cool-down (p2pchat.chat.quotas)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID

from p2pchat import wire
from p2pchat.identity import Identity
from p2pchat.net.host import build_host
from tests.harness import Daemon, cli, ok
from tests.peers import FakeFriend, call, connect, connected, logged, running

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


def offer(n: int) -> wire.FileOffer:
    return wire.FileOffer(bytes([n]) * 16, f"f{n}.bin", 1, bytes(32))


async def send_message(friend: FakeFriend, d: Daemon, text: str) -> list[wire.Frame]:
    """One message on a message stream; the daemon's first answer (an ack or a refusal)."""
    stream = await friend.host.new_stream(ID.from_base58(d.peer_id), [TProtocol(wire.MSG_PROTOCOL)])
    msg = wire.ChatMessage(bytes(16), 1, 0, text)
    await stream.write(wire.encode(wire.Hello(())) + wire.encode(msg))
    decoder = wire.FrameDecoder()
    with trio.fail_after(10):
        while not (frames := decoder.feed(await stream.read(65536))):
            pass
    await stream.close()
    return frames


async def test_a_friend_that_keeps_being_refused_is_cooled_down_then_let_back(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice = await trio.to_thread.run_sync(partial(make_daemon, "alice", start=False))
    limits = {"max_open_offers": 1, "refusal_burst": 5, "refusals_per_s": 0.1, "cooldown_s": 4}
    alice.configure(quotas=limits)
    await trio.to_thread.run_sync(alice.start)
    mallory = FakeFriend()
    async with running(mallory.host):
        await mallory.befriend(alice)
        assert await mallory.offer(alice, offer(0)) == [wire.Received()]
        replies = [await mallory.offer(alice, offer(n)) for n in range(1, 7)]
        # Five refusals are the budget; the sixth says what happens next.
        assert all(r == [wire.Refused(wire.REFUSED_FULL, r[0].reason)] for r in replies), replies  # type: ignore[union-attr]
        reasons = [r[0].reason for r in replies]  # type: ignore[union-attr]
        assert not any("disconnected" in reason for reason in reasons[:5])
        assert "refused too often: disconnected for 4 s" in reasons[5]
        with trio.fail_after(5):
            while connected(mallory.host, alice):
                await trio.sleep(0.05)
        await logged(alice, "was refused too often: disconnected and kept away for 4 s")
        [entry] = (await call(alice, "status"))["quotas"]["refusing"]
        assert entry["peer_id"] == mallory.identity.peer_id
        assert entry["cooldowns"] == 1 and 0 < entry["cooldown_s"] <= 4
        assert entry["refused"]["offers"] == 6
        shown = ok(await trio.to_thread.run_sync(cli, alice.home, "status"))
        assert "6 offers" in shown and "more (cool-down" in shown, shown

        # Kept away: a reconnection is closed as it opens, and the friend stays offline.
        for _ in range(3):
            with contextlib.suppress(Exception):
                await connect(mallory.host, alice)
            with trio.fail_after(5):
                while connected(mallory.host, alice):
                    await trio.sleep(0.05)
        # No stream: no connection, or one closed as it opens, under the stream's feet.
        with pytest.raises(BaseLibp2pError):
            await send_message(mallory, alice, "during the cool-down")
        await logged(alice, "kept away for")
        during = (await call(alice, "status"))["quotas"]
        # The first reconnection got as far as the handshake and was closed there; the next
        # ones from its address were closed before it (one per 2 s gets that far).
        assert during["refusing"][0]["connections_closed"] >= 1, during
        assert during["connections_throttled"] >= 1, during
        shown = ok(await trio.to_thread.run_sync(cli, alice.home, "status"))
        assert "reconnections closed)" in shown, shown
        [contact] = (await call(alice, "friends.list"))["contacts"]
        assert contact["online"] is False
        assert (await call(alice, "messages.history", friend=mallory.identity.peer_id))[
            "messages"
        ] == []

        # After it: let back in, and what it sends is taken as before.
        with trio.fail_after(10):
            while (await call(alice, "status"))["quotas"]["refusing"][0]["cooldown_s"] > 0:
                await trio.sleep(0.2)
        await trio.sleep(0.3)
        mallory.host.get_network()._negative_peer_cache.clear()  # type: ignore[attr-defined]
        await connect(mallory.host, alice)
        frames = await send_message(mallory, alice, "after the cool-down")
        assert frames == [wire.Ack((bytes(16),))], frames
        history = await call(alice, "messages.history", friend=mallory.identity.peer_id)
        assert [m["text"] for m in history["messages"]] == ["after the cool-down"]
