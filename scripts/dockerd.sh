#!/usr/bin/env bash
# Start or stop a throw-away Docker engine with its own data root, exec root and socket
# (no iptables, no bridge), and import a busybox image built from Debian's busybox-static
# (there is no registry).
#   scripts/dockerd.sh start DIR   → prints the socket path (use DOCKER_HOST=unix://PATH)
#   scripts/dockerd.sh stop DIR
set -euo pipefail
cmd=${1:?usage: dockerd.sh start|stop DIR}
dir=${2:?usage: dockerd.sh start|stop DIR}

case "$cmd" in
  start)
    command -v dockerd >/dev/null || { echo "dockerd is not installed (apt-get install docker.io)" >&2; exit 1; }
    [ -x /bin/busybox ] || { echo "/bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
    mkdir -p "$dir/root" "$dir/exec"
    sock="$dir/docker.sock"
    dockerd --iptables=false --ip-masq=false --bridge=none \
      --data-root "$dir/root" --exec-root "$dir/exec" -H "unix://$sock" --pidfile "$dir/docker.pid" \
      >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 300); do
      if DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; then break; fi
      sleep 0.1
    done
    DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1 || { echo "dockerd did not start; its log:" >&2; tail -30 "$dir/dockerd.log" >&2; exit 1; }
    img="$dir/busybox-root"
    mkdir -p "$img/bin"
    cp /bin/busybox "$img/bin/busybox"
    for t in sh ls cat echo mount df dd sleep true test grep wc time; do ln -sf busybox "$img/bin/$t"; done
    tar -C "$img" -c . | DOCKER_HOST="unix://$sock" docker import - busybox:local >/dev/null
    echo "$sock"
    ;;
  stop)
    if [ -f "$dir/docker.pid" ]; then
      pid=$(cat "$dir/docker.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    # containerd shims started by this engine
    pkill -f "containerd-shim.*$dir" 2>/dev/null || true
    ;;
  *) echo "usage: dockerd.sh start|stop DIR" >&2; exit 2 ;;
esac
