#!/usr/bin/env bash
# Builds the Go test fixtures into OUTDIR (created if needed):
#   connector-go-v1_4, connector-go-v1_6, connector-go-v1_8   test connectors (tests/connectors/go)
#   gohost-v1_6, gohost-v1_8                                  stock go-plugin hosts (tests/gohost)
#   hello-go                                                  the SDK example (sdk/go/examples/hello)
# after generating the SDK's protobuf code (sdk/go/generate.sh). Each binary is checked to link
# the go-plugin version its module pins (Go's minimal version selection could raise it silently).
#
# Idempotent and cheap to re-run: Go's build and module caches make an unchanged build take
# seconds. Prints one line per built binary and nothing else on success; on failure, the
# failing step's output and a non-zero exit status.
#
# Environment: GO (go binary, default `go`), TRIBUTARY_CACHE (see sdk/go/generate.sh).
# Needs network access to the Go module proxy only when the module cache lacks a dependency.
set -euo pipefail

if [[ $# -ne 1 || -z $1 ]]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
go=${GO:-go}
mkdir -p "$1"
out=$(cd "$1" && pwd)

# Module-mode builds of exactly the committed go.mod/go.sum files, whatever the caller's setup.
export GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"

log=$(mktemp)
trap 'rm -f "$log"' EXIT

run_quiet() { # <description> <command...>: run, show the output only on failure
  local what=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    echo "build-go.sh: $what failed:" >&2
    cat "$log" >&2
    exit 1
  fi
}

run_quiet "sdk/go/generate.sh" "$root/sdk/go/generate.sh"

go_build_in() { # <module dir> <output> <package>
  (cd "$1" && "$go" build -trimpath -o "$2" "$3")
}

# build <module dir relative to the repo root> <binary name> <package> [go-plugin version]
build() {
  local dir=$1 name=$2 pkg=$3 want=${4:-}
  run_quiet "go build $name" go_build_in "$root/$dir" "$out/$name" "$pkg"
  if [[ -n $want ]]; then
    local got
    got=$("$go" version -m "$out/$name" | awk '$1 == "dep" && $2 == "github.com/hashicorp/go-plugin" { print $3 }')
    if [[ $got != "$want" ]]; then
      echo "build-go.sh: $name links github.com/hashicorp/go-plugin ${got:-(none)}, want $want" >&2
      exit 1
    fi
  fi
  echo "$out/$name"
}

build tests/connectors/go/v1_4 connector-go-v1_4 . v1.4.10
build tests/connectors/go/v1_6 connector-go-v1_6 . v1.6.3
build tests/connectors/go/v1_8 connector-go-v1_8 . v1.8.0
build tests/gohost/v1_6 gohost-v1_6 . v1.6.3
build tests/gohost/v1_8 gohost-v1_8 . v1.8.0
build sdk/go hello-go ./examples/hello
