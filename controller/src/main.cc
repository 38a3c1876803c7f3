// tributary-controller: see controller/README.md.

#include "tributary/common/log.h"
#include "tributary/common/strings.h"
#include "tributary/controller/controller.h"
#include "tributary/kube/config.h"
#include "tributary/kube/informer.h"
#include "tributary/kube/leader_election.h"
#include "tributary/kube/metrics.h"
#include "tributary/metrics/http_server.h"
#include "tributary/metrics/process.h"

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <signal.h>
#include <unistd.h>

namespace {

using namespace tributary;
using namespace std::chrono_literals;

constexpr const char* kUsage = R"(usage: tributary-controller [flags]

  --kubeconfig PATH                   kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)
  --namespace NS[,NS...]              watch Connectors/SyncJobs/SyncRuns in these only (default: all)
  --all-namespaces                    watch every namespace (the default)
  --agent-namespace NS                namespace of the agent Leases (default: tributary-system)
  --workers N                         workers per controller (default 2)
  --leader-elect                      leader election on a coordination.k8s.io Lease
  --leader-election-id NAME           Lease name (default tributary-controller)
  --leader-election-namespace NS      Lease namespace (default: the agent namespace)
  --leader-elect-lease-duration D     default 15s (also --leader-elect-renew-deadline 10s,
                                      --leader-elect-retry-period 2s)
  --metrics-bind-address ADDR         /metrics (default :8080; 0 disables)
  --health-probe-bind-address ADDR    /healthz and /readyz (default :8081; 0 disables)
  --http-io-threads N                 HTTP client I/O threads (default 4)
  --log-level LEVEL                   debug|info|warn|error (default info)
)";

std::chrono::milliseconds parseDuration(const std::string& s) {
  const double v = std::atof(s.c_str());
  if (s.ends_with("ms")) {
    return std::chrono::milliseconds(static_cast<std::int64_t>(v));
  }
  if (s.ends_with("m")) {
    return std::chrono::milliseconds(static_cast<std::int64_t>(v * 60000));
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(v * 1000));
}

}  // namespace

