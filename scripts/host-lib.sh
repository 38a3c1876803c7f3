# Shell functions shared by the scripts that set up parts of the test host (docker-daemon.sh,
# kube-dev.sh, kube-node.sh). Sourced, not run.

# apt_install <who> <package...>: installs Debian packages without starting their services (no
# init system runs here; policy-rc.d keeps the package scripts from trying). Needs root.
apt_install() {
  local who=$1
  shift
  [[ $(id -u) == 0 ]] || { echo "$who: needs root to install $*" >&2; return 1; }
  echo "$who: installing $*" >&2
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  local status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null ||
    { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y \
      --no-install-recommends "$@" >/dev/null; } || status=$?
  rm -f /usr/sbin/policy-rc.d
  ((status == 0)) || echo "$who: apt-get install $* failed" >&2
  return "$status"
}

# stop_pid <pid> <seconds>: SIGTERM, up to <seconds> for it to exit, then SIGKILL.
stop_pid() {
  local pid=$1 tenths=$(($2 * 10))
  kill -TERM "$pid" 2>/dev/null || return 0
  while ((tenths-- > 0)) && kill -0 "$pid" 2>/dev/null; do
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}
