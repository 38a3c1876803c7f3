#!/usr/bin/env bash
# Runs all of Tributary's tests: installs what is missing (scripts/bootstrap.sh), configures the
# `ci` preset (Ninja, RelWithDebInfo, warnings are errors, build dir build/ci), builds with -j2 and
# runs ctest. Extra arguments go to ctest, e.g. `./scripts/test.sh -R harness` or `-L integration`.
#
# Tests labelled `serial` never run next to other tests: they run first, one at a time, then all
# the others in parallel, so the output ends with ctest's summary of that (largest) group.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Go 1.26 lives in /usr/local/go on our machines; make sure the build finds it.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="/usr/local/go/bin:${PATH}"
fi

step() { printf '\n==> %s\n' "$*"; }

step "bootstrap"
bash scripts/bootstrap.sh

step "configure (preset ci)"
cmake --preset ci

step "build"
cmake --build build/ci -j2

count_tests() {
  ctest --test-dir build/ci -N "$@" | awk '/^Total Tests:/ { print $3 }'
}
serial_count="$(count_tests -L serial "$@")"
other_count="$(count_tests -LE serial "$@")"
ctest_args=(--test-dir build/ci --output-on-failure --no-tests=error)

status=0
if ((serial_count > 0)); then
  step "test: ${serial_count} serial test(s), one at a time"
  ctest "${ctest_args[@]}" -L serial "$@" || status=$?
  if ((other_count == 0)); then
    exit "${status}"
  fi
  step "test: ${other_count} other test(s), in parallel"
  ctest "${ctest_args[@]}" -j2 -LE serial "$@" || status=$?
  if ((status != 0)); then
    printf '\nsome tests failed (see both ctest runs above)\n' >&2
  fi
  exit "${status}"
fi

step "test"
ctest "${ctest_args[@]}" -j2 "$@"
