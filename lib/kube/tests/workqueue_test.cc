// Work queue semantics (client-go's): dedup, no concurrent processing of one key, replay after
// done(), delayed adds, rate limiters, shutdown with drain, worker pool result handling, metrics.

#include "tributary/kube/workqueue.h"

#include "tributary/kube/metrics.h"
#include "tributary/testing/promtool.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace tributary::kube {
namespace {

using namespace std::chrono_literals;

TEST(WorkQueue, DeduplicatesQueuedKeys) {
  WorkQueue q;
  q.add("a");
  q.add("b");
  q.add("a");
  EXPECT_EQ(q.len(), 2U);
  EXPECT_EQ(q.get(), "a");
  EXPECT_EQ(q.get(), "b");
  EXPECT_EQ(q.len(), 0U);
}

TEST(WorkQueue, KeyAddedWhileProcessingIsReplayedAfterDone) {
  WorkQueue q;
  q.add("a");
  auto key = q.get();
  ASSERT_EQ(key, "a");
  q.add("a");
  q.add("a");
  EXPECT_EQ(q.len(), 0U);  // not handed out while processing
  EXPECT_FALSE(q.get(20ms).has_value());
  q.done("a");
  EXPECT_EQ(q.len(), 1U);
  EXPECT_EQ(q.get(100ms), "a");
  q.done("a");
  EXPECT_FALSE(q.get(20ms).has_value());
}

TEST(WorkQueue, NeverProcessesOneKeyConcurrently) {
  WorkQueue q;
  std::mutex mu;
  std::set<std::string> running;
  std::atomic<int> overlaps{0};
  std::atomic<int> processed{0};
  std::vector<std::jthread> workers;
  for (int i = 0; i < 4; ++i) {
    workers.emplace_back([&] {
      while (auto key = q.get()) {
        {
          std::lock_guard lock(mu);
          if (!running.insert(*key).second) {
            ++overlaps;
          }
        }
        std::this_thread::sleep_for(1ms);
        {
          std::lock_guard lock(mu);
          running.erase(*key);
        }
        ++processed;
        q.done(*key);
      }
    });
  }
  for (int i = 0; i < 500; ++i) {
    q.add("k" + std::to_string(i % 5));
    if (i % 50 == 0) {
      std::this_thread::sleep_for(2ms);
    }
  }
  std::this_thread::sleep_for(100ms);
  q.shutDownWithDrain();
  workers.clear();
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_GE(processed.load(), 5);
  EXPECT_LT(processed.load(), 500);  // dedup collapsed most adds
}

TEST(WorkQueue, AddAfterWaitsAndEarliestDelayWins) {
  WorkQueue q;
  const auto start = std::chrono::steady_clock::now();
  q.addAfter("slow", 10s);
  q.addAfter("slow", 50ms);  // earlier: replaces
  q.addAfter("slow", 20s);   // later: ignored
  EXPECT_EQ(q.waitingLen(), 1U);
  EXPECT_FALSE(q.get(20ms).has_value());
  auto key = q.get(2s);
  ASSERT_EQ(key, "slow");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 45ms);
  EXPECT_EQ(q.waitingLen(), 0U);
  q.done("slow");
}

// The delay thread hands an item over with the lock released; a queue destroyed right then
// must still stop it (it once slept through the stop and the destructor waited forever).
TEST(WorkQueue, DestroyedRightAfterADelayedItemIsTakenStops) {
  for (int i = 0; i < 2000; ++i) {
    WorkQueue q;
    q.addAfter("k", 1ms);
    ASSERT_EQ(q.get(2s), "k") << "iteration " << i;
    q.done("k");
  }
}

