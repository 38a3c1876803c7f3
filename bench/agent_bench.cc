// agent_bench: SyncRuns through controller → agent → PostgreSQL, beside `tributary run` of the
// same connector and the raw ceiling (store_bench's raw-unnest), on the same PostgreSQL in the
// same run, with fsync on.
//
//   agent_bench [--objects 1000000] [--page-size 1000] [--small 100000] [--repeat 3]
//
// Every load is an initial load of its own source: the Go go-plugin v1.6.3 test connector sends
// objects/page-size pages. The two paths alternate, `--repeat` rounds of one each, the order
// flipping every round (each later load meets a larger objects table, so neither path always goes
// first); the ratio is of the medians. Rows/s are objects over the store run's duration
// (started → finished: Sync and finish, what both paths share); the SyncRun's end to end
// (created → Succeeded: binding, install, lock) is printed beside it. CPU seconds are the path's
// own process with its connector, and the control plane's (kube-apiserver, etcd, controller)
// during the same load: on a small machine they compete for the same cores. Agent peak RSS
// (VmHWM) is measured in a fresh agent process per run: flat in the number of objects means the
// small and large figures match.

#include "tributary/common/strings.h"
#include "tributary/kube/client.h"
#include "tributary/kube/config.h"
#include "tributary/testing/kube.h"
#include "tributary/testing/net.h"
#include "tributary/testing/services.h"
#include "tributary/testing/spawn.h"
#include "tributary/testing/temp_dir.h"

#include "bench_support.h"
#include "proc_stats.h"

#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <libpq-fe.h>
#include <sstream>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using namespace tributary;
using namespace std::chrono_literals;
using bench::cpuSeconds;
using bench::median;
using bench::readFile;
using bench::scalar;
using kube::Json;
using strings::cat;
namespace fs = std::filesystem;

[[noreturn]] void die(const std::string& what) { bench::die("agent_bench", what); }

// Seconds of the store run of a source (started → finished).
double runSeconds(const std::string& dsn, const std::string& job) {
  return std::stod(scalar(dsn, cat("SELECT extract(epoch FROM max(finished_at - started_at)) "
                                   "FROM tributary.sync_runs WHERE sync_job = '",
                                   job, "' AND outcome = 'succeeded'")));
}

long peakRssKb(pid_t pid) { return bench::statusKb(pid, "VmHWM:"); }

void stopProcess(pid_t pid) {
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

struct Load {
  double store_seconds = 0;
  double end_to_end_seconds = 0;  // agent path only
  long peak_rss_kb = 0;           // agent path only
  double cpu_seconds = 0;         // the path's process and its connector
  double control_plane_cpu_seconds = 0;
};

}  // namespace

