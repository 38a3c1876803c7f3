// agent_bench: one SyncRun through controller → agent → PostgreSQL, beside `tributary run` of the
// same connector and the raw ceiling (store_bench's raw-unnest), on the same PostgreSQL in the
// same run, with fsync on.
//
//   agent_bench [--objects 1000000] [--page-size 1000] [--small 100000] [--cli-first 1]
//
// Every path is an initial load of its own source: the Go go-plugin v1.6.3 test connector sends
// objects/page-size pages. Rows/s are objects over the store run's duration (started → finished:
// Sync and finish, what both paths share); the SyncRun's end to end (created → Succeeded:
// binding, install, lock) is printed beside it. Agent peak RSS (VmHWM) is measured in a fresh
// agent process per run size: flat in the number of objects means the small and large figures
// match.

#include "tributary/common/strings.h"
#include "tributary/kube/client.h"
#include "tributary/kube/config.h"
#include "tributary/testing/kube.h"
#include "tributary/testing/net.h"
#include "tributary/testing/services.h"
#include "tributary/testing/spawn.h"
#include "tributary/testing/temp_dir.h"

#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <libpq-fe.h>
#include <sstream>
#include <thread>

namespace {

using namespace tributary;
using namespace std::chrono_literals;
using kube::Json;
using strings::cat;
namespace fs = std::filesystem;

std::string readFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

[[noreturn]] void die(const std::string& what) {
  std::cerr << "agent_bench: " << what << "\n";
  std::exit(1);
}

std::string scalar(const std::string& dsn, const std::string& sql) {
  PGconn* conn = PQconnectdb(dsn.c_str());
  std::string out;
  PGresult* r = PQexec(conn, sql.c_str());
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
    out = PQgetvalue(r, 0, 0);
  } else {
    die(cat("query failed: ", sql, ": ", PQerrorMessage(conn)));
  }
  PQclear(r);
  PQfinish(conn);
  return out;
}

// Seconds of the store run of a source (started → finished).
double runSeconds(const std::string& dsn, const std::string& job) {
  return std::stod(scalar(dsn, cat("SELECT extract(epoch FROM max(finished_at - started_at)) "
                                   "FROM tributary.sync_runs WHERE sync_job = '",
                                   job, "' AND outcome = 'succeeded'")));
}

long peakRssKb(pid_t pid) {
  const std::string status = readFile(cat("/proc/", pid, "/status"));
  const auto at = status.find("VmHWM:");
  return at == std::string::npos ? -1 : std::stol(status.substr(at + 6));
}

void stopProcess(pid_t pid) {
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

struct AgentRun {
  double store_seconds = 0;
  double end_to_end_seconds = 0;
  long peak_rss_kb = 0;
};

}  // namespace

