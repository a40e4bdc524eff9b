"""p2pchat's Noise transport phase and Yamux against js-libp2p (from npm), both ways.

The js peer is tests/net/jspeer/js_peer.mjs with js-libp2p 3 pinned by its package-lock.json;
scripts/test.sh installs it (``npm ci``). Each test: four concurrent echo streams of 3 MB,
half-closed, every byte checked on the side that sent it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from p2pchat.identity import Identity
from p2pchat.net.host import Network
from tests.net.echo import ECHO, echo, echo_through

JSPEER = Path(__file__).with_name("jspeer")
NODE = shutil.which("node")

INSTALLED = NODE is not None and (JSPEER / "node_modules" / "libp2p").is_dir()
MISSING = (
    "js-libp2p is not installed: scripts/test.sh installs it with npm "
    "(cd tests/net/jspeer && npm ci)"
)

pytestmark = [
    pytest.mark.timeout(120),
    # In CI (which installs npm as root) a missing peer is a failure, not a quiet skip.
    pytest.mark.skipif(not INSTALLED and not os.environ.get("CI"), reason=MISSING),
]


@pytest.fixture(autouse=True)
def _js_peer_installed() -> None:
    if not INSTALLED:
        pytest.fail(MISSING)


SIZE = 3_000_000
STREAMS = 4


async def test_p2pchat_dials_js_libp2p() -> None:
    assert NODE is not None
    process = await trio.lowlevel.open_process(
        [NODE, "js_peer.mjs", "serve"], cwd=JSPEER, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(30):
            line = b""
            while not line.endswith(b"\n"):
                piece = await process.stdout.receive_some(4096)
                assert piece, "the js peer ended before printing its address"
                line += piece
        addr, peer = line.decode().strip().rsplit("/p2p/", 1)
        network = Network(Identity.generate())
        with trio.fail_after(90):
            async with network.run(["/ip4/127.0.0.1/tcp/0"]):
                assert await network.dial(peer, [addr])
                await echo_through(network, peer, SIZE, STREAMS)
    finally:
        process.kill()
        await process.wait()


async def test_js_libp2p_dials_p2pchat() -> None:
    assert NODE is not None
    network = Network(Identity.generate())
    network.set_handler(ECHO, echo)
    with trio.fail_after(90):
        async with network.run(["/ip4/127.0.0.1/tcp/0"]):
            addr = f"{network.listen_addrs()[0]}/p2p/{network.identity.peer_id}"
            done = await trio.run_process(
                [NODE, "js_peer.mjs", "send", addr, str(SIZE), str(STREAMS)],
                cwd=JSPEER,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().split() == ["ok", str(SIZE * STREAMS)]
