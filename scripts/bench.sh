#!/usr/bin/env bash
# Run the criterion benchmarks with a throw-away etcd on loopback.
#   scripts/bench.sh [criterion args…]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
work=$(mktemp -d /tmp/volcore-bench.XXXXXX)
trap 'scripts/etcd.sh stop "$work/etcd" || true; rm -rf "$work"' EXIT
VOLCORE_BENCH_ETCD=$(scripts/etcd.sh start "$work/etcd")
export VOLCORE_BENCH_ETCD
cargo bench -p volcore-benches --bench kv -- "$@"
