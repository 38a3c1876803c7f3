#!/usr/bin/env bash
# The README demo: installs what is missing (scripts/bootstrap.sh), builds the CLI and the
# filesystem connector, and syncs a real directory into the private local PostgreSQL that
# `tributary run` starts on demand. Then it shows stored objects, runs again (nothing rewritten:
# every object unchanged), changes the tree (one file added, one edited, one removed), runs a
# third time, and prints where the data is.
#
# Environment:
#   TRIBUTARY_BUILD_DIR   build directory (default build/dev, preset dev)
#   DEMO_DIR              the directory to sync (default: a fresh copy of this repository's lib/
#                         and sdk/ trees under a temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

section() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }
started=${SECONDS}

section "bootstrap and build"
scripts/bootstrap.sh
build="${TRIBUTARY_BUILD_DIR:-build/dev}"
if [[ ! -f "${build}/build.ninja" ]]; then
  cmake --preset dev -B "${build}" >/dev/null
fi
targets=(tributary)
if [[ -f connectors/filesystem/CMakeLists.txt ]]; then
  connector_target=tributary-connector-filesystem
  connector_bin="${repo}/${build}/connectors/filesystem/tributary-connector-filesystem"
else
  # Until connectors/filesystem lands: the C++ SDK test connector (tests/connectors/README.md).
  connector_target=test_connector_cpp
  connector_bin="${repo}/${build}/tests/connectors/cpp/test_connector_cpp"
fi
targets+=("${connector_target}")
cmake --build "${build}" -j2 --target "${targets[@]}"
tributary="${repo}/${build}/cli/tributary"

work="$(mktemp -d /tmp/tributary-demo.XXXXXX)"
chmod 755 "${work}"
trap 'rm -rf "${work}"' EXIT
data="${DEMO_DIR:-${work}/tree}"
if [[ -z "${DEMO_DIR:-}" ]]; then
  mkdir -p "${data}"
  cp -r lib sdk "${data}/"
fi

# The manifests a user would `kubectl apply`, pointing at the locally built connector.
if [[ "${connector_target}" == tributary-connector-filesystem ]]; then
  options="    root: ${data}
    hash: sha256"
  command=./tributary-connector-filesystem
else
  options="    pages: 3"
  command=./test_connector_cpp
fi
cat >"${work}/demo.yaml" <<YAML
apiVersion: tributary.dev/v1alpha1
kind: Connector
metadata:
  name: files
spec:
  description: Files of a local directory
  source: Local
  uri: ${connector_bin}
  command: ${command}
---
apiVersion: tributary.dev/v1alpha1
kind: SyncJob
metadata:
  name: demo-files
spec:
  connectorRef:
    name: files
  options:
${options}
  deletionPolicy: Mark
YAML

section "the manifests (${work}/demo.yaml)"
cat "${work}/demo.yaml"

section "first run: $(find "${data}" -type f | wc -l) files into the private PostgreSQL"
"${tributary}" run -f "${work}/demo.yaml"

section "a few stored objects (tributary objects demo-files --limit 5)"
"${tributary}" objects demo-files --limit 5

section "second run: nothing changed, nothing rewritten"
"${tributary}" run -f "${work}/demo.yaml"

if [[ "${connector_target}" == tributary-connector-filesystem && -z "${DEMO_DIR:-}" ]]; then
  section "change the tree: add a file, edit one, remove one; third run"
  echo "a new file" >"${data}/NEW.txt"
  edited="$(find "${data}" -type f -name '*.md' | sort | head -n 1)"
  echo "an edit" >>"${edited}"
  removed="$(find "${data}" -type f -name '*.cc' | sort | head -n 1)"
  rm "${removed}"
  "${tributary}" run -f "${work}/demo.yaml"
  section "what the last run soft-deleted (tributary objects demo-files --state deleted)"
  "${tributary}" objects demo-files --state deleted
fi

section "where the data is"
url="$("${tributary}" db url)"
echo "${url}"
echo "  psql \"${url}\" -c 'SELECT remote_id, state, last_changed FROM tributary.object_versions LIMIT 5'"
echo "  stop the database: ${tributary} db stop"
printf '\ndemo finished in %d s\n' "$((SECONDS - started))"
