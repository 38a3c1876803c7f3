// controller_bench: how fast the tributary-controller binary turns run-now SyncJobs into bound
// SyncRuns on the real kube-apiserver + etcd of the test harness, what it costs in CPU and
// memory, and how that compares with the bare API work measured in the same run.
//
//   controller_bench [--jobs 1000,10000] [--agents 20] [--workers 2] [--creators 8]
//                    [--log-dir DIR]   (keep the controller's logs there)
//
// For every job count N, in a fresh namespace:
//   controller  N SyncJobs carrying the run-now annotation are created by --creators client
//               threads while the controller binary runs with --workers; simulated agents renew
//               their Leases every 5 s; a watch on SyncRuns notes when each run is first Bound.
//               Reported: creation time, first create → last bound, latency create → bound
//               (p50/p99/max), the controller's API requests per job (its /metrics), CPU seconds
//               of controller, kube-apiserver and etcd over the phase, controller RSS (peak and
//               with everything cached).
//   bare API    the minimum API work of the same outcome without a controller, by the same
//               --creators threads: per job, create the SyncJob, create its SyncRun, set the
//               run's status to Bound (3 requests).
// Ratios: controller / bare-API time and API requests per second (both near the API server's
// capacity when it is the bottleneck), controller CPU / (apiserver + etcd) CPU.

#include "tributary/common/strings.h"
#include "tributary/kube/client.h"
#include "tributary/kube/config.h"
#include "tributary/kube/informer.h"
#include "tributary/testing/kube.h"
#include "tributary/testing/net.h"
#include "tributary/testing/spawn.h"
#include "tributary/testing/temp_dir.h"

#include "proc_stats.h"

#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <signal.h>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using namespace std::chrono_literals;
using tributary::bench::cpuSeconds;
using tributary::strings::cat;
using Json = tributary::kube::Json;
using SteadyClock = std::chrono::steady_clock;
namespace kube = tributary::kube;
namespace harness = tributary::harness;

struct Options {
  std::vector<int> jobs = {1000, 10000};
  int agents = 20;
  int workers = 2;
  int creators = 8;
  std::string log_dir;
};

[[noreturn]] void die(const std::string& message) {
  std::cerr << "controller_bench: " << message << "\n";
  std::exit(1);
}

void check(const absl::Status& status, const std::string& what) {
  if (!status.ok()) {
    die(cat(what, ": ", status.ToString()));
  }
}

double seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

// --- /proc ------------------------------------------------------------------------------------

// VmRSS or VmHWM in MiB.
double memoryMiB(pid_t pid, const std::string& field) {
  std::ifstream status(cat("/proc/", pid, "/status"));
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with(field + ":")) {
      return std::stod(line.substr(field.size() + 1)) / 1024.0;
    }
  }
  return 0;
}

// --- the controller binary ---------------------------------------------------------------------

struct ControllerProcess {
  pid_t pid = -1;
  int metrics_port = 0;
  int probe_port = 0;
};

ControllerProcess startController(const std::string& kubeconfig, const std::string& ns, int workers,
                                  const std::string& log_path) {
  ControllerProcess p;
  auto metrics_port = harness::freeLoopbackPort();
  auto probe_port = harness::freeLoopbackPort();
  check(metrics_port.status(), "pick a port");
  check(probe_port.status(), "pick a port");
  p.metrics_port = *metrics_port;
  p.probe_port = *probe_port;
  const std::vector<std::string> args = {
      TRIBUTARY_CONTROLLER_BINARY,
      "--kubeconfig=" + kubeconfig,
      "--namespace=" + ns,
      "--agent-namespace=" + ns,
      cat("--workers=", workers),
      cat("--metrics-bind-address=127.0.0.1:", p.metrics_port),
      cat("--health-probe-bind-address=127.0.0.1:", p.probe_port)};
  auto pid = harness::spawnLogged(args, log_path);
  check(pid.status(), "start " + args[0]);
  p.pid = *pid;
  for (int i = 0; i < 600; ++i) {
    int code = 0;
    harness::httpGetLoopback(p.probe_port, "/readyz", &code);
    if (code == 200) {
      return p;
    }
    if (::waitpid(p.pid, nullptr, WNOHANG) == p.pid) {
      die(cat("the controller exited before /readyz; see ", log_path));
    }
    std::this_thread::sleep_for(50ms);
  }
  die(cat("the controller was not ready after 30 s; see ", log_path));
}

