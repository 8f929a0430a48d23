#!/usr/bin/env bash
# A throw-away one-node Ceph cluster for RBD tests: one mon and one memstore OSD on
# 127.0.0.1, no mgr, cephx, pool "rbd" initialised (recipe: shared/reference/ceph-micro.md).
#   scripts/ceph.sh start DIR   → starts it (DIR must be empty, missing, or one of ours);
#                                 prints DIR/ceph.conf; DIR/env has CEPH_CONF and the mon
#   scripts/ceph.sh stop DIR    → stops every daemon and rbd-fuse started with DIR
# Needs ceph-mon ceph-osd ceph-common rbd-fuse (scripts/install-deps.sh test installs them).
# Keep DIR short (admin sockets live in DIR/run; unix socket paths are limited to ~100 bytes).
set -euo pipefail

cmd=${1:?usage: ceph.sh start|stop DIR}
dir=${2:?usage: ceph.sh start|stop DIR}
osd_mb=${CEPH_OSD_SIZE_MB:-3072}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop() {
  local d=$1
  [ -f "$d/.ceph-micro" ] || return 0
  # Filesystems and loop devices on top of rbd-fuse files of this cluster, then the fuse
  # mounts, then the daemons (OSD first, mon 0.3 s later, so the OSD can say goodbye).
  local conf="$d/ceph.conf" pid mp loop
  for pid in $(pgrep -x rbd-fuse || true); do
    if { tr '\0' '\n' <"/proc/$pid/cmdline"; tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null |
        grep -q -- "$conf"; then
      mp=$(tr '\0' '\n' <"/proc/$pid/cmdline" | tail -n 1)
      # Loop devices on this fuse mount's files, and what is mounted from them.
      for loop in $(losetup -n -O NAME,BACK-FILE 2>/dev/null | awk -v m="$mp/" 'index($2, m) == 1 {print $1}'); do
        findmnt -rn -S "$loop" -o TARGET 2>/dev/null | while read -r t; do umount -l "$t" || true; done
        losetup -d "$loop" 2>/dev/null || true
      done
      umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  if [ -f "$d/run/osd.0.pid" ]; then kill -TERM "$(cat "$d/run/osd.0.pid")" 2>/dev/null || true; fi
  sleep 0.3
  if [ -f "$d/run/mon.a.pid" ]; then kill -TERM "$(cat "$d/run/mon.a.pid")" 2>/dev/null || true; fi
  for f in "$d/run/osd.0.pid" "$d/run/mon.a.pid"; do
    [ -f "$f" ] || continue
    local pid; pid=$(cat "$f")
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

case "$cmd" in
  start)
    for b in ceph-mon ceph-osd ceph ceph-authtool monmaptool rbd uuidgen; do
      command -v "$b" >/dev/null || { echo "$b is not installed (scripts/install-deps.sh test installs Ceph)" >&2; exit 1; }
    done
    if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ] && [ ! -f "$dir/.ceph-micro" ]; then
      echo "$dir is not empty and was not made by ceph.sh; refusing to touch it" >&2; exit 1
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    touch "$dir/.ceph-micro"
    exec 9>"$dir/.lock"; flock 9
    # Already running and answering: nothing to do.
    if [ -f "$dir/env" ] && timeout 5 rbd -c "$dir/ceph.conf" ls rbd >/dev/null 2>&1; then
      echo "$dir/ceph.conf"; exit 0
    fi
    stop "$dir"
    find "$dir" -mindepth 1 -maxdepth 1 ! -name .ceph-micro ! -name .lock -exec rm -rf {} +
    mkdir -p "$dir"/{mon,osd,run,log}
    port=
    for _ in $(seq 1 200); do
      p=$(( 20000 + (RANDOM % 15000) * 2 ))
      if port_free "$p" && port_free $((p + 1)); then port=$p; break; fi
    done
    [ -n "$port" ] || { echo "no free loopback port pair" >&2; exit 1; }
    user_args=()
    if [ "$(id -u)" -eq 0 ] && id ceph >/dev/null 2>&1; then
      user_args=(--setuser ceph --setgroup ceph)
    fi
    fsid=$(uuidgen)
    cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port,v1:127.0.0.1:$((port + 1))]
