#!/usr/bin/env bash
# Builds Tributary's images from docker/Dockerfile with a plain `docker build` (BuildKit), then
# saves each as OUT/<image>.tar with an SPDX SBOM beside it (OUT/<image>.spdx.json) and checks
# its size against the budget below.
#
#   docker/build.sh [--prebuilt BUILD_DIR] [--base IMAGE] [--tag TAG] [--out DIR] [TARGET...]
#
#   --prebuilt DIR  take the binaries of a build tree (BINARIES=prebuilt, via docker/prebuilt/)
#                   instead of compiling in the image; the tree must be of the same Debian release
#   --base IMAGE    the base image (default debian:bookworm-slim; the tests import a debootstrap
#                   rootfs: scripts/docker-daemon.sh base-image)
#   --tag TAG       image tag (default: the project version)
#   --out DIR       where the tarballs and SBOMs go (default build/images)
#   TARGET          controller agent agent-slim cli quickstart-postgres quickstart-redis (default all)
#
# Environment: DOCKER (the docker CLI, default /usr/bin/docker: Debian's, whose BuildKit client
# needs no buildx plugin), DOCKER_HOST, SOURCE_DATE_EPOCH (org.opencontainers.image.created;
# default: the last commit's time), DOCKER_BUILD_NETWORK (default host: apt and the Go proxy are
# reached from the build, the daemon has no bridge).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(sed -n 's/^project(tributary VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
prebuilt="" base="debian:bookworm-slim" tag=$version out=$root/build/images
targets=()
while [[ $# -gt 0 ]]; do
  case $1 in
  --prebuilt) prebuilt=$2; shift 2 ;;
  --base) base=$2; shift 2 ;;
  --tag) tag=$2; shift 2 ;;
  --out) out=$2; shift 2 ;;
  -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
  -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
  *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(controller agent agent-slim cli quickstart-postgres quickstart-redis)

# Image name and size budget (MB, uncompressed as `docker image inspect` reports it) per target.
declare -A names=([controller]=tributary-controller [agent]=tributary-agent
  [agent-slim]=tributary-agent-slim [cli]=tributary [quickstart-postgres]=tributary-quickstart-postgres
  [quickstart-redis]=tributary-quickstart-redis)
# Measured on the debootstrap base, plus about 10 % (docker/README.md).
declare -A budgets=([controller]=150 [agent]=1000 [agent-slim]=230 [cli]=230
  [quickstart-postgres]=530 [quickstart-redis]=150)

docker=${DOCKER:-/usr/bin/docker}
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$out"

binaries=source
if [[ -n $prebuilt ]]; then
  binaries=prebuilt
  rm -rf "$root/docker/prebuilt"
  python=python3
  [[ -x $prebuilt/venv/bin/python ]] && python=$prebuilt/venv/bin/python
  "$root/docker/stage-binaries.sh" "$prebuilt" "$root" "$root/docker/prebuilt" "$python"
  # The Go toolchain zip, fetched once by the host (whose CA store and proxy settings apply)
  # and cached; the Dockerfile checks its SHA-256 as it would a download.
  go_version=$(sed -n 's/^ARG GO_VERSION=//p' "$root/docker/Dockerfile")
  go_zip=${TRIBUTARY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tributary}/images/go$go_version.zip
  if [[ ! -s $go_zip ]]; then
    mkdir -p "$(dirname "$go_zip")"
    curl -fsSL "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$go_version.linux-amd64.zip" \
      -o "$go_zip.tmp" && mv "$go_zip.tmp" "$go_zip"
  fi
  cp "$go_zip" "$root/docker/prebuilt/downloads/go.zip"
fi

status=0
for target in "${targets[@]}"; do
  name=${names[$target]:?unknown target $target}
  image=$name:$tag
  start=$(date +%s)
  DOCKER_BUILDKIT=1 "$docker" build --network="${DOCKER_BUILD_NETWORK:-host}" --quiet \
    -f "$root/docker/Dockerfile" --target "$target" \
    --build-arg BASE_IMAGE="$base" --build-arg BINARIES="$binaries" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg CREATED="$created" \
    -t "$image" "$root" >/dev/null
  "$docker" save -o "$out/$name.tar" "$image"
  python3 "$root/docker/sbom.py" "$out/$name.tar" "$image" "$version" "$revision" "$created" \
    >"$out/$name.spdx.json"
  size=$("$docker" image inspect -f '{{.Size}}' "$image")
  mb=$((size / 1000000))
  verdict=ok
  if ((mb > budgets[$target])); then
    verdict="OVER BUDGET (${budgets[$target]} MB)"
    status=1
  fi
  printf '%-32s %5d MB  budget %4d MB  %s  (%d s)\n' "$image" "$mb" "${budgets[$target]}" \
    "$verdict" "$(($(date +%s) - start))"
done
exit "$status"
