"""Call benchmark: two real p2pchatd processes on this machine, against bare aiortc measured
in the same run (issue #5).

Prints:
- set-up time, from the ``calls.start`` API call to the first decoded video frame at the
  callee (which auto-answers, so no human is timed), p50 / max over N calls; baseline: two
  bare aiortc peer connections in one process, from ``createOffer`` to the first decoded
  frame (no signalling, no daemon);
- CPU per 640x480 30 fps stream: both daemons' CPU time during a 10 s video call, divided by
  the two streams (each daemon encodes one and decodes one), as % of one core; baseline: the
  same for the bare aiortc pair;
- daemon RSS (callee) before the first call, during a call, and after hangup (first call,
  and after the last of N calls). Target: back within 10 MB of the pre-call figure.

ICE needs a non-loopback address; run it where the machine has one.

Usage: python bench/bench_calls.py [--calls 5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import Daemon, befriend, start_all, wait_for  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# --- baseline: bare aiortc ------------------------------------------------------------------


async def bare_aiortc(seconds: float) -> tuple[float, float]:
    """(seconds from createOffer to the first decoded frame, CPU seconds per stream-second)."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from p2pchat.calls.media import _test_tracks

    config = RTCConfiguration(iceServers=[])
    caller, callee = RTCPeerConnection(config), RTCPeerConnection(config)
    for pc in (caller, callee):
        video, audio = _test_tracks()
        pc.addTrack(audio)
        pc.addTrack(video)
    first = asyncio.get_running_loop().create_future()
    consumers: list[asyncio.Task[None]] = []

    async def consume(track: Any) -> None:
        while True:
            await track.recv()
            if track.kind == "video" and not first.done():
                first.set_result(time.monotonic())

    for pc in (caller, callee):
        pc.on("track", lambda t: consumers.append(asyncio.ensure_future(consume(t))))
    started = time.monotonic()
    await caller.setLocalDescription(await caller.createOffer())
    await callee.setRemoteDescription(caller.localDescription)
    await callee.setLocalDescription(await callee.createAnswer())
    await caller.setRemoteDescription(callee.localDescription)
    setup = await asyncio.wait_for(first, 20) - started
    await asyncio.sleep(1)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    per_stream = (time.process_time() - cpu0) / (time.monotonic() - t0) / 2
    for task in consumers:
        task.cancel()
    await caller.close()
    await callee.close()
    return setup, per_stream


# --- p2pchat ---------------------------------------------------------------------------------


def frames_in(d: Daemon) -> int:
    calls = d.call("calls.list")["calls"]
    if not calls or calls[0]["state"] != "active":
        return 0
    return int((calls[0].get("stats") or {}).get("video_frames_in", 0))


def one_call(caller: Daemon, callee: Daemon, hold: float) -> tuple[float, dict[str, float]]:
    """Call, time to first frame, hold, measure CPU and RSS, hang up; returns the set-up time
    and measurements."""
    assert caller.proc is not None and callee.proc is not None
    pre = rss_mb(callee.proc.pid)
    started = time.monotonic()
    caller.call("calls.start", friend=callee.peer_id)
    wait_for(lambda: frames_in(callee) > 0, timeout=30, interval=0.01, what="the first frame")
    setup = time.monotonic() - started
    time.sleep(1)
    pids = (caller.proc.pid, callee.proc.pid)
    cpu0, t0 = sum(cpu_s(p) for p in pids), time.monotonic()
    time.sleep(hold)
    per_stream = (sum(cpu_s(p) for p in pids) - cpu0) / (time.monotonic() - t0) / 2
    during = rss_mb(callee.proc.pid)
    caller.call("calls.hangup")
    wait_for(lambda: callee.call("calls.list")["calls"][0]["released"], timeout=30, what="end")
    time.sleep(2)
    after = rss_mb(callee.proc.pid)
    return setup, {"cpu": per_stream, "pre": pre, "during": during, "after": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    base_setup, base_cpu = asyncio.run(bare_aiortc(args.seconds))
    root = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    caller, callee = Daemon(root / "caller"), Daemon(root / "callee")
    try:
        callee.configure(call_auto_answer=True)
        start_all([caller, callee])
        befriend(caller, callee)
        time.sleep(2)
        assert callee.proc is not None
        before = rss_mb(callee.proc.pid)
        setups: list[float] = []
        results: list[dict[str, float]] = []
        for _ in range(args.calls):
            setup, measured = one_call(caller, callee, args.seconds)
            setups.append(setup)
            results.append(measured)
    finally:
        caller.close()
        callee.close()
        shutil.rmtree(root, ignore_errors=True)

    p50 = statistics.median(setups)
    print(
        f"set-up (call command -> first decoded frame at the callee): p50 {p50 * 1000:.0f} ms, "
        f"max {max(setups) * 1000:.0f} ms over {len(setups)} calls (target <= 1000 ms); "
        f"baseline bare aiortc {base_setup * 1000:.0f} ms -> {p50 / base_setup:.2f}x"
    )
    cpu = statistics.median(r["cpu"] for r in results)
    print(
        f"CPU per 640x480 30 fps stream (encode + decode): {cpu * 100:.0f}% of a core; "
        f"baseline bare aiortc {base_cpu * 100:.0f}% -> {cpu / base_cpu:.2f}x"
    )
    first, last = results[0], results[-1]
    print(
        f"callee RSS: before any call {before:.0f} MB, during the first {first['during']:.0f} MB, "
        f"after it {first['after']:.0f} MB ({first['after'] - before:+.1f} MB: the first call "
        f"also loads aiortc and PyAV), after call {len(results)} {last['after']:.0f} MB "
        f"({last['after'] - before:+.1f} MB since before any call)"
    )
    deltas = ", ".join(f"{r['after'] - r['pre']:+.1f}" for r in results)
    print(f"callee RSS after hangup minus before that call, per call: {deltas} MB (target <= 10)")


if __name__ == "__main__":
    main()
