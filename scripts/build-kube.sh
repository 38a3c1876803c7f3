#!/usr/bin/env bash
# Builds the real Kubernetes binaries our tests run against, from the Go module proxy (no release
# downloads):
#   kube-apiserver  v1.34.4   k8s.io/kubernetes/cmd/kube-apiserver  (wrapper: tests/kube/gomod/kubernetes)
#   kubectl         v1.34.4   k8s.io/kubernetes/cmd/kubectl         (same wrapper module)
#   kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#                   v1.34.4   k8s.io/kubernetes/cmd/<name>          (wrapper: tests/kube/gomod/
#                                                                   kubernetes-node; --node only)
#   coredns         v1.14.7   tests/kube/gomod/coredns              (a main with a cluster DNS's
#                                                                   plugins only)
#   prometheus      v3.16.0   github.com/prometheus/prometheus/cmd/prometheus (module v0.316.0;
#                                                                   wrapper: tests/kube/gomod/
#                                                                   prometheus; --node only; Debian's
#                                                                   has no Kubernetes discovery)
#   etcd            v3.6.16   go.etcd.io/etcd/server/v3             (wrapper: tests/kube/gomod/etcd)
#   helm            v3.19.5   helm.sh/helm/v3/cmd/helm              (wrapper: tests/kube/gomod/helm, a
#                                                                   `tool` of the wrapper's go.mod)
#
# k8s.io/kubernetes cannot be `go install`ed (it requires its staging modules at v0.0.0), and the
# etcd server's go.mod has replace directives; the wrapper modules require them as dependencies,
# replace every k8s.io staging module with its published v0.34 tag, and pin everything in go.sum.
#
# Usage: build-kube.sh [--node] [OUTDIR]
#   Builds what is missing into the cache, prints the absolute path of each binary (one per line:
#   kube-apiserver, etcd, kubectl, helm, and with --node the node binaries, coredns and
#   prometheus) and, with OUTDIR, also symlinks them into OUTDIR.
#
# Cache: ${TRIBUTARY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tributary}/kube/<name>-<version>/,
# with a stamp that records the hash of the wrapper's go.mod/go.sum and the Go version used. A
# second run finds the stamps and does nothing else (no `go` call; a few milliseconds). Editing a
# wrapper's go.mod/go.sum rebuilds that component; a different Go version does not (the binaries
# are self-contained) unless TRIBUTARY_KUBE_REBUILD=1.
#
# The first build downloads ~400 MB of modules and compiles ~2 500 packages: expect 10–20 minutes
# on 2 cores. It runs with -trimpath, CGO_ENABLED=0 and -p ${TRIBUTARY_KUBE_BUILD_JOBS:-2}.
# Concurrent runs (a CMake build and a test fixture) serialise on a lock in the cache directory.
#
# Environment: GO (go binary, default `go`, else /usr/local/go/bin/go), TRIBUTARY_CACHE_DIR,
# XDG_CACHE_HOME, TRIBUTARY_KUBE_BUILD_JOBS, TRIBUTARY_KUBE_REBUILD=1 (ignore the cache).
#
# Updating a version: edit the require line in the wrapper go.mod (and the staging replace lines
# for Kubernetes: all k8s.io/<staging> => v0.<minor>.<patch>), then in that directory run
#   GOWORK=off GOFLAGS=-mod=mod go mod tidy
# (add GOSUMDB=off where the checksum database is unreachable), and update the versions below.
set -euo pipefail

readonly KUBE_VERSION=v1.34.4
readonly ETCD_VERSION=v3.6.16
readonly HELM_VERSION=v3.19.5
readonly COREDNS_VERSION=v1.14.7
readonly PROMETHEUS_VERSION=v3.16.0
readonly PROMETHEUS_MODULE_VERSION=v0.316.0
# Kubernetes, file and HTTP discovery only: the cloud providers' SDKs would double the build.
readonly PROMETHEUS_TAGS=remove_all_sd,enable_kubernetes_sd

with_node=0
if [[ ${1:-} == --node ]]; then
  with_node=1
  shift
