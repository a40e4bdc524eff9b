"""Chat benchmark: two real p2pchatd processes on 127.0.0.1 against a bare py-libp2p baseline
measured in the same run.

Prints, each beside its baseline and target (issue #2):
- connect time (daemon dial inside the daemon, via ``peers.connect``) vs py-libp2p's stock
  ``host.connect()`` and a bare ``swarm.dial_addr``;
- send -> delivered latency p50/p99 over N sequential messages (API call to the
  ``message.delivered`` event, i.e. stored on both disks and acknowledged) vs a bare libp2p
  echo round trip;
- sustained durable messages per second (4, then 8, API clients sending concurrently;
  counted when the sender has recorded the receiver's ack) vs bare pipelined libp2p echo;
- idle RSS of a daemon (one friend connected) vs an idle bare py-libp2p host process, stock
  and with the same parts of py-libp2p left out as the daemon leaves out (issue #14: <= 60 MB).

Usage: python bench/bench_chat.py [--messages 2000] [--burst 10000]
"""

from __future__ import annotations

import argparse
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import Daemon, befriend  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --- baseline: bare py-libp2p ---------------------------------------------------------------


def run_baseline(messages: int, burst: int) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "baseline_echo.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        addr = proc.stdout.readline().strip()
        import trio

        results = trio.run(_baseline_client, addr, messages, burst)
        time.sleep(3)
        results["idle_rss_mb"] = rss_mb(proc.pid)
        results["fresh_rss_mb"] = _idle_rss_of_fresh_host(lean=False)
        results["fresh_rss_lean_mb"] = _idle_rss_of_fresh_host(lean=True)
        return results
    finally:
        proc.kill()
        proc.wait()


