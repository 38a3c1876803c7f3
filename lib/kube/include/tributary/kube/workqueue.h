#pragma once

// A work queue like client-go's: a key is queued at most once (dirty set), never handed to two
// workers at the same time (processing set; a re-add while processing is replayed after done()),
// delayed adds, per-item exponential backoff, optional token bucket, metrics hooks, and a worker
// pool that runs a reconcile function with controller-runtime's result handling.

#include "absl/status/statusor.h"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace tributary::kube {

class RateLimiter {
 public:
  virtual ~RateLimiter() = default;
  /// How long `key` should wait before its next processing (counts a failure).
  virtual std::chrono::nanoseconds when(const std::string& key) = 0;
  /// Clears the failure history of `key`.
  virtual void forget(const std::string& key) = 0;
  virtual int numRequeues(const std::string& key) = 0;
};

/// base * 2^failures, capped (client-go: 5 ms → 1000 s).
class ExponentialRateLimiter final : public RateLimiter {
 public:
  explicit ExponentialRateLimiter(std::chrono::nanoseconds base = std::chrono::milliseconds(5),
                                  std::chrono::nanoseconds max = std::chrono::seconds(1000));
  std::chrono::nanoseconds when(const std::string& key) override;
  void forget(const std::string& key) override;
  int numRequeues(const std::string& key) override;

 private:
  std::chrono::nanoseconds base_;
  std::chrono::nanoseconds max_;
  std::mutex mu_;
  std::unordered_map<std::string, int> failures_;
};

/// Overall token bucket (client-go: 10 qps, burst 100): delays, never refuses.
class BucketRateLimiter final : public RateLimiter {
 public:
  BucketRateLimiter(double qps, int burst);
  std::chrono::nanoseconds when(const std::string& key) override;
  void forget(const std::string&) override {}
  int numRequeues(const std::string&) override { return 0; }

 private:
  double qps_;
  double burst_;
  std::mutex mu_;
  double tokens_;
  std::chrono::steady_clock::time_point last_;
};

/// The longest delay of several limiters (client-go's MaxOfRateLimiter).
class MaxOfRateLimiter final : public RateLimiter {
 public:
  explicit MaxOfRateLimiter(std::vector<std::shared_ptr<RateLimiter>> limiters);
  std::chrono::nanoseconds when(const std::string& key) override;
  void forget(const std::string& key) override;
  int numRequeues(const std::string& key) override;

 private:
  std::vector<std::shared_ptr<RateLimiter>> limiters_;
};

/// client-go's DefaultControllerRateLimiter: max(exponential 5 ms → 1000 s, bucket 10 qps/100).
std::shared_ptr<RateLimiter> defaultControllerRateLimiter();

/// Metrics hooks; map to controller-runtime's workqueue_* metrics (see lib/metrics for an
/// implementation). Called with the queue's lock not held; must be thread-safe.
class WorkQueueMetrics {
 public:
  virtual ~WorkQueueMetrics() = default;
  virtual void depth(std::int64_t /*depth*/) {}     // workqueue_depth
  virtual void added() {}                           // workqueue_adds_total
  virtual void retried() {}                         // workqueue_retries_total
  virtual void queueLatency(double /*seconds*/) {}  // workqueue_queue_duration_seconds
  virtual void workDuration(double /*seconds*/) {}  // workqueue_work_duration_seconds
};

struct WorkQueueOptions {
  std::string name;
  /// nullptr: ExponentialRateLimiter() (controller-runtime's default priority queue has only the
  /// per-item limiter); use defaultControllerRateLimiter() for the classic queue's.
  std::shared_ptr<RateLimiter> rate_limiter;
  std::shared_ptr<WorkQueueMetrics> metrics;
};

class WorkQueue {
 public:
  explicit WorkQueue(WorkQueueOptions options = {});
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  /// Queues `key` unless already queued (dedup). While `key` is processing, it is queued again
  /// after done(). Ignored after shutDown().
  void add(const std::string& key);
  /// add() after `delay`; of several pending delays for one key, the earliest wins. Counts a retry.
  void addAfter(const std::string& key, std::chrono::nanoseconds delay);
  /// addAfter(key, rateLimiter.when(key)).
  void addRateLimited(const std::string& key);
  /// Resets the backoff of `key` (call after a success).
  void forget(const std::string& key);
  int numRequeues(const std::string& key);

  /// Blocks for the next key; nullopt once shut down and empty. The caller must call done(key).
  std::optional<std::string> get();
  /// Like get() with a timeout; nullopt on timeout as well.
  std::optional<std::string> get(std::chrono::milliseconds timeout);
  void done(const std::string& key);

  /// Queued keys (not processing, not waiting for a delay).
  [[nodiscard]] std::size_t len() const;
  /// Keys waiting for their delay.
  [[nodiscard]] std::size_t waitingLen() const;
  /// Seconds the longest-running processing key has been processing (0 if none).
  [[nodiscard]] double longestRunningProcessorSeconds() const;
  /// Sum of the seconds every processing key has been processing
  /// (workqueue_unfinished_work_seconds).
  [[nodiscard]] double unfinishedWorkSeconds() const;

  /// No new adds; queued keys are still handed out, delayed ones are dropped; get() returns
  /// nullopt once the queue is empty.
  void shutDown();
  /// shutDown(), then waits until every key handed out is done().
  void shutDownWithDrain();
  [[nodiscard]] bool shuttingDown() const;

 private:
  void addLocked(std::unique_lock<std::mutex>& lock, const std::string& key);
  void delayLoop(const std::stop_token& stop);
  void reportDepth(std::int64_t depth);

  WorkQueueOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable drained_cv_;
  std::deque<std::string> queue_;
  std::unordered_set<std::string> dirty_;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> processing_;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> added_at_;
  bool shutting_down_ = false;

  // Delayed adds: earliest ready time per key.
  std::condition_variable delay_cv_;
  std::multimap<std::chrono::steady_clock::time_point, std::string> waiting_;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> waiting_by_key_;
  std::jthread delay_thread_;
};

/// What a reconcile asks for (controller-runtime's reconcile.Result).
struct ReconcileResult {
  bool requeue = false;                       ///< rate-limited requeue
  std::chrono::nanoseconds requeue_after{0};  ///< > 0: forget, then addAfter
};
using ReconcileFunc =
    std::function<absl::StatusOr<ReconcileResult>(const std::string& key, std::stop_token stop)>;

/**
 * N worker threads: get → reconcile → done. Error → addRateLimited; requeue_after > 0 → forget
 * + addAfter; requeue → addRateLimited; else forget. `on_result(key, status-or-result, seconds)`
 * (optional) sees every outcome, e.g. for controller_runtime_reconcile_total. stop() shuts the
 * queue down with drain (running reconciles finish; their stop_token is signalled) and joins.
 */
class WorkerPool {
 public:
  using ResultHook = std::function<void(
      const std::string& key, const absl::StatusOr<ReconcileResult>& result, double seconds)>;
  WorkerPool(WorkQueue& queue, int workers, ReconcileFunc reconcile, ResultHook on_result = {});
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  void stop();
  [[nodiscard]] int activeWorkers() const { return active_.load(); }

 private:
  void run(const std::stop_token& stop);
  WorkQueue& queue_;
  ReconcileFunc reconcile_;
  ResultHook on_result_;
  std::atomic<int> active_{0};
  std::vector<std::jthread> threads_;
  std::once_flag stopped_;
};

}  // namespace tributary::kube