fi
if [[ $# -gt 1 || ${1:-} == -* ]]; then
  echo "usage: $0 [--node] [OUTDIR]" >&2
  exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${TRIBUTARY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tributary}/kube
kube_mod=$root/tests/kube/gomod/kubernetes
etcd_mod=$root/tests/kube/gomod/etcd
helm_mod=$root/tests/kube/gomod/helm
kube_node_mod=$root/tests/kube/gomod/kubernetes-node
coredns_mod=$root/tests/kube/gomod/coredns
prometheus_mod=$root/tests/kube/gomod/prometheus

die() {
  echo "build-kube.sh: $*" >&2
  exit 1
}

# The wrapper modules must pin the versions this script names (a stale edit would build one
# version into a directory named after another).
for mod in "$kube_mod" "$kube_node_mod"; do
  grep -qE "^(require |[[:space:]])k8s.io/kubernetes ${KUBE_VERSION}( // indirect)?\$" \
    "$mod/go.mod" || die "$mod/go.mod does not require k8s.io/kubernetes $KUBE_VERSION"
done
grep -qE "^(require |[[:space:]])go.etcd.io/etcd/server/v3 ${ETCD_VERSION}( // indirect)?\$" \
  "$etcd_mod/go.mod" || die "$etcd_mod/go.mod does not require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
grep -qE "^(require |[[:space:]])helm.sh/helm/v3 ${HELM_VERSION}( // indirect)?\$" \
  "$helm_mod/go.mod" || die "$helm_mod/go.mod does not require helm.sh/helm/v3 $HELM_VERSION"
grep -qE "^(require |[[:space:]])github.com/coredns/coredns ${COREDNS_VERSION}( // indirect)?\$" \
  "$coredns_mod/go.mod" || die "$coredns_mod/go.mod does not require github.com/coredns/coredns $COREDNS_VERSION"
grep -qE "^(require |[[:space:]])github.com/prometheus/prometheus ${PROMETHEUS_MODULE_VERSION}( // indirect)?\$" \
  "$prometheus_mod/go.mod" || die "$prometheus_mod/go.mod does not require github.com/prometheus/prometheus $PROMETHEUS_MODULE_VERSION"

# The hash of a wrapper module's state: go.mod, go.sum and its own Go files (coredns' main.go).
modhash() { { cat "$1/go.mod" "$1/go.sum"; find "$1" -maxdepth 1 -name '*.go' -exec cat {} +; } | sha256sum | cut -c1-16; }
kube_hash=$(modhash "$kube_mod")
etcd_hash=$(modhash "$etcd_mod")
kube_node_hash=$(modhash "$kube_node_mod")
coredns_hash=$(modhash "$coredns_mod")
prometheus_ldflags=" -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}"
prometheus_hash=$(cat "$prometheus_mod/go.mod" "$prometheus_mod/go.sum" \
  <(echo "$PROMETHEUS_TAGS $prometheus_ldflags") | sha256sum | cut -c1-16)
# Helm's default Kubernetes version (`helm template`, `helm lint`) is set at link time, like its
# Makefile does: that of the k8s.io modules it is built with (v0.34 → 1.34).
helm_ldflags=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=34"
done
helm_hash=$(cat "$helm_mod/go.mod" "$helm_mod/go.sum" <(echo "$helm_ldflags") | sha256sum | cut -c1-16)

# name|version|module dir|package|hash
components=(
  "kube-apiserver|$KUBE_VERSION|$kube_mod|k8s.io/kubernetes/cmd/kube-apiserver|$kube_hash"
  "etcd|$ETCD_VERSION|$etcd_mod|go.etcd.io/etcd/server/v3|$etcd_hash"
  "kubectl|$KUBE_VERSION|$kube_mod|k8s.io/kubernetes/cmd/kubectl|$kube_hash"
  "helm|$HELM_VERSION|$helm_mod|helm.sh/helm/v3/cmd/helm|$helm_hash"
)
# The one-node cluster's (scripts/kube-node.sh), with --node only.
((with_node)) && components+=(
  "kube-controller-manager|$KUBE_VERSION|$kube_node_mod|k8s.io/kubernetes/cmd/kube-controller-manager|$kube_node_hash"
  "kube-scheduler|$KUBE_VERSION|$kube_node_mod|k8s.io/kubernetes/cmd/kube-scheduler|$kube_node_hash"
  "kubelet|$KUBE_VERSION|$kube_node_mod|k8s.io/kubernetes/cmd/kubelet|$kube_node_hash"
  "kube-proxy|$KUBE_VERSION|$kube_node_mod|k8s.io/kubernetes/cmd/kube-proxy|$kube_node_hash"
  "coredns|$COREDNS_VERSION|$coredns_mod|.|$coredns_hash"
  "prometheus|$PROMETHEUS_VERSION|$prometheus_mod|github.com/prometheus/prometheus/cmd/prometheus|$prometheus_hash"
)

# Whether <dir> holds a binary built from the module state <hash>.
cached() { # <dir> <name> <hash>
  [[ ${TRIBUTARY_KUBE_REBUILD:-0} != 1 && -x $1/$2 && -r $1/stamp ]] &&
    grep -qx "modules=$3" "$1/stamp"
}

all_cached() {
  local c name version dir pkg hash
  for c in "${components[@]}"; do
    IFS='|' read -r name version dir pkg hash <<<"$c"
    cached "$cache/$name-$version" "$name" "$hash" || return 1
  done
}

finish() {
  local c name version dir pkg hash
  if [[ -n ${outdir:-} ]]; then
    mkdir -p "$outdir"
  fi
  for c in "${components[@]}"; do
    IFS='|' read -r name version dir pkg hash <<<"$c"
    if [[ -n ${outdir:-} ]]; then
      ln -sfn "$cache/$name-$version/$name" "$outdir/$name"
    fi
    echo "$cache/$name-$version/$name"
  done
}

outdir=${1:-}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# Fast path: everything is cached, nothing to lock.
if all_cached; then
  finish
  exit 0
fi

go=${GO:-}
if [[ -z $go ]]; then
  go=$(command -v go || true)
  [[ -n $go ]] || go=/usr/local/go/bin/go
fi
[[ -x $go || -n $(command -v "$go" 2>/dev/null) ]] || die "Go not found (set GO=/path/to/go); Go >= 1.24 is required"

exec 9>"$cache/.lock"
flock 9 # another run may be building the same thing: wait, then re-check

export GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
export GOMAXPROCS=${GOMAXPROCS:-2}
jobs=${TRIBUTARY_KUBE_BUILD_JOBS:-2}
go_version=$("$go" env GOVERSION)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  minor=${KUBE_VERSION#v1.}
  minor=${minor%%.*}
  kube_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

for c in "${components[@]}"; do
  IFS='|' read -r name version dir pkg hash <<<"$c"
  dest=$cache/$name-$version
  if cached "$dest" "$name" "$hash"; then
    continue
  fi
  ldflags="-s -w" tags=""
  case $name in
  etcd | coredns) ;;
  helm) ldflags+=$helm_ldflags ;;
  prometheus) ldflags+=$prometheus_ldflags tags=$PROMETHEUS_TAGS ;;
  *) ldflags+=$kube_ldflags ;;
  esac
  tmp=$(mktemp -d "$cache/.build-$name.XXXXXX")
  start=$(date +%s)
  echo "build-kube.sh: building $name $version with $go_version (-p $jobs); the first build takes minutes" >&2
  if ! (cd "$dir" && "$go" build -p "$jobs" -trimpath -tags "$tags" -ldflags "$ldflags" -o "$tmp/$name" "$pkg") >"$log" 2>&1; then
    echo "build-kube.sh: go build $pkg ($name $version) failed:" >&2
    cat "$log" >&2
    rm -rf "$tmp"
    exit 1
  fi
  printf 'name=%s\nversion=%s\nmodules=%s\ngo=%s\nseconds=%s\n' \
    "$name" "$version" "$hash" "$go_version" "$(($(date +%s) - start))" >"$tmp/stamp"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  echo "build-kube.sh: built $name $version in $(($(date +%s) - start)) s" >&2
done

finish
