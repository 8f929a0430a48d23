#!/usr/bin/env bash
# The supervisor benchmark: 2 000 null-backend volumes on a 1-minute schedule against a
# throw-away etcd; per slot, how late its last snapshot started, the store round trips and
# CPU/RSS (benches/src/bin/supbench.rs). About three minutes.
#   scripts/supbench.sh        SUPBENCH_VOLUMES=N SUPBENCH_SLOTS=K scripts/supbench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
work=$(mktemp -d /tmp/volcore-supbench.XXXXXX)
trap 'scripts/etcd.sh stop "$work/etcd" || true; rm -rf "$work"' EXIT
VOLCORE_BENCH_ETCD=$(scripts/etcd.sh start "$work/etcd")
export VOLCORE_BENCH_ETCD
cargo build --release --locked -q -p volcore-benches --bin supbench
RUST_LOG=${RUST_LOG:-warn} target/release/supbench