int main(int argc, char** argv) {
  std::string kubeconfig;
  std::string ns;
  std::string agent_ns = "tributary-system";
  std::string lease_name = "tributary-controller";
  std::string lease_ns;
  std::string metrics_addr = ":8080";
  std::string probe_addr = ":8081";
  std::string level = "info";
  bool leader_elect = false;
  int workers = 2;
  int http_io_threads = 4;
  kube::LeaderElectionConfig le;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    const bool has_eq = arg.find('=') != std::string::npos;
    if (has_eq) {
      value = arg.substr(arg.find('=') + 1);
      arg.resize(arg.find('='));
    }
    auto next = [&]() -> std::string {
      if (has_eq) {
        return value;
      }
      if (i + 1 >= argc) {
        std::cerr << "missing value for " << arg << "\n" << kUsage;
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (arg == "--kubeconfig") {
      kubeconfig = next();
    } else if (arg == "--namespace") {
      ns = next();
    } else if (arg == "--all-namespaces") {
      ns.clear();
    } else if (arg == "--agent-namespace") {
      agent_ns = next();
    } else if (arg == "--workers") {
      workers = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--http-io-threads") {
      http_io_threads = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--leader-elect") {
      leader_elect = !has_eq || value == "true";
    } else if (arg == "--leader-election-id") {
      lease_name = next();
    } else if (arg == "--leader-election-namespace") {
      lease_ns = next();
    } else if (arg == "--leader-elect-lease-duration") {
      le.lease_duration = parseDuration(next());
    } else if (arg == "--leader-elect-renew-deadline") {
      le.renew_deadline = parseDuration(next());
    } else if (arg == "--leader-elect-retry-period") {
      le.retry_period = parseDuration(next());
    } else if (arg == "--metrics-bind-address") {
      metrics_addr = next();
    } else if (arg == "--health-probe-bind-address") {
      probe_addr = next();
    } else if (arg == "--log-level") {
      level = next();
    } else {
      std::cerr << "unknown flag " << arg << "\n" << kUsage;
      return 2;
    }
  }
  const auto parsed_level = log::parseLevel(level);
  if (!parsed_level) {
    std::cerr << "bad --log-level " << level << "\n";
    return 2;
  }
  log::Logger log("tributary-controller", log::makeJsonLineSink(2, *parsed_level));

  // Signals go to a dedicated thread (blocked everywhere else: set before any thread starts).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::stop_source stop;
  std::jthread signals([&set, &stop, &log] {
    int sig = 0;
    sigwait(&set, &sig);
    log.info("signal received, shutting down", {{"signal", sig}});
    stop.request_stop();
  });

  if (auto st = kube::setHttpIoThreads(static_cast<std::size_t>(http_io_threads)); !st.ok()) {
    log.error("cannot start", {{"error", std::string(st.message())}});
    return 1;
  }
  kube::LoadOptions load;
  load.kubeconfig = kubeconfig;
  auto config = kube::loadConfig(load);
  if (!config.ok()) {
    log.error("cannot load the Kubernetes config",
              {{"error", std::string(config.status().message())}});
    return 1;
  }
  auto watch_namespaces = kube::parseNamespaceList(ns);
  if (!watch_namespaces.ok()) {
    log.error("bad --namespace", {{"error", std::string(watch_namespaces.status().message())}});
    return 2;
  }
  auto registry = std::make_shared<metrics::Registry>();
  metrics::addProcessMetrics(*registry);
  std::string host = config->server;
  if (const auto p = host.find("://"); p != std::string::npos) {
    host = host.substr(p + 3);
  }
  kube::ClientOptions client_options;
  client_options.on_request = kube::restClientMetrics(*registry, host);
  auto client = kube::Client::create(*config, client_options);
  if (!client.ok()) {
    log.error("cannot create the Kubernetes client",
              {{"error", std::string(client.status().message())}});
    return 1;
  }
  log.info("starting", {{"server", config->server},
                        {"namespace", ns.empty() ? "*" : ns},
                        {"agentNamespace", agent_ns},
                        {"leaderElect", leader_elect},
                        {"workers", workers}});

  controller::ControllerOptions options;
  options.client = *client;
  options.watch_namespaces = std::move(*watch_namespaces);
  options.agent_namespace = agent_ns;
  options.workers = workers;
  options.registry = registry;
  options.logger = log;
  controller::Controller ctrl(options);

  auto servers =
      metrics::serveAll({metrics_addr, probe_addr},
                        metrics::operationsHandler(
                            registry, [&] { return ctrl.synced(); }, "informers not synced"));
  if (!servers.ok()) {
    log.error("cannot serve", {{"error", std::string(servers.status().message())}});
    return 1;
  }
  for (const auto& server : *servers) {
    log.info("serving", {{"port", server->port()}});
  }

  ctrl.startInformers();
  auto waitSynced = [&](const std::stop_token& token) {
    while (!token.stop_requested() && !ctrl.waitForSync(200ms)) {
    }
    return !token.stop_requested();
  };
  int rc = 0;
  if (!leader_elect) {
    if (waitSynced(stop.get_token())) {
      ctrl.startWorkers();
      std::mutex m;
      std::condition_variable_any cv;
      std::unique_lock lock(m);
      cv.wait(lock, stop.get_token(), [] { return false; });
    }
  } else {
    char hostname[256] = {0};
    gethostname(hostname, sizeof hostname - 1);
    std::random_device rd;
    le.lease_namespace = lease_ns.empty() ? agent_ns : lease_ns;
    le.lease_name = lease_name;
    le.identity = strings::cat(hostname, "_", getpid(), "_", rd() % 100000);
    le.logger = log;
    le.on_status = kube::leaderElectionMetrics(*registry, lease_name);
    le.on_started_leading = [&](std::stop_token leading) {
      log.info("leading", {{"identity", le.identity}});
      if (!waitSynced(leading)) {
        return;
      }
      ctrl.startWorkers();
      std::mutex m;
      std::condition_variable_any cv;
      std::unique_lock lock(m);
      cv.wait(lock, leading, [] { return false; });
      ctrl.stopWorkers();  // drain before the lease is released
    };
    le.on_stopped_leading = [&] { log.info("stopped leading", {{"identity", le.identity}}); };
    auto elector = kube::LeaderElector::create(*client, le);
    if (!elector.ok()) {
      log.error("bad leader election settings",
                {{"error", std::string(elector.status().message())}});
      return 2;
    }
    const auto st = (*elector)->run(stop.get_token());
    if (!st.ok() && !stop.stop_requested()) {
      // Like controller-runtime: a controller that lost its lease exits and is restarted.
      log.error("leader election lost", {{"error", std::string(st.message())}});
      rc = 1;
    }
  }
  ctrl.stop();
  for (auto& s : *servers) {
    s->stop();
  }
  log.info("stopped");
  if (!stop.stop_requested()) {
    stop.request_stop();
    kill(getpid(), SIGTERM);  // wakes the signal thread (the signal stays blocked)
  }
  signals.join();
  return rc;
}
