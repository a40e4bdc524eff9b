"""Flood benchmark (issue 15, per-friend quotas): two real p2pchatd processes, alice and bob,
honest friends; mallory, a scripted libp2p peer befriended by alice, floods alice.

Two floods, one after the other:
- *greedy*: mallory sends messages as fast as it can on the two message streams a friend
  may have (never refused: alice paces it to the per-friend rate);
- *abusive*: mallory adds two more streams (refused ``full``, each reopened at once, no
  backoff) and a file offer every 50 ms (refused past 20 open), until alice cools it down:
  disconnects it and closes each of its reconnections (mallory keeps retrying, its dial
  backoff cleared before every attempt).

Prints bob -> alice send -> delivered latency (p50/p95; API call on bob to bob's
``message.delivered`` event, i.e. stored on alice's disk and acked) with no flood (baseline,
same run), beside a process that only burns one core (mallory shares this machine, and its
flood keeps about a core busy), and in each phase: mallory's burst, mallory paced, the abuse
until the cool-down, the cool-down; the ratios to the baseline; alice's and mallory's CPU;
what alice's ``status`` reports.

Usage: python bench/bench_flood.py [--messages 200] [--settle 1] [--shared-rate N]
       [--profile alice.svg|alice.txt] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import trio  # noqa: E402
from bench_chat import EventQueue, pct, rss_mb  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402

from p2pchat import wire  # noqa: E402
from tests.harness import Daemon, befriend, start_all  # noqa: E402
from tests.peers import FakeFriend, running  # noqa: E402

GREEDY_STREAMS = 2
"""Message streams a friend may have open at once (``chat.quotas.MAX_MESSAGE_STREAMS``)."""
ABUSIVE_STREAMS = 2
"""The streams mallory adds past those (each refused ``full``, and reopened at once)."""


def cpu_s(pid: int) -> float:
    """CPU seconds ``pid`` used (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


COUNTERS = ("sent", "acked", "streams", "refused_streams", "failed_opens", "offers")
COUNTERS += ("offers_refused",)


class Mallory:
    """The flooding friend, in a process of its own (so its flood shares no interpreter
    lock with the measurements): controlled by events, reporting through counters."""

    def __init__(self, alice: Daemon) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.ready, self.flooding, self.abusing, self.stop = (ctx.Event() for _ in range(4))
        self.counters = {name: ctx.Value("q", 0, lock=False) for name in COUNTERS}
        self.process = ctx.Process(
            target=run_mallory, args=(self, str(alice.home), alice.peer_id), daemon=True
        )

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "process"}

    def __getattr__(self, name: str) -> int:
        counters = self.__dict__.get("counters", {})
        if name in counters:
            return int(counters[name].value)
        raise AttributeError(name)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name].value += n


def run_mallory(control: Mallory, alice_home: str, alice_peer_id: str) -> None:
    # Its refused dials are expected: py-libp2p would log each one at ERROR.
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    alice = Daemon(Path(alice_home), "alice")
    alice.peer_id = alice_peer_id
    trio.run(Flood(control, alice).main)


class Flood:
    """Mallory's side, run by trio in its process."""

    def __init__(self, control: Mallory, alice: Daemon) -> None:
        self.c = control
        self.alice = alice
        self.friend = FakeFriend()
        self.ready, self.flooding, self.abusing, self.stop = (
            control.ready,
            control.flooding,
            control.abusing,
            control.stop,
        )

    async def main(self) -> None:
        async with running(self.friend.host):
            await self.friend.befriend(self.alice)
            self.ready.set()
            while not self.flooding.is_set():
                await trio.sleep(0.05)
            async with trio.open_nursery() as nursery:
                for _ in range(GREEDY_STREAMS):
                    nursery.start_soon(self._streams)
                while not self.abusing.is_set() and not self.stop.is_set():
                    await trio.sleep(0.05)
                nursery.start_soon(self._offers)
                for _ in range(ABUSIVE_STREAMS):
                    nursery.start_soon(self._streams)
                while not self.stop.is_set():
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()

    async def _streams(self) -> None:
        while True:
            await self._one_stream()

    async def _offers(self) -> None:
        n = 0
        while True:
            await trio.sleep(0.05)
            n += 1
            offer = wire.FileOffer(os.urandom(16), f"spam{n}.bin", 1, bytes(32))
            try:
                reply = await self.friend.offer(self.alice, offer)
            except Exception:
                continue
            self.c.count("offers", 1)
            if any(isinstance(f, wire.Refused) for f in reply):
                self.c.count("offers_refused", 1)

    async def _one_stream(self) -> None:
        peer = ID.from_base58(self.alice.peer_id)
        # No backoff: a hostile daemon redials as fast as it can.
        self.friend.host.get_network()._negative_peer_cache.clear()  # type: ignore[attr-defined]
        try:
            stream = await self.friend.host.new_stream(peer, [TProtocol(wire.MSG_PROTOCOL)])
        except Exception:
            self.c.count("failed_opens", 1)
            await trio.sleep(0.01)
            return
        self.c.count("streams", 1)
        done = trio.Event()

        async def read_replies() -> None:
            decoder = wire.FrameDecoder()
            try:
                while True:
                    data = await stream.read(65536)
                    if not data:
                        return
                    for frame in decoder.feed(data):
                        if isinstance(frame, wire.Ack):
                            self.c.count("acked", len(frame.msg_ids))
                        elif isinstance(frame, wire.Refused):
                            self.c.count("refused_streams", 1)
                            return
            except Exception:
                return
            finally:
                done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_replies)
            try:
                await stream.write(wire.encode(wire.Hello(())))
                seq = 0
                while not done.is_set() and not self.stop.is_set():
                    batch = []
                    for _ in range(128):
                        seq += 1
                        batch.append(
                            wire.encode(
                                wire.ChatMessage(os.urandom(16), seq, 0, "flood " + "x" * 100)
                            )
                        )
                    await stream.write(b"".join(batch))
                    self.c.count("sent", len(batch))
                    await trio.sleep(0)
            except Exception:
                pass
            with trio.move_on_after(1):
                await done.wait()
            nursery.cancel_scope.cancel()
        with contextlib.suppress(Exception):
            await stream.reset()
        await trio.sleep(0.05)  # a fresh stream (a hello) every 50 ms at most


