#!/usr/bin/env python3
"""Times Python filelock's soft and read/write locks, to compare with the `soft/*` and `rw/*`
lines of `benches/acquire.rs`.

    python3 scripts/bench_python_soft.py            # 2000 acquire + release per repetition
    python3 scripts/bench_python_soft.py -n 500     # fewer

For each of SoftFileLock and SoftFileLease (same 30 s lease duration as the Rust default),
and for read and for write cycles of ReadWriteLock (SQLite) and SoftReadWriteLock (default
30 s heartbeat), one lock object on a fresh temp-dir path is acquired and released N times,
5 repetitions (after one warm-up repetition); the median repetition is printed in
microseconds per acquire + release, in the same format as the Rust interleaved lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import filelock
from filelock import ReadWriteLock, SoftFileLease, SoftFileLock, SoftReadWriteLock

REPETITIONS = 5


def per_op_us(acquire: Callable[[], object], release: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter() - start) / n * 1e6


def measure(name: str, acquire: Callable[[], object], release: Callable[[], None], n: int) -> None:
    per_op_us(acquire, release, max(n // 10, 10))  # warm-up: first marker, imports, caches
    times = [per_op_us(acquire, release, n) for _ in range(REPETITIONS)]
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
        soft = SoftFileLock(Path(tmp) / "soft.lock")
        measure("SoftFileLock", soft.acquire, soft.release, args.n)
        lease = SoftFileLease(Path(tmp) / "lease.lock", lease_duration=30.0)
        measure("SoftFileLease", lease.acquire, lease.release, args.n)
        rw = ReadWriteLock(Path(tmp) / "rw.db")
        measure("ReadWriteLock read", rw.acquire_read, rw.release, args.n)
        measure("ReadWriteLock write", rw.acquire_write, rw.release, args.n)
        soft_rw = SoftReadWriteLock(Path(tmp) / "soft-rw.lock")
        # Each cycle commits two generations and starts a heartbeat thread: fewer of them.
        measure("SoftReadWriteLock read", soft_rw.acquire_read, soft_rw.release, max(args.n // 4, 10))
        measure("SoftReadWriteLock write", soft_rw.acquire_write, soft_rw.release, max(args.n // 4, 10))
    return 0


if __name__ == "__main__":
    sys.exit(main())
