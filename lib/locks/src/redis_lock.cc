// RedisLock: see README.md for the protocol and its failure modes.

#include "tributary/common/strings.h"
#include "tributary/locks/lock.h"

#include "token.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <pthread.h>
#include <signal.h>
#include <thread>
#include <vector>

namespace tributary::locks {
namespace {

using Clock = std::chrono::steady_clock;

// Take the lock and the next fencing token atomically. The counter never goes below the floor
// the caller passes (the store's high-water mark), so it survives Redis losing its data.
constexpr const char* kAcquireScript = R"lua(
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  local floor = tonumber(ARGV[3])
  if current < floor then
    redis.call('SET', KEYS[2], ARGV[3])
  end
  return redis.call('INCR', KEYS[2])
end
return 0
)lua";

constexpr const char* kRenewScript = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
)lua";

constexpr const char* kReleaseScript = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
)lua";

timeval toTimeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms.count() / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms.count() % 1000) * 1000);
  return tv;
}

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

/// One hiredis connection that reconnects on demand. Not thread-safe.
class RedisConnection {
 public:
  explicit RedisConnection(RedisLockOptions options) : options_(std::move(options)) {}
  ~RedisConnection() { close(); }
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  /// EVAL `script` with keys and args; returns the integer reply.
  absl::StatusOr<long long> evalInteger(const char* script, const std::vector<std::string>& keys,
                                        const std::vector<std::string>& args) {
    if (absl::Status status = ensureConnected(); !status.ok()) {
      return status;
    }
    std::vector<std::string> argv = {"EVAL", script, std::to_string(keys.size())};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<const char*> ptrs;
    std::vector<std::size_t> lens;
    for (const std::string& arg : argv) {
      ptrs.push_back(arg.data());
      lens.push_back(arg.size());
    }
    ReplyPtr reply(static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(ptrs.size()), ptrs.data(), lens.data())));
    if (reply == nullptr) {
      absl::Status error = ioError("redis", ctx_);
      close();  // the context is unusable after an I/O error
      return error;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
      const std::string error(reply->str, reply->len);
      // LOADING / MASTERDOWN / BUSY are transient.
      if (error.starts_with("LOADING") || error.starts_with("MASTERDOWN") ||
          error.starts_with("BUSY") || error.starts_with("TRYAGAIN")) {
        return absl::UnavailableError(strings::cat("redis: ", error));
      }
      return absl::InternalError(strings::cat("redis: ", error));
    }
    if (reply->type == REDIS_REPLY_INTEGER) {
      return reply->integer;
    }
    if (reply->type == REDIS_REPLY_NIL) {
      return 0;
    }
    return absl::InternalError("redis: unexpected reply type to EVAL");
  }

  /// Connects and authenticates if needed, then PING.
  absl::Status ping() {
    if (absl::Status status = ensureConnected(); !status.ok()) {
      return status;
    }
    ReplyPtr reply(static_cast<redisReply*>(redisCommand(ctx_, "PING")));
    if (reply == nullptr) {
      absl::Status error = ioError("redis: PING", ctx_);
      close();
      return error;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
      return absl::UnavailableError(
          strings::cat("redis: PING: ", std::string(reply->str, reply->len)));
    }
    return absl::OkStatus();
  }

  void close() {
    if (ctx_ != nullptr) {
      redisFree(ctx_);
      ctx_ = nullptr;
    }
  }

 private:
  absl::Status ensureConnected() {
    if (ctx_ != nullptr) {
      return absl::OkStatus();
    }
    const timeval connect_tv = toTimeval(options_.connect_timeout);
    redisContext* ctx =
        options_.unix_socket.empty()
            ? redisConnectWithTimeout(options_.host.c_str(), options_.port, connect_tv)
            : redisConnectUnixWithTimeout(options_.unix_socket.c_str(), connect_tv);
    if (ctx == nullptr) {
      return absl::ResourceExhaustedError("redis: cannot allocate a context");
    }
    if (ctx->err != 0) {
      absl::Status error =
          ioError(strings::cat("redis: cannot connect to ",
                               options_.unix_socket.empty()
                                   ? strings::cat(options_.host, ":", options_.port)
                                   : options_.unix_socket),
                  ctx);
      redisFree(ctx);
      return error;
    }
    redisSetTimeout(ctx, toTimeval(options_.command_timeout));
    if (!options_.password.empty()) {
      // AUTH [username] password; the reply names no secret, and neither does our error.
      ReplyPtr reply(static_cast<redisReply*>(
          options_.username.empty()
              ? redisCommand(ctx, "AUTH %b", options_.password.data(), options_.password.size())
              : redisCommand(ctx, "AUTH %b %b", options_.username.data(), options_.username.size(),
                             options_.password.data(), options_.password.size())));
      if (reply == nullptr) {  // the connection failed, not the password
        absl::Status error = ioError("redis: AUTH", ctx);
        redisFree(ctx);
        return error;
      }
      if (reply->type == REDIS_REPLY_ERROR) {
        const std::string error(reply->str, reply->len);
        redisFree(ctx);
        return absl::UnauthenticatedError(
            strings::cat("redis: AUTH failed: ", error, " (check the Redis user and password)"));
      }
    }
    ctx_ = ctx;
    return absl::OkStatus();
  }

  // UNAVAILABLE: `what`, hiredis's reason and what the transport knows.
  [[nodiscard]] absl::Status ioError(std::string_view what, const redisContext* ctx) const {
    std::string message = strings::cat(what, ": ", ctx->errstr);
    if (options_.describe_transport) {
      if (const std::string note = options_.describe_transport(); !note.empty()) {
        message += strings::cat(" (", note, ")");
      }
    }
    return absl::UnavailableError(message);
  }

  const RedisLockOptions options_;
  redisContext* ctx_ = nullptr;
};

