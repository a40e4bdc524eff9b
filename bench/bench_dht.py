"""DHT benchmark: networks of 30 and 50 real p2pchatd processes on 127.0.0.1, bootstrapped off
two of them (issue #3).

Prints for each network size:
- time from start to a usable routing table (first DHT peer; and >= 5 peers), p50 / max;
- lookup success rate and latency p50 / p95 (``dht.find``: signed address record, inside the
  daemon), beside a baseline measured in the same run: one direct libp2p connect between
  two of the same daemons (``peers.connect``), the floor any lookup pays per hop;
- idle DHT traffic per daemon in KB/min: all loopback bytes (``/sys/class/net/lo``) while the
  network sits idle, divided by the number of daemons, beside the loopback traffic of the
  idle machine without daemons (measured first) and Tox's published ~560 KB/min per node.

The idle window starts once the start-up publishing schedule is over (130 s after start) and
lasts ``--idle`` seconds; the default, 600 s, covers one full DHT maintenance cycle (routing
table refresh and record republish), so the figure is an average over a cycle, not a quiet
stretch between two.

Usage: python bench/bench_dht.py [--sizes 30 50] [--lookups 4] [--idle 600]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from p2pchat.api import ApiError  # noqa: E402
from tests.harness import Daemon, start_all  # noqa: E402

TOX_KB_PER_MIN = 560.0
SETTLE_AFTER_START = 130.0


def lo_bytes() -> int:
    base = Path("/sys/class/net/lo/statistics")
    return int((base / "rx_bytes").read_text())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def status(d: Daemon) -> dict[str, Any]:
    result: dict[str, Any] = d.call("status")
    return result


def run_network(n: int, lookups_each: int, idle_s: float, rng: random.Random) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-dht-{n}-"))
    daemons = [Daemon(root / f"d{i:02}") for i in range(n)]
    try:
        started = time.monotonic()
        boots = start_all(daemons[:2])
        args: list[str] = []
        for b in boots:
            args += ["--bootstrap", b.bootstrap_addr()]
        rest = daemons[2:]
        for d in rest:
            d.launch(*args)
        launched = time.monotonic()
        for d in rest:
            d.wait_started()
        # Time to >= 5 DHT peers, polled from outside (0.25 s resolution).
        five: dict[str, float] = {}
        deadline = time.monotonic() + 120
        while len(five) < len(rest) and time.monotonic() < deadline:
            for d in rest:
                if d.name not in five and status(d)["dht_peers"] >= 5:
                    five[d.name] = time.monotonic() - launched
            time.sleep(0.25)
        first_peer = [status(d)["dht_ready_s"] for d in rest]
        while not all(status(d)["record_seq"] for d in daemons):
            if time.monotonic() - started > 180:
                raise RuntimeError("not every daemon published its record within 180 s")
            time.sleep(0.5)
        addrs = {d.peer_id: d.call("identity.get")["addrs"] for d in daemons}

        # Baseline: a direct connect between daemons (the cost of one hop).
        connects: list[float] = []
        for a, b in zip(rest[0:20:2], rest[1:20:2], strict=False):
            a.call("peers.disconnect", peer_id=b.peer_id)
            time.sleep(0.05)
            connects.append(
                a.call("peers.connect", addr=f"{addrs[b.peer_id][0]}/p2p/{b.peer_id}")["connect_ms"]
            )

        latencies: list[float] = []
        ok = total = 0
        for d in daemons:
            for target in rng.sample([x for x in daemons if x is not d], lookups_each):
                total += 1
                try:
                    found = d.call("dht.find", peer_id=target.peer_id)
                except ApiError:
                    continue
                if found["addrs"] == addrs[target.peer_id]:
                    ok += 1
                    latencies.append(found["lookup_ms"])

        # Idle traffic over a whole maintenance cycle.
        wait = SETTLE_AFTER_START - (time.monotonic() - started)
        if wait > 0:
            time.sleep(wait)
        before, t0 = lo_bytes(), time.monotonic()
        time.sleep(idle_s)
        idle_bytes, idle_elapsed = lo_bytes() - before, time.monotonic() - t0
        rss = []
        for d in daemons:
            assert d.proc is not None
            for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss.append(int(line.split()[1]) / 1024)
        return {
            "n": n,
            "first_peer_p50": statistics.median(first_peer),
            "first_peer_max": max(first_peer),
            "five_p50": statistics.median(five.values()) if five else float("nan"),
            "five_max": max(five.values()) if five else float("nan"),
            "five_count": len(five),
            "rest": len(rest),
            "lookups_ok": ok,
            "lookups": total,
            "lookup_p50": statistics.median(latencies) if latencies else float("nan"),
            "lookup_p95": pct(latencies, 95) if latencies else float("nan"),
            "connect_p50": statistics.median(connects),
            "idle_kb_min": idle_bytes / 1024 / n / (idle_elapsed / 60),
            "idle_s": idle_elapsed,
            "rss_p50": statistics.median(rss),
        }
    finally:
        for d in daemons:
            d.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 50])
    parser.add_argument("--lookups", type=int, default=4, help="lookups per daemon")
    parser.add_argument("--idle", type=float, default=600.0, help="idle window, seconds")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    before, t0 = lo_bytes(), time.monotonic()
    time.sleep(10)
    quiet_kb_min = (lo_bytes() - before) / 1024 / ((time.monotonic() - t0) / 60)
    print(f"baseline: loopback traffic with no daemons running: {quiet_kb_min:.1f} KB/min")

    for n in args.sizes:
        r = run_network(n, args.lookups, args.idle, rng)
        print(f"\n== {n} daemons (bootstrapped off 2) ==")
        print(
            f"routing table: first peer after {r['first_peer_p50']:.2f} s p50 / "
            f"{r['first_peer_max']:.2f} s max; >= 5 peers after {r['five_p50']:.2f} s p50 / "
            f"{r['five_max']:.2f} s max ({r['five_count']}/{r['rest']} daemons)"
        )
        rate = 100 * r["lookups_ok"] / r["lookups"]
        print(
            f"lookups: {r['lookups_ok']}/{r['lookups']} = {rate:.1f}% found the current "
            f"addresses (target 100%)"
        )
        print(
            f"lookup latency: p50 {r['lookup_p50']:.1f} ms, p95 {r['lookup_p95']:.1f} ms "
            f"(target p50 <= 300 ms); baseline direct connect p50 {r['connect_p50']:.1f} ms "
            f"-> lookup p50 = {r['lookup_p50'] / r['connect_p50']:.1f}x one connect"
        )
        print(
            f"idle DHT traffic: {r['idle_kb_min']:.1f} KB/min per daemon over "
            f"{r['idle_s']:.0f} s (machine without daemons: {quiet_kb_min:.1f} KB/min total; "
            f"Tox ~{TOX_KB_PER_MIN:.0f} KB/min per node -> "
            f"{r['idle_kb_min'] / TOX_KB_PER_MIN:.3f}x)"
        )
        print(f"daemon RSS p50: {r['rss_p50']:.0f} MB")


if __name__ == "__main__":
    main()
