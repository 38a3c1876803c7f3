#!/usr/bin/env bash
# The README demo: installs what is missing, builds, and runs the example connectors of all three
# SDKs (C++, Go, Python) through Tributary's C++ go-plugin host, printing the pages they send.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
cmake --preset dev >/dev/null
cmake --build --preset dev -j2 --target tributary hello_connector_cpp go_fixtures python_sdk

build=build/dev
tributary=${build}/cli/tributary
section() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }

section "C++ SDK connector (sdk/cpp/examples/hello_connector.cc)"
"${tributary}" connector run --command "${build}/sdk/cpp/hello_connector_cpp"

section "Go SDK connector (sdk/go/examples/hello), go-plugin over gRPC with AutoMTLS"
"${tributary}" connector run --automtls --command "${build}/go-bin/hello-go" \
  --options '{"names":["Ada","Linus"]}'

section "Python SDK connector (sdk/python/examples/hello.py)"
"${tributary}" connector run --command "${build}/venv/bin/python sdk/python/examples/hello.py" \
  --options '{"name":"Python","pages":2}'