class RedisLease final : public Lease {
 public:
  RedisLease(std::string lock_key, std::string source, std::string token,
             std::int64_t fencing_token, AcquireOptions acquire,
             std::unique_ptr<RedisConnection> conn, Clock::time_point valid_until)
      : source_(std::move(source)),
        token_(std::move(token)),
        fencing_token_(fencing_token),
        acquire_(std::move(acquire)),
        lock_key_(std::move(lock_key)),
        conn_(std::move(conn)),
        valid_until_(valid_until) {
    if (acquire_.renew) {
      renewer_ = std::jthread([this](std::stop_token stop) { renewLoop(stop); });
    }
  }

  ~RedisLease() override { static_cast<void>(release()); }

  [[nodiscard]] const std::string& source() const override { return source_; }
  [[nodiscard]] const std::string& token() const override { return token_; }
  [[nodiscard]] std::int64_t fencingToken() const override { return fencing_token_; }

  [[nodiscard]] bool lost() const override { return !check().ok(); }

  [[nodiscard]] absl::Status check() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (released_) {
      return absl::AbortedError(strings::cat("lock of ", source_, " was released"));
    }
    if (lost_reason_) {
      return absl::AbortedError(strings::cat("lock of ", source_, " lost: ", *lost_reason_));
    }
    if (Clock::now() >= valid_until_) {
      return absl::AbortedError(
          strings::cat("lock of ", source_, " lost: its TTL passed without a renewal"));
    }
    return absl::OkStatus();
  }

  absl::Status release() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (released_) {
        return absl::OkStatus();
      }
      released_ = true;
    }
    if (renewer_.joinable()) {
      renewer_.request_stop();
      wake_.notify_all();
      renewer_.join();
    }
    // The renewal thread is gone: the connection is ours alone now.
    absl::StatusOr<long long> deleted = conn_->evalInteger(kReleaseScript, {lock_key_}, {token_});
    if (!deleted.ok()) {
      conn_->close();
      return deleted.status();  // the key expires on its own after the TTL
    }
    conn_->close();
    if (*deleted == 0) {
      return absl::AbortedError(
          strings::cat("lock of ", source_, " was no longer held by this lease; nothing released"));
    }
    return absl::OkStatus();
  }

 private:
  void markLost(const std::string& reason) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (lost_reason_ || released_) {
        return;
      }
      lost_reason_ = reason;
    }
    if (acquire_.on_lost) {
      acquire_.on_lost(absl::AbortedError(strings::cat("lock of ", source_, " lost: ", reason)));
    }
  }

  // Sleeps until `until` or stop; returns false on stop.
  bool sleepUntil(std::stop_token& stop, Clock::time_point until) {
    std::unique_lock<std::mutex> lock(mutex_);
    wake_.wait_until(lock, stop, until, [] { return false; });
    return !stop.stop_requested();
  }

  void renewLoop(std::stop_token stop) {
    // hiredis writes with plain write(2): a write to a connection Redis already closed would
    // raise SIGPIPE. Block it on this thread (the write then fails with EPIPE and we reconnect).
    // Threads that call acquire()/release() need the process to ignore SIGPIPE (the agent and
    // the CLI do).
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
    const std::chrono::milliseconds interval =
        acquire_.renew_interval.count() > 0 ? acquire_.renew_interval : acquire_.ttl / 3;
    const std::string ttl_text = std::to_string(acquire_.ttl.count());
    Clock::time_point next = Clock::now() + interval;
    std::chrono::milliseconds retry_wait{50};
    while (!stop.stop_requested()) {
      if (!sleepUntil(stop, next)) {
        return;
      }
      const Clock::time_point sent = Clock::now();
      Clock::time_point valid_until;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        valid_until = valid_until_;
      }
      if (sent >= valid_until) {
        markLost(strings::cat("its TTL passed before a renewal succeeded",
                              last_error_.empty() ? "" : " (last error: ", last_error_,
                              last_error_.empty() ? "" : ")"));
        return;
      }
      absl::StatusOr<long long> renewed =
          conn_->evalInteger(kRenewScript, {lock_key_}, {token_, ttl_text});
      if (renewed.ok() && *renewed == 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        valid_until_ = sent + acquire_.ttl - driftMargin();
        next = sent + interval;
        retry_wait = std::chrono::milliseconds(50);
        continue;
      }
      if (renewed.ok()) {
        markLost("the lock key is gone or held by another lease (expired, or Redis lost its data)");
        return;
      }
      // Redis unreachable or failing: retry (reconnecting) until the validity runs out.
      next = std::min(Clock::now() + retry_wait, valid_until);
      retry_wait = std::min(retry_wait * 2, std::chrono::milliseconds(1000));
      last_error_ = std::string(renewed.status().message());
    }
  }

  [[nodiscard]] std::chrono::milliseconds driftMargin() const {
    return std::chrono::milliseconds(2) + acquire_.ttl / 100;
  }

  const std::string source_;
  const std::string token_;
  const std::int64_t fencing_token_;
  const AcquireOptions acquire_;
  const std::string lock_key_;
  std::unique_ptr<RedisConnection> conn_;

  mutable std::mutex mutex_;
  std::condition_variable_any wake_;
  Clock::time_point valid_until_;
  std::optional<std::string> lost_reason_;
  bool released_ = false;
  std::string last_error_;
  std::jthread renewer_;  // last: stopped before the members it uses are destroyed
};

