#!/usr/bin/env bash
# Runs the acquisition benchmarks and prints each result next to its raw-flock baseline.
#
#   scripts/bench.sh                      # short run: 1 s warm-up, 3 s per benchmark
#   scripts/bench.sh uncontended/         # only IDs matching a filter
#   BENCH_ARGS="--measurement-time 10" scripts/bench.sh
#   scripts/bench.sh soft/                # soft locks and leases, then Python's for comparison
#   scripts/bench.sh rw/                  # reader/writer locks (Python's ReadWriteLock and
#                                         # SoftReadWriteLock are timed after)
#
# The bench prints Criterion's lines, the hand-off shares, and an interleaved measurement of
# the uncontended, contended-try, soft and rw variants (ratios to the group's raw loop taken
# round by round, so machine load cancels out; BENCH_INTERLEAVED_ROUNDS sets the rounds, 0
# skips it). This script then tabulates the Criterion lines against the group's first
# `raw_*` line and checks the target (uncontended library acquire + release within 1.0x of
# raw_flock) on the interleaved ratios. Last, if python3 can import filelock (and
# BENCH_PYTHON is not 0), it times Python's SoftFileLock, SoftFileLease, ReadWriteLock and
# SoftReadWriteLock with scripts/bench_python_soft.py, to set against the soft/* and rw/*
# lines.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp)
trap 'rm -f "$out"' EXIT

# shellcheck disable=SC2086 # BENCH_ARGS is a list of words.
cargo bench --bench acquire -- --warm-up-time 1 --measurement-time 3 ${BENCH_ARGS:-} "$@" \
    | tee "$out"

echo
echo "=== Criterion lines: middle estimate, ratio to the raw loop of the group"
echo "    (measured one after another: on a busy machine, trust the interleaved ratios above)"
LC_ALL=C awk '
function ns(v, u) {
    if (u == "ps") return v / 1000
    if (u == "ns") return v
    if (u == "us" || u == "\302\265s") return v * 1000
    if (u == "ms") return v * 1000000
    if (u == "s") return v * 1000000000
    return -1
}
# A benchmark ID starts a line; its "time:" is on the same line or the next one.
/^[A-Za-z_][^ ]*\/[^ ]*/ && !/^Benchmarking/ { id = $1 }
/time:/ && id != "" {
    line = $0
    sub(/.*time: *\[/, "", line)
    split(line, f, " ")
    t[++n] = id; v[n] = ns(f[3], f[4]); id = ""
}
END {
    for (i = 1; i <= n; i++) {
        split(t[i], p, "/")
        if (p[2] ~ /^raw_/ && !(p[1] in base)) base[p[1]] = v[i]
    }
    printf "%-36s %12s %12s\n", "benchmark", "time", "x group raw"
    for (i = 1; i <= n; i++) {
        split(t[i], p, "/")
        g = (p[1] in base) ? sprintf("%.2f", v[i] / base[p[1]]) : "-"
        printf "%-36s %9.0f ns %12s\n", t[i], v[i], g
    }
}' "$out"

echo
echo "=== target: uncontended acquire + release within 1.0x of uncontended/raw_flock"
echo "    (median of per-round ratios from the interleaved measurement)"
LC_ALL=C awk '
/^  uncontended\/[^ ]+ +[0-9.]+ ns\/op +[0-9.]+x$/ {
    id = $1; ratio = $4; sub(/x$/, "", ratio)
    if (id ~ /\/raw_/ || id ~ /keep_open_false/) next
    printf "%-36s %5.2fx  %s\n", id, ratio, (ratio + 0 <= 1.0) ? "met" : "MISSED"
    found = 1
}
END { if (!found) print "(no interleaved results: was BENCH_INTERLEAVED_ROUNDS=0 or a filter given?)" }
' "$out"

if [ "${BENCH_PYTHON:-1}" != 0 ] && python3 -c 'import filelock' 2>/dev/null; then
    echo
    echo "=== Python filelock soft and read/write locks, for the soft/* and rw/* lines (in us/op; the lines above are in ns)"
    python3 scripts/bench_python_soft.py
fi
