#!/usr/bin/env bash
# The README demo: installs what is missing (scripts/bootstrap.sh), builds the CLI and the
# filesystem connector, and syncs a real directory into the private local PostgreSQL that
# `tributary run` starts on demand. Then it shows stored objects, runs again (nothing rewritten:
# every object unchanged), changes the tree (one file added, one edited, one removed), runs a
# third time, and prints where the data is.
#
# Environment:
#   TRIBUTARY_BUILD_DIR   build directory (default build/ci, the `ci` preset that scripts/test.sh
#                         builds too, so the demo and the tests share one build tree)
#   DEMO_DIR              the directory to sync (default: a fresh copy of this repository's lib/
#                         and sdk/ trees under a temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

section() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }
started=${SECONDS}

section "bootstrap and build"
# Configuring the shared `ci` tree needs Go (our machines have it in /usr/local/go), as in
# scripts/test.sh.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="/usr/local/go/bin:${PATH}"
fi
scripts/bootstrap.sh
build="${TRIBUTARY_BUILD_DIR:-build/ci}"
[[ "${build}" == /* ]] || build="${repo}/${build}"
if [[ ! -f "${build}/build.ninja" ]]; then
  cmake --preset ci -B "${build}" >/dev/null
fi
targets=(tributary)
if [[ -f connectors/filesystem/CMakeLists.txt ]]; then
  connector_target=tributary-connector-filesystem
  connector_bin="${build}/connectors/filesystem/tributary-connector-filesystem"
else
  # Until connectors/filesystem lands: the C++ SDK test connector (tests/connectors/README.md).
  connector_target=test_connector_cpp
  connector_bin="${build}/tests/connectors/cpp/test_connector_cpp"
fi
targets+=("${connector_target}")
cmake --build "${build}" -j2 --target "${targets[@]}"
tributary="${build}/cli/tributary"

work="$(mktemp -d /tmp/tributary-demo.XXXXXX)"
chmod 755 "${work}"
trap 'rm -rf "${work}"' EXIT
data="$(realpath -m "${DEMO_DIR:-${work}/tree}")"
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

# The connector sandbox lets a connector read only the system's files and its own: the tree it
# syncs is given explicitly (cli/README.md, "Connector sandbox").
run=("${tributary}" run -f "${work}/demo.yaml" --sandbox-read-only "${data}")

section "the manifests (${work}/demo.yaml)"
cat "${work}/demo.yaml"

section "first run: $(find "${data}" -type f | wc -l) files into the private PostgreSQL"
"${run[@]}"

section "a few stored objects (tributary objects demo-files --limit 5)"
"${tributary}" objects demo-files --limit 5

section "second run: nothing changed, nothing rewritten"
"${run[@]}"

if [[ "${connector_target}" == tributary-connector-filesystem && -z "${DEMO_DIR:-}" ]]; then
  section "change the tree: add a file, edit one, remove one; third run"
  echo "a new file" >"${data}/NEW.txt"
  # Whole listings, then the first entry: `sort | head -n 1` dies of SIGPIPE under pipefail
  # (exit 141) when head exits before sort has written everything.
  mapfile -t markdown < <(find "${data}" -type f -name '*.md' | sort)
  mapfile -t sources < <(find "${data}" -type f -name '*.cc' | sort)
  echo "an edit" >>"${markdown[0]}"
  rm "${sources[0]}"
  "${run[@]}"
  section "what the last run soft-deleted (tributary objects demo-files --state deleted)"
  "${tributary}" objects demo-files --state deleted
fi

section "where the data is"
url="$("${tributary}" db url)"
echo "${url}"
echo "  psql \"${url}\" -c 'SELECT remote_id, state, last_changed FROM tributary.object_versions LIMIT 5'"
echo "  stop the database: ${tributary} db stop"
printf '\ndemo finished in %d s\n' "$((SECONDS - started))"
