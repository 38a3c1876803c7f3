#include "session.h"

#include "tributary/common/strings.h"

#include <thread>

namespace tributary::store::internal {

Session::Session(StoreOptions options, std::string application, std::string setup_sql)
    : options_(std::move(options)),
      application_(std::move(application)),
      setup_sql_(std::move(setup_sql)) {}

absl::StatusOr<PgConnection*> Session::connection(Clock::time_point deadline,
                                                  std::string_view what) {
  if (conn_ != nullptr && conn_->healthy()) {
    return conn_.get();
  }
  conn_.reset();
  Backoff backoff(options_.backoff_initial, options_.backoff_max);
  const Clock::time_point started = Clock::now();
  std::string last_error;
  int attempts = 0;
  while (true) {
    ++attempts;
    absl::StatusOr<PgConnectionPtr> conn =
        PgConnection::connect(options_.dsn, options_.connect_timeout, application_);
    if (conn.ok()) {
      PgOutcome setup = setup_sql_.empty() ? PgOutcome(PgResult()) : (*conn)->exec(setup_sql_);
      if (setup.ok()) {
        conn_ = *std::move(conn);
        if (had_connection_) {
          reconnected_ = true;
          options_.logger.info("reconnected to PostgreSQL",
                               {{"what", std::string(what)}, {"attempts", attempts}});
        }
        had_connection_ = true;
        return conn_.get();
      }
      last_error = setup.error().describe();
      if (!setup.error().retryableConnection()) {
        return toStatus(setup.error(), strings::cat(what, ": session setup"));
      }
    } else if (absl::IsFailedPrecondition(conn.status())) {
      return absl::FailedPreconditionError(strings::cat(what, ": ", conn.status().message()));
    } else {
      last_error = std::string(conn.status().message());
    }
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      const auto waited =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
      return absl::UnavailableError(strings::cat(
          what, ": PostgreSQL unreachable (", attempts, " attempts over ", waited.count(),
          " ms, deadline ", options_.reconnect_deadline.count(), " ms): ", last_error));
    }
    if (attempts == 1 || attempts % 10 == 0) {
      options_.logger.warn(
          "PostgreSQL unreachable, retrying",
          {{"what", std::string(what)}, {"error", last_error}, {"attempt", attempts}});
    }
    // The last attempt is made at the deadline, not a backoff step before it.
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff.next(), deadline - now));
  }
}

void Session::reset() { conn_.reset(); }

bool Session::takeReconnected() {
  const bool value = reconnected_;
  reconnected_ = false;
  return value;
}

std::string qualified(std::string_view quoted_schema, std::string_view name) {
  return strings::cat(quoted_schema, ".", name);
}

}  // namespace tributary::store::internal
