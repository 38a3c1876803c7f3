#!/usr/bin/env bash
# Writes the certificates, keys, static tokens and kubeconfigs of a private test API server
# (used by the C++ fixture tributary::harness::KubeApiServer and by scripts/kube-dev.sh).
#
# Usage: kube-pki.sh DIR SERVER_URL [NODE_NAME NODE_IP SERVICE_IP]
#   DIR/ca.crt ca.key                 test CA (EC P-256), signs everything below
#   DIR/apiserver.crt apiserver.key   serving cert: localhost, kubernetes[.default[.svc]],
#                                     127.0.0.1, ::1, 10.0.0.1
#   DIR/admin.crt admin.key           client cert CN=admin, O=system:masters
#   DIR/sa.key sa.pub                 service-account token signing key pair
#   DIR/tokens.csv                    --token-auth-file: admin (system:masters), alice, bob
#                                     (no groups: RBAC denies them everything until bound)
#   DIR/token-<user>                  each user's bearer token
#   DIR/kubeconfig                    admin with client cert/key/CA embedded (like envtest's)
#   DIR/kubeconfig-token              admin with a bearer token and the CA file path
# With a node (the one-node cluster of scripts/kube-node.sh), also:
#   the apiserver's serving cert also names NODE_IP and SERVICE_IP (the `kubernetes` Service)
#   DIR/kubelet.crt kubelet.key       the kubelet's client cert, CN=system:node:NODE_NAME, O=system:nodes
#   DIR/kubelet-serving.crt .key      the kubelet's serving cert (NODE_NAME, NODE_IP)
#   DIR/apiserver-kubelet-client.crt  the API server's client cert for kubelets (O=system:masters)
#   DIR/kube-controller-manager.crt, kube-scheduler.crt, kube-proxy.crt (their system: users)
#   DIR/kubeconfig-<component>        kubeconfigs for kubelet, kube-controller-manager,
#                                     kube-scheduler, kube-proxy (embedded cert, key and CA)
# Existing files are kept (so a restarted server keeps its identity); kubeconfigs are rewritten.
set -euo pipefail

if [[ $# -ne 2 && $# -ne 5 ]]; then
  echo "usage: $0 DIR SERVER_URL [NODE_NAME NODE_IP SERVICE_IP]" >&2
  exit 2
fi
dir=$1
server=$2
node_name=${3:-}
node_ip=${4:-}
service_ip=${5:-}
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
umask 077

log=$(mktemp)
trap 'rm -f "$log" ./*.csr ./*.ext' EXIT
run() {
  if ! "$@" >"$log" 2>&1; then
    echo "kube-pki.sh: $* failed:" >&2
    cat "$log" >&2
    exit 1
  fi
}

days=3650
eckey() { run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

if [[ ! -s ca.crt || ! -s ca.key ]]; then
  eckey ca.key
  run openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=tributary-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt
fi

# sign <name> <subject> <extensions>
sign() {
  local name=$1 subject=$2 ext=$3
  [[ -s $name.crt && -s $name.key ]] && return 0
  eckey "$name.key"
  run openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
  printf '%s\n' "$ext" >"$name.ext"
  run openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -sha256 -days "$days" \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$name.ext" -out "$name.crt"
}

sign apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:::1,IP:10.0.0.1${node_ip:+,IP:$node_ip,IP:$service_ip}"

sign admin "/O=system:masters/CN=admin" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

if [[ ! -s sa.key || ! -s sa.pub ]]; then
  eckey sa.key
  run openssl pkey -in sa.key -pubout -out sa.pub
fi

if [[ ! -s tokens.csv ]]; then
  {
    for user in admin alice bob; do
      token=$(openssl rand -hex 24)
      printf '%s' "$token" >"token-$user"
      case $user in
        admin) printf '%s,admin,uid-admin,"system:masters"\n' "$token" ;;
        *) printf '%s,%s,uid-%s\n' "$token" "$user" "$user" ;;
      esac
    done
  } >tokens.csv
fi

b64() { base64 -w0 <"$1"; }
# cert_kubeconfig <file> <cert name>: a kubeconfig with that client cert embedded.
cert_kubeconfig() {
  cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tributary-test
  cluster:
    server: $server
    certificate-authority-data: $(b64 ca.crt)
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$2.crt")
    client-key-data: $(b64 "$2.key")
contexts:
- name: tributary-test
  context:
    cluster: tributary-test
    user: $2
current-context: tributary-test
EOF
  mv "$1.tmp" "$1"
}
cert_kubeconfig kubeconfig admin

if [[ -n $node_name ]]; then
  client="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign kubelet "/O=system:nodes/CN=system:node:$node_name" "$client"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  for component in kube-controller-manager kube-scheduler kube-proxy; do
    sign "$component" "/CN=system:$component" "$client"
  done
  sign kubelet-serving "/CN=$node_name" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$node_name,IP:$node_ip"
  for component in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    cert_kubeconfig "kubeconfig-$component" "$component"
  done
fi

cat >kubeconfig-token.tmp <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tributary-test
  cluster:
    server: $server
    certificate-authority: $PWD/ca.crt
users:
- name: admin-token
  user:
    token: $(cat token-admin)
contexts:
- name: tributary-test
  context:
    cluster: tributary-test
    user: admin-token
current-context: tributary-test
EOF
mv kubeconfig-token.tmp kubeconfig-token
