#!/usr/bin/env bash
# The end-to-end load generator against a throw-away etcd on loopback.
#   scripts/loadgen.sh [--clients 1,16] [--iterations 200]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
work=$(mktemp -d /tmp/volcore-loadgen.XXXXXX)
trap 'scripts/etcd.sh stop "$work/etcd" || true; rm -rf "$work"' EXIT
VOLCORE_BENCH_ETCD=$(scripts/etcd.sh start "$work/etcd")
export VOLCORE_BENCH_ETCD
cargo run --release --locked -q -p volcore-benches --bin loadgen -- "$@"
