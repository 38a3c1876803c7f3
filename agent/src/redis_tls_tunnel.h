#pragma once

// Redis over TLS for the lock client. Debian 12's hiredis (0.14) speaks no TLS, so the agent runs
// Debian's stunnel as a supervised child: the lock client talks plain RESP to a unix socket in a
// private directory, stunnel carries it over verified TLS to Redis. See agent/README.md,
// "Transport security".

#include "tributary/common/log.h"

#include "absl/status/statusor.h"

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

namespace tributary::agent {

struct RedisTlsOptions {
  std::string host;  ///< Redis host (name or IP literal)
  int port = 6379;
  /// CA bundle that verifies the server (PEM); empty: the system's roots.
  std::string ca_file;
  /// Name (or IP) the certificate must carry; `host` when empty. Also sent as SNI if a name.
  std::string server_name;
  /// Client certificate and key (PEM), for servers that ask for one (Redis's default
  /// `tls-auth-clients yes`). Both or neither.
  std::string cert_file;
  std::string key_file;
  /// Directory for the socket and the configuration, created 0700; the tunnel owns it.
  std::filesystem::path dir;
  /// stunnel executable; searched in PATH (stunnel4, then stunnel) when empty.
  std::string stunnel;
  std::chrono::milliseconds start_timeout{std::chrono::seconds(10)};
  log::Logger logger{"redis-tls"};
};

/**
 * A running stunnel client in front of one Redis. Thread-safe. If stunnel dies it is started
 * again (backoff 1 s to 30 s); meanwhile the lock client sees connection errors, as it would for
 * a Redis outage. stunnel's log lines become the agent's (debug for its chatter, warn/error for
 * its warnings and errors).
 */
class RedisTlsTunnel {
 public:
  /// Starts stunnel and waits until its socket accepts. Fails with stunnel's own words when it
  /// cannot start (a CA file it cannot read, say).
  static absl::StatusOr<std::unique_ptr<RedisTlsTunnel>> start(RedisTlsOptions options);
  ~RedisTlsTunnel();
  RedisTlsTunnel(const RedisTlsTunnel&) = delete;
  RedisTlsTunnel& operator=(const RedisTlsTunnel&) = delete;

  /// The plain-text end, for locks::RedisLockOptions::unix_socket.
  [[nodiscard]] std::string socketPath() const;

  /// What went wrong on the latest connection that failed behind the socket (certificate
  /// refused, server unreachable, …) with what to change, or "" if the latest one succeeded.
  /// Reads stunnel's pending output first, so a failure the lock client just saw is included.
  /// For locks::RedisLockOptions::describe_transport.
  [[nodiscard]] std::string lastFailure();

  /// True if lastFailure() is a TLS verification or certificate problem: a setting, not an
  /// outage.
  [[nodiscard]] bool lastFailureIsConfiguration();

  class Impl;

 private:
  explicit RedisTlsTunnel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::agent
