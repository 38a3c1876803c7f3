#include "tributary/kube/workqueue.h"

#include "tributary/common/strings.h"

#include <algorithm>
#include <cmath>

namespace tributary::kube {
namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t, Clock::time_point now) {
  return std::chrono::duration<double>(now - t).count();
}

}  // namespace

// --- rate limiters ----------------------------------------------------------------------------

ExponentialRateLimiter::ExponentialRateLimiter(std::chrono::nanoseconds base,
                                               std::chrono::nanoseconds max)
    : base_(base), max_(max) {}

std::chrono::nanoseconds ExponentialRateLimiter::when(const std::string& key) {
  int exp = 0;
  {
    std::lock_guard lock(mu_);
    exp = failures_[key]++;
  }
  const double backoff =
      static_cast<double>(base_.count()) * std::pow(2.0, static_cast<double>(std::min(exp, 62)));
  if (backoff >= static_cast<double>(max_.count())) {
    return max_;
  }
  return std::chrono::nanoseconds(static_cast<std::int64_t>(backoff));
}

void ExponentialRateLimiter::forget(const std::string& key) {
  std::lock_guard lock(mu_);
  failures_.erase(key);
}

int ExponentialRateLimiter::numRequeues(const std::string& key) {
  std::lock_guard lock(mu_);
  const auto it = failures_.find(key);
  return it == failures_.end() ? 0 : it->second;
}

BucketRateLimiter::BucketRateLimiter(double qps, int burst)
    : qps_(qps), burst_(static_cast<double>(burst)), tokens_(burst_), last_(Clock::now()) {}

std::chrono::nanoseconds BucketRateLimiter::when(const std::string& /*key*/) {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  tokens_ = std::min(burst_, tokens_ + secondsSince(last_, now) * qps_);
  last_ = now;
  tokens_ -= 1.0;  // reserve a token, possibly in the future (like golang.org/x/time/rate)
  if (tokens_ >= 0) {
    return std::chrono::nanoseconds(0);
  }
  return std::chrono::nanoseconds(static_cast<std::int64_t>(-tokens_ / qps_ * 1e9));
}

MaxOfRateLimiter::MaxOfRateLimiter(std::vector<std::shared_ptr<RateLimiter>> limiters)
    : limiters_(std::move(limiters)) {}

std::chrono::nanoseconds MaxOfRateLimiter::when(const std::string& key) {
  std::chrono::nanoseconds out{0};
  for (const auto& l : limiters_) {
    out = std::max(out, l->when(key));
  }
  return out;
}

void MaxOfRateLimiter::forget(const std::string& key) {
  for (const auto& l : limiters_) {
    l->forget(key);
  }
}

int MaxOfRateLimiter::numRequeues(const std::string& key) {
  int out = 0;
  for (const auto& l : limiters_) {
    out = std::max(out, l->numRequeues(key));
  }
  return out;
}

std::shared_ptr<RateLimiter> defaultControllerRateLimiter() {
  return std::make_shared<MaxOfRateLimiter>(std::vector<std::shared_ptr<RateLimiter>>{
      std::make_shared<ExponentialRateLimiter>(), std::make_shared<BucketRateLimiter>(10.0, 100)});
}

// --- WorkQueue --------------------------------------------------------------------------------

WorkQueue::WorkQueue(WorkQueueOptions options) : options_(std::move(options)) {
  if (options_.rate_limiter == nullptr) {
    options_.rate_limiter = std::make_shared<ExponentialRateLimiter>();
  }
  if (options_.metrics == nullptr) {
    options_.metrics = std::make_shared<WorkQueueMetrics>();
  }
  delay_thread_ = std::jthread([this](const std::stop_token& stop) { delayLoop(stop); });
}

WorkQueue::~WorkQueue() {
  shutDown();
  delay_thread_.request_stop();
  { const std::lock_guard lock(mu_); }  // the delay thread is waiting, not between check and wait
  delay_cv_.notify_all();
  delay_thread_.join();
}

