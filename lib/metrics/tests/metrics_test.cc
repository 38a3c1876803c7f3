// The registry and its text exposition, validated by the real `promtool check metrics`.

#include "tributary/metrics/metrics.h"

#include "tributary/testing/promtool.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <thread>

namespace tributary::metrics {
namespace {

using ::testing::HasSubstr;

TEST(Metrics, ExposesCountersGaugesAndHistograms) {
  Registry registry;
  auto& requests =
      registry.counter("rest_client_requests_total",
                       "Number of HTTP requests, partitioned by status code, method, and host.",
                       {"code", "method", "host"});
  requests.with({"200", "GET", "127.0.0.1:6443"}).inc();
  requests.with({"200", "GET", "127.0.0.1:6443"}).inc(2);
  requests.with({"409", "PUT", "127.0.0.1:6443"}).inc();
  requests.with({"200", "GET", "127.0.0.1:6443"}).inc(-5);  // ignored
  auto& depth = registry.gauge("workqueue_depth", "Current depth of workqueue",
                               {"name", "controller", "priority"});
  depth.with({"syncjob", "syncjob", ""}).set(3);
  depth.with({"syncjob", "syncjob", ""}).dec();
  registry
      .gauge("leader_election_master_status",
             "Gauge of if the reporting system is master of the relevant lease, 0 indicates "
             "backup, 1 indicates master. 'name' is the string used to identify the lease.",
             {"name"})
      .with({"tributary"})
      .set(1);
  auto& latency = registry.histogram("workqueue_queue_duration_seconds",
                                     "How long in seconds an item stays in workqueue before being "
                                     "requested",
                                     {"name", "controller"}, exponentialBuckets(10e-9, 10, 12));
  latency.with({"syncjob", "syncjob"}).observe(0.002);
  latency.with({"syncjob", "syncjob"}).observe(5000);
  registry.counter("odd_total", "Help with a backslash \\ and\na newline", {"v"})
      .with({"quote \" backslash \\ newline \n"})
      .inc();
  int hook_calls = 0;
  registry.addCollectHook([&] { ++hook_calls; });

  const std::string text = registry.expose();
  EXPECT_EQ(hook_calls, 1);
  EXPECT_THAT(text, HasSubstr("# TYPE rest_client_requests_total counter\n"));
  EXPECT_THAT(
      text,
      HasSubstr(
          "rest_client_requests_total{code=\"200\",method=\"GET\",host=\"127.0.0.1:6443\"} 3\n"));
  EXPECT_THAT(
      text,
      HasSubstr("workqueue_depth{name=\"syncjob\",controller=\"syncjob\",priority=\"\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("workqueue_queue_duration_seconds_bucket{name=\"syncjob\",controller="
                              "\"syncjob\",le=\"0.01\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("workqueue_queue_duration_seconds_bucket{name=\"syncjob\",controller="
                              "\"syncjob\",le=\"1000\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("workqueue_queue_duration_seconds_bucket{name=\"syncjob\",controller="
                              "\"syncjob\",le=\"+Inf\"} 2\n"));
  EXPECT_THAT(
      text,
      HasSubstr(
          "workqueue_queue_duration_seconds_count{name=\"syncjob\",controller=\"syncjob\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("odd_total{v=\"quote \\\" backslash \\\\ newline \\n\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("# HELP odd_total Help with a backslash \\\\ and\\na newline\n"));
  const absl::Status promtool = tributary::harness::promtoolCheckMetrics(text);
  EXPECT_TRUE(promtool.ok()) << promtool << "\n" << text;
}

TEST(Metrics, RejectsBadNamesAndTypeClashes) {
  Registry registry;
  EXPECT_THROW(registry.counter("1bad", "x"), std::invalid_argument);
  EXPECT_THROW(registry.counter("ok_total", "x", {"__reserved"}), std::invalid_argument);
  EXPECT_THROW(registry.histogram("h", "x", {"le"}, {1}), std::invalid_argument);
  registry.counter("same_total", "x");
  EXPECT_NO_THROW(registry.counter("same_total", "x"));
  EXPECT_THROW(registry.gauge("same_total", "x"), std::invalid_argument);
}

TEST(Metrics, ConcurrentUpdatesAreNotLost) {
  Registry registry;
  auto& c = registry.counter("c_total", "c", {"k"});
  auto& h = registry.histogram("h_seconds", "h", {}, {0.5, 1});
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 10000; ++i) {
          c.with({"x"}).inc();
          h.with({}).observe(0.75);
        }
      });
    }
  }
  EXPECT_EQ(c.with({"x"}).value(), 40000.0);
  const auto snap = h.with({}).snapshot();
  EXPECT_EQ(snap.count, 40000U);
  EXPECT_EQ(snap.cumulative[0], 0U);
  EXPECT_EQ(snap.cumulative[1], 40000U);
  EXPECT_EQ(formatValue(0.1), "0.1");
  EXPECT_EQ(formatValue(1e-08), "1e-08");
  EXPECT_EQ(formatValue(3), "3");
}

}  // namespace
}  // namespace tributary::metrics
