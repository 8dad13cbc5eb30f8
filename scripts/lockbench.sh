#!/usr/bin/env bash
# Runs the cross-process benchmark harness (examples/lockbench.rs) in a release build and
# prints its report: each figure next to a raw flock baseline measured in the same run, next
# to Python filelock when python3 can import it, and the project's performance targets with met/MISSED.
#
#   scripts/lockbench.sh                  # all sections, about 2 minutes on 2 cores
#   scripts/lockbench.sh --quick          # smaller sizes, about 20 s
#   scripts/lockbench.sh wakeup counter   # only these sections (uncontended, counter,
#                                         # wakeup, tasks, cancel, heap)
#
# Installs nothing: Python filelock is optional (scripts/setup installs it), and the OS lock
# attempt count in the tasks section uses strace only if it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release --example lockbench -- "$@"