void WorkQueue::addLocked(std::unique_lock<std::mutex>& lock, const std::string& key) {
  if (shutting_down_ || dirty_.count(key) != 0) {
    return;
  }
  dirty_.insert(key);
  added_at_[key] = Clock::now();
  bool queued = false;
  if (processing_.count(key) == 0) {
    queue_.push_back(key);
    queued = true;
  }
  const auto depth = static_cast<std::int64_t>(queue_.size());
  lock.unlock();
  options_.metrics->added();
  if (queued) {
    options_.metrics->depth(depth);
    cv_.notify_one();
  }
  lock.lock();
}

void WorkQueue::add(const std::string& key) {
  std::unique_lock lock(mu_);
  addLocked(lock, key);
}

void WorkQueue::addAfter(const std::string& key, std::chrono::nanoseconds delay) {
  {
    std::lock_guard lock(mu_);
    if (shutting_down_) {
      return;
    }
  }
  options_.metrics->retried();
  if (delay.count() <= 0) {
    add(key);
    return;
  }
  const auto ready = Clock::now() + std::chrono::duration_cast<Clock::duration>(delay);
  {
    std::lock_guard lock(mu_);
    const auto it = waiting_by_key_.find(key);
    if (it != waiting_by_key_.end()) {
      if (it->second <= ready) {
        return;  // an earlier delayed add is pending
      }
      auto range = waiting_.equal_range(it->second);
      for (auto w = range.first; w != range.second; ++w) {
        if (w->second == key) {
          waiting_.erase(w);
          break;
        }
      }
    }
    waiting_by_key_[key] = ready;
    waiting_.emplace(ready, key);
  }
  delay_cv_.notify_all();
}

void WorkQueue::addRateLimited(const std::string& key) {
  addAfter(key, options_.rate_limiter->when(key));
}

void WorkQueue::forget(const std::string& key) { options_.rate_limiter->forget(key); }

int WorkQueue::numRequeues(const std::string& key) {
  return options_.rate_limiter->numRequeues(key);
}

void WorkQueue::delayLoop(const std::stop_token& stop) {
  std::unique_lock lock(mu_);
  while (!stop.stop_requested()) {
    const auto now = Clock::now();
    while (!waiting_.empty() && waiting_.begin()->first <= now) {
      std::string key = waiting_.begin()->second;
      waiting_.erase(waiting_.begin());
      waiting_by_key_.erase(key);
      addLocked(lock, key);
    }
    // Predicates, not bare waits: addLocked above unlocks, and a stop requested (and notified)
    // meanwhile must not be slept through (the destructor would wait for us forever).
    if (waiting_.empty()) {
      delay_cv_.wait(lock, [&] { return stop.stop_requested() || !waiting_.empty(); });
    } else {
      // A copy: the map entry may be erased (shutDown) while we wait.
      const Clock::time_point next = waiting_.begin()->first;
      delay_cv_.wait_until(lock, next, [&] {
        return stop.stop_requested() || waiting_.empty() || waiting_.begin()->first != next;
      });
    }
  }
}

std::optional<std::string> WorkQueue::get() { return get(std::chrono::milliseconds::max()); }

std::optional<std::string> WorkQueue::get(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  const auto ready = [this] { return !queue_.empty() || shutting_down_; };
  if (timeout == std::chrono::milliseconds::max()) {
    cv_.wait(lock, ready);
  } else if (!cv_.wait_for(lock, timeout, ready)) {
    return std::nullopt;
  }
  if (queue_.empty()) {
    return std::nullopt;  // shut down
  }
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  const auto now = Clock::now();
  processing_[key] = now;
  dirty_.erase(key);
  double latency = 0;
  if (const auto it = added_at_.find(key); it != added_at_.end()) {
    latency = secondsSince(it->second, now);
    added_at_.erase(it);
  }
  const auto depth = static_cast<std::int64_t>(queue_.size());
  lock.unlock();
  options_.metrics->depth(depth);
  options_.metrics->queueLatency(latency);
  return key;
}

