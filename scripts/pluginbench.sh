#!/usr/bin/env bash
# volplugin benchmarks (as root), against a throw-away etcd: the real binary's
# Mount+Unmount cycles through the socket and RSS idle and with 500 mounts (pluginbench);
# then the plugin in-process with every store round trip counted: Mount+Unmount cycles/s,
# Get, Path and List of 220 volumes p50 (pluginops).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
work=$(mktemp -d /tmp/volcore-pluginbench.XXXXXX)
trap 'scripts/etcd.sh stop "$work/etcd" || true; rm -rf "$work"' EXIT
VOLCORE_BENCH_ETCD=$(scripts/etcd.sh start "$work/etcd")
export VOLCORE_BENCH_ETCD VOLPLUGIN_BIN=$PWD/target/release/volplugin
cargo build --release --locked -q -p volplugin --bin volplugin -p volcore-benches --bin pluginbench --bin pluginops
target/release/pluginbench
RUST_LOG=error target/release/pluginops
