"""File transfers between two friends behind NATs (the NAT lab's endpoint-independent,
port-preserving routers, network namespaces; root only), against plain TCP between the same
two namespaces, measured in the same run.

Prints (issue #14: "a 256 MiB file >= 0.4x plain TCP between the same two namespaces"):
- plain TCP h2 -> h1 through both routers (a TCP simultaneous open from fixed ports, then
  ``socket.sendfile`` into a receiver that writes the file), with and without a final fsync:
  the route's and the disk's bounds;
- p2pchat h2 -> h1: from h1's accept to its verified, renamed file, on the data connection
  punched through the NATs (``data_path`` must say ``punched``), and the ratios;
- for comparison, the same file on the libp2p stream (h1 restarted with
  ``"direct_transfers": false``), the path such transfers took before.

Rounds alternate baseline and p2pchat after one warm-up round.

Usage: sudo python bench/bench_nat.py [--size-mib 256] [--runs 3] [--no-stream]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_files import PAUSE, make_file, warm_memory  # noqa: E402

from tests.daemons.test_nat import kinds_between, nat_daemons  # noqa: E402
from tests.harness import Daemon, befriend_by_id, find, wait_for, wait_state  # noqa: E402
from tests.netlab import NatLab, nat_lab, skip_reason  # noqa: E402

MB = 1_000_000

PUNCHED_TCP = r"""
import os, socket, sys, time
role, remote_ip, mine, theirs, path, do_fsync = sys.argv[1:7]
deadline = time.monotonic() + 20
while True:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(mine)))
    s.settimeout(3)
    try:
        s.connect((remote_ip, int(theirs)))
        break
    except OSError:
        s.close()
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
s.settimeout(60)
if role == "send":
    with open(path, "rb") as f:
        s.sendfile(f)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
else:
    t = time.perf_counter()
    buf = bytearray(1 << 20); view = memoryview(buf); total = 0
    with open(path, "wb", buffering=0) as f:
        while n := s.recv_into(view):
            f.write(view[:n]); total += n
        if do_fsync == "1":
            os.fsync(f.fileno())
    print(total, time.perf_counter() - t, flush=True)
s.close()
"""


def plain_tcp(lab: NatLab, src: Path, dst: Path, do_fsync: bool) -> float:
    """MB/s of plain TCP from h2 to h1 through both NATs (simultaneous open, ports 47001/2)."""
    os.sync()
    time.sleep(PAUSE)
    warm_memory()
    receiver = subprocess.Popen(
        [
            *lab.lab.prefix(lab.h1),
            sys.executable,
            "-c",
            PUNCHED_TCP,
            "recv",
            NatLab.R2_WAN,
            "47001",
            "47002",
            str(dst),
            "1" if do_fsync else "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    sender = subprocess.Popen(
        [
            *lab.lab.prefix(lab.h2),
            sys.executable,
            "-c",
            PUNCHED_TCP,
            "send",
            NatLab.R1_WAN,
            "47002",
            "47001",
            str(src),
            "0",
        ]
    )
    assert receiver.stdout is not None
    total, elapsed = receiver.stdout.readline().split()
    sender.wait(60)
    receiver.wait(60)
    assert int(total) == src.stat().st_size, total
    dst.unlink()
    return src.stat().st_size / float(elapsed) / MB


def p2pchat_transfer(h1: Daemon, h2: Daemon, src: Path) -> tuple[float, str]:
    """MB/s from h1's accept to its completed file, and the data path it took."""
    tid = h2.call("files.send", friend=h1.peer_id, path=str(src))["transfer"]["id"]
    wait_state(h1, tid, "offered", timeout=60)
    os.sync()
    time.sleep(PAUSE)
    warm_memory()
    t0 = time.perf_counter()
    h1.call("files.accept", id=tid)

    def finished() -> dict[str, Any] | None:
        t = find(h1, tid) or {}
        if t.get("state") in ("failed", "cancelled"):
            raise RuntimeError(f"transfer ended: {t}")
        return t if t.get("state") == "completed" else None

    done = wait_for(finished, timeout=600, interval=0.01, what="the transfer")
    elapsed = time.perf_counter() - t0
    Path(done["path"]).unlink()
    return src.stat().st_size / elapsed / MB, str(done["data_path"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-stream", action="store_true", help="skip the stream-path figure")
    args = parser.parse_args()
    why_not = skip_reason()
    if why_not is not None:
        sys.exit(f"bench_nat: {why_not}")

    with tempfile.TemporaryDirectory(prefix="p2pc-bench-nat-") as tmp, nat_lab() as lab:
        work = Path(tmp)
        src = work / "payload.bin"
        make_file(src, args.size_mib << 20)
        made: list[Daemon] = []

        def make_daemon(name: str, start: bool = True, prefix: list[str] | None = None) -> Daemon:
            d = Daemon(work / name, name, prefix=prefix)
            made.append(d)
            return d.start() if start else d

        try:
            _pub, h1, h2 = nat_daemons(make_daemon, lab)
            befriend_by_id(h1, h2, "bench", timeout=60)
            wait_for(lambda: "direct" in kinds_between(h1, h2), timeout=60, what="a punch")
            tcp: list[float] = []
            tcp_fsync: list[float] = []
            ours: list[float] = []
            for run in range(-1, args.runs):  # run -1 warms up
                a = plain_tcp(lab, src, work / "tcp.out", do_fsync=False)
                b = plain_tcp(lab, src, work / "tcp.out", do_fsync=True)
                c, path = p2pchat_transfer(h1, h2, src)
                if path != "punched":
                    sys.exit(f"bench_nat: the transfer took the {path!r} path, not 'punched'")
                print(
                    f"  run {run}: plain TCP {a:7.0f}  with fsync {b:7.0f}  p2pchat {c:7.0f} MB/s"
                    + ("  (warm-up)" if run < 0 else "")
                )
                if run >= 0:
                    tcp.append(a)
                    tcp_fsync.append(b)
                    ours.append(c)
            stream = None
            if not args.no_stream:
                h1.stop()
                h1.configure(direct_transfers=False).start()
                wait_for(lambda: "direct" in kinds_between(h1, h2), timeout=90, what="re-punch")
                stream, path = p2pchat_transfer(h1, h2, src)
                assert path == "stream", path
        finally:
            for d in reversed(made):
                d.close()

    med = statistics.median
    print(f"\nNAT lab (EIM routers), {args.size_mib} MiB h2 -> h1, medians of {args.runs} runs")
    print(f"  plain TCP through the NATs          {med(tcp):8.0f} MB/s")
    print(f"  plain TCP through the NATs + fsync  {med(tcp_fsync):8.0f} MB/s")
    print(f"  p2pchat, punched data connection    {med(ours):8.0f} MB/s")
    print(
        f"  ratio to plain TCP {med(ours) / med(tcp):.2f}x (target >= 0.4x), "
        f"to plain TCP + fsync {med(ours) / med(tcp_fsync):.2f}x"
    )
    if stream is not None:
        print(
            f"  p2pchat on the libp2p stream (direct_transfers off): {stream:.0f} MB/s = "
            f"{stream / med(tcp):.2f}x plain TCP (one run)"
        )


if __name__ == "__main__":
    main()
