#include "tributary/testing/services.h"

#include "absl/strings/str_cat.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <unistd.h>

namespace tributary::harness {
namespace {

// The per-binary servers. Leaked on purpose: shutdown() runs from atexit, and static destruction
// order must not matter.
struct State {
  std::mutex mu;
  pid_t owner_pid = ::getpid();
  bool atexit_registered = false;
  std::unique_ptr<PostgresServer> postgres;
  absl::Status postgres_status = absl::OkStatus();
  std::unique_ptr<RedisServer> redis;
  absl::Status redis_status = absl::OkStatus();
};

State& state() {
  static auto* instance = new State();
  return *instance;
}

void shutdownAtExit() { SharedServices::shutdown(); }

// Requires state().mu.
void registerAtExit(State& s) {
  if (!s.atexit_registered) {
    s.atexit_registered = true;
    std::atexit(shutdownAtExit);
  }
}

template <typename Server>
absl::StatusOr<Server*> getOrStart(State& s, std::unique_ptr<Server>& server, absl::Status& failure,
                                   const char* what) {
  if (!failure.ok()) {
    return failure;
  }
  if (server == nullptr) {
    registerAtExit(s);
    auto fresh = std::make_unique<Server>();
    if (absl::Status status = fresh->start(); !status.ok()) {
      failure = absl::Status(status.code(),
                             absl::StrCat("shared ", what, " did not start: ", status.message()));
      return failure;
    }
    std::fprintf(stderr, "tributary test harness: shared %s running on 127.0.0.1:%d (pid %d)\n",
                 what, fresh->port(), static_cast<int>(fresh->pid()));
    server = std::move(fresh);
  }
  return server.get();
}

}  // namespace

absl::StatusOr<PostgresServer*> SharedServices::postgres() {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mu);
  return getOrStart(s, s.postgres, s.postgres_status, "postgres");
}

absl::StatusOr<RedisServer*> SharedServices::redis() {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mu);
  return getOrStart(s, s.redis, s.redis_status, "redis");
}

void SharedServices::shutdown() {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mu);
  if (::getpid() != s.owner_pid) {
    // A fork()ed child (gtest death test) exiting: the servers belong to the parent.
    static_cast<void>(s.postgres.release());
    static_cast<void>(s.redis.release());
    return;
  }
  s.postgres.reset();  // destructors stop the servers and remove their directories
  s.redis.reset();
}

}  // namespace tributary::harness
