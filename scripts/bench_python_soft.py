#!/usr/bin/env python3
"""Times Python filelock's soft locks, to compare with the `soft/*` lines of `benches/acquire.rs`.

    python3 scripts/bench_python_soft.py            # 2000 acquire + release per repetition
    python3 scripts/bench_python_soft.py -n 500     # fewer

For each of SoftFileLock and SoftFileLease (same 30 s lease duration as the Rust default),
one lock object on a fresh temp-dir path is acquired and released N times, 5 repetitions
(after one warm-up repetition); the median repetition is printed in microseconds per
acquire + release, in the same format as the Rust interleaved lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import filelock
from filelock import SoftFileLease, SoftFileLock

REPETITIONS = 5


def per_op_us(lock: filelock.BaseFileLock, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - start) / n * 1e6


def measure(name: str, lock: filelock.BaseFileLock, n: int) -> None:
    per_op_us(lock, max(n // 10, 10))  # warm-up: first marker, imports, caches
    times = [per_op_us(lock, n) for _ in range(REPETITIONS)]
    print(
        f"  python/{name:<28} {statistics.median(times):8.1f} us/op"
        f"  (min {min(times):.1f}, max {max(times):.1f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000, help="acquire + release pairs per repetition")
    args = parser.parse_args()
    print(
        f"Python {sys.version.split()[0]}, filelock {filelock.__version__}: "
        f"uncontended acquire + release, median of {REPETITIONS} x {args.n}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        measure("SoftFileLock", SoftFileLock(Path(tmp) / "soft.lock"), args.n)
        lease = SoftFileLease(Path(tmp) / "lease.lock", lease_duration=30.0)
        measure("SoftFileLease", lease, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
