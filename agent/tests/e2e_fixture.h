#pragma once

// The fixture of the operator's end-to-end tests (agent_e2e_test.cc, agent_faults_test.cc): the
// real controller and agent binaries against the harness's kube-apiserver + etcd, PostgreSQL and
// Redis, with real connectors.

#include "tributary/kube/client.h"
#include "tributary/kube/config.h"
#include "tributary/testing/kube.h"
#include "tributary/testing/net.h"
#include "tributary/testing/promtool.h"
#include "tributary/testing/sandbox.h"
#include "tributary/testing/services.h"
#include "tributary/testing/spawn.h"
#include "tributary/testing/temp_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <libpq-fe.h>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <unistd.h>
#include <vector>

namespace tributary::e2e {

using namespace std::chrono_literals;
using harness::KubeApiServer;
using kube::Json;
namespace fs = std::filesystem;

template <typename Pred>
inline bool waitFor(Pred pred, std::chrono::milliseconds timeout = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) {
      return true;
    }
    std::this_thread::sleep_for(100ms);
  }
  return pred();
}

inline std::string readFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A child process of the test (controller or agent) with its log file.
struct Process {
  pid_t pid = -1;
  std::string log;
  int metrics_port = 0;

  bool alive() const { return pid > 0 && ::kill(pid, 0) == 0; }
  // Signals and reaps it; returns the exit status (or -signal).
  int stop(int sig = SIGTERM, std::chrono::milliseconds timeout = 60s) {
    if (pid <= 0) {
      return 0;
    }
    ::kill(pid, sig);
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(-pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
};

// Live direct children of `parent` whose command line contains `needle` ("" = all).
inline std::set<pid_t> childrenOf(pid_t parent, const std::string& needle = "") {
  std::set<pid_t> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) {
      continue;
    }
    const std::string stat = readFile(entry.path() / "stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) {
      continue;
    }
    std::istringstream fields(stat.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    fields >> state >> ppid;
    if (state != "Z" && ppid == parent &&
        readFile(entry.path() / "cmdline").find(needle) != std::string::npos) {
      out.insert(std::stoi(name));
    }
  }
  return out;
}

inline int countEntries(const fs::path& dir) {
  std::error_code ec;
  int n = 0;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    ++n;
  }
  return n;
}

struct AgentFlags {
  int capacity = 4;
  std::map<std::string, std::string> labels;
  std::string drain_timeout = "30s";
  std::string node_name;  ///< --node-name (the cordon check)
  /// --sandbox-read-only; the tests' default adds the test directory (the filesystem
  /// connector's trees) to harness::pythonReadOnlyPaths().
  std::optional<std::string> sandbox_read_only;
  std::optional<std::string> database_url;   ///< default: the fixture's database
  std::optional<std::string> redis_address;  ///< default: the shared Redis
  std::vector<std::string> extra;            ///< more flags
};
inline AgentFlags withLabel(int capacity, const std::string& zone) {
  AgentFlags flags;
  flags.capacity = capacity;
  flags.labels["zone"] = zone;
  return flags;
}
inline AgentFlags withDrainTimeout(const std::string& timeout) {
  AgentFlags flags;
  flags.drain_timeout = timeout;
  return flags;
}

