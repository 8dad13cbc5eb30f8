#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (the on-disk record parsers), each for a given time.
# Not run by CI.
#
#   scripts/fuzz.sh                        # every target, 60 s each
#   scripts/fuzz.sh 360 marker_record      # one target, 6 minutes
#   FUZZ_ARGS="-jobs=2" scripts/fuzz.sh 60 # more libFuzzer flags
#
# cargo fuzz needs nightly compiler features; with a stable toolchain the script sets
# RUSTC_BOOTSTRAP=1 to allow them. cargo-fuzz is installed with `cargo install` if missing.
# Inputs go up to 4096 bytes, past the 1024-byte marker cap, so that target also checks that
# oversized content is refused before anything is parsed. A crash leaves its input under
# fuzz/artifacts/<target>/ and ends the script with libFuzzer's status; replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>` from fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=(marker_record rw_generation rw_holder strict_claim fence_value)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz
fi

cd fuzz
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
    echo "== $target: ${seconds}s"
    # The corpus grows in corpus/<target>; seeds/<target> holds records as writers lay them
    # out, so the fuzzer starts past the parsers' first checks.
    mkdir -p "corpus/$target"
    # shellcheck disable=SC2086
    cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=4096 ${FUZZ_ARGS:-}
done
