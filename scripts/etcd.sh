#!/usr/bin/env bash
# Start or stop a throw-away etcd on free loopback ports.
#   scripts/etcd.sh start DIR   → starts etcd with its data in DIR, prints "127.0.0.1:PORT"
#   scripts/etcd.sh stop DIR    → stops the etcd started with DIR (by its PID file)
set -euo pipefail

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "no free loopback port found" >&2
  return 1
}

cmd=${1:?usage: etcd.sh start|stop DIR}
dir=${2:?usage: etcd.sh start|stop DIR}

case "$cmd" in
  start)
    command -v etcd >/dev/null || { echo "etcd is not installed (apt-get install etcd-server)" >&2; exit 1; }
    mkdir -p "$dir"
    client=$(free_port); peer=$(free_port)
    while [ "$peer" = "$client" ]; do peer=$(free_port); done
    etcd --name volcore-test --data-dir "$dir/data" \
      --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "volcore-test=http://127.0.0.1:$peer" \
      --log-level warn >"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/etcd.pid"
    for _ in $(seq 1 100); do
      if ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$client" endpoint health >/dev/null 2>&1; then
        echo "127.0.0.1:$client"
        exit 0
      fi
      if ! kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null; then
        echo "etcd exited; its log:" >&2; cat "$dir/etcd.log" >&2; exit 1
      fi
      sleep 0.1
    done
    echo "etcd did not become healthy in 10 s; its log:" >&2; cat "$dir/etcd.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/etcd.pid" ]; then
      pid=$(cat "$dir/etcd.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/etcd.pid"
    fi
    ;;
  *) echo "usage: etcd.sh start|stop DIR" >&2; exit 2 ;;
esac