void stopController(const ControllerProcess& p) {
  ::kill(p.pid, SIGTERM);
  ::waitpid(p.pid, nullptr, 0);
}

// Sum of rest_client_requests_total by method (and code when not 2xx) from a /metrics text.
std::map<std::string, double> requestsByMethod(const std::string& metrics) {
  std::map<std::string, double> out;
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("rest_client_requests_total{")) {
      continue;
    }
    const auto m = line.find("method=\"");
    const auto close = line.rfind("} ");
    if (m == std::string::npos || close == std::string::npos) {
      continue;
    }
    const auto end = line.find('"', m + 8);
    std::string key = line.substr(m + 8, end - m - 8);
    // Unsuccessful requests separately, e.g. "PUT/409".
    const auto c = line.find("code=\"");
    if (c != std::string::npos && line.compare(c + 6, 1, "2") != 0) {
      key += "/" + line.substr(c + 6, line.find('"', c + 6) - c - 6);
    }
    out[key] += std::stod(line.substr(close + 2));
  }
  return out;
}

// --- objects -----------------------------------------------------------------------------------

std::string jobName(int i) { return cat("job-", i); }

Json syncJob(int i) {
  return {
      {"apiVersion", "tributary.dev/v1alpha1"},
      {"kind", "SyncJob"},
      {"metadata", {{"name", jobName(i)}, {"annotations", {{"tributary.dev/run-now", "bench"}}}}},
      {"spec",
       {{"connectorRef", {{"name", "bench"}}},
        {"schedule", "0 0 1 1 *"},
        {"options", {{"bucket", cat("bench-", i)}}}}}};
}

Json agentLease(const std::string& ns, int i, int capacity) {
  return {{"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata",
           {{"name", cat("agent-", i)},
            {"namespace", ns},
            {"labels", {{"tributary.dev/agent", "true"}}},
            {"annotations", {{"tributary.dev/capacity", std::to_string(capacity)}}}}},
          {"spec",
           {{"holderIdentity", cat("agent-", i)},
            {"leaseDurationSeconds", 30},
            {"renewTime", kube::formatMicroTime(std::chrono::system_clock::now())}}}};
}

// Runs fn(i) for i in [0, n) on `threads` threads; fn failures abort the benchmark.
template <typename Fn>
void parallelFor(int n, int threads, Fn fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = next++; i < n; i = next++) {
        fn(i);
      }
    });
  }
  for (auto& t : pool) {
    t.join();
  }
}

// Simulated agents: Leases renewed every 5 s until destroyed.
class Agents {
 public:
  Agents(std::shared_ptr<kube::Client> client, std::string ns, int count, int capacity)
      : client_(std::move(client)), ns_(std::move(ns)) {
    for (int i = 0; i < count; ++i) {
      auto r = client_->create(kube::resources::lease(), ns_, agentLease(ns_, i, capacity));
      check(r.status(), "create agent Lease");
      leases_.push_back(*r);
    }
    renewer_ = std::jthread([this](const std::stop_token& stop) {
      while (!stop.stop_requested()) {
        for (int waited = 0; waited < 50 && !stop.stop_requested(); ++waited) {
          std::this_thread::sleep_for(100ms);
        }
        for (auto& lease : leases_) {
          lease["spec"]["renewTime"] = kube::formatMicroTime(std::chrono::system_clock::now());
          auto r = client_->update(kube::resources::lease(), lease);
          if (r.ok()) {
            lease = *r;
          }
        }
      }
    });
  }