int main(int argc, char** argv) {
  long objects = 1000000;
  long page_size = 1000;
  long small = 100000;
  bool cli_first = false;  // order effects: run `tributary run` before the agent's large load
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const long value = std::stol(argv[i + 1]);
    if (flag == "--objects") {
      objects = value;
    } else if (flag == "--page-size") {
      page_size = value;
    } else if (flag == "--small") {
      small = value;
    } else if (flag == "--cli-first") {
      cli_first = value != 0;
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

  // One run through a fresh agent process.
  auto viaAgent = [&](const std::string& job, long n) {
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
    if (absl::Status st = kube.kubectlApply(jobYaml(job, n)); !st.ok()) {
      die(cat("apply: ", st.message()));
    }
    AgentRun result;
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
      std::this_thread::sleep_for(200ms);
    }
    result.peak_rss_kb = std::max(result.peak_rss_kb, peakRssKb(*agent));
    result.store_seconds = runSeconds(dsn, job);
    stopProcess(*agent);
    return result;
  };

  auto viaCli = [&]() {
    std::cerr << "tributary run: " << objects << " objects…\n";
    const fs::path manifest = dir / "cli.yaml";
    std::ofstream(manifest) << connectorYaml() << "---\n" << jobYaml("cli-large", objects);
    auto cli = harness::spawnLogged(
        {TRIBUTARY_CLI, "run", "-f", manifest.string(), "--syncjob", ns + "/cli-large",
         "--database-url", dsn, "--cache-dir", (dir / "cli-cache").string()},
        (dir / "cli.log").string());
    int cli_status = 0;
    ::waitpid(*cli, &cli_status, 0);
    if (!WIFEXITED(cli_status) || WEXITSTATUS(cli_status) != 0) {
      die(cat("tributary run failed:\n", readFile(dir / "cli.log")));
    }
    return runSeconds(dsn, "cli-large");
  };
  double cli_seconds = cli_first ? viaCli() : 0;
  std::cerr << "agent path: " << small << " objects…\n";
  const AgentRun agent_small = viaAgent("agent-small", small);
  std::cerr << "agent path: " << objects << " objects…\n";
  const AgentRun agent_large = viaAgent("agent-large", objects);
  if (!cli_first) {
    cli_seconds = viaCli();
  }

  std::cerr << "raw ceiling (store_bench raw-unnest): " << objects << " objects…\n";
  const fs::path raw_out = dir / "raw.txt";
  auto raw =
      harness::spawnLogged({TRIBUTARY_STORE_BENCH, "--dsn", dsn, "--server-pid",
                            std::to_string(pg.pid()), "--objects", std::to_string(objects),
                            "--page-sizes", std::to_string(page_size), "--methods", "raw-unnest"},
                           raw_out.string());
  int status = 0;
  ::waitpid(*raw, &status, 0);
  const std::string raw_text = readFile(raw_out);
  const auto row = raw_text.find(cat("| ", page_size, " | raw-unnest | "));
  if (row == std::string::npos) {
    die(cat("store_bench printed no raw-unnest row:\n", raw_text));
  }
  const double raw_rate =
      std::stod(raw_text.substr(row + cat("| ", page_size, " | raw-unnest | ").size())) * 1000;
  stopProcess(*controller);

  const double n = static_cast<double>(objects);
  const double agent_rate = n / agent_large.store_seconds;
  const double cli_rate = n / cli_seconds;
  std::printf("\n# agent_bench: %ld objects in pages of %ld, PostgreSQL %s, fsync on\n\n", objects,
              page_size, scalar(dsn, "SHOW server_version").c_str());
  std::printf("| path | rows/s (store run) | store run s | end to end s | agent peak RSS MB |\n");
  std::printf("|---|---|---|---|---|\n");
  std::printf("| SyncRun via agent, %ld objects | %.0f | %.1f | %.1f | %.1f |\n", small,
              static_cast<double>(small) / agent_small.store_seconds, agent_small.store_seconds,
              agent_small.end_to_end_seconds, static_cast<double>(agent_small.peak_rss_kb) / 1024);
  std::printf("| SyncRun via agent, %ld objects | %.0f | %.1f | %.1f | %.1f |\n", objects,
              agent_rate, agent_large.store_seconds, agent_large.end_to_end_seconds,
              static_cast<double>(agent_large.peak_rss_kb) / 1024);
  std::printf("| tributary run | %.0f | %.1f | - | - |\n", cli_rate, cli_seconds);
  std::printf("| raw ceiling (raw-unnest load) | %.0f | %.1f | - | - |\n", raw_rate, n / raw_rate);
  std::printf("\nagent / tributary run: %.2f (goal >= 0.90)\n", agent_rate / cli_rate);
  std::printf("agent / raw ceiling:   %.2f (goal >= 0.80)\n", agent_rate / raw_rate);
  std::printf("agent peak RSS, %ld vs %ld objects: %.2f (flat = 1.00)\n", objects, small,
              static_cast<double>(agent_large.peak_rss_kb) /
                  static_cast<double>(std::max(1L, agent_small.peak_rss_kb)));
  return 0;
}
