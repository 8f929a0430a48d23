#!/usr/bin/env bash
# volplugin benchmark (as root): Mount+Unmount cycles through the socket, RSS idle and
# with 500 mounts, against a throw-away etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
work=$(mktemp -d /tmp/volcore-pluginbench.XXXXXX)
trap 'scripts/etcd.sh stop "$work/etcd" || true; rm -rf "$work"' EXIT
VOLCORE_BENCH_ETCD=$(scripts/etcd.sh start "$work/etcd")
export VOLCORE_BENCH_ETCD VOLPLUGIN_BIN=$PWD/target/release/volplugin
cargo build --release --locked -q -p volcore-daemons --bin volplugin -p volcore-benches --bin pluginbench
target/release/pluginbench
