"""Offline delivery benchmark (issue 13): three real p2pchatd processes, alice, bob and carol,
all friends. For 1, 10 and 100 waiting messages:

- *held*: bob is stopped, alice sends, carol holds the envelopes, alice is stopped; then bob
  starts: the time from bob's daemon answering its API to the last message in his history
  (fetched from carol, opened, stored);
- *direct* (the baseline, same run): bob is stopped, alice sends and stays online; bob
  starts: the same time, with alice delivering herself when they reconnect.

Then, in this process, the cost per message of what the held path adds, next to the plain
path: a msg/1.0.0 frame encoded and decoded; an Olm seal and open (msg/2.0.0); the envelope
around it sealed and opened.

Usage: python bench/bench_offline.py [--runs 3] [--counts 1,10,100] [--keep]
"""

from __future__ import annotations

import argparse
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

from p2pchat import wire  # noqa: E402
from p2pchat.identity import Identity  # noqa: E402
from p2pchat.mailbox.envelope import (  # noqa: E402
    HeldMessage,
    box_key,
    open_envelope,
    parse_envelope,
    seal_envelope,
)
from p2pchat.ratchet.bundle import parse_bundle  # noqa: E402
from p2pchat.ratchet.pair import OlmAccount, PairSession  # noqa: E402
from tests.harness import Daemon, befriend, send_and_wait, wait_for  # noqa: E402


def count_from(d: Daemon, peer: str, prefix: str) -> int:
    return sum(1 for m in d.history(peer, 1000) if m["text"].startswith(prefix))


def time_to_all(bob: Daemon, alice: Daemon, prefix: str, n: int) -> float:
    bob.start()
    t0 = time.monotonic()
    wait_for(
        lambda: count_from(bob, alice.peer_id, prefix) >= n,
        timeout=120,
        interval=0.01,
        what=f"{n} messages",
    )
    return time.monotonic() - t0


def send_n(alice: Daemon, bob: Daemon, prefix: str, n: int) -> None:
    for i in range(n):
        alice.call("messages.send", friend=bob.peer_id, text=f"{prefix} {i}")


def round_held(alice: Daemon, bob: Daemon, carol: Daemon, n: int, tag: str) -> float:
    bob.stop()
    prefix = f"held-{tag}"
    send_n(alice, bob, prefix, n)

    def all_held() -> bool:
        mine = [m for m in alice.history(bob.peer_id, 1000) if m["text"].startswith(prefix)]
        return len(mine) == n and all(m["holders"] >= 1 for m in mine)

    wait_for(all_held, timeout=120, what="carol to hold them all")
    alice.stop()
    seconds = time_to_all(bob, alice, prefix, n)
    alice.start()
    return seconds


def round_direct(alice: Daemon, bob: Daemon, carol: Daemon, n: int, tag: str) -> float:
    carol.stop()  # no holder: alice delivers herself
    bob.stop()
    prefix = f"direct-{tag}"
    send_n(alice, bob, prefix, n)
    seconds = time_to_all(bob, alice, prefix, n)
    carol.start()
    return seconds


def per_message_costs(samples: int = 500) -> dict[str, float]:
    """Microseconds per message, sealing and opening included."""
    alice, bob = Identity.generate(), Identity.generate()
    a, b = OlmAccount.create(), OlmAccount.create()
    bundle = parse_bundle(bob.peer_id, b.bundle(bob, 1, int(time.time())), time.time())
    sa = PairSession.start(a, bundle, bundle.one_time_keys[0][0])
    first = sa.seal(b"hello")
    sb, _ = b.accept(a.identity_key, first)
    text = "a message of a typical length, some sixty characters or so."
    plaintext = text.encode()
    keys = a.bundle(alice, 0, int(time.time()))

    t0 = time.perf_counter()
    for i in range(samples):
        raw = wire.encode(wire.ChatMessage(os.urandom(16), i + 1, 0, text))
        wire.FrameDecoder().feed(raw)
    plain = time.perf_counter() - t0

    t0 = time.perf_counter()
    sealed = []
    for _ in range(samples):
        sealed.append(sa.seal(plaintext))
    for s in sealed:
        sb.open(s)
    olm = time.perf_counter() - t0

    t0 = time.perf_counter()
    expires = int(time.time()) + 3600
    key = box_key(bob)
    for s in sealed:
        env = seal_envelope(
            alice, bob.peer_id, HeldMessage(os.urandom(16), 1, 0, 1, s.body, keys), expires
        )
        open_envelope(bob, parse_envelope(env.encode(), time.time()), key)
    envelope = time.perf_counter() - t0
    us = 1e6 / samples
    return {"plain_us": plain * us, "olm_us": olm * us, "envelope_us": envelope * us}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--counts", default="1,10,100")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    work = Path(tempfile.mkdtemp(prefix="p2pc-off-", dir="/tmp"))
    daemons = [Daemon(work / n, name=n) for n in ("alice", "bob", "carol")]
    alice, bob, carol = daemons
    results: dict[tuple[str, int], list[float]] = {}
    try:
        for d in daemons:
            d.start()
        befriend(alice, bob)
        befriend(alice, carol)
        befriend(bob, carol)
        send_and_wait(alice, bob, "the session")
        for run in range(args.runs):
            for n in counts:
                for name, fn in (("direct", round_direct), ("held", round_held)):
                    seconds = fn(alice, bob, carol, n, f"{run}-{n}")
                    results.setdefault((name, n), []).append(seconds)
                    print(
                        f"run {run + 1} {name:6} {n:4} messages: {seconds * 1000:7.0f} ms",
                        flush=True,
                    )
    finally:
        for d in daemons:
            d.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\nrecipient online -> last message in its history (median of runs)")
    print(f"{'waiting':>8} {'direct (baseline)':>18} {'via a holder':>14} {'ratio':>7}")
    for n in counts:
        direct = statistics.median(results[("direct", n)])
        held = statistics.median(results[("held", n)])
        print(f"{n:>8} {direct * 1000:>15.0f} ms {held * 1000:>11.0f} ms {held / direct:>6.2f}x")
    costs: dict[str, Any] = per_message_costs()
    print("\nper message, sealing and opening (this process, one core):")
    print(f"  plain msg/1.0.0 frame encode+decode: {costs['plain_us']:8.1f} us")
    print(
        f"  Olm seal+open (msg/2.0.0):           {costs['olm_us']:8.1f} us "
        f"({costs['olm_us'] / costs['plain_us']:.1f}x plain)"
    )
    print(
        f"  envelope seal+open (held):           {costs['envelope_us']:8.1f} us "
        f"({costs['envelope_us'] / costs['plain_us']:.1f}x plain)"
    )


if __name__ == "__main__":
    main()
