#!/usr/bin/env bash
# Runs the etcd benchmark (examples/etcdbench.rs) in a release build: EtcdLock's uncontended
# acquire + release and hand-over latency against a local single-node etcd, next to a raw
# etcd loop written with the same client (the floor), in the same run.
#
#   scripts/etcdbench.sh                          # starts its own etcd, about 30 s
#   scripts/etcdbench.sh --quick                  # fewer operations, about 10 s
#   scripts/etcdbench.sh --endpoint http://host:2379   # against a running cluster
#
# Needs an `etcd` binary on PATH (or in $ETCD_BIN) unless --endpoint is given; scripts/setup
# installs one, and protoc, which building the `etcd` feature needs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release --features etcd --example etcdbench -- "$@"
