#!/usr/bin/env bash
# A private etcd + kube-apiserver (v1.34) with Tributary's CRDs, by hand: the same setup as the
# test fixture tributary::harness::KubeApiServer, for trying manifests, kubectl and the controller.
#
#   scripts/kube-dev.sh up      build/find the binaries, start both, apply crds/*.yaml, wait
#   scripts/kube-dev.sh env     print `export KUBECONFIG=...` and `export PATH=<kubectl dir>:$PATH`
#   scripts/kube-dev.sh status  whether it runs, and where
#   scripts/kube-dev.sh down    stop both (data stays; `up` starts them again on the same ports)
#   scripts/kube-dev.sh clean   down, then remove the directory
#
#   eval "$(scripts/kube-dev.sh env)"; kubectl get tributary -A
#
# State lives in ${TRIBUTARY_KUBE_DEV_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/tributary/kube-dev}
# (pki/, etcd/, logs, pids, ports). Everything listens on 127.0.0.1 only.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${TRIBUTARY_KUBE_DEV_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/tributary/kube-dev}
# shellcheck source=host-lib.sh
source "$root/scripts/host-lib.sh"

die() {
  echo "kube-dev.sh: $*" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

alive() { [[ -r $dir/$1.pid ]] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

binaries() {
  mapfile -t bins < <("$root/scripts/build-kube.sh")
  apiserver=${bins[0]}
  etcd=${bins[1]}
  kubectl=${bins[2]}
}

up() {
  mkdir -p "$dir"
  chmod 700 "$dir"
  binaries
  if [[ ! -r $dir/ports ]]; then
    printf 'api_port=%s\netcd_port=%s\npeer_port=%s\n' "$(free_port)" "$(free_port)" "$(free_port)" >"$dir/ports"
  fi
  # shellcheck disable=SC1091
  source "$dir/ports"
  local url=https://127.0.0.1:$api_port etcd_url=http://127.0.0.1:$etcd_port peer=http://127.0.0.1:$peer_port
  "$root/scripts/kube-pki.sh" "$dir/pki" "$url"

  if ! alive etcd; then
    setsid "$etcd" --name=tributary-dev --data-dir="$dir/etcd" \
      --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
      --listen-peer-urls="$peer" --initial-advertise-peer-urls="$peer" \
      --initial-cluster="tributary-dev=$peer" --unsafe-no-fsync=true --log-level=warn \
      >>"$dir/etcd.log" 2>&1 </dev/null &
    echo $! >"$dir/etcd.pid"
  fi
  if ! alive kube-apiserver; then
    local pki=$dir/pki
    setsid "$apiserver" --etcd-servers="$etcd_url" --bind-address=127.0.0.1 \
      --advertise-address=127.0.0.1 --secure-port="$api_port" --cert-dir="$dir/apiserver-certs" \
      --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
      --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
      --service-account-issuer="$url" --service-account-key-file="$pki/sa.pub" \
      --service-account-signing-key-file="$pki/sa.key" --service-cluster-ip-range=10.0.0.0/24 \
      --authorization-mode=RBAC --disable-admission-plugins=ServiceAccount \
      --allow-privileged=true --endpoint-reconciler-type=none --watch-cache=true \
      --profiling=false >>"$dir/kube-apiserver.log" 2>&1 </dev/null &
    echo $! >"$dir/kube-apiserver.pid"
  fi
  export KUBECONFIG=$dir/pki/kubeconfig
  local start=$SECONDS
  until "$kubectl" get --raw /readyz >/dev/null 2>&1; do
    alive kube-apiserver || die "kube-apiserver exited; see $dir/kube-apiserver.log"
    ((SECONDS - start < 120)) || die "kube-apiserver not ready after 120 s; see $dir/kube-apiserver.log"
    sleep 0.2
  done
  "$kubectl" apply --server-side --force-conflicts --field-manager=kube-dev \
    $(printf -- '-f %s ' "$root"/crds/*.yaml) >/dev/null
  "$kubectl" wait --for=condition=Established --timeout=60s \
    $(printf -- '-f %s ' "$root"/crds/*.yaml) >/dev/null
  # Discovery lags Established a little; api-resources also refreshes kubectl's discovery cache.
  until (($("$kubectl" api-resources --api-group=tributary.dev -o name | wc -l) >= 3)); do
    ((SECONDS - start < 120)) || die "the CRDs are not in discovery after 120 s"
    sleep 0.2
  done
  echo "kube-dev.sh: $url ready (kubeconfig $KUBECONFIG); eval \"\$($0 env)\"" >&2
}

down() {
  local what
  for what in kube-apiserver etcd; do
    if alive "$what"; then
      stop_pid "$(cat "$dir/$what.pid")" 30
    fi
    rm -f "$dir/$what.pid"
  done
}

case ${1:-} in
  up) up ;;
  down) down ;;
  clean)
    down
    rm -rf "$dir"
    ;;
  env)
    [[ -r $dir/pki/kubeconfig ]] || die "not set up; run: $0 up"
    binaries
    echo "export KUBECONFIG=$dir/pki/kubeconfig"
    echo "export PATH=$(dirname "$kubectl"):\$PATH"
    ;;
  status)
    if alive kube-apiserver && alive etcd; then
      # shellcheck disable=SC1091
      source "$dir/ports"
      echo "running: https://127.0.0.1:$api_port (etcd 127.0.0.1:$etcd_port), kubeconfig $dir/pki/kubeconfig"
    else
      echo "not running (dir $dir)"
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 up|down|env|status|clean" >&2
    exit 2
    ;;
esac