 private:
  std::shared_ptr<kube::Client> client_;
  std::string ns_;
  std::vector<Json> leases_;
  std::jthread renewer_;
};

struct Latencies {
  std::vector<double> values;
  double at(double q) {
    std::sort(values.begin(), values.end());
    return values.empty()
               ? 0
               : values[std::min(values.size() - 1,
                                 static_cast<std::size_t>(q * static_cast<double>(values.size())))];
  }
};

struct PhaseResult {
  double create_s = 0;
  double total_s = 0;  // first create → last bound
  Latencies latency;
  double controller_cpu = 0;
  double apiserver_cpu = 0;
  double etcd_cpu = 0;
  double rss_peak = 0;
  double rss_cached = 0;
  std::map<std::string, double> requests;
};

struct CpuSample {
  double controller = 0;
  double apiserver = 0;
  double etcd = 0;
};

CpuSample sampleCpu(const harness::KubeApiServer& server, pid_t controller) {
  return {controller > 0 ? cpuSeconds(controller) : 0, cpuSeconds(server.apiserverPid()),
          cpuSeconds(server.etcdPid())};
}

void createJobs(kube::Client& client, const std::string& ns, int n, int creators,
                std::vector<SteadyClock::time_point>& created_at) {
  parallelFor(n, creators, [&](int i) {
    created_at[static_cast<std::size_t>(i)] = SteadyClock::now();
    check(client.create(kube::resources::syncJob(), ns, syncJob(i)).status(), "create SyncJob");
  });
}

std::string setUpNamespace(harness::KubeApiServer& server, kube::Client& client,
                           const std::string& ns) {
  check(server.createNamespace(ns), "create namespace " + ns);
  Json connector = {
      {"apiVersion", "tributary.dev/v1alpha1"},
      {"kind", "Connector"},
      {"metadata", {{"name", "bench"}}},
      {"spec", {{"source", "Local"}, {"uri", "/opt/connectors/bench"}, {"command", "./bench"}}}};
  check(client.create(kube::resources::connector(), ns, connector).status(), "create Connector");
  return ns;
}

