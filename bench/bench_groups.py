"""Group benchmark: real p2pchatd processes on 127.0.0.1, a group of 8 members, against the
1:1 figure measured in the same run on the same daemons (issue 12).

Prints:
- group send -> stored at every member, p50/p99 (from the ``groups.send`` call at the sender
  to the ``group.message`` event at the last of the 7 others), and per member;
- 1:1 send -> stored at the friend, p50/p99 (``messages.send`` to ``message.received``), the
  baseline: the same daemons, machine and load;
- the bounds under both: this disk's fsync p50 (every daemon commits durably) and the CPUs
  (8 daemons share them).

Then group calls (conferences) among 4 other daemons, for 2, 3 and 4 parties, each held
``--conf-seconds`` with the 320x240 test pattern and tone:
- CPU per participant (the daemons' CPU time over the hold, divided by the parties), with
  each source encoded once for all (the default), and with one encoder per peer connection
  (aiortc's default, ``"conference_encode_once": false``): that second figure is what a
  participant pays for the same number of separate 1:1 streams (N-1 encodes and N-1
  decodes), measured on the same daemons in the same run; the (N-1) x 2-party figure is
  printed next to it;
- the slowest decoded frame rate any participant had from any other (target >= 20 fps);
- the bounds: CPUs and load, and one libvpx 320x240 encode and decode in this process.

Usage: python bench/bench_groups.py [--members 8] [--messages 200] [--conf-seconds 8]
       [--conf-runs 3] [--skip-messages] [--skip-conference]
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


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def stop_all(daemons: list[Daemon]) -> None:
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            try:
                d.stop()
            except Exception:
                d.kill9()


def group_call(d: Daemon) -> dict[str, Any]:
    calls = [c for c in d.call("calls.list")["calls"] if c.get("kind") == "group"]
    return calls[0] if calls else {}


def connected(d: Daemon) -> int:
    call = group_call(d)
    if call.get("state") != "active":
        return 0
    return sum(p["state"] == "active" for p in call["participants"])


def frames(d: Daemon) -> dict[str, tuple[int, int]]:
    """Per other participant: (video frames decoded, bytes received) so far."""
    per_peer = (group_call(d).get("stats") or {}).get("participants") or {}
    return {
        p: (int(s.get("video_frames_in", 0)), int(s.get("bytes_in", 0) or 0))
        for p, s in per_peer.items()
    }


def one_conference(daemons: list[Daemon], gid: str, seconds: float) -> tuple[float, float, float]:
    """(CPU per participant as a share of one core, the slowest decoded fps of any pair, the
    mean kbit/s one participant received from another)."""
    first, rest = daemons[0], daemons[1:]
    first.call("calls.start", group=gid)
    for d in rest:
        wait_for(lambda d=d: group_call(d).get("state") == "ringing_in", 30, what="ringing")
        d.call("calls.answer", group=gid)
    for d in daemons:
        wait_for(lambda d=d: connected(d) == len(daemons) - 1, 60, what=f"{d.name}'s mesh")
    time.sleep(2)  # past the first keyframes and ICE checks
    pids = [d.proc.pid for d in daemons if d.proc is not None]
    before = {d.name: frames(d) for d in daemons}
    cpu0, t0 = sum(cpu_s(p) for p in pids), time.monotonic()
    time.sleep(seconds)
    cpu, elapsed = sum(cpu_s(p) for p in pids) - cpu0, time.monotonic() - t0
    after = {d.name: frames(d) for d in daemons}
    pairs = [(d.name, p) for d in daemons for p in after[d.name]]
    slowest = min((after[n][p][0] - before[n].get(p, (0, 0))[0]) / elapsed for n, p in pairs)
    kbps = statistics.mean(
        (after[n][p][1] - before[n].get(p, (0, 0))[1]) * 8 / elapsed / 1000 for n, p in pairs
    )
    for d in rest:
        d.call("calls.hangup", group=gid)
    for d in daemons:
        wait_for(lambda d=d: group_call(d).get("released"), 30, what=f"{d.name} to hang up")
    return cpu / elapsed / len(daemons), slowest, kbps


def codec_bounds() -> tuple[float, float]:
    """ms per 320x240 frame for one libvpx encode and one decode, in this process."""
    import asyncio

    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder
    from aiortc.jitterbuffer import JitterFrame

    from p2pchat.calls.media import _test_tracks

    async def grab() -> list[Any]:
        video, _ = _test_tracks(320, 240)
        return [await video.recv() for _ in range(90)]

    pictures = asyncio.run(grab())
    encoder, decoder = Vp8Encoder(), Vp8Decoder()
    encoded = []
    t = time.process_time()
    for picture in pictures:
        payloads, timestamp = encoder.encode(picture)
        encoded.append((payloads, timestamp))
    enc = (time.process_time() - t) / len(pictures) * 1000
    from aiortc.codecs.vpx import vp8_depayload

    t = time.process_time()
    for payloads, timestamp in encoded:
        data = b"".join(vp8_depayload(p) for p in payloads)
        decoder.decode(JitterFrame(data=data, timestamp=timestamp))
    dec = (time.process_time() - t) / len(encoded) * 1000
    return enc, dec


def conference_bench(work: Path, seconds: float, runs: int) -> None:
    daemons = [Daemon(work / f"c{i}", f"c{i}") for i in range(4)]
    results: dict[tuple[bool, int], list[tuple[float, float, float]]] = {}
    idle = 0.0
    try:
        start_all(daemons)
        owner = daemons[0]
        for d in daemons[1:]:
            befriend(owner, d)
        gids: dict[int, str] = {}
        for n in (2, 3, 4):
            gid = owner.call("groups.create", name=f"conf{n}")["group"]["id"]
            for d in daemons[1:n]:
                owner.call("groups.invite", group=gid, friend=d.peer_id)
            for d in daemons[1:n]:
                wait_for(
                    lambda d=d, g=gid: any(x["id"] == g for x in d.call("groups.list")["groups"]),
                    60,
                    what=f"{d.name}'s invitation",
                )
                d.call("groups.join", group=gid)
            gids[n] = gid
        time.sleep(2)
        pids = [d.proc.pid for d in daemons if d.proc is not None]
        cpu0, t0 = sum(cpu_s(p) for p in pids), time.monotonic()
        time.sleep(seconds)
        idle = (sum(cpu_s(p) for p in pids) - cpu0) / (time.monotonic() - t0) / len(pids)
        for once in (True, False):
            if not once:  # the same daemons and groups, one encoder per peer connection
                for d in daemons:
                    d.stop()
                    d.configure(conference_encode_once=False)
                start_all(daemons)
            for n, gid in gids.items():
                for d in daemons[:n]:
                    wait_for(
                        lambda d=d, g=gid: all(
                            m["online"] for m in d.call("groups.show", group=g)["group"]["members"]
                        ),
                        60,
                        what="members online",
                    )
                results[(once, n)] = [
                    one_conference(daemons[:n], gid, seconds) for _ in range(runs)
                ]
    finally:
        stop_all(daemons)
    enc, dec = codec_bounds()
    print(
        f"conference bounds: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; an idle "
        f"daemon {idle * 100:.1f}% of a core; one libvpx 320x240 encode {enc:.2f} ms/frame, "
        f"decode {dec:.2f} ms/frame (x30 a second)"
    )

    def median(once: bool, n: int) -> tuple[float, float, float]:
        got = results[(once, n)]
        return (
            statistics.median(r[0] for r in got),
            min(r[1] for r in got),
            statistics.median(r[2] for r in got),
        )

    two = median(True, 2)[0]
    print(
        f"conference runs: {runs} of {seconds:.0f} s per size and mode (medians; fps: the lowest)"
    )
    for n in (2, 3, 4):
        cpu_once, fps_once, kb_once = median(True, n)
        cpu_each, fps_each, kb_each = median(False, n)
        print(
            f"conference of {n}: CPU per participant {cpu_once * 100:5.1f}% of a core encoding "
            f"once ({fps_once:.1f} fps, {kb_once:.0f} kbit/s per pair); {cpu_each * 100:5.1f}% "
            f"with one encoder per peer = {n - 1} separate 1:1 stream(s) ({fps_each:.1f} fps, "
            f"{kb_each:.0f} kbit/s) -> {cpu_once / cpu_each:.2f}x; (n-1) x the 2-party figure "
            f"{(n - 1) * two * 100:5.1f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--conf-seconds", type=float, default=8.0)
    parser.add_argument("--conf-runs", type=int, default=3)
    parser.add_argument("--skip-messages", action="store_true")
    parser.add_argument("--skip-conference", action="store_true")
    args = parser.parse_args()
    if not args.skip_messages:
        message_bench(args)
    if not args.skip_conference:
        work = Path(tempfile.mkdtemp(prefix="p2pc-bc-", dir="/tmp"))
        try:
            conference_bench(work, args.conf_seconds, args.conf_runs)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def message_bench(args: argparse.Namespace) -> None:
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
        for e in events.values():
            e.close()
    finally:
        stop_all(daemons)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
