#include "tributary/common/status.h"
#include "tributary/testing/services.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "process.h"
#include "watchdog.h"

#include <hiredis/hiredis.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <signal.h>
#include <thread>
#include <unistd.h>

namespace tributary::harness {
namespace {

using internal::ExitInfo;

constexpr int kLaunchAttempts = 5;

absl::StatusOr<std::string> findRedisServer() {
  if (const char* env = std::getenv("TRIBUTARY_REDIS_SERVER"); env != nullptr && env[0] != '\0') {
    if (!internal::isExecutable(env)) {
      return absl::NotFoundError(
          absl::StrCat("TRIBUTARY_REDIS_SERVER=", env, " is not executable"));
    }
    return std::string(env);
  }
  if (std::optional<std::string> path = internal::findProgram("redis-server")) {
    return *path;
  }
  return absl::NotFoundError("redis-server not found; run scripts/bootstrap.sh");
}

// True if a PING on the unix socket (or 127.0.0.1:port when it is empty) answers PONG (or asks for
// AUTH).
bool pingOk(const std::string& unix_socket, int port) {
  const timeval timeout{1, 0};
  redisContext* ctx = unix_socket.empty()
                          ? redisConnectWithTimeout("127.0.0.1", port, timeout)
                          : redisConnectUnixWithTimeout(unix_socket.c_str(), timeout);
  if (ctx == nullptr) {
    return false;
  }
  bool ok = false;
  if (ctx->err == 0) {
    redisSetTimeout(ctx, timeout);
    auto* reply = static_cast<redisReply*>(redisCommand(ctx, "PING"));
    // NOAUTH: a server whose default user is off (an ACL test) is up as well.
    ok = reply != nullptr && ((reply->type == REDIS_REPLY_STATUS &&
                               std::string_view(reply->str, reply->len) == "PONG") ||
                              (reply->type == REDIS_REPLY_ERROR &&
                               std::string_view(reply->str, reply->len).starts_with("NOAUTH")));
    if (reply != nullptr) {
      freeReplyObject(reply);
    }
  }
  redisFree(ctx);
  return ok;
}

}  // namespace

RedisServer::RedisServer(RedisOptions options)
    : options_(std::move(options)), owner_pid_(::getpid()) {}

RedisServer::~RedisServer() {
  if (::getpid() != owner_pid_ || dir_.empty()) {
    return;
  }
  if (running()) {
    if (absl::Status status = stop(); !status.ok()) {
      std::fprintf(stderr, "tributary test harness: redis stop: %s\n", status.ToString().c_str());
      static_cast<void>(kill());
    }
  }
  internal::removeTree(dir_);
  internal::Watchdog::get().untrackDir(dir_);  // only now: a crash mid-removal is still covered
}

std::string RedisServer::url() const { return absl::StrCat("redis://127.0.0.1:", port_); }

std::string RedisServer::unixSocket() const { return dir_.empty() ? dir_ : dir_ + "/redis.sock"; }

TlsFiles RedisServer::tlsFiles() const {
  return options_.tls && !dir_.empty() ? internal::testTlsFilesIn(dir_ + "/tls") : TlsFiles{};
}

std::string RedisServer::logTail(std::size_t max_bytes) const {
  return dir_.empty() ? std::string() : internal::fileTail(dir_ + "/redis.log", max_bytes);
}

absl::Status RedisServer::start() {
  if (running()) {
    return absl::OkStatus();
  }
  if (binary_.empty()) {
    absl::StatusOr<std::string> binary = findRedisServer();
    if (!binary.ok()) {
      return binary.status();
    }
    binary_ = *binary;
  }
  if (dir_.empty()) {
    absl::StatusOr<std::string> dir = internal::makeTempDir("redis", std::nullopt);
    if (!dir.ok()) {
      return dir.status();
    }
    dir_ = *dir;
    internal::Watchdog::get().trackDir(dir_);
    if (options_.tls) {
      TRIBUTARY_RETURN_IF_ERROR(
          internal::writeTestTlsFiles(dir_ + "/tls", std::nullopt, dir_ + "/pki.log"));
    }
  }
  const bool fixed_port = port_ != 0;
  absl::Status last;
  for (int attempt = 0; attempt < kLaunchAttempts; ++attempt) {
    if (!fixed_port) {
      absl::StatusOr<int> port = internal::pickFreePort();
      if (!port.ok()) {
        return port.status();
      }
      port_ = *port;
    } else if (attempt > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200 * attempt));
    }
    last = launch();
    if (last.ok() || last.code() != absl::StatusCode::kUnavailable) {
      return last;
    }
  }
  return last;
}

