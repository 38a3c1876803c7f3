#!/usr/bin/env bash
# Generates the Go protobuf/gRPC code for the connector protocol into sdk/go/proto/.
#
# Inputs: proto/connector.proto (never edited here; its Go package is set with M options).
# Tools:  Debian's /usr/bin/protoc (override with PROTOC) and protoc-gen-go / protoc-gen-go-grpc
#         installed with `go install` at the pinned versions below into
#         ${TRIBUTARY_CACHE:-$HOME/.cache/tributary}/gobin-<versions>.
# The generated *.pb.go files are build products: they are gitignored and never committed.
# Idempotent and quiet: files are only rewritten when their content changes, and nothing is
# printed on success.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.6
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1
GO_PACKAGE=tributary.dev/sdk/go/proto

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
protoc=${PROTOC:-/usr/bin/protoc}
go=${GO:-go}

cache=${TRIBUTARY_CACHE:-$HOME/.cache/tributary}
gobin="$cache/gobin-protoc-gen-go-$PROTOC_GEN_GO_VERSION-grpc-$PROTOC_GEN_GO_GRPC_VERSION"

if [[ ! -x $protoc ]]; then
  echo "generate.sh: protoc not found at $protoc (apt-get install protobuf-compiler, or set PROTOC)" >&2
  exit 1
fi

log=$(mktemp)
tmp=$(mktemp -d)
trap 'rm -rf "$log" "$tmp"' EXIT

install_tool() { # <binary> <package>@<version>
  if [[ -x $gobin/$1 ]]; then
    return
  fi
  mkdir -p "$gobin"
  # Install into a temporary GOBIN first so an interrupted install never leaves a broken tool.
  if ! (cd "$tmp" && GOWORK=off GOFLAGS='' GOBIN="$tmp/bin" "$go" install "$2") >"$log" 2>&1; then
    echo "generate.sh: go install $2 failed:" >&2
    cat "$log" >&2
    exit 1
  fi
  mv -f "$tmp/bin/$1" "$gobin/$1"
}

install_tool protoc-gen-go "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
install_tool protoc-gen-go-grpc "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"

mkdir -p "$tmp/out"
# Relative paths from the repository root keep the generated "source:" comments stable.
if ! (cd "$root" && "$protoc" \
  --plugin=protoc-gen-go="$gobin/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$gobin/protoc-gen-go-grpc" \
  -I proto \
  --go_out="$tmp/out" --go_opt=paths=source_relative --go_opt=Mconnector.proto="$GO_PACKAGE" \
  --go-grpc_out="$tmp/out" --go-grpc_opt=paths=source_relative --go-grpc_opt=Mconnector.proto="$GO_PACKAGE" \
  proto/connector.proto) >"$log" 2>&1; then
  echo "generate.sh: protoc failed:" >&2
  cat "$log" >&2
  exit 1
fi

mkdir -p "$here/proto"
for f in connector.pb.go connector_grpc.pb.go; do
  if [[ ! -f $tmp/out/$f ]]; then
    echo "generate.sh: protoc did not produce $f" >&2
    exit 1
  fi
  if ! cmp -s "$tmp/out/$f" "$here/proto/$f"; then
    mv -f "$tmp/out/$f" "$here/proto/$f"
  fi
done