TEST(WorkQueue, ExponentialBackoffAndForget) {
  ExponentialRateLimiter limiter;  // 5 ms → 1000 s
  EXPECT_EQ(limiter.when("x"), 5ms);
  EXPECT_EQ(limiter.when("x"), 10ms);
  EXPECT_EQ(limiter.when("x"), 20ms);
  EXPECT_EQ(limiter.numRequeues("x"), 3);
  EXPECT_EQ(limiter.when("y"), 5ms);  // per item
  for (int i = 0; i < 40; ++i) {
    limiter.when("x");
  }
  EXPECT_EQ(limiter.when("x"), 1000s);
  limiter.forget("x");
  EXPECT_EQ(limiter.numRequeues("x"), 0);
  EXPECT_EQ(limiter.when("x"), 5ms);
}

TEST(WorkQueue, BucketAndMaxOf) {
  BucketRateLimiter bucket(10.0, 2);
  EXPECT_EQ(bucket.when("a"), 0ns);
  EXPECT_EQ(bucket.when("b"), 0ns);
  const auto third = bucket.when("c");  // burst used up: about 100 ms
  EXPECT_GT(third, 80ms);
  EXPECT_LE(third, 100ms);
  auto both = defaultControllerRateLimiter();
  EXPECT_EQ(both->when("k"), 5ms);
  EXPECT_EQ(both->when("k"), 10ms);
  both->forget("k");
  EXPECT_EQ(both->numRequeues("k"), 0);
}

TEST(WorkQueue, ShutDownHandsOutQueuedKeysDropsDelayedAndStopsAdds) {
  WorkQueue q;
  q.add("a");
  q.add("b");
  q.addAfter("later", 1h);
  q.shutDown();
  q.add("c");
  EXPECT_TRUE(q.shuttingDown());
  EXPECT_EQ(q.get(), "a");
  EXPECT_EQ(q.get(), "b");
  EXPECT_FALSE(q.get().has_value());
  EXPECT_EQ(q.waitingLen(), 0U);
  q.done("a");
  q.done("b");
}

TEST(WorkQueue, ShutDownWithDrainWaitsForProcessing) {
  WorkQueue q;
  q.add("a");
  auto key = q.get();
  std::atomic<bool> drained{false};
  std::jthread t([&] {
    q.shutDownWithDrain();
    drained = true;
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(drained.load());
  q.done(*key);
  t.join();
  EXPECT_TRUE(drained.load());
}

class CountingMetrics : public WorkQueueMetrics {
 public:
  void depth(std::int64_t d) override { last_depth = d; }
  void added() override { ++adds; }
  void retried() override { ++retries; }
  void queueLatency(double) override { ++latencies; }
  void workDuration(double) override { ++durations; }
  std::atomic<std::int64_t> last_depth{-1};
  std::atomic<int> adds{0}, retries{0}, latencies{0}, durations{0};
};

TEST(WorkerPool, ErrorsBackOffRequeueAfterAndSuccessForgets) {
  auto metrics = std::make_shared<CountingMetrics>();
  WorkQueue q(WorkQueueOptions{"test", std::make_shared<ExponentialRateLimiter>(1ms, 1s), metrics});
  std::mutex mu;
  std::map<std::string, int> calls;
  std::vector<std::string> outcomes;
  WorkerPool pool(
      q, 3,
      [&](const std::string& key, std::stop_token) -> absl::StatusOr<ReconcileResult> {
        int n = 0;
        {
          std::lock_guard lock(mu);
          n = ++calls[key];
        }
        if (key == "flaky" && n < 4) {
          return absl::UnavailableError("not yet");
        }
        if (key == "periodic" && n < 3) {
          return ReconcileResult{false, 20ms};
        }
        if (key == "throws") {
          throw std::runtime_error("boom");
        }
        return ReconcileResult{};
      },
      [&](const std::string& key, const absl::StatusOr<ReconcileResult>& r, double) {
        std::lock_guard lock(mu);
        outcomes.push_back(key + (r.ok() ? ":ok" : ":err"));
      });
  q.add("flaky");
  q.add("periodic");
  q.add("plain");
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard lock(mu);
      if (calls["flaky"] >= 4 && calls["periodic"] >= 3 && calls["plain"] >= 1) {
        break;
      }
    }
    std::this_thread::sleep_for(5ms);
  }
  pool.stop();
  std::lock_guard lock(mu);
  EXPECT_EQ(calls["flaky"], 4);
  EXPECT_EQ(calls["periodic"], 3);
  EXPECT_EQ(calls["plain"], 1);
  EXPECT_EQ(q.numRequeues("flaky"), 0);  // forgotten after the success
  EXPECT_EQ(metrics->retries.load(), 3 + 2);
  EXPECT_EQ(metrics->adds.load(), 3 + 3 + 2);
  EXPECT_EQ(metrics->durations.load(), 4 + 3 + 1);
  EXPECT_EQ(metrics->last_depth.load(), 0);
}

