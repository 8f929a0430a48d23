#!/usr/bin/env bash
# Install what volcore needs on a Debian machine (idempotent; installs only what is missing).
#   scripts/install-deps.sh run    → what building and running the system needs
#   scripts/install-deps.sh test   → that plus what the test suite needs
# Each package is checked by a file it ships, not by a command on PATH: a header such as
# protobuf's descriptor.proto has no command, and a binary found elsewhere on PATH proves
# nothing about the package. SCRIPT_CHECK_ONLY=1 only reports what is missing (exit 1).
set -euo pipefail
what=${1:-test}
case "$what" in run|test) ;; *) echo "usage: install-deps.sh run|test" >&2; exit 2 ;; esac

if ! command -v cargo >/dev/null; then
  echo "cargo is not installed: install a Rust toolchain (rustup, Rust >= 1.89) first" >&2
  exit 1
fi

# package  file-it-ships  (why)
run_pkgs=(
  "build-essential /usr/bin/cc"                              # crates that build C (ring, zstd)
  "protobuf-compiler /usr/bin/protoc"                        # etcd-client generates its gRPC code
  "libprotobuf-dev /usr/include/google/protobuf/descriptor.proto"  # …and imports the well-known types
  "git /usr/bin/git"                                         # the build records its commit (/v1/info)
  "mount /usr/sbin/losetup"                                  # loop devices (local and Ceph fuse attach)
  "mount /usr/bin/mount"
  "util-linux /usr/sbin/fsfreeze"                            # local snapshots freeze the filesystem
  "util-linux /usr/bin/findmnt"
  "e2fsprogs /usr/sbin/mkfs.ext4"                            # the default policy formats ext4
  "coreutils /usr/bin/timeout"
)
test_pkgs=(
  "procps /usr/bin/pgrep"                                    # tests find and signal their daemons
  "procps /usr/bin/pkill"
  "procps /usr/bin/kill"
  "util-linux /usr/bin/flock"                                # scripts/ceph.sh
  "xfsprogs /usr/sbin/mkfs.xfs"                              # driver suites on xfs
  "etcd-server /usr/bin/etcd"                                # the real etcd of the KV and e2e suites
  "etcd-client /usr/bin/etcdctl"
  "docker.io /usr/sbin/dockerd"                              # the real Docker engine
  "docker.io /usr/bin/docker"
  "containerd /usr/bin/containerd"
  "runc /usr/sbin/runc"
  "busybox-static /bin/busybox"                              # the container image (no registry)
  "ceph-mon /usr/bin/ceph-mon"                               # the one-node Ceph cluster
  "ceph-base /usr/bin/ceph-authtool"
  "ceph-base /usr/bin/monmaptool"
  "ceph-osd /usr/bin/ceph-osd"
  "ceph-common /usr/bin/ceph"                                # the RBD driver's CLIs
  "ceph-common /usr/bin/rbd"
  "rbd-fuse /usr/bin/rbd-fuse"                               # block access without kernel modules
  "uuid-runtime /usr/bin/uuidgen"
  "e2fsprogs /usr/sbin/debugfs"                              # reads files out of exported images
  "python3-venv /usr/share/doc/python3-venv/copyright"       # schemathesis runs in a virtualenv
)

want=("${run_pkgs[@]}")
[ "$what" = test ] && want+=("${test_pkgs[@]}")

missing_pkgs=()
for entry in "${want[@]}"; do
  read -r pkg file <<<"$entry"
  if [ ! -e "$file" ]; then
    echo "missing: $file (package $pkg)"
    [[ " ${missing_pkgs[*]-} " == *" $pkg "* ]] || missing_pkgs+=("$pkg")
  fi
done

if [ "${#missing_pkgs[@]}" -gt 0 ]; then
  if [ "${SCRIPT_CHECK_ONLY:-}" = 1 ]; then exit 1; fi
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "installing: ${missing_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
  still=0
  for entry in "${want[@]}"; do
    read -r pkg file <<<"$entry"
    [ -e "$file" ] || { echo "still missing after install: $file (package $pkg)" >&2; still=1; }
  done
  [ "$still" = 0 ] || exit 1
fi

# The toolchain's own parts the suite uses.
if [ "$what" = test ]; then
  for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
      [ "${SCRIPT_CHECK_ONLY:-}" = 1 ] && { echo "missing: rust component $comp"; exit 1; }
      echo "installing rust component $comp"
      rustup component add "$comp"
    fi
  done
  fuzz_bin="${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz"
  if [ ! -x "$fuzz_bin" ]; then
    [ "${SCRIPT_CHECK_ONLY:-}" = 1 ] && { echo "missing: $fuzz_bin (cargo install cargo-fuzz)"; exit 1; }
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2 --quiet
  fi
fi