PhaseResult runController(harness::KubeApiServer& server, std::shared_ptr<kube::Client> client,
                          const Options& options, int n, const std::string& log_dir) {
  const std::string ns = setUpNamespace(server, *client, cat("bench-ctrl-", n));
  Agents agents(client, ns, options.agents, n / options.agents * 2 + 1);

  // Watch SyncRuns: first time each job's run is seen Bound (or later).
  std::mutex mu;
  std::map<std::string, SteadyClock::time_point> bound_at;  // job name → time
  std::atomic<int> bound{0};
  kube::InformerOptions io;
  io.type = kube::resources::syncRun();
  io.namespaces = {ns};
  kube::Informer runs(client, io);
  auto note = [&](const Json& run) {
    const std::string phase = run.contains("status") ? run["status"].value("phase", "") : "";
    if (phase.empty() || phase == "Pending") {
      return;
    }
    const std::string job = run["spec"]["syncJobRef"].value("name", "");
    std::lock_guard lock(mu);
    if (bound_at.emplace(job, SteadyClock::now()).second) {
      ++bound;
    }
  };
  runs.addEventHandler({[&](const Json& o, bool) { note(o); },
                        [&](const Json&, const Json& o) { note(o); }, nullptr});
  runs.start();
  if (!runs.waitForSync(30s)) {
    die("the SyncRun watch did not sync");
  }

  const ControllerProcess controller = startController(server.kubeconfigPath(), ns, options.workers,
                                                       cat(log_dir, "/controller-", n, ".log"));
  const CpuSample before = sampleCpu(server, controller.pid);
  std::vector<SteadyClock::time_point> created_at(static_cast<std::size_t>(n));
  double rss_peak_seen = 0;
  std::atomic<bool> sampling{true};
  std::thread rss_sampler([&] {
    while (sampling) {
      rss_peak_seen = std::max(rss_peak_seen, memoryMiB(controller.pid, "VmRSS"));
      std::this_thread::sleep_for(200ms);
    }
  });

  const auto start = SteadyClock::now();
  createJobs(*client, ns, n, options.creators, created_at);
  const auto created = SteadyClock::now();
  const auto deadline = created + std::chrono::seconds(120 + n / 10);
  while (bound.load() < n && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  if (bound.load() < n) {
    die(cat("only ", bound.load(), " of ", n, " runs were bound in time; see ", log_dir));
  }
  PhaseResult result;
  {
    std::lock_guard lock(mu);
    SteadyClock::time_point last = start;
    for (int i = 0; i < n; ++i) {
      const auto at = bound_at.at(jobName(i));
      last = std::max(last, at);
      result.latency.values.push_back(seconds(at - created_at[static_cast<std::size_t>(i)]));
    }
    result.total_s = seconds(last - start);
  }
  result.create_s = seconds(created - start);
  const CpuSample after = sampleCpu(server, controller.pid);
  result.controller_cpu = after.controller - before.controller;
  result.apiserver_cpu = after.apiserver - before.apiserver;
  result.etcd_cpu = after.etcd - before.etcd;
  std::this_thread::sleep_for(5s);  // follow-up reconciles settle; everything is cached
  sampling = false;
  rss_sampler.join();
  result.rss_cached = memoryMiB(controller.pid, "VmRSS");
  result.rss_peak = std::max(rss_peak_seen, memoryMiB(controller.pid, "VmHWM"));
  result.requests = requestsByMethod(harness::httpGetLoopback(controller.metrics_port, "/metrics"));
  runs.stop();
  stopController(controller);
  return result;
}

PhaseResult runBareApi(harness::KubeApiServer& server, std::shared_ptr<kube::Client> client,
                       const Options& options, int n) {
  const std::string ns = setUpNamespace(server, *client, cat("bench-bare-", n));
  const CpuSample before = sampleCpu(server, -1);
  const auto start = SteadyClock::now();
  Latencies latency;
  std::mutex mu;
  parallelFor(n, options.creators, [&](int i) {
    const auto created_at = SteadyClock::now();
    auto job = client->create(kube::resources::syncJob(), ns, syncJob(i));
    check(job.status(), "create SyncJob");
    Json run = {
        {"apiVersion", "tributary.dev/v1alpha1"},
        {"kind", "SyncRun"},
        {"metadata", {{"name", jobName(i) + "-m1"}}},
        {"spec",
         {{"syncJobRef", {{"name", jobName(i)}, {"uid", kube::uidOf(*job)}, {"generation", 1}}},
          {"connectorRef", {{"name", "bench"}}},
          {"scheduledTime", kube::formatTime(std::chrono::system_clock::now())},
          {"trigger", "Manual"},
          {"backoffLimit", 6},
          {"deletionPolicy", "Mark"}}}};
    auto r = client->create(kube::resources::syncRun(), ns, run);
    check(r.status(), "create SyncRun");
    Json bound = *r;
    bound["status"] = {
        {"phase", "Bound"}, {"agent", cat("agent-", i % options.agents)}, {"attempt", 1}};
    check(client->updateStatus(kube::resources::syncRun(), bound).status(), "bind SyncRun");
    std::lock_guard lock(mu);
    latency.values.push_back(seconds(SteadyClock::now() - created_at));
  });
  const auto done = SteadyClock::now();
  const CpuSample after = sampleCpu(server, -1);
  PhaseResult result;
  result.total_s = seconds(done - start);
  result.latency = latency;
  result.apiserver_cpu = after.apiserver - before.apiserver;
  result.etcd_cpu = after.etcd - before.etcd;
  return result;
}

Options parseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        die("missing value for " + arg);
      }
      return argv[++i];
    };
    if (arg == "--jobs") {
      o.jobs.clear();
      for (const auto& part : tributary::strings::split(value(), ',')) {
        o.jobs.push_back(std::stoi(std::string(part)));
      }
    } else if (arg == "--agents") {
      o.agents = std::stoi(value());
    } else if (arg == "--workers") {
      o.workers = std::stoi(value());
    } else if (arg == "--creators") {
      o.creators = std::stoi(value());
    } else if (arg == "--log-dir") {
      o.log_dir = value();
    } else {
      die("unknown argument " + arg +
          " (usage: controller_bench [--jobs 1000,10000] [--agents N] [--workers N] "
          "[--creators N] [--log-dir DIR])");
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parseArgs(argc, argv);
  auto server = harness::KubeApiServer::sharedOrError();
  check(server.status(), "start kube-apiserver + etcd");
  auto config = kube::loadKubeconfig((*server)->kubeconfigPath());
  check(config.status(), "kubeconfig");
  auto client = kube::Client::create(*config);
  check(client.status(), "client");
  harness::TempDir logs("controller-bench");
  const std::string log_dir = options.log_dir.empty() ? logs.path().string() : options.log_dir;

  std::printf(
      "controller_bench: tributary-controller --workers %d, %d simulated agents, "
      "%d creating clients, kube-apiserver + etcd on loopback, %u cores\n\n",
      options.workers, options.agents, options.creators, std::thread::hardware_concurrency());
  std::printf("%7s  %-10s %8s %9s %7s %7s %7s %7s %8s %7s %8s %9s %9s %9s\n", "jobs", "path",
              "create s", "->bound s", "jobs/s", "p50 s", "p99 s", "max s", "req/job", "req/s",
              "ctrl CPU", "ctrl core", "api+etcd", "RSS MiB");
  for (const int n : options.jobs) {
    PhaseResult c = runController(**server, *client, options, n, log_dir);
    PhaseResult b = runBareApi(**server, *client, options, n);
    // API requests of the phase: the SyncJob creations plus what the controller sent.
    double requests = n;
    for (const auto& [method, count] : c.requests) {
      requests += count;
    }
    const double bare_requests = 3.0 * n;
    std::printf(
        "%7d  %-10s %8.1f %9.1f %7.0f %7.2f %7.2f %7.2f %8.1f %7.0f %8.1f %9.2f %9.2f "
        "%4.0f/%-4.0f\n",
        n, "controller", c.create_s, c.total_s, n / c.total_s, c.latency.at(0.5),
        c.latency.at(0.99), c.latency.at(1.0), requests / n, requests / c.total_s, c.controller_cpu,
        c.controller_cpu / c.total_s, (c.apiserver_cpu + c.etcd_cpu) / c.total_s, c.rss_cached,
        c.rss_peak);
    std::printf("%7d  %-10s %8s %9.1f %7.0f %7.2f %7.2f %7.2f %8.1f %7.0f %8s %9s %9.2f %9s\n", n,
                "bare API", "-", b.total_s, n / b.total_s, b.latency.at(0.5), b.latency.at(0.99),
                b.latency.at(1.0), bare_requests / n, bare_requests / b.total_s, "-", "-",
                (b.apiserver_cpu + b.etcd_cpu) / b.total_s, "-");
    std::string by_method;
    for (const auto& [method, count] : c.requests) {
      by_method += cat(" ", method, "=", static_cast<long>(count));
    }
    std::printf(
        "         controller / bare API: time %.2f, API requests per second %.2f; "
        "controller CPU / (apiserver + etcd) CPU %.2f; controller requests:%s\n",
        c.total_s / b.total_s, (requests / c.total_s) / (bare_requests / b.total_s),
        c.controller_cpu / (c.apiserver_cpu + c.etcd_cpu), by_method.c_str());
    std::fflush(stdout);
  }
  std::printf(
      "\n(req: API requests incl. the SyncJob creations; CPU in seconds, cores = CPU / "
      "->bound time; RSS: with every SyncJob and SyncRun cached / peak; latency: "
      "creation request sent -> SyncRun seen Bound by a watch)\n");
  return 0;
}