class RedisLock final : public SourceLock {
 public:
  explicit RedisLock(RedisLockOptions options) : options_(std::move(options)) {}

  absl::Status probe() override { return RedisConnection(options_).ping(); }

  absl::StatusOr<LeasePtr> acquire(std::string_view source,
                                   const AcquireOptions& options) override {
    if (source.empty()) {
      return absl::InvalidArgumentError("lock: empty source name");
    }
    if (options.ttl.count() < 10) {
      return absl::InvalidArgumentError("lock: ttl must be at least 10 ms");
    }
    const std::string lock_key = strings::cat(options_.key_prefix, "lock:", source);
    const std::string fence_key = strings::cat(options_.key_prefix, "fence:", source);
    const std::string ttl_text = std::to_string(options.ttl.count());
    const std::string floor_text = std::to_string(options.min_fencing_token);
    const Clock::time_point give_up = Clock::now() + options.wait;
    auto conn = std::make_unique<RedisConnection>(options_);
    std::chrono::milliseconds pause{20};
    while (true) {
      if (options.stop.stop_requested()) {
        return absl::CancelledError(strings::cat("lock: acquiring ", source, " cancelled"));
      }
      const std::string token = randomToken();
      const Clock::time_point sent = Clock::now();
      absl::StatusOr<long long> fencing =
          conn->evalInteger(kAcquireScript, {lock_key, fence_key}, {token, ttl_text, floor_text});
      if (fencing.ok() && *fencing > 0) {
        const Clock::time_point valid_until =
            sent + options.ttl - (std::chrono::milliseconds(2) + options.ttl / 100);
        return LeasePtr(new RedisLease(lock_key, std::string(source), token, *fencing, options,
                                       std::move(conn), valid_until));
      }
      if (Clock::now() + pause > give_up) {
        if (!fencing.ok()) {
          return fencing.status();
        }
        return absl::AbortedError(strings::cat("lock of ", source, " is held by another holder"));
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(500));
    }
  }

 private:
  RedisLockOptions options_;
};

}  // namespace

SourceLockPtr makeRedisLock(RedisLockOptions options) {
  return std::make_unique<RedisLock>(std::move(options));
}

}  // namespace tributary::locks
