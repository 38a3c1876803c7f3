#!/usr/bin/env bash
# Writes the certificates of a test server that speaks TLS (PostgreSQL, Redis; used by the C++
# harness, tests/harness/src/tls_files.cc).
#
# Usage: test-tls-pki.sh DIR
#   DIR/ca.crt ca.key           test CA (EC P-256), signs server.crt
#   DIR/server.crt server.key   serving cert for 127.0.0.1 and localhost only
#   DIR/client.crt client.key   client cert (CN tributary-test-client) for servers that ask for one
#   DIR/other-ca.crt            a CA that signed nothing here: the "wrong CA" of a test
# Existing files are kept.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
mkdir -p "$1"
cd "$1"
umask 077
log=$(mktemp)
trap 'rm -f "$log" server.csr client.csr other-ca.key' EXIT
run() {
  if ! "$@" >"$log" 2>&1; then
    echo "test-tls-pki.sh: $* failed:" >&2
    cat "$log" >&2
    exit 1
  fi
}
eckey() { run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
ca() {
  run openssl req -x509 -new -key "$1" -sha256 -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$3"
}

if [[ ! -s ca.crt || ! -s ca.key ]]; then
  eckey ca.key
  ca ca.key tributary-test-tls-ca ca.crt
fi
if [[ ! -s other-ca.crt ]]; then
  eckey other-ca.key
  ca other-ca.key tributary-test-other-ca other-ca.crt
fi
if [[ ! -s server.crt || ! -s server.key ]]; then
  eckey server.key
  run openssl req -new -key server.key -subj "/CN=127.0.0.1" -out server.csr
  run openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
    -days 3650 -out server.crt -extfile <(printf '%s\n' \
      "subjectAltName=IP:127.0.0.1,DNS:localhost" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth")
fi
if [[ ! -s client.crt || ! -s client.key ]]; then
  eckey client.key
  run openssl req -new -key client.key -subj "/CN=tributary-test-client" -out client.csr
  run openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
    -days 3650 -out client.crt -extfile <(printf '%s\n' "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=clientAuth")
fi
chmod 644 ca.crt other-ca.crt server.crt client.crt
