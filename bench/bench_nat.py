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

With ``--relayed`` the routers are symmetric NATs, so the friends stay connected only through
the relay daemon in ``pub`` (issue #14: "throughput through a relay daemon >= 0.2x plain TCP
within its byte limit"); it prints, h2 -> h1:
- plain TCP relayed by a bare forwarder in ``pub`` (both hosts connect out to it, it copies
  one socket into the other), with and without a final fsync: what relaying costs without
  libp2p;
- plain TCP h2 -> ``pub``: one hop, the route's own bound;
- p2pchat through the relay (``data_path`` must say ``stream``, the only connection between
  the friends ``relayed``), within the relay's circuit byte limit, and the ratios.

Rounds alternate baseline and p2pchat after one warm-up round.

Usage: sudo python bench/bench_nat.py [--size-mib 256] [--runs 3] [--no-stream]
       sudo python bench/bench_nat.py --relayed [--size-mib 24] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_files import PAUSE, make_file, warm_memory  # noqa: E402

from p2pchat.config import load_config  # noqa: E402
from tests.daemons.test_nat import kinds_between, nat_daemons  # noqa: E402
from tests.harness import Daemon, befriend_by_id, find, wait_for, wait_state  # noqa: E402
from tests.netlab import NatLab, nat_lab, skip_reason  # noqa: E402

MB = 1_000_000

PUNCHED_TCP = r"""
import os, socket, sys, time
role, remote_ip, mine, theirs, path, do_fsync = sys.argv[1:7]
deadline = time.monotonic() + 20
if remote_ip == "-":  # listen on our port for the one connection
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", int(mine)))
    ls.listen(1)
    ls.settimeout(20)
    s, _ = ls.accept()
while remote_ip != "-":
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
    buf = bytearray(1 << 20); view = memoryview(buf)
    # Timed from the first bytes' arrival (the sender may connect later than we do); the
    # bytes timed are those after that first read.
    first = s.recv_into(view)
    t = time.perf_counter()
    total = first
    with open(path, "wb", buffering=0) as f:
        f.write(view[:first])
        while n := s.recv_into(view):
            f.write(view[:n]); total += n
        if do_fsync == "1":
            os.fsync(f.fileno())
    print(total, total - first, time.perf_counter() - t, flush=True)
s.close()
"""


FORWARDER = r"""
import socket, sys
listen_ip, port, source_ip = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((listen_ip, port))
ls.listen(2)
ls.settimeout(20)
print("ready", flush=True)
a, a_addr = ls.accept()
b, b_addr = ls.accept()
assert (a_addr[0] == source_ip) != (b_addr[0] == source_ip), (a_addr, b_addr, source_ip)
src, dst = (a, b) if a_addr[0] == source_ip else (b, a)
buf = bytearray(1 << 20); view = memoryview(buf)
while n := src.recv_into(view):
    dst.sendall(view[:n])
dst.shutdown(socket.SHUT_WR)
dst.recv(1)
src.close()
dst.close()
"""


def _tcp_pair(
    lab: NatLab,
    src: Path,
    dst: Path,
    do_fsync: bool,
    recv_args: tuple[str, str, str],
    send_args: tuple[str, str, str],
    receiver_ns: str | None = None,
) -> float:
    """Run PUNCHED_TCP's receiver (in h1, or ``receiver_ns``) and sender (in h2) with the
    given (remote IP, own port, remote port); MB/s the receiver saw."""
    os.sync()
    time.sleep(PAUSE)
    warm_memory()
    receiver = subprocess.Popen(
        [
            *lab.lab.prefix(receiver_ns or lab.h1),
            sys.executable,
            "-c",
            PUNCHED_TCP,
            "recv",
            *recv_args,
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
            *send_args,
            str(src),
            "0",
        ]
    )
    assert receiver.stdout is not None
    total, timed, elapsed = receiver.stdout.readline().split()
    sender.wait(60)
    receiver.wait(60)
    assert int(total) == src.stat().st_size, total
    dst.unlink()
    return int(timed) / float(elapsed) / MB


def plain_tcp_relayed(lab: NatLab, src: Path, dst: Path, do_fsync: bool) -> float:
    """MB/s of plain TCP from h2 to h1 through a bare forwarder in ``pub``."""
    forwarder = subprocess.Popen(
        [
            *lab.lab.prefix(lab.pub),
            sys.executable,
            "-c",
            FORWARDER,
            NatLab.PUB_IP,
            "47100",
            NatLab.R2_WAN,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert forwarder.stdout is not None
        assert forwarder.stdout.readline().strip() == "ready"
        to_pub = (NatLab.PUB_IP, "0", "47100")
        return _tcp_pair(lab, src, dst, do_fsync, to_pub, to_pub)
    finally:
        try:
            forwarder.wait(60)
        except subprocess.TimeoutExpired:
            forwarder.kill()
            forwarder.wait()


def plain_tcp_to_pub(lab: NatLab, src: Path, dst: Path) -> float:
    """MB/s of plain TCP from h2 to ``pub`` (one hop, through h2's NAT)."""
    return _tcp_pair(
        lab,
        src,
        dst,
        False,
        ("-", "47101", "0"),
        (NatLab.PUB_IP, "0", "47101"),
        receiver_ns=lab.pub,
    )


def plain_tcp(lab: NatLab, src: Path, dst: Path, do_fsync: bool) -> float:
    """MB/s of plain TCP from h2 to h1 through both NATs (simultaneous open, ports 47001/2)."""
    return _tcp_pair(
        lab,
        src,
        dst,
        do_fsync,
        (NatLab.R2_WAN, "47001", "47002"),
        (NatLab.R1_WAN, "47002", "47001"),
    )


@contextlib.contextmanager
def bench_lab(
    *, symmetric: bool, size_mib: int
) -> Iterator[tuple[NatLab, Path, Path, Callable[..., Daemon]]]:
    """The NAT lab, a work directory with a ``size_mib`` MiB payload in it, and a daemon
    factory for ``nat_daemons``; every daemon it made is closed on the way out."""
    with (
        tempfile.TemporaryDirectory(prefix="p2pc-bench-nat-") as tmp,
        nat_lab(symmetric=symmetric) as lab,
    ):
        work = Path(tmp)
        src = work / "payload.bin"
        make_file(src, size_mib << 20)
        made: list[Daemon] = []

        def make_daemon(name: str, start: bool = True, prefix: list[str] | None = None) -> Daemon:
            d = Daemon(work / name, name, prefix=prefix)
            made.append(d)
            return d.start() if start else d

        try:
            yield lab, work, src, make_daemon
        finally:
            for d in reversed(made):
                d.close()


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
    parser.add_argument("--size-mib", type=int, help="default 256, or 24 with --relayed")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-stream", action="store_true", help="skip the stream-path figure")
    parser.add_argument(
        "--relayed", action="store_true", help="symmetric NATs: through the relay daemon"
    )
    args = parser.parse_args()
    why_not = skip_reason()
    if why_not is not None:
        sys.exit(f"bench_nat: {why_not}")
    if args.relayed:
        relayed_main(args.size_mib or 24, args.runs)
        return
    args.size_mib = args.size_mib or 256

    with bench_lab(symmetric=False, size_mib=args.size_mib) as (lab, work, src, make_daemon):
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


def relayed_main(size_mib: int, runs: int) -> None:
    with bench_lab(symmetric=True, size_mib=size_mib) as (lab, work, src, make_daemon):
        pub, h1, h2 = nat_daemons(make_daemon, lab)
        limit = load_config(pub.home).relay_max_circuit_bytes
        # The limit is per relayed connection, both directions, and every run (the warm-up
        # too) goes over the same one: all of them must fit, or a run would be cut off and
        # resume on a new circuit, its time counting the redial.
        if (runs + 1) * src.stat().st_size * 1.05 > limit:
            sys.exit(
                f"bench_nat: {runs + 1} transfers of {size_mib} MiB do not fit the relay's "
                f"circuit limit of {limit} B on one connection"
            )
        befriend_by_id(h1, h2, "bench", timeout=60)
        relayed: list[float] = []
        relayed_fsync: list[float] = []
        one_hop: list[float] = []
        ours: list[float] = []
        for run in range(-1, runs):  # run -1 warms up
            a = plain_tcp_relayed(lab, src, work / "tcp.out", do_fsync=False)
            b = plain_tcp_relayed(lab, src, work / "tcp.out", do_fsync=True)
            c = plain_tcp_to_pub(lab, src, work / "tcp.out")
            if set(kinds_between(h1, h2)) != {"relayed"}:
                sys.exit(f"bench_nat: the friends are connected {kinds_between(h1, h2)}")
            d, path = p2pchat_transfer(h1, h2, src)
            if path != "stream":
                sys.exit(f"bench_nat: the transfer took the {path!r} path, not 'stream'")
            print(
                f"  run {run}: relayed TCP {a:6.0f}  with fsync {b:6.0f}  "
                f"one hop {c:6.0f}  p2pchat {d:6.1f} MB/s" + ("  (warm-up)" if run < 0 else "")
            )
            if run >= 0:
                relayed.append(a)
                relayed_fsync.append(b)
                one_hop.append(c)
                ours.append(d)

    med = statistics.median
    print(
        f"\nNAT lab (symmetric routers), {size_mib} MiB h2 -> pub -> h1 within the relay's "
        f"{limit >> 20} MiB circuit limit, medians of {runs} runs"
    )
    print(f"  plain TCP through a bare forwarder in pub          {med(relayed):8.0f} MB/s")
    print(f"  plain TCP through a bare forwarder in pub + fsync  {med(relayed_fsync):8.0f} MB/s")
    print(f"  plain TCP h2 -> pub (one hop)                      {med(one_hop):8.0f} MB/s")
    print(f"  p2pchat through the relay daemon (libp2p stream)   {med(ours):8.1f} MB/s")
    print(
        f"  ratio to relayed plain TCP {med(ours) / med(relayed):.3f}x (target >= 0.2x), "
        f"to relayed plain TCP + fsync {med(ours) / med(relayed_fsync):.3f}x, "
        f"to one hop {med(ours) / med(one_hop):.3f}x"
    )


if __name__ == "__main__":
    main()
