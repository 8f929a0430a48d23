#!/usr/bin/env bash
# Start or stop a throw-away etcd on free loopback ports.
#   scripts/etcd.sh start DIR   → starts etcd with its data in DIR, prints "127.0.0.1:PORT"
#   scripts/etcd.sh stop DIR    → stops the etcd (or cluster) started with DIR (by PID files)
#   scripts/etcd.sh cluster DIR → starts a three-member cluster (members DIR/m0..m2, each
#                                 with etcd.pid and its command line in cmd), prints the
#                                 client endpoints "127.0.0.1:A,127.0.0.1:B,127.0.0.1:C"
#   scripts/etcd.sh restart-member DIR I → starts member I again (after it was killed)
#   scripts/etcd.sh start-tls DIR CA CERT KEY → etcd serving TLS with client-certificate
#                                 auth (its certificate CERT/KEY, clients signed by CA),
#                                 prints "127.0.0.1:PORT"; health is checked with CERT/KEY
set -euo pipefail

free_port() {
  local p
  for _ in $(seq 1 200); do
    # Below Linux's ephemeral range (32768+), where an outgoing connection could hold it.
    p=$(( 20000 + RANDOM % 12000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "no free loopback port found" >&2
  return 1
}

cmd=${1:?usage: etcd.sh start|stop|cluster DIR}
dir=${2:?usage: etcd.sh start|stop|cluster DIR}

healthy() {
  ETCDCTL_API=3 etcdctl --endpoints "$1" --command-timeout 1s endpoint health >/dev/null 2>&1
}

# Starts member $1 of the cluster in $dir from its saved command line.
run_member() {
  local m="$dir/m$1"
  bash -c "exec $(cat "$m/cmd")" >>"$m/etcd.log" 2>&1 &
  echo $! >"$m/etcd.pid"
}

# Waits (10 s at most) for the single etcd started in $dir to answer at ENDPOINT (with
# etcdctl's extra flags), then prints its host:port and exits; exits 1 with its log if not.
await_single() {
  local endpoint=$1; shift
  for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints "$endpoint" "$@" endpoint health >/dev/null 2>&1; then
      echo "${endpoint#https://}"
      exit 0
    fi
    if ! kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null; then
      echo "etcd exited; its log:" >&2; cat "$dir/etcd.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "etcd at $endpoint did not become healthy in 10 s; its log:" >&2; cat "$dir/etcd.log" >&2
  exit 1
}

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
    await_single "127.0.0.1:$client"
    ;;
  start-tls)
    ca=${3:?usage: etcd.sh start-tls DIR CA CERT KEY}; cert=${4:?}; key=${5:?}
    command -v etcd >/dev/null || { echo "etcd is not installed (apt-get install etcd-server)" >&2; exit 1; }
    mkdir -p "$dir"
    client=$(free_port); peer=$(free_port)
    while [ "$peer" = "$client" ]; do peer=$(free_port); done
    etcd --name volcore-tls --data-dir "$dir/data" \
      --listen-client-urls "https://127.0.0.1:$client" --advertise-client-urls "https://127.0.0.1:$client" \
      --cert-file "$cert" --key-file "$key" --trusted-ca-file "$ca" --client-cert-auth \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "volcore-tls=http://127.0.0.1:$peer" \
      --log-level warn >"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/etcd.pid"
    await_single "https://127.0.0.1:$client" --cacert "$ca" --cert "$cert" --key "$key"
    ;;
  cluster)
    command -v etcd >/dev/null || { echo "etcd is not installed (apt-get install etcd-server)" >&2; exit 1; }
    # A port taken between the probe and the bind fails a member: start again on new ports.
    for attempt in 1 2 3; do
      ports=()
      while [ "${#ports[@]}" -lt 6 ]; do
        p=$(free_port)
        case " ${ports[*]:-} " in *" $p "*) ;; *) ports+=("$p") ;; esac
      done
      initial="m0=http://127.0.0.1:${ports[3]},m1=http://127.0.0.1:${ports[4]},m2=http://127.0.0.1:${ports[5]}"
      endpoints=""
      for i in 0 1 2; do
        m="$dir/m$i"; rm -rf "$m"; mkdir -p "$m"
        c=${ports[$i]}; pp=${ports[$((i + 3))]}
        echo "etcd --name m$i --data-dir $m/data --listen-client-urls http://127.0.0.1:$c --advertise-client-urls http://127.0.0.1:$c --listen-peer-urls http://127.0.0.1:$pp --initial-advertise-peer-urls http://127.0.0.1:$pp --initial-cluster $initial --initial-cluster-state new --initial-cluster-token volcore-test-$attempt --heartbeat-interval 100 --election-timeout 1000 --log-level warn" >"$m/cmd"
        echo "127.0.0.1:$c" >"$m/endpoint"
        run_member "$i"
        endpoints="${endpoints:+$endpoints,}127.0.0.1:$c"
      done
      for _ in $(seq 1 150); do
        if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" --command-timeout 1s endpoint health >/dev/null 2>&1; then
          echo "$endpoints"
          exit 0
        fi
        dead=0
        for i in 0 1 2; do kill -0 "$(cat "$dir/m$i/etcd.pid")" 2>/dev/null || dead=1; done
        [ "$dead" = 1 ] && break
        sleep 0.1
      done
      echo "etcd cluster attempt $attempt failed; its logs:" >&2
      grep -h -E ' C \| |bind' "$dir"/m*/etcd.log >&2 || true
      for i in 0 1 2; do kill -9 "$(cat "$dir/m$i/etcd.pid")" 2>/dev/null || true; done
      sleep 0.5
    done
    echo "the etcd cluster did not become healthy" >&2
    exit 1
    ;;
  restart-member)
    i=${3:?usage: etcd.sh restart-member DIR I}
    run_member "$i"
    for _ in $(seq 1 150); do
      healthy "$(cat "$dir/m$i/endpoint")" && exit 0
      sleep 0.1
    done
    echo "member m$i did not become healthy in 15 s; its log:" >&2; cat "$dir/m$i/etcd.log" >&2
    exit 1
    ;;
  stop)
    for pidf in "$dir"/m*/etcd.pid; do
      [ -f "$pidf" ] || continue
      pid=$(cat "$pidf")
      kill -CONT "$pid" 2>/dev/null || true
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$pidf"
    done
    if [ -f "$dir/etcd.pid" ]; then
      pid=$(cat "$dir/etcd.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/etcd.pid"
    fi
    ;;
  *) echo "usage: etcd.sh start|start-tls|stop|cluster|restart-member DIR" >&2; exit 2 ;;
esac