class Meter:
    """Alice's and mallory's CPU (from /proc), each in % of one core, between laps."""

    def __init__(self, alice_pid: int, mallory_pid: int) -> None:
        self.pids = (alice_pid, mallory_pid)

    def start(self) -> None:
        self.t0 = self.t = time.perf_counter()
        self.cpu = [cpu_s(pid) for pid in self.pids]

    def lap(self) -> tuple[float, float]:
        t, cpu = time.perf_counter(), [cpu_s(pid) for pid in self.pids]
        a, m = ((now - then) / (t - self.t) * 100 for now, then in zip(cpu, self.cpu, strict=True))
        self.t, self.cpu = t, cpu
        return a, m

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class Profiler:
    """py-spy on alice around one measurement, when asked for (``--profile``)."""

    def __init__(self, out: str | None, pid: int) -> None:
        self.out, self.pid = out, pid
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.out:
            fmt = "raw" if self.out.endswith(".txt") else "flamegraph"
            self.proc = subprocess.Popen(
                ["py-spy", "record", "--pid", str(self.pid), "-o", self.out, "--format", fmt],
                stdout=subprocess.DEVNULL,
            )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(2)
            self.proc.wait(30)


def wait_until(condition: Any, failure: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(failure)
        time.sleep(0.2)


def cooldown(status: dict[str, Any]) -> float:
    refusing = status.get("quotas", {}).get("refusing", [])
    return max((entry.get("cooldown_s", 0.0) for entry in refusing), default=0.0)


def paced(status: dict[str, Any]) -> bool:
    refusing = status.get("quotas", {}).get("refusing", [])
    return any(entry.get("paced_messages", 0) > 0 for entry in refusing)


def latencies(bob: Daemon, events: EventQueue, n: int, tag: str) -> list[float]:
    out = []
    with bob.client() as api:
        for i in range(n):
            t = time.perf_counter()
            msg_id = api.call("messages.send", friend="alice", text=f"{tag} {i}")["message"]["id"]
            while True:
                event = events.queue.get(timeout=60)
                if event["type"] == "message.delivered" and event["message"]["id"] == msg_id:
                    break
            out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--settle", type=float, default=1.0, help="flood seconds before measuring")
    parser.add_argument(
        "--profile", metavar="SVG", help="record alice with py-spy while mallory is paced"
    )
    parser.add_argument(
        "--shared-rate", type=float, help="alice's quotas.shared_messages_per_s (default: its own)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the daemons' directories")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    alice, bob = Daemon(workdir / "alice", "alice"), Daemon(workdir / "bob", "bob")
    try:
        if args.shared_rate is not None:
            alice.configure(quotas={"shared_messages_per_s": args.shared_rate})
        start_all([alice, bob])
        befriend(bob, alice)
        mallory = Mallory(alice)
        mallory.process.start()
        if not mallory.ready.wait(60):
            raise SystemExit("mallory could not befriend alice")
        events = EventQueue(bob)
        latencies(bob, events, 20, "warm-up")
        assert alice.proc is not None
        pid = alice.proc.pid
        assert mallory.process.pid is not None
        meter = Meter(pid, mallory.process.pid)
        meter.start()
        base = latencies(bob, events, args.messages, "baseline")
        base_cpu = meter.lap()
        # Mallory runs on this machine, and its flood keeps about one core busy: the same
        # measurement beside a process that only burns one core bounds what is the machine's
        # CPU rather than alice's handling of the flood.
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy = latencies(bob, events, args.messages, "busy")
        finally:
            burner.kill()
            burner.wait()
        spy = Profiler(args.profile, pid)

        # --- greedy: two streams, never refused, paced --------------------------------------
        meter.start()
        mallory.flooding.set()
        time.sleep(args.settle)
        burst = latencies(bob, events, args.messages, "burst")
        burst_cpu = meter.lap()
        wait_until(lambda: paced(alice.call("status")), "mallory was never paced")
        paced_at = meter.elapsed()
        # Mallory's streams first fill the receive windows alice grew while reading its
        # burst (up to 16 MiB each); the steady state is measured after that has settled.
        time.sleep(args.settle)
        meter.lap()
        spy.start()
        steady = latencies(bob, events, args.messages * 2, "paced")
        spy.stop()
        steady_cpu = meter.lap()
        acked_greedy, greedy_s = mallory.acked, meter.elapsed()

        # --- abusive: refused streams and offers, until the cool-down ------------------------
        abuse0 = time.perf_counter()
        mallory.abusing.set()
        abuse: list[float] = []
        while cooldown(alice.call("status")) <= 0:
            abuse += latencies(bob, events, 20, "abuse")
            if time.perf_counter() - abuse0 > 120:
                raise SystemExit("mallory was never cooled down")
        cooled_after = time.perf_counter() - abuse0
        abuse_cpu = meter.lap()
        refused_before = mallory.refused_streams, mallory.offers_refused
        time.sleep(args.settle)
        meter.lap()
        opens0 = mallory.failed_opens
        cooling = latencies(bob, events, args.messages * 2, "cooling")
        cooling_cpu = meter.lap()
        status = alice.call("status")
        opens = mallory.failed_opens - opens0
        left = cooldown(status)
        quotas: dict[str, Any] = status.get("quotas", {})
        closed = max(
            (e.get("connections_closed", 0) for e in quotas.get("refusing", [])), default=0
        )
        rss = rss_mb(pid)
        elapsed = meter.elapsed()
        mallory.stop.set()
        mallory.process.join(10)
        # The same once mallory is gone: what the flood left behind (a bigger database)
        # rather than what it does.
        time.sleep(args.settle)
        meter.lap()
        after = latencies(bob, events, args.messages, "after")
        after_cpu = meter.lap()
        events.close()
        stored = alice.call("friends.list")
        unread = {c["display_name"]: c["unread"] for c in stored["contacts"]}

        # The reference: no flood, before it and after it (pooled: this machine's latency
        # drifts by ~20% within a run, and the flood leaves a bigger database behind).
        reference = base + after
        b50, b95 = pct(reference, 50) * 1000, pct(reference, 95) * 1000

        def row(label: str, sample: list[float], extra: str = "") -> None:
            p50, p95 = pct(sample, 50) * 1000, pct(sample, 95) * 1000
            print(
                f"  {label:<44} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  "
                f"({p50 / b50:.2f}x, {p95 / b95:.2f}x){extra}"
            )

        print(
            f"bob->alice send->delivered ({len(base)} messages each unless said; ratios to "
            f"the reference, both no-flood runs pooled):"
        )
        print(f"  {'no flood (reference)':<44} p50 {b50:6.1f} ms  p95 {b95:6.1f} ms")
        row("no flood, before the flood", base, f"  alice {base_cpu[0]:.0f}% CPU")
        row("no flood, one core busy", busy)
        row("greedy: mallory's burst", burst, f"  alice {burst_cpu[0]:.0f}% CPU")
        row(
            f"greedy: mallory paced (from {paced_at + args.settle:.1f} s)",
            steady,
            f"  alice {steady_cpu[0]:.0f}%, mallory {steady_cpu[1]:.0f}% CPU",
        )
        row(
            f"abusive, until cooled down ({cooled_after:.1f} s)",
            abuse,
            f"  alice {abuse_cpu[0]:.0f}% CPU",
        )
        row(
            "abusive, mallory cooling down",
            cooling,
            f"  alice {cooling_cpu[0]:.0f}%, mallory {cooling_cpu[1]:.0f}% CPU",
        )
        row("no flood, after it (mallory gone)", after, f"  alice {after_cpu[0]:.0f}% CPU")
        print(
            f"mallory greedy ({greedy_s:.1f} s): alice acked {acked_greedy} messages "
            f"({acked_greedy / greedy_s:.0f}/s); in all sent {mallory.sent}, acked "
            f"{mallory.acked}, the rest neither stored nor acked"
        )
        print(
            f"mallory abusive: {mallory.streams} streams, {refused_before[0]} refused before "
            f"the cool-down; {mallory.offers} offers, {refused_before[1]} "
            f"refused; while cooling down {opens} failed stream opens "
            f"({opens / (sum(cooling) or 1):.0f}/s), {left:.0f} s of cool-down left; alice "
            f"closed {closed} of its connections after the handshake and "
            f"{quotas.get('connections_throttled')} from its address before it"
        )
        print(f"alice RSS {rss:.0f} MB; {os.cpu_count()} cores; {elapsed:.1f} s of flood in all")
        print(f"alice unread per friend after: {unread}")
        print(f"alice status.quotas.refusing: {quotas.get('refusing')}")
    finally:
        alice.close()
        bob.close()
        if args.keep:
            print(f"daemons' directories kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
