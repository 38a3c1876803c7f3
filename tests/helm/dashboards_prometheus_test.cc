// The chart's dashboards and alerts against a real Prometheus (Debian's) scraping the real
// controller and agent while they sync: every panel query of both dashboards returns data from
// this run, and every alert rule loads and evaluates. (On the one-node cluster the same queries
// run through Kubernetes service discovery; here the scrape targets are static.)

#include "tributary/testing/kube.h"
#include "tributary/testing/net.h"
#include "tributary/testing/services.h"

#include "chart_support.h"
#include "prometheus_queries.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

namespace tributary::testing {
namespace {

namespace fs = std::filesystem;
using harness::KubeApiServer;
using namespace std::chrono_literals;

TEST(DashboardsOnPrometheus, EveryPanelQueryReturnsDataAndEveryRuleEvaluates) {
  auto& kube = KubeApiServer::shared();
  harness::TempDir tmp("dashboards-prom");
  const std::string ns = uniqueName("dash");
  ASSERT_TRUE(kube.createNamespace(ns).ok());
  auto pg = harness::SharedServices::postgres();
  ASSERT_TRUE(pg.ok()) << pg.status();
  auto dsn = (*pg)->createDatabase("dashboards");
  ASSERT_TRUE(dsn.ok()) << dsn.status();
  auto redis = harness::SharedServices::redis();
  ASSERT_TRUE(redis.ok()) << redis.status();
  fs::create_directories(tmp.path() / "go");
  fs::copy_file(fs::path(TRIBUTARY_GO_BIN_DIR) / "connector-go-v1_6",
                tmp.path() / "go" / "connector");

  const int controller_port = harness::freeLoopbackPort().value_or(0);
  const int agent_port = harness::freeLoopbackPort().value_or(0);
  const int prometheus_port = harness::freeLoopbackPort().value_or(0);
  ASSERT_NE(controller_port * agent_port * prometheus_port, 0);

  // Prometheus first, so counters are seen from zero.
  const Chart chart;
  const std::string config =
      tmp.write("prometheus.yml",
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                "rule_files: ['" +
                    chart.dir() +
                    "/files/prometheus/alerts.yaml']\n"
                    "scrape_configs:\n"
                    "  - job_name: controller\n    static_configs: [{targets: ['127.0.0.1:" +
                    std::to_string(controller_port) +
                    "']}]\n"
                    "  - job_name: agent\n    static_configs: [{targets: ['127.0.0.1:" +
                    std::to_string(agent_port) + "']}]\n");
  Child prometheus;
  ASSERT_TRUE(
      prometheus.start({"/usr/bin/prometheus", "--config.file=" + config,
                        "--storage.tsdb.path=" + (tmp.path() / "tsdb").string(),
                        "--web.listen-address=127.0.0.1:" + std::to_string(prometheus_port)},
                       (tmp.path() / "prometheus.log").string()));
  const std::string api = "http://127.0.0.1:" + std::to_string(prometheus_port);
  ASSERT_TRUE(waitFor([&] { return getJson(api, "/api/v1/status/buildinfo").is_object(); }, 30s))
      << readFile(prometheus.log);

  Child controller;
  ASSERT_TRUE(controller.start(
      {TRIBUTARY_CONTROLLER_BINARY, "--kubeconfig=" + kube.kubeconfigPath(), "--namespace=" + ns,
       "--agent-namespace=" + ns, "--leader-elect", "--leader-election-id=rel-tributary-controller",
       "--metrics-bind-address=127.0.0.1:" + std::to_string(controller_port),
       "--health-probe-bind-address=0"},
      (tmp.path() / "controller.log").string()));
  Child agent;
  ASSERT_TRUE(agent.start(
      {TRIBUTARY_AGENT_BINARY, "--kubeconfig=" + kube.kubeconfigPath(), "--name=node-a",
       "--lease-namespace=" + ns, "--namespace=" + ns, "--database-url=" + *dsn,
       "--redis-address=127.0.0.1:" + std::to_string((*redis)->port()),
       "--cache-dir=" + (tmp.path() / "cache").string(), "--local-root=" + tmp.path().string(),
       "--metrics-bind-address=127.0.0.1:" + std::to_string(agent_port),
       "--health-probe-bind-address=0", "--lease-duration=3s"},
      (tmp.path() / "agent.log").string()));
  const auto started = std::chrono::system_clock::now();
  // Both scraped before anything happens, so every counter is seen at zero first.
  ASSERT_TRUE(waitFor([&] { return scrapesTargets(api, 2); }, 30s)) << readFile(prometheus.log);

  // A good sync and a connector that fails every attempt (retried, then failed for good).
  auto connector = [&](const std::string& name, const std::string& mode) {
    return "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: " + name +
           "\nspec:\n  source: Local\n  uri: " + (tmp.path() / "go").string() +
           "\n  command: ./connector\n  env:\n    - {name: TEST_CONNECTOR_MODE, value: " + mode +
           "}\n---\n";
  };
  const std::string manifests =
      connector("good", "normal") + connector("broken", "sync_error") +
      "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: ok\nspec:\n"
      "  connectorRef: {name: good}\n  options: {pages: 5, page_size: 20}\n---\n"
      "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: doomed\nspec:\n"
      "  connectorRef: {name: broken}\n  backoffLimit: 1\n  options: {}\n";
  const auto applied = kube.runKubectl({"apply", "--namespace=" + ns, "-f", "-"}, manifests);
  ASSERT_TRUE(applied.ok()) << applied.output;
  ASSERT_TRUE(waitFor(
      [&] {
        const std::string phases = syncRunPhases(ns);
        return phases.find("Succeeded") != std::string::npos &&
               phases.find("Failed") != std::string::npos;
      },
      120s))
      << kube.runKubectl({"get", "syncruns", "--namespace=" + ns, "-o", "yaml"}).output;
  // A few more scrapes, so that every rate has two samples after the last change.
  std::this_thread::sleep_for(6s);

  const DashboardQueries queries = runDashboardQueries(api, chart.dir() + "/files/dashboards",
                                                       started, std::chrono::system_clock::now());
  EXPECT_GE(queries.evaluated, 30);
  EXPECT_THAT(queries.without_data, ::testing::IsEmpty()) << "panel queries without data";

  // Every alert rule loaded and evaluates without error.
  std::vector<std::string> unhealthy;
  EXPECT_EQ(loadedAlertRules(api, &unhealthy), 12);
  EXPECT_THAT(unhealthy, ::testing::IsEmpty());
  if (HasFailure()) {
    std::cerr << "--- controller log\n"
              << readFile(controller.log) << "--- agent log\n"
              << readFile(agent.log);
  }
}

}  // namespace
}  // namespace tributary::testing
