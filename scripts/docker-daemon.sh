#!/usr/bin/env bash
# A private Docker engine for building our images on a machine without one (Debian's docker.io),
# and a Debian base image made without a registry (debootstrap).
#
#   docker-daemon.sh start        install docker.io + debootstrap if missing, start dockerd on
#                                 $TRIBUTARY_DOCKER_SOCKET; prints DOCKER_HOST=unix://...
#   docker-daemon.sh base-image   import debian:bookworm-slim's stand-in (a debootstrap minbase
#                                 rootfs, cached) unless the daemon has it; prints its name
#   docker-daemon.sh stop         stop that dockerd (and the containerd it started)
#
# The daemon has no bridge, no iptables/NAT rules and no IP forwarding (nothing on the host
# changes); builds use the host network. Its data root is in the cache directory, so image
# layers and the build cache survive between runs:
#   ${TRIBUTARY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tributary}/docker/
# The base rootfs is cached as images/debian-bookworm-minbase-<debootstrap version>.tar there.
set -euo pipefail

cache=${TRIBUTARY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tributary}
socket=${TRIBUTARY_DOCKER_SOCKET:-/run/tributary-docker.sock}
run_dir=/run/tributary-docker
base_image=tributary.local/debian:bookworm-minbase
docker=/usr/bin/docker
export DOCKER_HOST=unix://$socket
# shellcheck source=host-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/host-lib.sh"

die() {
  echo "docker-daemon.sh: $*" >&2
  exit 1
}

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  ((${#missing[@]})) || return 0
  apt_install docker-daemon.sh "${missing[@]}" || exit 1
}

running() { "$docker" version >/dev/null 2>&1; }

start() {
  install_packages
  if running; then
    echo "DOCKER_HOST=$DOCKER_HOST"
    return
  fi
  mkdir -p "$cache/docker" "$run_dir"
  dockerd --data-root "$cache/docker" --exec-root "$run_dir/exec" --pidfile "$run_dir/dockerd.pid" \
    -H "unix://$socket" --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
    --ip-masq=false --storage-driver=overlay2 >"$run_dir/dockerd.log" 2>&1 &
  for _ in $(seq 1 120); do
    running && { echo "DOCKER_HOST=$DOCKER_HOST"; return; }
    sleep 0.5
  done
  tail -20 "$run_dir/dockerd.log" >&2
  die "dockerd did not answer on $socket within 60 s"
}

stop() {
  [[ -r $run_dir/dockerd.pid ]] || return 0
  stop_pid "$(cat "$run_dir/dockerd.pid")" 30
  rm -f "$run_dir/dockerd.pid"
}

base() {
  running || die "dockerd is not running (docker-daemon.sh start)"
  if "$docker" image inspect "$base_image" >/dev/null 2>&1; then
    echo "$base_image"
    return
  fi
  local version tarball
  version=$(dpkg-query -W -f '${Version}' debootstrap)
  tarball=$cache/images/debian-bookworm-minbase-$version.tar
  if [[ ! -s $tarball ]]; then
    mkdir -p "$cache/images"
    local rootfs
    rootfs=$(mktemp -d "$cache/images/.rootfs.XXXXXX")
    echo "docker-daemon.sh: debootstrap --variant=minbase bookworm (once; cached)" >&2
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$rootfs.log" 2>&1 ||
      { tail -20 "$rootfs.log" >&2; rm -rf "$rootfs" "$rootfs.log"; die "debootstrap failed"; }
    # What debian:bookworm-slim also leaves out: caches and logs.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
    echo 'deb http://deb.debian.org/debian-security bookworm-security main' >>"$rootfs/etc/apt/sources.list"
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs" "$rootfs.log"
  fi
  "$docker" import "$tarball" "$base_image" >/dev/null
  echo "$base_image"
}

case ${1:-} in
start) start ;;
stop) stop ;;
base-image) base ;;
*) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
