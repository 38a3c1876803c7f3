#pragma once

// Per-source locks with fencing tokens.
//
//   auto lock = locks::makeRedisLock({.host = "redis", .port = 6379});
//   auto lease = lock->acquire("team-a/s3-docs",
//                              {.ttl = 30s, .wait = 5s, .min_fencing_token = store_hwm});
//   if (!lease.ok()) return lease.status();          // ABORTED: held by someone else
//   store.beginRun({..., .fencing_token = (*lease)->fencingToken(),
//                   .lease_id = (*lease)->token(), .lease_check = [&] { return (*lease)->check();
//                   }});
//
// A lease is renewed in the background until released. It can be lost (expired, the lock service
// restarted or became unreachable for longer than the TTL): lost() turns true, check() fails and
// on_lost is called once. Correctness never depends on the holder noticing: every write carries
// the fencing token and the store refuses tokens older than the newest it has seen.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>

namespace tributary::locks {

struct AcquireOptions {
  /// Lease time to live; the lease is renewed every `renew_interval` while held.
  std::chrono::milliseconds ttl{std::chrono::seconds(30)};
  /// 0 means ttl / 3.
  std::chrono::milliseconds renew_interval{0};
  /// Background renewal. Off only in tests (the lease then simply expires after ttl).
  bool renew = true;
  /// How long acquire() waits for a lock held by someone else; 0 tries once.
  std::chrono::milliseconds wait{0};
  /// The new fencing token is greater than this (and than every earlier token of the source).
  /// Pass the store's high-water mark, so tokens keep increasing even if the lock service lost
  /// its counters (a Redis restart without persistence).
  std::int64_t min_fencing_token = 0;
  /// Called once, from the renewal thread, when the lease is found lost. Must not block long and
  /// must not destroy the lease.
  std::function<void(const absl::Status&)> on_lost;
  /// Cancels a waiting acquire().
  std::stop_token stop;
};

/**
 * A held lock. Thread-safe. Destroying a lease releases it (best effort).
 */
class Lease {
 public:
  virtual ~Lease() = default;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  [[nodiscard]] virtual const std::string& source() const = 0;
  /// Random token identifying this lease (128 bits, hex). Only its holder can renew or release.
  [[nodiscard]] virtual const std::string& token() const = 0;
  /// Monotonically increasing per source: every acquisition gets a larger one.
  [[nodiscard]] virtual std::int64_t fencingToken() const = 0;

  /// True once the lease is known lost or its validity passed without a renewal.
  [[nodiscard]] virtual bool lost() const = 0;
  /// OK while the lease is held; ABORTED with the reason otherwise. Cheap (no I/O).
  [[nodiscard]] virtual absl::Status check() const = 0;

  /// Stops renewal and deletes the lock if (and only if) this lease still holds it.
  /// Idempotent. ABORTED if the lock had already passed to someone else.
  virtual absl::Status release() = 0;

 protected:
  Lease() = default;
};
using LeasePtr = std::unique_ptr<Lease>;

/** Hands out leases on sources. Thread-safe. */
class SourceLock {
 public:
  virtual ~SourceLock() = default;

  /**
   * Acquires the lock of `source`.
   * @return the lease (owned by the caller); ABORTED if another holder kept it for the whole
   *   wait; UNAVAILABLE if the lock service could not be reached; CANCELLED on stop.
   */
  virtual absl::StatusOr<LeasePtr> acquire(std::string_view source,
                                           const AcquireOptions& options) = 0;

  /// Reaches the lock service once (connect, authenticate, a round trip), so that a process can
  /// tell a wrong setting from an outage at start. OK, UNAVAILABLE or UNAUTHENTICATED.
  virtual absl::Status probe() { return absl::OkStatus(); }
};
using SourceLockPtr = std::unique_ptr<SourceLock>;

struct RedisLockOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  /// If set, used instead of host/port.
  std::string unix_socket;
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(2)};
  std::chrono::milliseconds command_timeout{std::chrono::seconds(2)};
  /// AUTH after connecting when set (Redis 6 ACL user with `username`). Never logged.
  std::string username;
  std::string password;
  /// Keys are `<prefix>lock:<source>` and `<prefix>fence:<source>`.
  std::string key_prefix = "tributary:";
  /// Called after a connection failure; a non-empty result is appended to the error. For a
  /// proxy in front of Redis (the agent's TLS tunnel): it accepts locally, so the failure that
  /// matters, a certificate refused, say, is only in its own log.
  std::function<std::string()> describe_transport;
};

/// Redis 7 (hiredis): SET NX PX with a random token plus INCR of a per-source fence counter in
/// one Lua script; renewal and release by compare-and-{pexpire,delete} scripts; reconnects.
SourceLockPtr makeRedisLock(RedisLockOptions options);

/// The same interface inside one process (the CLI's local mode). Leases never expire; they are
/// lost only through InProcessLock::revoke().
class InProcessLock : public SourceLock {
 public:
  static std::unique_ptr<InProcessLock> create();
  /// Takes the lock away from its current holder (which sees lost() and on_lost).
  virtual void revoke(std::string_view source) = 0;
};

}  // namespace tributary::locks