class AgentE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    auto& kube = KubeApiServer::shared();
    static std::atomic<int> n{0};  // one per binary: SetUp is an inline function
    ns_ = "e2e-" + std::to_string(::getpid() % 100000) + "-" + std::to_string(n++);
    ASSERT_TRUE(kube.createNamespace(ns_).ok());
    auto config = kube::loadKubeconfig(kube.kubeconfigPath());
    ASSERT_TRUE(config.ok()) << config.status();
    auto client = kube::Client::create(*config);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *client;
    auto pg = harness::SharedServices::postgres();
    ASSERT_TRUE(pg.ok()) << pg.status();
    auto dsn = (*pg)->createDatabase("agent_e2e");
    ASSERT_TRUE(dsn.ok()) << dsn.status();
    dsn_ = *dsn;
    auto redis = harness::SharedServices::redis();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_port_ = (*redis)->port();
    dir_ = tmp_.path();  // 0711: as root, the agent runs connectors as uid 65534
    // Connectors as users install them: Local sources, each its own directory.
    fs::create_directories(dir_ / "go");
    fs::copy_file(fs::path(TRIBUTARY_GO_BIN_DIR) / "connector-go-v1_6", dir_ / "go" / "connector");
    fs::create_directories(dir_ / "fs");
    fs::copy_file(TRIBUTARY_FILESYSTEM_CONNECTOR, dir_ / "fs" / "connector");
    fs::create_directories(dir_ / "py");
    fs::copy_file(fs::path(TRIBUTARY_SOURCE_DIR) / "tests/connectors/python/test_connector.py",
                  dir_ / "py" / "test_connector.py");
    // Commands run from the connector's root: the venv's Python through a script there.
    std::ofstream(dir_ / "py" / "run")
        << "#!/bin/sh\nexec " TRIBUTARY_PYTHON " ./test_connector.py\n";
    fs::permissions(dir_ / "py" / "run",
                    fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);
  }

  void TearDown() override {
    for (auto& [name, agent] : agents_) {
      agent.stop(SIGTERM, 20s);
    }
    controller_.stop(SIGTERM, 20s);
    if (HasFailure()) {
      std::cerr << "--- controller log (tail)\n" << tail(controller_.log);
      for (auto& [name, agent] : agents_) {
        std::cerr << "--- agent " << name << " log (tail)\n" << tail(agent.log);
      }
    }
  }

  static std::string tail(const std::string& path) {
    const std::string text = readFile(path);
    return text.size() > 6000 ? text.substr(text.size() - 6000) : text;
  }

  void startController() { startControllerAs(controller_, "controller", {}); }
  /// A controller process logging to <dir>/<name>.log with more flags (--leader-elect, …).
  void startControllerAs(Process& controller, const std::string& name,
                         const std::vector<std::string>& extra) {
    controller.log = (dir_ / (name + ".log")).string();
    std::vector<std::string> args = {
        TRIBUTARY_CONTROLLER_BINARY, "--kubeconfig=" + KubeApiServer::shared().kubeconfigPath(),
        "--namespace=" + ns_,        "--agent-namespace=" + ns_,
        "--metrics-bind-address=0",  "--health-probe-bind-address=0"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto pid = harness::spawnLogged(args, controller.log);
    ASSERT_TRUE(pid.ok()) << pid.status();
    controller.pid = *pid;
  }

  Process& startAgent(const std::string& name, const AgentFlags& flags = AgentFlags()) {
    Process& p = agents_[name];
    p.log = (dir_ / ("agent-" + name + ".log")).string();
    auto port = harness::freeLoopbackPort();
    EXPECT_TRUE(port.ok());
    p.metrics_port = port.value_or(0);
    auto pid = harness::spawnLogged(agentArgs(name, flags, p.metrics_port), p.log);
    EXPECT_TRUE(pid.ok()) << pid.status();
    p.pid = pid.value_or(-1);
    EXPECT_TRUE(waitFor([&] { return lease(name).has_value(); }, 20s))
        << "agent " << name << " registered no Lease\n"
        << tail(p.log);
    return p;
  }

  std::vector<std::string> agentArgs(const std::string& name, const AgentFlags& flags,
                                     int metrics_port) {
    std::vector<std::string> args = {
        TRIBUTARY_AGENT_BINARY,
        "--kubeconfig=" + KubeApiServer::shared().kubeconfigPath(),
        "--name=" + name,
        "--lease-namespace=" + ns_,
        "--namespace=" + ns_,
        "--capacity=" + std::to_string(flags.capacity),
        "--database-url=" + flags.database_url.value_or(dsn_),
        "--redis-address=" +
            flags.redis_address.value_or("127.0.0.1:" + std::to_string(redis_port_)),
        "--cache-dir=" + (dir_ / ("cache-" + name)).string(),
        "--local-root=" + dir_.string(),
        "--metrics-bind-address=127.0.0.1:" + std::to_string(metrics_port),
        "--health-probe-bind-address=0",
        "--lease-duration=3s",
        "--progress-interval=1s",
        "--lock-ttl=4s",
        "--lock-wait=30s",
        "--drain-timeout=" + flags.drain_timeout};
    for (const auto& [k, v] : flags.labels) {
      args.push_back("--label=" + k + "=" + v);
    }
    if (!flags.node_name.empty()) {
      args.push_back("--node-name=" + flags.node_name);
    }
    args.push_back("--sandbox-read-only=" +
                   flags.sandbox_read_only.value_or(
                       dir_.string() + ":" + harness::pythonReadOnlyPaths(TRIBUTARY_PYTHON)));
    args.insert(args.end(), flags.extra.begin(), flags.extra.end());
    return args;
  }

  std::optional<Json> lease(const std::string& name) {
    auto l = client_->get(kube::resources::lease(), ns_, name);
    if (!l.ok()) {
      return std::nullopt;
    }
    return *l;
  }

  void apply(const std::string& yaml) {
    const auto r =
        KubeApiServer::shared().runKubectl({"apply", "--namespace=" + ns_, "-f", "-"}, yaml);
    ASSERT_EQ(r.exit_code, 0) << r.output << "\n" << yaml;
  }
  harness::KubectlResult kubectl(std::vector<std::string> args) {
    args.insert(args.begin(), "--namespace=" + ns_);
    return KubeApiServer::shared().runKubectl(args);
  }

  std::string goConnector(const std::string& name, const std::string& mode = "normal") {
    return "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: " + name +
           "\nspec:\n  source: Local\n  uri: " + (dir_ / "go").string() +
           "\n  command: ./connector\n  env:\n    - name: TEST_CONNECTOR_MODE\n      value: " +
           mode + "\n";
  }
  static std::string syncJob(const std::string& name, const std::string& connector,
                             const std::string& options, const std::string& extra = "") {
    return "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: " + name +
           "\nspec:\n  connectorRef:\n    name: " + connector + "\n  options: " + options + "\n" +
           extra;
  }

  std::vector<Json> runsOf(const std::string& job) {
    kube::ListOptions options;
    options.label_selector = "tributary.dev/syncjob=" + job;
    auto list = client_->list(kube::resources::syncRun(), ns_, options);
    return list.ok() ? list->items : std::vector<Json>{};
  }
  static std::string phase(const Json& run) {
    return run.value("/status/phase"_json_pointer, std::string("Pending"));
  }
  // Waits for a run of `job` in `want`; returns it (null on timeout).
  Json waitForRun(const std::string& job, const std::string& want,
                  std::chrono::milliseconds timeout = 90s) {
    Json found;
    waitFor(
        [&] {
          for (const Json& r : runsOf(job)) {
            if (phase(r) == want) {
              found = r;
              return true;
            }
          }
          return false;
        },
        timeout);
    return found;
  }

  std::string scalar(const std::string& sql) {
    PGconn* conn = PQconnectdb(dsn_.c_str());
    std::string out;
    if (PQstatus(conn) == CONNECTION_OK) {
      PGresult* r = PQexec(conn, sql.c_str());
      if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
        out = PQgetvalue(r, 0, 0);
      } else {
        out = std::string("error: ") + PQerrorMessage(conn);
      }
      PQclear(r);
    } else {
      out = std::string("error: ") + PQerrorMessage(conn);
    }
    PQfinish(conn);
    return out;
  }
  std::string liveCount(const std::string& job) {
    return scalar("SELECT count(*) FROM tributary.live_objects WHERE namespace = '" + ns_ +
                  "' AND sync_job = '" + job + "'");
  }

  harness::TempDir tmp_{"agent-e2e"};
  fs::path dir_;
  std::string ns_;
  std::shared_ptr<kube::Client> client_;
  std::string dsn_;
  int redis_port_ = 0;
  Process controller_;
  std::map<std::string, Process> agents_;
};

}  // namespace tributary::e2e