public addr = 127.0.0.1
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = $dir/run
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
mon mgr mkfs grace = 315360000
# v2 clones need no snapshot protection.
rbd default clone format = 2
[client]
keyring = $dir/ceph.client.admin.keyring
[mon]
mon data = $dir/mon
paxos propose interval = 0.05
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
[osd]
osd data = $dir/osd
osd objectstore = memstore
memstore device bytes = $((osd_mb * 1024 * 1024))
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
EOF
    {
      ceph-authtool --create-keyring "$dir/seed.keyring" --gen-key -n mon. --cap mon 'allow *'
      ceph-authtool --create-keyring "$dir/ceph.client.admin.keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *'
      ceph-authtool --create-keyring "$dir/osd/keyring" --gen-key -n osd.0 \
        --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd'
      ceph-authtool "$dir/seed.keyring" --import-keyring "$dir/ceph.client.admin.keyring"
      ceph-authtool "$dir/seed.keyring" --import-keyring "$dir/osd/keyring"
      monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port,v1:127.0.0.1:$((port + 1))]" "$dir/monmap"
    } >"$dir/log/setup.log" 2>&1
    [ ${#user_args[@]} -eq 0 ] || chown -R ceph:ceph "$dir"
    chmod 0644 "$dir/ceph.client.admin.keyring"
    fail() { echo "ceph.sh: $1; logs in $dir/log" >&2; tail -n 20 "$dir"/log/*.log >&2 || true; stop "$dir"; exit 1; }
    ceph-mon -c "$dir/ceph.conf" "${user_args[@]}" --mkfs -i a --monmap "$dir/monmap" \
      --keyring "$dir/seed.keyring" >>"$dir/log/setup.log" 2>&1 || fail "ceph-mon --mkfs failed"
    ceph-mon -c "$dir/ceph.conf" "${user_args[@]}" -i a 9>&- >>"$dir/log/setup.log" 2>&1 || fail "ceph-mon did not start"
    export CEPH_CONF="$dir/ceph.conf"
    ok=
    for _ in $(seq 1 100); do
      if timeout 5 ceph health >/dev/null 2>&1; then ok=1; break; fi
      sleep 0.1
    done
    [ -n "$ok" ] || fail "the mon did not answer within 10 s"
    # "rbd" and a second pool "test" (volplugin's multi-pool scenario), created before the
    # OSD boots so their PGs are made as soon as it is up.
    for pool in rbd test; do
      timeout 30 ceph osd pool create "$pool" 8 8 replicated >>"$dir/log/setup.log" 2>&1 || fail "pool create $pool failed"
    done
    uuid=$(uuidgen)
    timeout 30 ceph osd new "$uuid" 0 >>"$dir/log/setup.log" 2>&1 || fail "osd new failed"
    [ ${#user_args[@]} -eq 0 ] || chown -R ceph:ceph "$dir/osd"
    ceph-osd -c "$dir/ceph.conf" "${user_args[@]}" -i 0 --mkfs --osd-uuid "$uuid" >>"$dir/log/setup.log" 2>&1 || fail "ceph-osd --mkfs failed"
    ceph-osd -c "$dir/ceph.conf" "${user_args[@]}" -i 0 9>&- >>"$dir/log/setup.log" 2>&1 || fail "ceph-osd did not start"
    for pool in rbd test; do
      timeout 60 rbd pool init "$pool" >>"$dir/log/setup.log" 2>&1 || fail "rbd pool init $pool did not finish within 60 s"
    done
    cat >"$dir/env" <<EOF
CEPH_CONF=$dir/ceph.conf
CEPH_MON_HOST=127.0.0.1:$port
EOF
    echo "$dir/ceph.conf"
    ;;
  stop)
    [ -d "$dir" ] || exit 0
    stop "$(cd "$dir" && pwd)"
    ;;
  *) echo "usage: ceph.sh start|stop DIR" >&2; exit 2 ;;
esac
