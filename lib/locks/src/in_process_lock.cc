// InProcessLock: the SourceLock contract inside one process (the CLI's local mode).

#include "tributary/common/strings.h"
#include "tributary/locks/lock.h"

#include "token.h"

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>

namespace tributary::locks {
namespace {

class InProcessLease;

// Shared by the lock and its leases (a lease may outlive the lock object).
struct State {
  struct Entry {
    std::int64_t fencing = 0;
    InProcessLease* holder = nullptr;
  };
  std::mutex mutex;
  std::condition_variable_any released;
  std::map<std::string, Entry, std::less<>> entries;
};

class InProcessLease final : public Lease {
 public:
  InProcessLease(std::shared_ptr<State> state, std::string source, std::int64_t fencing,
                 std::function<void(const absl::Status&)> on_lost)
      : state_(std::move(state)),
        source_(std::move(source)),
        token_(randomToken()),
        fencing_(fencing),
        on_lost_(std::move(on_lost)) {}
  ~InProcessLease() override { static_cast<void>(release()); }

  [[nodiscard]] const std::string& source() const override { return source_; }
  [[nodiscard]] const std::string& token() const override { return token_; }
  [[nodiscard]] std::int64_t fencingToken() const override { return fencing_; }
  [[nodiscard]] bool lost() const override { return !check().ok(); }

  [[nodiscard]] absl::Status check() const override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (released_) {
      return absl::AbortedError(strings::cat("lock of ", source_, " was released"));
    }
    if (revoked_) {
      return absl::AbortedError(strings::cat("lock of ", source_, " lost: revoked"));
    }
    return absl::OkStatus();
  }

  absl::Status release() override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (released_) {
      return absl::OkStatus();
    }
    released_ = true;
    auto it = state_->entries.find(source_);
    if (it == state_->entries.end() || it->second.holder != this) {
      return absl::AbortedError(
          strings::cat("lock of ", source_, " was no longer held by this lease; nothing released"));
    }
    it->second.holder = nullptr;
    state_->released.notify_all();
    return absl::OkStatus();
  }

  // Called with state_->mutex held; returns the callback to run after unlocking.
  std::function<void(const absl::Status&)> revokeLocked() {
    revoked_ = true;
    return on_lost_;
  }

 private:
  std::shared_ptr<State> state_;
  const std::string source_;
  const std::string token_;
  const std::int64_t fencing_;
  std::function<void(const absl::Status&)> on_lost_;
  bool released_ = false;  // guarded by state_->mutex
  bool revoked_ = false;   // guarded by state_->mutex
};

class InProcessLockImpl final : public InProcessLock {
 public:
  absl::StatusOr<LeasePtr> acquire(std::string_view source,
                                   const AcquireOptions& options) override {
    if (source.empty()) {
      return absl::InvalidArgumentError("lock: empty source name");
    }
    std::unique_lock<std::mutex> lock(state_->mutex);
    State::Entry& entry = state_->entries[std::string(source)];
    std::stop_token stop = options.stop;
    const bool free = state_->released.wait_for(lock, stop, options.wait,
                                                [&] { return entry.holder == nullptr; });
    if (!free) {
      if (stop.stop_requested()) {
        return absl::CancelledError(strings::cat("lock: acquiring ", source, " cancelled"));
      }
      return absl::AbortedError(strings::cat("lock of ", source, " is held by another holder"));
    }
    entry.fencing = std::max(entry.fencing, options.min_fencing_token) + 1;
    auto lease = std::make_unique<InProcessLease>(state_, std::string(source), entry.fencing,
                                                  options.on_lost);
    entry.holder = lease.get();
    return LeasePtr(std::move(lease));
  }

  void revoke(std::string_view source) override {
    std::function<void(const absl::Status&)> callback;
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      auto it = state_->entries.find(source);
      if (it == state_->entries.end() || it->second.holder == nullptr) {
        return;
      }
      callback = it->second.holder->revokeLocked();
      it->second.holder = nullptr;
      state_->released.notify_all();
    }
    if (callback) {
      callback(absl::AbortedError(strings::cat("lock of ", source, " lost: revoked")));
    }
  }

 private:
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace

std::unique_ptr<InProcessLock> InProcessLock::create() {
  return std::make_unique<InProcessLockImpl>();
}

}  // namespace tributary::locks
