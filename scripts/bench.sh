#!/usr/bin/env bash
# Runs the benchmarks (not tests): builds the benchmark targets in build/ci (the `ci` preset, the
# tree scripts/test.sh and scripts/demo.sh build too: RelWithDebInfo like `dev`) and prints each
# benchmark's table, with ratios against a baseline measured in the same run.
#   scripts/bench.sh            all benchmarks
#   scripts/bench.sh host       only the plugin-host throughput benchmark
#   scripts/bench.sh store      only the store's page writer vs raw libpq (1 000 000 objects)
#   scripts/bench.sh controller only the controller on a real kube-apiserver (1 000 and 10 000 jobs)
#   scripts/bench.sh agent      one SyncRun of 1 000 000 objects via controller → agent, beside
#                               `tributary run` and the raw ceiling, fsync on
#   scripts/bench.sh pipeline   connector → host → store → PostgreSQL through `tributary run` for
#                               the C++, Go and Python connectors: load, identical and 1 %-changed
#                               re-sync of 1 000 000 objects, WAL, finish step, RSS, fsync on
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
# Configuring the shared `ci` tree needs Go (our machines have it in /usr/local/go), as in
# scripts/test.sh.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="/usr/local/go/bin:${PATH}"
fi
build=build/ci
if [[ ! -f "${build}/build.ninja" ]]; then
  cmake --preset ci >/dev/null
fi
which=${1:-all}

if [[ $which == all || $which == host ]]; then
  cmake --build "${build}" -j2 --target bench_host test_connector_cpp go_fixtures
  python3 bench/host_throughput.py --build-dir "${build}"
fi

if [[ $which == all || $which == store ]]; then
  cmake --build "${build}" -j2 --target store_bench
  "${build}/bench/store_bench" --objects 1000000 --page-sizes 100,1000,10000
fi

if [[ $which == all || $which == pipeline ]]; then
  cmake --build "${build}" -j2 --target pipeline_bench
  "${build}/bench/pipeline_bench" --objects 1000000 --samples "${build}/bench/pipeline-rss.csv"
fi

if [[ $which == all || $which == controller ]]; then
  cmake --build "${build}" -j2 --target controller_bench
  TRIBUTARY_KUBE_BIN_DIR="${build}/kube-bin" "${build}/bench/controller_bench" --jobs 1000,10000
fi

if [[ $which == all || $which == agent ]]; then
  cmake --build "${build}" -j2 --target agent_bench
  TRIBUTARY_KUBE_BIN_DIR="${build}/kube-bin" "${build}/bench/agent_bench" --objects 1000000 \
    --page-size 1000 --small 100000
fi
