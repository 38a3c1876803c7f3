#pragma once

// A database session that survives server restarts: it reconnects with backoff until a deadline
// and re-runs the session setup. Internal to the store.

#include "tributary/store/store.h"

#include "absl/status/statusor.h"
#include "pg.h"

#include <chrono>
#include <string>
#include <string_view>

namespace tributary::store::internal {

using Clock = std::chrono::steady_clock;

class Session {
 public:
  /// Copies `options` (so a Run's session outlives the Store).
  Session(StoreOptions options, std::string application, std::string setup_sql);

  /**
   * The live connection, connecting first if needed. Retries with backoff until `deadline`,
   * then UNAVAILABLE naming `what` and the last error.
   */
  absl::StatusOr<PgConnection*> connection(Clock::time_point deadline, std::string_view what);

  /// Drops the connection (after a connection-level error); the next connection() reconnects.
  void reset();

  /// True once after a connection replaced a lost one; cleared by the call.
  bool takeReconnected();

  [[nodiscard]] bool connected() const { return conn_ != nullptr && conn_->healthy(); }
  [[nodiscard]] PgConnection* raw() const { return conn_.get(); }
  [[nodiscard]] const StoreOptions& options() const { return options_; }
  /// now + reconnect_deadline.
  [[nodiscard]] Clock::time_point deadlineFromNow() const {
    return Clock::now() + options_.reconnect_deadline;
  }

 private:
  const StoreOptions options_;
  std::string application_;
  std::string setup_sql_;
  PgConnectionPtr conn_;
  bool had_connection_ = false;
  bool reconnected_ = false;
};

/// `"schema".name`.
std::string qualified(std::string_view quoted_schema, std::string_view name);

}  // namespace tributary::store::internal