absl::Status RedisServer::launch() {
  const std::string log_path = dir_ + "/redis.log";
  std::error_code ec;
  std::filesystem::remove(unixSocket(), ec);

  internal::SpawnOptions options;
  options.argv = {binary_,
                  "--port",
                  options_.tls ? "0" : std::to_string(port_),
                  "--bind",
                  "127.0.0.1",
                  "--save",
                  "",
                  "--appendonly",
                  "no",
                  "--dir",
                  dir_,
                  "--daemonize",
                  "no",
                  "--logfile",
                  "",
                  "--unixsocket",
                  unixSocket(),
                  "--unixsocketperm",
                  "700"};
  if (options_.tls) {
    const TlsFiles tls = tlsFiles();
    for (const std::string& arg :
         {std::string("--tls-port"), std::to_string(port_), std::string("--tls-cert-file"),
          tls.cert, std::string("--tls-key-file"), tls.key, std::string("--tls-ca-cert-file"),
          tls.ca}) {
      options.argv.push_back(arg);
    }
  }
  for (const std::string& arg : options_.args) {
    options.argv.push_back(arg);
  }
  options.env = internal::serverEnvironment();
  options.workdir = dir_;
  options.log_path = log_path;

  absl::StatusOr<pid_t> pid = internal::spawn(options);
  if (!pid.ok()) {
    return pid.status();
  }
  pid_ = *pid;
  internal::registerHarnessPid(pid_);
  internal::Watchdog::get().trackGroup(pid_);

  const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
  while (true) {
    if (pingOk(options_.tls ? unixSocket() : std::string(), port_)) {
      return absl::OkStatus();
    }
    ExitInfo info;
    if (internal::hasExited(pid_, &info)) {
      internal::Watchdog::get().untrackGroup(pid_);
      internal::unregisterHarnessPid(pid_);
      pid_ = 0;
      const std::string tail = logTail();
      const std::string message =
          absl::StrCat("redis-server on port ", port_, " ", internal::describeExit(info),
                       " during startup\n--- log tail ---\n", tail);
      if (absl::StrContains(tail, "Address already in use")) {
        return absl::UnavailableError(message);
      }
      return absl::InternalError(message);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      static_cast<void>(kill());
      return absl::DeadlineExceededError(
          absl::StrCat("redis-server did not answer PING on port ", port_, " within ",
                       options_.start_timeout.count(), " ms\n--- log tail ---\n", logTail()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

absl::Status RedisServer::stop() {
  if (!running()) {
    return absl::OkStatus();
  }
  absl::Status result = absl::OkStatus();
  ::kill(pid_, SIGTERM);
  ExitInfo info = internal::waitForExit(pid_, options_.stop_timeout);
  if (!info.exited) {
    internal::signalGroup(pid_, SIGKILL);
    info = internal::waitForExit(pid_, std::chrono::seconds(10));
    result = absl::DeadlineExceededError(absl::StrCat(
        "redis-server did not shut down within ", options_.stop_timeout.count(), " ms; killed"));
  }
  internal::Watchdog::get().untrackGroup(pid_);
  internal::unregisterHarnessPid(pid_);
  pid_ = 0;
  return result;
}

absl::Status RedisServer::restart() {
  TRIBUTARY_RETURN_IF_ERROR(stop());
  return start();
}

absl::Status RedisServer::kill() {
  if (!running()) {
    return absl::OkStatus();
  }
  internal::signalGroup(pid_, SIGKILL);
  const ExitInfo info = internal::waitForExit(pid_, std::chrono::seconds(10));
  internal::Watchdog::get().untrackGroup(pid_);
  internal::unregisterHarnessPid(pid_);
  pid_ = 0;
  if (!info.exited) {
    return absl::InternalError("redis-server did not die from SIGKILL within 10 s");
  }
  return absl::OkStatus();
}

}  // namespace tributary::harness
