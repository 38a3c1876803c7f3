#!/usr/bin/env bash
# Creates (or updates) the Python virtual environment used by the Python SDK, its tests and the
# Python test connector, and installs sdk/python into it.
#
#   scripts/setup-python.sh VENV
#
# Idempotent and quiet on success (output is shown only when a step fails). The SDK is always
# reinstalled (no deps, no build isolation: a second or two), so the venv follows the sources.
# Pinned versions: keep grpcio and grpcio-tools equal (generated code requires grpcio >= the
# grpcio-tools that generated it).
set -euo pipefail

GRPCIO_VERSION=1.85.1
GRPCIO_TOOLS_VERSION=1.85.1
PROTOBUF_VERSION=7.36.2
CRYPTOGRAPHY_VERSION=50.0.2
PYTEST_VERSION=9.2.0

if [[ $# -ne 1 ]]; then
  echo "usage: $0 VENV" >&2
  exit 2
fi
venv=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The system's Python when there is one: connectors that run as another user (the connector
# sandbox's uid when the tests run as root) must be able to read the interpreter, and a pyenv
# under /root is out of their reach.
if [[ -z "${PYTHON:-}" && -x /usr/bin/python3 ]]; then
  python=/usr/bin/python3
else
  python=${PYTHON:-python3}
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run() {  # run a command quietly; on failure show its output and stop
  if ! "$@" >>"$log" 2>&1; then
    echo "setup-python: failed: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}

# A venv made from another interpreter is made again.
if [[ -f "$venv/pyvenv.cfg" ]] &&
  ! grep -qx "home = $(dirname "$(command -v "$python")")" "$venv/pyvenv.cfg"; then
  rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
  if ! "$python" -m venv "$venv" >>"$log" 2>&1; then
    # Debian's system python needs python3-venv (ensurepip) for this.
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      rm -rf "$venv"
      run env DEBIAN_FRONTEND=noninteractive apt-get update -q
      run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
      run "$python" -m venv "$venv"
    else
      echo "setup-python: '$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
      cat "$log" >&2
      exit 1
    fi
  fi
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input -q)
requirements=(
  "grpcio==$GRPCIO_VERSION"
  "grpcio-tools==$GRPCIO_TOOLS_VERSION"
  "protobuf==$PROTOBUF_VERSION"
  "cryptography==$CRYPTOGRAPHY_VERSION"
  "pytest==$PYTEST_VERSION"
)

# Skip pip's resolver when every pin is already installed (re-runs stay fast and work offline).
pins_ok() {
  "$venv/bin/python" - "$@" <<'PY' 2>/dev/null
import sys
from importlib import metadata
for req in sys.argv[1:]:
    name, _, version = req.partition("==")
    if metadata.version(name) != version:
        sys.exit(1)
metadata.version("setuptools")
PY
}
if ! pins_ok "${requirements[@]}"; then
  run "${pip[@]}" install "${requirements[@]}" setuptools
fi

run "${pip[@]}" install --no-deps --no-build-isolation --force-reinstall "$root/sdk/python"
