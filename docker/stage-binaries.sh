#!/usr/bin/env bash
# Stages what the images take from a build: OUT/bin/{tributary,tributary-controller,
# tributary-agent,tributary-git-helper} (stripped; the helper runs VCS fetches for the agent and
# the CLI, which look for it next to themselves), OUT/packages/<binary> (the Debian packages that hold the shared
# libraries each binary loads, from ldd + dpkg -S: what its image installs), OUT/python/ (the
# Python SDK's wheel, for connectors' venvs) and OUT/downloads/ (empty: docker/build.sh may seed
# it with the Go toolchain zip).
#
#   stage-binaries.sh BUILD_DIR SOURCE_DIR OUT_DIR [PYTHON]
#
# Used by the Dockerfile's source stage and, on the host, by docker/build.sh --prebuilt (same
# Debian release, so the package names are the image's). PYTHON (default python3) builds the
# wheel: with build isolation unless it already has setuptools and grpcio-tools.
set -euo pipefail
if [[ $# -lt 3 || $# -gt 4 ]]; then
  echo "usage: $0 BUILD_DIR SOURCE_DIR OUT_DIR [PYTHON]" >&2
  exit 2
fi
build=$1 src=$2 out=$3 python=${4:-python3}
mkdir -p "$out/bin" "$out/packages" "$out/python" "$out/downloads"
for target in cli/tributary controller/tributary-controller agent/tributary-agent \
  lib/installer/tributary-git-helper; do
  name=$(basename "$target")
  install -m 0755 "$build/$target" "$out/bin/$name"
  strip --strip-unneeded "$out/bin/$name"
  # Every shared library the binary loads → the package that owns it (merged /usr: look the
  # file up by name under both prefixes).
  ldd "$out/bin/$name" | awk '/=> \// { print $3 }' | while read -r lib; do
    dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "*/$(basename "$lib")" 2>/dev/null | head -1 ||
      { echo "stage-binaries.sh: no package owns $lib (needed by $name)" >&2; exit 1; }
  done | cut -d: -f1 | sort -u >"$out/packages/$name"
done
if "$python" -c 'import setuptools, grpc_tools' 2>/dev/null; then
  "$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$out/python" "$src/sdk/python"
else
  "$python" -m pip wheel --quiet --no-deps -w "$out/python" "$src/sdk/python"
fi