def _idle_rss_of_fresh_host(lean: bool) -> float:
    """Idle RSS of a bare host that has carried no traffic, stock or (``lean``) with the
    parts of py-libp2p left out that the daemon leaves out: the two measured alike, so their
    difference is what leaving them out saves."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "baseline_echo.py"), *(["--lean"] if lean else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(3)
        return rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()


async def _baseline_client(addr_text: str, messages: int, burst: int) -> dict[str, float]:
    import multiaddr
    import trio
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import info_from_p2p_addr

    sys.path.insert(0, str(REPO / "bench"))
    from baseline_echo import ECHO, bare_host

    info = info_from_p2p_addr(multiaddr.Multiaddr(addr_text))
    transport_addr = multiaddr.Multiaddr(addr_text).decapsulate(
        multiaddr.Multiaddr(f"/p2p/{info.peer_id}")
    )
    host = bare_host()
    out: dict[str, float] = {}
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        stock, direct = [], []
        for _ in range(10):
            t = time.perf_counter()
            await host.connect(info)
            stock.append(time.perf_counter() - t)
            await host.disconnect(info.peer_id)
            await trio.sleep(0.05)
            t = time.perf_counter()
            await host.get_network().dial_addr(transport_addr, ID.from_base58(str(info.peer_id)))
            direct.append(time.perf_counter() - t)
            await host.disconnect(info.peer_id)
            await trio.sleep(0.05)
        out["connect_stock_ms"] = statistics.median(stock) * 1000
        out["connect_dial_addr_ms"] = statistics.median(direct) * 1000

        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [ECHO])
        payload = b"m" * 100
        rtts = []
        for _ in range(messages):
            t = time.perf_counter()
            await stream.write(payload)
            got = 0
            while got < len(payload):
                got += len(await stream.read(len(payload) - got))
            rtts.append(time.perf_counter() - t)
        out["echo_p50_ms"] = pct(rtts, 50) * 1000
        out["echo_p99_ms"] = pct(rtts, 99) * 1000

        total = burst * len(payload)
        t = time.perf_counter()
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                for _ in range(burst):
                    await stream.write(payload)

            nursery.start_soon(writer)
            got = 0
            while got < total:
                got += len(await stream.read(65536))
        out["echo_msgs_per_s"] = burst / (time.perf_counter() - t)
        await stream.close()
    return out


# --- p2pchat daemons ---------------------------------------------------------------------------


class EventQueue:
    def __init__(self, daemon: Daemon) -> None:
        self.client = daemon.client(timeout=None)
        self.stream = self.client.events()
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        try:
            for event in self.stream:
                self.queue.put(event)
        except Exception:
            return

    def close(self) -> None:
        self.client.close()


def _burst(alice: Daemon, events: EventQueue, burst: int, senders: int) -> float:
    """``burst`` messages from ``senders`` concurrent API clients; delivered per second."""
    per_sender = burst // senders
    tag = f"burst{senders} "

    def send_many(n: int) -> None:
        with alice.client() as api:
            for i in range(per_sender):
                api.call("messages.send", friend="bob", text=f"{tag}{n}/{i}")

    t = time.perf_counter()
    threads = [threading.Thread(target=send_many, args=(n,)) for n in range(senders)]
    for th in threads:
        th.start()
    delivered = 0
    while delivered < per_sender * senders:
        event = events.queue.get(timeout=60)
        if event["type"] == "message.delivered" and event["message"]["text"].startswith(tag):
            delivered += 1
    elapsed = time.perf_counter() - t
    for th in threads:
        th.join()
    return delivered / elapsed


def run_daemons(messages: int, burst: int, workdir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    alice = Daemon(workdir / "alice", "alice").start()
    bob = Daemon(workdir / "bob", "bob").start()
    try:
        bob_addr = f"{bob.call('status')['listen_addrs'][0]}/p2p/{bob.peer_id}"
        connect_ms, connect_wall_ms = [], []
        for _ in range(10):
            t = time.perf_counter()
            connect_ms.append(alice.call("peers.connect", addr=bob_addr)["connect_ms"])
            connect_wall_ms.append((time.perf_counter() - t) * 1000)
            alice.call("peers.disconnect", peer_id=bob.peer_id)
            time.sleep(0.05)
        out["connect_ms"] = statistics.median(connect_ms)
        out["connect_api_ms"] = statistics.median(connect_wall_ms)

        befriend(alice, bob)
        time.sleep(3)
        assert alice.proc is not None and bob.proc is not None
        out["idle_rss_mb"] = max(rss_mb(alice.proc.pid), rss_mb(bob.proc.pid))

        events = EventQueue(alice)
        latencies = []
        with alice.client() as api:
            for i in range(messages):
                t = time.perf_counter()
                msg_id = api.call("messages.send", friend="bob", text=f"latency {i}")["message"][
                    "id"
                ]
                while True:
                    event = events.queue.get(timeout=30)
                    if event["type"] == "message.delivered" and event["message"]["id"] == msg_id:
                        break
                latencies.append(time.perf_counter() - t)
        out["latency_p50_ms"] = pct(latencies, 50) * 1000
        out["latency_p99_ms"] = pct(latencies, 99) * 1000

        for senders in (4, 8):
            out[f"durable_msgs_per_s_{senders}"] = _burst(alice, events, burst, senders)
        stored = bob.call("messages.history", friend=alice.peer_id, limit=1000)["messages"]
        assert stored[-1]["text"].startswith("burst8 "), "receiver did not store the burst"
        out["rss_after_mb"] = max(rss_mb(alice.proc.pid), rss_mb(bob.proc.pid))
        events.close()
    finally:
        alice.close()
        bob.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=10000)
    args = parser.parse_args()

    base = run_baseline(args.messages, args.burst)
    workdir = Path(tempfile.mkdtemp(prefix="p2pc-bench-", dir="/tmp"))
    try:
        ours = run_daemons(args.messages, args.burst, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [
        (
            "connect time (ms, median of 10)",
            ours["connect_ms"],
            f"stock host.connect {base['connect_stock_ms']:.1f}; bare dial_addr "
            f"{base['connect_dial_addr_ms']:.1f}",
            "<= 50",
            ours["connect_ms"] <= 50,
        ),
        ("  same, seen by the API client (ms)", ours["connect_api_ms"], "", "", None),
        (
            f"send->delivered p50 (ms, {args.messages} msgs)",
            ours["latency_p50_ms"],
            f"bare echo RTT p50 {base['echo_p50_ms']:.2f}",
            "<= 5",
            ours["latency_p50_ms"] <= 5,
        ),
        (
            f"send->delivered p99 (ms, {args.messages} msgs)",
            ours["latency_p99_ms"],
            f"bare echo RTT p99 {base['echo_p99_ms']:.2f}",
            "<= 25",
            ours["latency_p99_ms"] <= 25,
        ),
        (
            f"durable msgs/s ({args.burst} msgs, 4 API clients)",
            ours["durable_msgs_per_s_4"],
            f"bare pipelined echo {base['echo_msgs_per_s']:.0f} msgs/s (no disk)",
            ">= 2000",
            ours["durable_msgs_per_s_4"] >= 2000,
        ),
        (
            f"durable msgs/s ({args.burst} msgs, 8 API clients)",
            ours["durable_msgs_per_s_8"],
            "",
            ">= 2000",
            ours["durable_msgs_per_s_8"] >= 2000,
        ),
        (
            "idle RSS per daemon (MB, max of 2)",
            ours["idle_rss_mb"],
            f"idle bare libp2p host {base['idle_rss_mb']:.1f}; fresh bare hosts: stock "
            f"{base['fresh_rss_mb']:.1f}, leaving out what the daemon leaves out "
            f"{base['fresh_rss_lean_mb']:.1f}",
            "<= 60",
            ours["idle_rss_mb"] <= 60,
        ),
        ("  RSS after the burst (MB)", ours["rss_after_mb"], "", "", None),
    ]
    print(f"{'measure':46} {'p2pchat':>10}  {'target':>8}  {'met':>4}  baseline (same run)")
    for name, value, baseline, target, met in rows:
        flag = "" if met is None else ("yes" if met else "NO")
        print(f"{name:46} {value:10.2f}  {target:>8}  {flag:>4}  {baseline}")
    ratio = ours["latency_p50_ms"] / base["echo_p50_ms"]
    print(
        f"\nratios: p50 latency / bare echo RTT = {ratio:.1f}x; "
        f"durable msgs/s / bare echo msgs/s = "
        f"{ours['durable_msgs_per_s_4'] / base['echo_msgs_per_s']:.2f}x; "
        f"connect / bare dial_addr = {ours['connect_ms'] / base['connect_dial_addr_ms']:.2f}x; "
        f"idle RSS / bare host = {ours['idle_rss_mb'] / base['idle_rss_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