void WorkQueue::done(const std::string& key) {
  std::unique_lock lock(mu_);
  const auto it = processing_.find(key);
  if (it == processing_.end()) {
    return;
  }
  const double took = secondsSince(it->second, Clock::now());
  processing_.erase(it);
  bool requeued = false;
  if (dirty_.count(key) != 0) {
    // Added again while processing: now it may run.
    queue_.push_back(key);
    requeued = true;
  }
  const auto depth = static_cast<std::int64_t>(queue_.size());
  const bool drained = processing_.empty();
  lock.unlock();
  options_.metrics->workDuration(took);
  if (requeued) {
    options_.metrics->depth(depth);
    cv_.notify_one();
  }
  if (drained) {
    drained_cv_.notify_all();
  }
}

std::size_t WorkQueue::len() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

std::size_t WorkQueue::waitingLen() const {
  std::lock_guard lock(mu_);
  return waiting_.size();
}

double WorkQueue::longestRunningProcessorSeconds() const {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  double out = 0;
  for (const auto& [_, started] : processing_) {
    out = std::max(out, secondsSince(started, now));
  }
  return out;
}

double WorkQueue::unfinishedWorkSeconds() const {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  double out = 0;
  for (const auto& [_, started] : processing_) {
    out += secondsSince(started, now);
  }
  return out;
}

void WorkQueue::shutDown() {
  {
    std::lock_guard lock(mu_);
    shutting_down_ = true;
    waiting_.clear();
    waiting_by_key_.clear();
  }
  cv_.notify_all();
  delay_cv_.notify_all();
}

void WorkQueue::shutDownWithDrain() {
  shutDown();
  std::unique_lock lock(mu_);
  drained_cv_.wait(lock, [this] { return processing_.empty() && queue_.empty(); });
}

bool WorkQueue::shuttingDown() const {
  std::lock_guard lock(mu_);
  return shutting_down_;
}

// --- WorkerPool -------------------------------------------------------------------------------

WorkerPool::WorkerPool(WorkQueue& queue, int workers, ReconcileFunc reconcile, ResultHook on_result)
    : queue_(queue), reconcile_(std::move(reconcile)), on_result_(std::move(on_result)) {
  for (int i = 0; i < std::max(workers, 1); ++i) {
    threads_.emplace_back([this](const std::stop_token& stop) { run(stop); });
  }
}

WorkerPool::~WorkerPool() { stop(); }

void WorkerPool::stop() {
  std::call_once(stopped_, [this] {
    for (auto& t : threads_) {
      t.request_stop();
    }
    queue_.shutDown();
    for (auto& t : threads_) {
      if (t.joinable()) {
        t.join();
      }
    }
  });
}

void WorkerPool::run(const std::stop_token& stop) {
  while (true) {
    std::optional<std::string> key = queue_.get();
    if (!key) {
      return;
    }
    active_.fetch_add(1);
    const auto started = Clock::now();
    absl::StatusOr<ReconcileResult> result;
    try {
      result = reconcile_(*key, stop);
    } catch (const std::exception& e) {
      result = absl::InternalError(strings::cat("reconcile of ", *key, " threw: ", e.what()));
    } catch (...) {
      result = absl::InternalError(strings::cat("reconcile of ", *key, " threw"));
    }
    const double took = secondsSince(started, Clock::now());
    if (!result.ok()) {
      queue_.addRateLimited(*key);
    } else if (result->requeue_after.count() > 0) {
      queue_.forget(*key);
      queue_.addAfter(*key, result->requeue_after);
    } else if (result->requeue) {
      queue_.addRateLimited(*key);
    } else {
      queue_.forget(*key);
    }
    if (on_result_) {
      on_result_(*key, result, took);
    }
    active_.fetch_sub(1);
    queue_.done(*key);
  }
}

}  // namespace tributary::kube