int main(int argc, char** argv) {
  long objects = 1000000;
  long page_size = 1000;
  long small = 100000;
  int repeat = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const long value = std::stol(argv[i + 1]);
    if (flag == "--objects") {
      objects = value;
    } else if (flag == "--page-size") {
      page_size = value;
    } else if (flag == "--small") {
      small = value;
    } else if (flag == "--repeat") {
      repeat = static_cast<int>(std::max(1L, value));
    } else {
      die(cat("unknown flag ", flag));
    }
  }
  harness::PostgresOptions pg_options;
  pg_options.settings = {"fsync=on",           "synchronous_commit=on", "full_page_writes=on",
                         "shared_buffers=1GB", "max_wal_size=8GB",      "checkpoint_timeout=1h",
                         "work_mem=64MB"};
  harness::PostgresServer pg(pg_options);
  if (absl::Status st = pg.start(); !st.ok()) {
    die(cat("cannot start PostgreSQL: ", st.message()));
  }
  harness::RedisServer redis;
  if (absl::Status st = redis.start(); !st.ok()) {
    die(cat("cannot start Redis: ", st.message()));
  }
  auto kube_server = harness::KubeApiServer::sharedOrError();
  if (!kube_server.ok()) {
    die(cat("cannot start kube-apiserver: ", kube_server.status().message()));
  }
  harness::KubeApiServer& kube = **kube_server;
  const std::string ns = "bench";
  if (absl::Status st = kube.createNamespace(ns); !st.ok()) {
    die(cat("namespace: ", st.message()));
  }
  auto config = kube::loadKubeconfig(kube.kubeconfigPath());
  auto client = kube::Client::create(*config);
  if (!client.ok()) {
    die(cat("client: ", client.status().message()));
  }
  const std::string dsn = pg.dsn();
  std::cerr << "PostgreSQL " << scalar(dsn, "SHOW server_version")
            << " fsync=" << scalar(dsn, "SHOW fsync")
            << " synchronous_commit=" << scalar(dsn, "SHOW synchronous_commit") << "\n";

  harness::TempDir tmp("agent-bench");
  const fs::path dir = tmp.path();
  fs::create_directories(dir / "go");
  fs::copy_file(fs::path(TRIBUTARY_GO_BIN_DIR) / "connector-go-v1_6", dir / "go" / "connector");
  auto connectorYaml = [&] {
    return cat(
        "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: go\n  "
        "namespace: ",
        ns, "\nspec:\n  source: Local\n  uri: ", (dir / "go").string(),
        "\n  command: ./connector\n");
  };
  auto jobYaml = [&](const std::string& name, long n) {
    return cat("apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: ", name,
               "\n  namespace: ", ns,
               "\nspec:\n  connectorRef:\n    name: go\n  options: ", "{\"pages\": ", n / page_size,
               ", \"page_size\": ", page_size, "}\n");
  };

  const std::string controller_log = (dir / "controller.log").string();
  auto controller = harness::spawnLogged(
      {TRIBUTARY_CONTROLLER_BINARY, "--kubeconfig=" + kube.kubeconfigPath(), "--namespace=" + ns,
       "--agent-namespace=" + ns, "--metrics-bind-address=0", "--health-probe-bind-address=0"},
      controller_log);
  if (!controller.ok()) {
    die(cat("controller: ", controller.status().message()));
  }
  if (absl::Status st = kube.kubectlApply(connectorYaml()); !st.ok()) {
    die(cat("apply: ", st.message()));
  }

  auto controlPlaneCpu = [&] {
    return cpuSeconds(kube.apiserverPid(), false) + cpuSeconds(kube.etcdPid(), false) +
           cpuSeconds(*controller, false);
  };

  // One load through a fresh agent process.
  auto viaAgent = [&](const std::string& job, long n) {
    std::cerr << "agent path, " << job << ": " << n << " objects…\n";
    const std::string log = (dir / ("agent-" + job + ".log")).string();
    auto agent = harness::spawnLogged(
        {TRIBUTARY_AGENT_BINARY, "--kubeconfig=" + kube.kubeconfigPath(), "--name=bench-" + job,
         "--lease-namespace=" + ns, "--namespace=" + ns, "--database-url=" + dsn,
         cat("--redis-address=127.0.0.1:", redis.port()),
         "--cache-dir=" + (dir / "agent-cache").string(), "--metrics-bind-address=0",
         "--health-probe-bind-address=0"},
        log);
    if (!agent.ok()) {
      die(cat("agent: ", agent.status().message()));
    }
    std::this_thread::sleep_for(1s);  // its Lease
    Load result;
    const double control_plane_before = controlPlaneCpu();
    if (absl::Status st = kube.kubectlApply(jobYaml(job, n)); !st.ok()) {
      die(cat("apply: ", st.message()));
    }
    const auto deadline = std::chrono::steady_clock::now() + 30min;
    while (true) {
      kube::ListOptions options;
      options.label_selector = "tributary.dev/syncjob=" + job;
      auto runs = (*client)->list(kube::resources::syncRun(), ns, options);
      if (runs.ok() && !runs->items.empty()) {
        const Json& run = runs->items.front();
        const std::string phase = run.value("/status/phase"_json_pointer, std::string());
        if (phase == "Succeeded") {
          const auto created =
              kube::parseTime(run["metadata"]["creationTimestamp"].get<std::string>());
          const auto completed =
              kube::parseTime(run["status"]["completionTime"].get<std::string>());
          result.end_to_end_seconds = std::chrono::duration<double>(*completed - *created).count();
          break;
        }
        if (phase == "Failed" || std::chrono::steady_clock::now() > deadline) {
          die(cat("run of ", job, " did not succeed: ", run["status"].dump(), "\n", readFile(log)));
        }
      }
      result.peak_rss_kb = std::max(result.peak_rss_kb, peakRssKb(*agent));
      std::this_thread::sleep_for(500ms);  // the bench's own API load stays small
    }
    result.control_plane_cpu_seconds = controlPlaneCpu() - control_plane_before;
    result.peak_rss_kb = std::max(result.peak_rss_kb, peakRssKb(*agent));
    result.cpu_seconds = cpuSeconds(*agent, true);
    result.store_seconds = runSeconds(dsn, job);
    stopProcess(*agent);
    return result;
  };

  auto viaCli = [&](const std::string& job, long n) {
    std::cerr << "tributary run, " << job << ": " << n << " objects…\n";
    const fs::path manifest = dir / (job + ".yaml");
    std::ofstream(manifest) << connectorYaml() << "---\n" << jobYaml(job, n);
    Load result;
    const double control_plane_before = controlPlaneCpu();
    auto cli = harness::spawnLogged(
        {TRIBUTARY_CLI, "run", "-f", manifest.string(), "--syncjob", ns + "/" + job,
         "--database-url", dsn, "--cache-dir", (dir / "cli-cache").string()},
        (dir / (job + ".log")).string());
    if (!cli.ok()) {
      die(cat("tributary run: ", cli.status().message()));
    }
    int cli_status = 0;
    rusage usage{};
    ::wait4(*cli, &cli_status, 0, &usage);  // its reaped connector included
    if (!WIFEXITED(cli_status) || WEXITSTATUS(cli_status) != 0) {
      die(cat("tributary run failed:\n", readFile((dir / (job + ".log")).string())));
    }
    result.control_plane_cpu_seconds = controlPlaneCpu() - control_plane_before;
    result.cpu_seconds = bench::rusageSeconds(usage);
    result.store_seconds = runSeconds(dsn, job);
    return result;
  };

  const Load agent_small = viaAgent("agent-small", small);
  std::vector<Load> agent_loads;
  std::vector<Load> cli_loads;
  for (int round = 0; round < repeat; ++round) {
    const std::string suffix = cat("-", round + 1);
    if (round % 2 == 0) {
      cli_loads.push_back(viaCli("cli" + suffix, objects));
      agent_loads.push_back(viaAgent("agent" + suffix, objects));
    } else {
      agent_loads.push_back(viaAgent("agent" + suffix, objects));
      cli_loads.push_back(viaCli("cli" + suffix, objects));
    }
  }

  std::cerr << "raw ceiling (store_bench raw-unnest): " << objects << " objects…\n";
  const double raw_rate = bench::rawCeiling(TRIBUTARY_STORE_BENCH, dsn, pg.pid(), objects,
                                            page_size, (dir / "raw.txt").string())[0];
  stopProcess(*controller);

  const double n = static_cast<double>(objects);
  auto medianOf = [](const std::vector<Load>& loads, double Load::*field) {
    std::vector<double> values;
    for (const Load& l : loads) {
      values.push_back(l.*field);
    }
    return median(values);
  };
  std::printf(
      "\n# agent_bench: %ld objects in pages of %ld, PostgreSQL %s, fsync on, %d rounds\n\n",
      objects, page_size, scalar(dsn, "SHOW server_version").c_str(), repeat);
  std::printf(
      "| load | rows/s (store run) | store run s | end to end s | path CPU s | control plane "
      "CPU s | agent peak RSS MB |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  auto oneDecimal = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f", v);
    return std::string(buf);
  };
  auto printLoad = [&](const std::string& what, const Load& l, long count, bool agent) {
    std::printf("| %s | %.0f | %.1f | %s | %.1f | %.1f | %s |\n", what.c_str(),
                static_cast<double>(count) / l.store_seconds, l.store_seconds,
                agent ? oneDecimal(l.end_to_end_seconds).c_str() : "-", l.cpu_seconds,
                l.control_plane_cpu_seconds,
                agent ? oneDecimal(static_cast<double>(l.peak_rss_kb) / 1024).c_str() : "-");
  };
  printLoad(cat("SyncRun via agent, ", small, " objects"), agent_small, small, true);
  for (std::size_t round = 0; round < agent_loads.size(); ++round) {
    const char* first = round % 2 == 0 ? "tributary run first" : "agent first";
    printLoad(cat("round ", round + 1, " (", first, "): SyncRun via agent"), agent_loads[round],
              objects, true);
    printLoad(cat("round ", round + 1, " (", first, "): tributary run"), cli_loads[round], objects,
              false);
  }
  std::printf("| raw ceiling (raw-unnest load) | %.0f | %.1f | - | - | - | - |\n", raw_rate,
              n / raw_rate);
  const double agent_rate = n / medianOf(agent_loads, &Load::store_seconds);
  const double cli_rate = n / medianOf(cli_loads, &Load::store_seconds);
  std::printf("\nmedian rows/s: agent %.0f, tributary run %.0f\n", agent_rate, cli_rate);
  std::printf("agent / tributary run: %.2f (goal >= 0.90; per round:", agent_rate / cli_rate);
  for (std::size_t round = 0; round < agent_loads.size(); ++round) {
    std::printf(" %.2f", cli_loads[round].store_seconds / agent_loads[round].store_seconds);
  }
  std::printf(")\n");
  std::printf("agent / raw ceiling:   %.2f (goal >= 0.80)\n", agent_rate / raw_rate);
  std::printf("CPU per 1 000 objects (median): agent path %.2f ms, tributary run %.2f ms\n",
              medianOf(agent_loads, &Load::cpu_seconds) / n * 1e6,
              medianOf(cli_loads, &Load::cpu_seconds) / n * 1e6);
  long peak_large_kb = 0;
  for (const Load& l : agent_loads) {
    peak_large_kb = std::max(peak_large_kb, l.peak_rss_kb);
  }
  std::printf("agent peak RSS, %ld vs %ld objects: %.2f (flat = 1.00)\n", objects, small,
              static_cast<double>(peak_large_kb) /
                  static_cast<double>(std::max(1L, agent_small.peak_rss_kb)));
  return 0;
}
