"""The libp2p stream itself: p2pchat's host (its own Yamux and Noise transport phase) against
stock py-libp2p and plain TCP, measured in the same run.

Each figure comes from two fresh processes on 127.0.0.1, a receiver and a sender, of one
kind: ``tcp`` (trio sockets), ``stock`` (py-libp2p's ``new_host`` with its own Noise and
Yamux) or ``p2pchat`` (``p2pchat.net.host.build_host``). Bulk: one stream, 64 KiB writes;
the receiver's clock runs from the first byte to the last. Round trip: 64-byte echoes, one
at a time. CPU: both processes' user+system seconds per GiB during the transfer (start-up
left out).

    python bench/bench_stream.py [--size-mib 512] [--runs 3] [--echoes 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("tcp", "stock", "p2pchat")
SINK = "/bench/sink/1.0.0"
ECHO = "/bench/echo/1.0.0"
CHUNK = 64 * 1024


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# --- the two processes of one measurement ---------------------------------------------------


def _host(kind: str) -> Any:
    from libp2p import new_host
    from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
    from libp2p.stream_muxer.yamux.yamux import Yamux

    if kind == "p2pchat":
        from p2pchat.identity import Identity
        from p2pchat.net.host import build_host

        return build_host(Identity.generate())
    from libp2p import generate_new_ed25519_identity

    key_pair = generate_new_ed25519_identity()
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_ID): noise},
        muxer_opt={TProtocol(YAMUX_ID): Yamux},
    )


async def _serve(kind: str, size: int) -> None:
    import trio

    result: dict[str, float] = {}
    done = trio.Event()

    async def sink(read: Any, write: Any) -> None:
        got, first, cpu0 = 0, 0.0, 0.0
        while got < size:
            data = await read()
            if not data:
                break
            if not first:
                first, cpu0 = time.perf_counter(), cpu_seconds()
            got += len(data)
        result["seconds"] = time.perf_counter() - first
        result["bytes"] = got
        result["cpu"] = cpu_seconds() - cpu0  # the transfer's, not the start-up's
        await write(b"k")
        done.set()

    if kind == "tcp":
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        print(f"127.0.0.1:{port}", flush=True)
        async with trio.open_nursery() as nursery:

            async def accept() -> None:
                stream = await listeners[0].accept()
                kind_byte = await stream.receive_some(1)
                if kind_byte == b"s":
                    await sink(lambda: stream.receive_some(1 << 20), stream.send_all)
                else:
                    while data := await stream.receive_some(65536):
                        await stream.send_all(data)
                    done.set()

            nursery.start_soon(accept)
            await done.wait()
            nursery.cancel_scope.cancel()
        print(json.dumps(result), flush=True)
        return

    import multiaddr
    from libp2p.custom_types import TProtocol
    from libp2p.network.stream.exceptions import StreamEOF

    host = _host(kind)

    async def on_sink(stream: Any) -> None:
        async def read() -> bytes:
            try:
                return bytes(await stream.read(1 << 20))
            except StreamEOF:
                return b""

        await sink(read, stream.write)

    async def on_echo(stream: Any) -> None:
        try:
            while data := await stream.read(65536):
                await stream.write(data)
        except StreamEOF:
            pass
        done.set()

    host.set_stream_handler(TProtocol(SINK), on_sink)
    host.set_stream_handler(TProtocol(ECHO), on_echo)
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        print(f"{host.get_transport_addrs()[0]}/p2p/{host.get_id()}", flush=True)
        await done.wait()
        await trio.sleep(0.2)  # the reply goes out before the host stops
    print(json.dumps(result), flush=True)


async def _drive(write: Any, read: Any, mode: str, size: int, echoes: int) -> dict[str, Any]:
    """Bulk: ``size`` bytes in 64 KiB writes, then wait for the receiver's one-byte reply.
    Echo: ``echoes`` 64-byte round trips, one at a time."""
    if mode == "bulk":
        payload = b"\x5a" * CHUNK
        for _ in range(size // CHUNK):
            await write(payload)
        await read(1)
        return {}
    small = b"\x01" * 64
    rtts = []
    for _ in range(echoes):
        t = time.perf_counter()
        await write(small)
        got = 0
        while got < len(small):
            got += len(await read(65536))
        rtts.append(time.perf_counter() - t)
    return {"rtts": rtts}


async def _send(kind: str, addr: str, mode: str, size: int, echoes: int) -> None:
    import trio

    if kind == "tcp":
        host_part, port = addr.rsplit(":", 1)
        tcp = await trio.open_tcp_stream(host_part, int(port))
        await tcp.send_all(b"s" if mode == "bulk" else b"e")
        cpu0 = cpu_seconds()
        out = await _drive(tcp.send_all, tcp.receive_some, mode, size, echoes)
        await tcp.aclose()
    else:
        import multiaddr
        from libp2p.custom_types import TProtocol
        from libp2p.peer.peerinfo import info_from_p2p_addr

        host = _host(kind)
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            await host.connect(info)
            stream = await host.new_stream(
                info.peer_id, [TProtocol(SINK if mode == "bulk" else ECHO)]
            )
            cpu0 = cpu_seconds()
            out = await _drive(stream.write, stream.read, mode, size, echoes)
            if mode != "bulk":
                await stream.close()
    out["cpu"] = cpu_seconds() - cpu0
    print(json.dumps(out), flush=True)


# --- the orchestration ------------------------------------------------------------------------


def _run_pair(kind: str, mode: str, size: int, echoes: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        [*me, "--serve", kind, "--size", str(size)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        addr = server.stdout.readline().strip()
        client = subprocess.run(
            [*me, "--send", kind, addr, mode, "--size", str(size), "--echoes", str(echoes)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=True,
        )
        sent = json.loads(client.stdout.strip().splitlines()[-1])
        received = json.loads(server.stdout.readline().strip() or "{}")
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return {"sent": sent, "received": received}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--echoes", type=int, default=2000)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--send", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import trio

    if args.serve:
        trio.run(_serve, args.serve, args.size)
        return
    if args.send:
        kind, addr, mode = args.send
        trio.run(_send, kind, addr, mode, args.size, args.echoes)
        return

    size = args.size_mib * 1024 * 1024 // CHUNK * CHUNK
    speed: dict[str, list[float]] = {k: [] for k in KINDS}
    cpu: dict[str, list[float]] = {k: [] for k in KINDS}
    rtt: dict[str, list[float]] = {k: [] for k in KINDS}
    for run in range(args.runs):
        for kind in KINDS:  # interleaved, so a busy moment hits every kind alike
            bulk = _run_pair(kind, "bulk", size, 0)
            got = bulk["received"]
            assert got.get("bytes") == size, f"{kind}: {got}"
            speed[kind].append(size / got["seconds"] / 1e6)
            cpu[kind].append((bulk["sent"]["cpu"] + got["cpu"]) / (size / 2**30))
            echo = _run_pair(kind, "echo", 0, args.echoes)
            rtt[kind].append(statistics.median(echo["sent"]["rtts"]) * 1e3)
        print(
            f"  run {run}: "
            + "  ".join(f"{k} {speed[k][-1]:7.1f} MB/s rtt {rtt[k][-1]:.3f} ms" for k in KINDS),
            flush=True,
        )

    med = {k: statistics.median(speed[k]) for k in KINDS}
    med_cpu = {k: statistics.median(cpu[k]) for k in KINDS}
    med_rtt = {k: statistics.median(rtt[k]) for k in KINDS}
    print(
        f"\n{args.size_mib} MiB one stream, 64 KiB writes, {args.echoes} 64-byte echoes; "
        f"medians of {args.runs} runs, loopback"
    )
    print(f"{'':30} {'MB/s':>9} {'CPU s/GiB':>10} {'echo RTT p50 ms':>16}")
    names = {"tcp": "plain TCP", "stock": "stock py-libp2p host", "p2pchat": "p2pchat host"}
    for kind in KINDS:
        print(f"{names[kind]:30} {med[kind]:9.1f} {med_cpu[kind]:10.2f} {med_rtt[kind]:16.3f}")
    print(
        f"ratios: p2pchat / plain TCP = {med['p2pchat'] / med['tcp']:.2f}x throughput, "
        f"{med_cpu['p2pchat'] / med_cpu['tcp']:.1f}x CPU per GiB, "
        f"{med_rtt['p2pchat'] / med_rtt['tcp']:.1f}x RTT; "
        f"p2pchat / stock py-libp2p = {med['p2pchat'] / med['stock']:.2f}x throughput, "
        f"{med_cpu['p2pchat'] / med_cpu['stock']:.2f}x CPU per GiB, "
        f"{med_rtt['p2pchat'] / med_rtt['stock']:.2f}x RTT"
    )


if __name__ == "__main__":
    main()
