#!/usr/bin/env bash
# Runs the benchmarks (not tests): builds the `dev` preset's benchmark targets and prints each
# benchmark's table, with ratios against a baseline measured in the same run.
#   scripts/bench.sh            all benchmarks
#   scripts/bench.sh host       only the plugin-host throughput benchmark
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
cmake --preset dev >/dev/null
build=build/dev
which=${1:-all}

if [[ $which == all || $which == host ]]; then
  cmake --build --preset dev --target bench_host test_connector_cpp go_fixtures
  python3 bench/host_throughput.py --build-dir "${build}"
fi
