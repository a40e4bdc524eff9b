"""Fuzz every decoder of hostile input at scale (issue 15): wire frames and their framing,
call frames, address records, bulk file records, offered file names, friend codes/IDs,
control API lines, the web guard and config.json.

Each decoder gets an equal share of ``--count`` generated inputs (tests/fuzzing.py: valid
encodings from the real encoders, byte-level havoc, and structure-aware rebuilds). With
atheris installed (``pip install atheris``; optional, never a dependency) each decoder runs
in its own process under libFuzzer, coverage-guided over our instrumented modules, with the
structure-aware mutator as libFuzzer's custom mutator; otherwise (or ``--engine plain``) the
plain seeded mutator runs in-process. Anything a decoder raises other than its documented
error type is a crash: the run prints the reproducer (hex) and exits 1.

Usage: python bench/fuzz.py [--count 1000000] [--seed S] [--target NAME ...]
                            [--engine auto|atheris|plain]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESULT_TAG = "FUZZ-RESULT "


def _have_atheris() -> bool:
    try:
        import atheris  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


def _result_json(result: Any, engine: str) -> dict[str, Any]:
    return {
        "target": result.target,
        "seed": result.seed,
        "engine": engine,
        "inputs": result.inputs,
        "accepted": result.accepted,
        "rejected": result.rejected,
        "crash_count": result.crash_count,
        "crashes": [(data.hex(), tb) for data, tb in result.crashes],
        "elapsed": result.elapsed,
    }


def atheris_child(name: str, count: int, seed: int) -> None:
    """Run one target under libFuzzer until ``count`` inputs ran (or the first crash), then
    print the result line and leave (libFuzzer never returns on its own)."""
    import random

    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["p2pchat", "daemon", "tests.fuzzing"]):
        import daemon.control
        import daemon.web.guard  # noqa: F401
        from tests import fuzzing

    target = fuzzing.targets()[name]
    result = fuzzing.Result(name, seed)
    outcome = fuzzing.Outcome(target, result, keep=1)
    gen = fuzzing.Generator(target, seed)
    start = time.perf_counter()

    def finish(code: int) -> None:
        result.elapsed = time.perf_counter() - start
        print(RESULT_TAG + json.dumps(_result_json(result, "atheris")), flush=True)
        os._exit(code)

    def test_one(data: bytes) -> None:
        if not outcome.feed(data):
            finish(1)
        if result.inputs >= count:
            finish(0)

    def mutator(data: bytes, max_size: int, mutation_seed: int) -> bytes:
        gen.rng = random.Random(mutation_seed)  # libFuzzer's seed: runs are reproducible
        if gen.rng.random() < 0.4:
            out: bytes = atheris.Mutate(data, max_size)
        else:
            out = gen.mutate(data)
        return out[:max_size]

    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for i, data in enumerate(gen.corpus):
        (corpus / f"seed{i}").write_bytes(data)
    argv = [
        sys.argv[0],
        f"-seed={seed}",
        f"-runs={count * 2}",
        "-max_len=16384",
        "-len_control=100",
        f"-artifact_prefix={corpus}/",
        "-print_final_stats=0",
        str(corpus),
    ]
    atheris.Setup(argv, test_one, custom_mutator=mutator)
    atheris.Fuzz()
    finish(0)  # pragma: no cover (libFuzzer stopped before count: report what ran)


def run_atheris(name: str, count: int, seed: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, "--count", str(count), "--seed", str(seed)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            result: dict[str, Any] = json.loads(line[len(RESULT_TAG) :])
            return result
    raise SystemExit(
        f"{name}: the atheris run ended without a result (exit {proc.returncode}):\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def run_plain(name: str, count: int, seed: int) -> dict[str, Any]:
    from tests import fuzzing

    return _result_json(fuzzing.run_target(fuzzing.targets()[name], count, seed), "plain")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="total inputs")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--target", action="append", help="only this decoder (repeatable)")
    parser.add_argument("--engine", choices=("auto", "atheris", "plain"), default="auto")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    if args.child:
        atheris_child(args.child, args.count, seed)
        return 0

    from tests import fuzzing

    names = list(fuzzing.targets())
    chosen = args.target or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown target(s) {unknown}; targets: {', '.join(names)}")
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _have_atheris() else "plain"
    elif engine == "atheris" and not _have_atheris():
        parser.error("atheris is not installed (pip install atheris), use --engine plain")
    share = math.ceil(args.count / len(chosen))
    print(
        f"fuzz: engine={engine} seed={seed} targets={len(chosen)} "
        f"inputs per decoder={share:,} (total {share * len(chosen):,})",
        flush=True,
    )
    print(f"{'decoder':<12} {'inputs':>9} {'valid':>8} {'expected errors':>16} {'crashes':>8} "
          f"{'elapsed':>9} {'inputs/s':>9}")  # fmt: skip
    run = run_atheris if engine == "atheris" else run_plain
    results = []
    start = time.perf_counter()
    for name in chosen:
        r = run(name, share, seed)
        results.append(r)
        rate = r["inputs"] / r["elapsed"] if r["elapsed"] else 0.0
        print(
            f"{name:<12} {r['inputs']:>9,} {r['accepted']:>8,} {r['rejected']:>16,} "
            f"{r['crash_count']:>8} {r['elapsed']:>8.1f}s {rate:>9,.0f}",
            flush=True,
        )
    total = sum(r["inputs"] for r in results)
    crashes = sum(r["crash_count"] for r in results)
    fewest = min(r["inputs"] for r in results)
    print(
        f"total: {total:,} inputs, {crashes} crashes, every decoder >= {fewest:,} inputs, "
        f"{time.perf_counter() - start:.0f} s, seed {seed} (rerun: --seed {seed} "
        f"--count {args.count} --engine {engine})"
    )
    for r in results:
        for data_hex, tb in r["crashes"]:
            print(f"\nCRASH in {r['target']}: input (hex) {data_hex}\n{tb}")
    if crashes or fewest < share:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
