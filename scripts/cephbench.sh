#!/usr/bin/env bash
# Ceph RBD driver benchmark (as root): wall time and spawned processes of create+format,
# mount, unmount, snapshot, clone and destroy on a throw-away one-node cluster.
#   ROUNDS=N scripts/cephbench.sh   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
dir=$(mktemp -d /tmp/vc-cbench.XXXXXX)
trap 'scripts/ceph.sh stop "$dir" || true; rm -rf "$dir"' EXIT
VOLCORE_BENCH_CEPH=$(scripts/ceph.sh start "$dir")
export VOLCORE_BENCH_CEPH
cargo build --release --locked -q -p volcore-benches --bin cephbench
target/release/cephbench
