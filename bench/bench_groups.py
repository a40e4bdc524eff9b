"""Group benchmark: real p2pchatd processes on 127.0.0.1, a group of 8 members, against the
1:1 figure measured in the same run on the same daemons (issue 12).

Prints:
- group send -> stored at every member, p50/p99 (from the ``groups.send`` call at the sender
  to the ``group.message`` event at the last of the 7 others), and per member;
- 1:1 send -> stored at the friend, p50/p99 (``messages.send`` to ``message.received``), the
  baseline: the same daemons, machine and load;
- the bounds under both: this disk's fsync p50 (every daemon commits durably) and the CPUs
  (8 daemons share them).

Conference CPU per participant is not measured: group calls are not built yet.

Usage: python bench/bench_groups.py [--members 8] [--messages 200]
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import Daemon, befriend, start_all, wait_for  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def fsync_p50_ms(directory: Path, rounds: int = 50) -> float:
    path = directory / "fsync.probe"
    times = []
    with open(path, "wb") as f:
        for _ in range(rounds):
            f.write(b"x" * 4096)
            t = time.perf_counter()
            f.flush()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - t)
    path.unlink()
    return statistics.median(times) * 1000


class Events:
    """One daemon's event stream, read by a thread into a queue of (arrival time, event)."""

    def __init__(self, daemon: Daemon) -> None:
        self.client = daemon.client(timeout=None)
        self.stream = self.client.events()
        self.queue: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for event in self.stream:
                self.queue.put((time.perf_counter(), event))
        except Exception:
            return

    def wait(self, kind: str, text: str, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind} for {text!r}")
            at, event = self.queue.get(timeout=left)
            if event.get("type") == kind and (event.get("message") or {}).get("text") == text:
                return at

    def close(self) -> None:
        self.client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="p2pc-bg-", dir="/tmp"))
    daemons = [Daemon(work / f"m{i}", f"m{i}") for i in range(args.members)]
    try:
        start_all(daemons)
        owner, others = daemons[0], daemons[1:]
        for d in others:
            befriend(owner, d)
        gid = owner.call("groups.create", name="bench")["group"]["id"]
        for d in others:
            owner.call("groups.invite", group=gid, friend=d.peer_id)
        for d in others:
            wait_for(
                lambda d=d: any(g["id"] == gid for g in d.call("groups.list")["groups"]),
                60,
                what=f"{d.name}'s invitation",
            )
            d.call("groups.join", group=gid)

        def all_linked() -> bool:
            for d in daemons:
                group = d.call("groups.show", group=gid)["group"]
                if sum(m["online"] for m in group["members"]) != args.members:
                    return False
            return True

        wait_for(all_linked, 120, what="every member to reach every other")
        # A first message makes and gives every sender key; then settle.
        owner.call("groups.send", group=gid, text="warm-up", wait=60)
        time.sleep(2)

        events = {d.name: Events(d) for d in daemons}
        friend = others[0]
        one_to_one: list[float] = []
        group_all: list[float] = []
        per_member: dict[str, list[float]] = {d.name: [] for d in others}
        for i in range(args.messages):
            text = f"1:1 {i}"
            t = time.perf_counter()
            owner.call("messages.send", friend=friend.peer_id, text=text)
            one_to_one.append(events[friend.name].wait("message.received", text) - t)

            text = f"group {i}"
            t = time.perf_counter()
            owner.call("groups.send", group=gid, text=text)
            arrivals = [events[d.name].wait("group.message", text) - t for d in others]
            for d, at in zip(others, arrivals, strict=True):
                per_member[d.name].append(at)
            group_all.append(max(arrivals))

        cpus = os.cpu_count()
        load = os.getloadavg()[0]
        disk = fsync_p50_ms(work)
        ms = 1000
        p50_1, p99_1 = pct(one_to_one, 50) * ms, pct(one_to_one, 99) * ms
        p50_g, p99_g = pct(group_all, 50) * ms, pct(group_all, 99) * ms
        print(f"machine: {cpus} CPUs, load {load:.2f}; disk fsync p50 {disk:.2f} ms")
        print(f"daemons: {args.members} members, {args.messages} messages each way")
        print(f"1:1 send -> stored at the friend:        p50 {p50_1:7.2f} ms  p99 {p99_1:7.2f} ms")
        print(
            f"group send -> stored at all {len(others)} others:   p50 {p50_g:7.2f} ms  "
            f"p99 {p99_g:7.2f} ms  ({p50_g / p50_1:.2f}x / {p99_g / p99_1:.2f}x the 1:1 figure)"
        )
        for name, values in per_member.items():
            print(
                f"  at {name}: p50 {pct(values, 50) * ms:7.2f} ms"
                f"  p99 {pct(values, 99) * ms:7.2f} ms"
            )
        print("conference CPU per participant: not measured (group calls are not built yet)")
        for e in events.values():
            e.close()
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                try:
                    d.stop()
                except Exception:
                    d.kill9()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
