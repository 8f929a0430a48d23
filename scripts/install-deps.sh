#!/usr/bin/env bash
# Install what volcore needs on a Debian machine (idempotent; installs only what is missing).
#   scripts/install-deps.sh run    → what running the system needs
#   scripts/install-deps.sh test   → that plus what the test suite needs (etcd, cargo-fuzz)
set -euo pipefail
what=${1:-test}

if ! command -v cargo >/dev/null; then
  echo "cargo is not installed: install a Rust toolchain (rustup, Rust >= 1.85) first" >&2
  exit 1
fi

apt_pkgs=(protobuf-compiler)           # etcd-client generates its gRPC code with protoc
bins=(protoc)
if [ "$what" = test ]; then
  apt_pkgs+=(etcd-server etcd-client xfsprogs docker.io busybox-static)
  bins+=(etcd etcdctl mkfs.xfs dockerd /bin/busybox)
  # A one-node Ceph cluster (scripts/ceph.sh) and the RBD driver's tools; debugfs reads
  # files out of exported images.
  apt_pkgs+=(ceph-mon ceph-osd ceph-common rbd-fuse uuid-runtime e2fsprogs)
  bins+=(ceph-mon ceph-osd rbd rbd-fuse uuidgen debugfs)
fi
command -v cc >/dev/null || { apt_pkgs+=(build-essential); bins+=(cc); }

missing=0
for b in "${bins[@]}"; do command -v "$b" >/dev/null || missing=1; done
if [ "$missing" = 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "installing: ${apt_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

if [ "$what" = test ] && ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2 --quiet
fi
