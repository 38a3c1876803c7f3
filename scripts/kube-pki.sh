#!/usr/bin/env bash
# Writes the certificates, keys, static tokens and kubeconfigs of a private test API server
# (used by the C++ fixture tributary::harness::KubeApiServer and by scripts/kube-dev.sh).
#
# Usage: kube-pki.sh DIR SERVER_URL
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
# Existing files are kept (so a restarted server keeps its identity); kubeconfigs are rewritten.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 DIR SERVER_URL" >&2
  exit 2
fi
dir=$1
server=$2
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
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:::1,IP:10.0.0.1"

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
cat >kubeconfig.tmp <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tributary-test
  cluster:
    server: $server
    certificate-authority-data: $(b64 ca.crt)
users:
- name: admin
  user:
    client-certificate-data: $(b64 admin.crt)
    client-key-data: $(b64 admin.key)
contexts:
- name: tributary-test
  context:
    cluster: tributary-test
    user: admin
current-context: tributary-test
EOF
mv kubeconfig.tmp kubeconfig

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