TEST(WorkerPool, ThrowingReconcileCountsAsError) {
  WorkQueue q(WorkQueueOptions{"t", std::make_shared<ExponentialRateLimiter>(1h, 1h), nullptr});
  std::atomic<int> errors{0};
  WorkerPool pool(
      q, 1,
      [](const std::string&, std::stop_token) -> absl::StatusOr<ReconcileResult> {
        throw std::runtime_error("boom");
      },
      [&](const std::string&, const absl::StatusOr<ReconcileResult>& r, double) {
        if (!r.ok()) {
          ++errors;
        }
      });
  q.add("x");
  for (int i = 0; i < 200 && errors.load() == 0; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(errors.load(), 1);
  EXPECT_EQ(q.waitingLen(), 1U);  // requeued with (a long) backoff
  pool.stop();
}

}  // namespace
}  // namespace tributary::kube

namespace tributary::kube {
namespace {

TEST(WorkQueueMetrics, ControllerRuntimeNamesPassPromtool) {
  metrics::Registry registry;
  auto queue = std::make_shared<WorkQueue>(
      WorkQueueOptions{"syncjob", std::make_shared<ExponentialRateLimiter>(1ms, 1s),
                       workQueueMetrics(registry, "syncjob")});
  registerWorkQueueGauges(registry, "syncjob", queue);
  auto on_request = restClientMetrics(registry, "127.0.0.1:6443");
  auto on_status = leaderElectionMetrics(registry, "tributary-controller");
  on_request("GET", "200");
  on_request("PUT", "409");
  on_status(true);
  std::atomic<int> calls{0};
  {
    WorkerPool pool(*queue, 2,
                    [&](const std::string&, std::stop_token) -> absl::StatusOr<ReconcileResult> {
                      if (calls++ == 0) {
                        return absl::UnavailableError("retry me");
                      }
                      return ReconcileResult{};
                    });
    queue->add("ns/a");
    queue->add("ns/b");
    for (int i = 0; i < 200 && calls.load() < 3; ++i) {
      std::this_thread::sleep_for(5ms);
    }
    pool.stop();
  }
  const std::string text = registry.expose();
  EXPECT_THAT(text, ::testing::HasSubstr(
                        "workqueue_adds_total{name=\"syncjob\",controller=\"syncjob\"} 3\n"));
  EXPECT_THAT(text, ::testing::HasSubstr(
                        "workqueue_retries_total{name=\"syncjob\",controller=\"syncjob\"} 1\n"));
  EXPECT_THAT(text,
              ::testing::HasSubstr(
                  "workqueue_depth{name=\"syncjob\",controller=\"syncjob\",priority=\"\"} 0\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("workqueue_work_duration_seconds_count{name=\"syncjob\","
                                         "controller=\"syncjob\"} 3\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("workqueue_unfinished_work_seconds{"));
  EXPECT_THAT(text, ::testing::HasSubstr("workqueue_longest_running_processor_seconds{"));
  EXPECT_THAT(
      text,
      ::testing::HasSubstr(
          "rest_client_requests_total{code=\"409\",method=\"PUT\",host=\"127.0.0.1:6443\"} 1\n"));
  EXPECT_THAT(text, ::testing::HasSubstr(
                        "leader_election_master_status{name=\"tributary-controller\"} 1\n"));
  const absl::Status promtool = harness::promtoolCheckMetrics(text);
  EXPECT_TRUE(promtool.ok()) << promtool << "\n" << text;
}

}  // namespace
}  // namespace tributary::kube
