#!/usr/bin/env bash
# Installs everything Tributary needs to build and test on Debian 12 (bookworm).
#
# Idempotent: a machine that already has every package is left alone (no `apt-get update`, no
# output but one line), so scripts/test.sh can run it every time. On a fresh machine it must be
# run as root (CI is). Services that come with the packages (postgresql, redis-server, prometheus
# and sshd) are never left running or enabled: our tests start private instances on free loopback
# ports.
#
# Environment:
#   TRIBUTARY_BOOTSTRAP_EXTRA   extra Debian packages to install (space separated)
set -euo pipefail

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

[[ -r /etc/debian_version ]] || die "this script supports Debian 12 only (no /etc/debian_version)"
command -v dpkg-query >/dev/null || die "dpkg-query not found; this script supports Debian 12 only"

# One package per line, grouped by what needs it.
packages=(
  # toolchain and build
  build-essential cmake ninja-build pkg-config git ca-certificates
  # C++ libraries (see cmake/TributaryDeps.cmake)
  libabsl-dev libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libcpprest-dev nlohmann-json3-dev libgit2-dev libhiredis-dev libpq-dev libssl-dev
  googletest libgtest-dev libgmock-dev
  # services the integration tests start privately (tests/harness), promtool for the rules/alerts
  postgresql redis-server prometheus
  # the agent's Redis TLS tunnel (agent/README.md, "Transport security"), tested against a
  # TLS-only Redis
  stunnel4
  # lint
  clang-format clang-tidy
  # Python SDK and test connectors
  python3 python3-venv python3-pip
  # process tools used by tests and scripts (ps/pgrep, runuser, kill, flock)
  procps util-linux
  # tests/kube: the test API server's certificates (scripts/kube-pki.sh)
  openssl
  # lib/installer: archive unpacking (libgit2-dev and libcpprest-dev are listed above); sshd for
  # the ssh:// remote tests (a private instance on a loopback port, never the system service)
  libarchive-dev openssh-server
  # lib/kube: kubeconfig parsing (libyaml); promtool (prometheus, above) checks lib/metrics' output
  libyaml-dev
  # cli: Connector/SyncJob manifests (YAML)
  libyaml-cpp-dev
)

# Go: the Go SDK, the Go test connectors and hosts need Go >= 1.24 (go-plugin v1.8.0 requires it).
# Our machines have Go 1.26 in /usr/local/go; Debian 12's golang-go (1.19) is too old to help.
go_bin="$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)"
[[ -x "${go_bin}" ]] || die "Go >= 1.24 is required and not installed (expected in PATH or /usr/local/go)"
go_minor="$("${go_bin}" env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')"
[[ -n "${go_minor}" && "${go_minor}" -ge 24 ]] ||
  die "Go >= 1.24 is required, found $("${go_bin}" env GOVERSION) at ${go_bin}"

if [[ -n "${TRIBUTARY_BOOTSTRAP_EXTRA:-}" ]]; then
  read -r -a extra <<<"${TRIBUTARY_BOOTSTRAP_EXTRA}"
  packages+=("${extra[@]}")
fi

# Which of them are not installed? One dpkg-query call keeps the fast path fast.
missing_packages() {
  local installed
  installed="$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null |
    awk '$2 == "installed" { print $1 }' || true)"
  local p
  for p in "${packages[@]}"; do
    if ! grep -qxF -- "${p}" <<<"${installed}"; then
      printf '%s\n' "${p}"
    fi
  done
}

mapfile -t missing < <(missing_packages)

if ((${#missing[@]} == 0)); then
  log "all ${#packages[@]} packages present"
  exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
  die "missing packages: ${missing[*]}
  run as root:  sudo $0
  or install them yourself: sudo apt-get install ${missing[*]}"
fi

log "installing ${#missing[@]} package(s): ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=600
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# Keep package maintainer scripts from starting daemons (postgresql, redis, prometheus, ...):
# invoke-rc.d and deb-systemd-invoke both honour policy-rc.d. Installed only if none exists, and
# removed again on exit.
policy=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
  if ((created_policy)); then
    rm -f "${policy}"
  fi
}
trap cleanup EXIT
if [[ ! -e "${policy}" ]]; then
  printf '#!/bin/sh\n# temporary, written by tributary scripts/bootstrap.sh\nexit 101\n' >"${policy}"
  chmod 755 "${policy}"
  created_policy=1
fi

apt_log="$(mktemp /tmp/tributary-bootstrap.XXXXXX.log)"
run_apt() {
  if ! apt-get "${apt_opts[@]}" "$@" >>"${apt_log}" 2>&1; then
    tail -n 40 "${apt_log}" >&2
    die "apt-get $* failed (full log: ${apt_log})"
  fi
}

# Refresh the package lists only now that something is missing (and always before installing:
# a fresh image's lists may be absent or stale).
run_apt update
run_apt install --no-install-recommends "${missing[@]}"

# If a service slipped through (an init system that ignores policy-rc.d), stop and disable the
# ones this run installed: nobody relies on them, and they would hold ports 5432/6379/9090.
services_for() {
  case "$1" in
    postgresql) echo postgresql ;;
    redis-server) echo redis-server ;;
    prometheus) echo prometheus prometheus-node-exporter ;;
    openssh-server) echo ssh ;;
  esac
}
for p in "${missing[@]}"; do
  for svc in $(services_for "${p}"); do
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
      if systemctl is-active --quiet "${svc}" 2>/dev/null ||
        systemctl is-enabled --quiet "${svc}" 2>/dev/null; then
        log "stopping and disabling service ${svc} set up by its package"
        systemctl disable --now --quiet "${svc}" >/dev/null 2>&1 || true
      fi
    else
      if command -v service >/dev/null && service "${svc}" status >/dev/null 2>&1; then
        log "stopping service ${svc} started by its package"
        service "${svc}" stop >/dev/null 2>&1 || true
      fi
      # sysvinit: no start at boot either.
      if [[ -x "/etc/init.d/${svc}" ]] && command -v update-rc.d >/dev/null; then
        update-rc.d "${svc}" disable >/dev/null 2>&1 || true
      fi
    fi
  done
done

mapfile -t still_missing < <(missing_packages)
if ((${#still_missing[@]} > 0)); then
  die "still missing after install: ${still_missing[*]} (log: ${apt_log})"
fi
if ! id -u postgres >/dev/null 2>&1; then
  die "the postgres system user is missing after installing postgresql"
fi
rm -f "${apt_log}"
log "done"
