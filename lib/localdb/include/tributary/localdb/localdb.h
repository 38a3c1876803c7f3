#pragma once

// A private PostgreSQL for one user, started on demand: what `tributary run` uses when no database
// URL is given. See lib/localdb/README.md.
//
//   LocalDbOptions options;                       // defaults: the user's state directory
//   auto db = LocalDb::create(options);
//   auto dsn = (*db)->ensureRunning();            // initdb on first use, start, or reuse
//   ... connect with *dsn ...
//   (*db)->stop();                                // `tributary db stop`
//
// The server listens on a unix socket only (listen_addresses = ''), in a directory only its owner
// can enter, with trust authentication on that socket. Under root it runs as the `postgres`
// system user (PostgreSQL refuses to run as root).

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

namespace tributary::localdb {

struct LocalDbOptions {
  /// Directory holding everything (`data/`, the socket, `server.log`). Empty: `defaultDir()`.
  std::filesystem::path dir;
  /// PostgreSQL server binaries (initdb, pg_ctl, postgres). Empty: $TRIBUTARY_PG_BINDIR, else the
  /// newest /usr/lib/postgresql/<major>/bin, else the directory of `pg_ctl` on PATH.
  std::filesystem::path bin_dir;
  /// Database and role created for Tributary.
  std::string database = "tributary";
  std::string user = "tributary";
  /// How long ensureRunning() waits for the server (and for another process starting it).
  std::chrono::milliseconds start_timeout{std::chrono::seconds(90)};
  std::chrono::milliseconds stop_timeout{std::chrono::seconds(60)};
};

/// `${XDG_STATE_HOME:-$HOME/.local/state}/tributary/postgres`; as root without XDG_STATE_HOME,
/// `/var/lib/tributary/postgres` (the `postgres` user cannot enter /root).
std::filesystem::path defaultDir();

struct ServerStatus {
  bool initialized = false;  ///< data/PG_VERSION exists.
  bool running = false;      ///< Accepts connections on its socket.
  int pid = 0;               ///< Postmaster pid from postmaster.pid, when running.
};

class LocalDb {
 public:
  static absl::StatusOr<std::unique_ptr<LocalDb>> create(LocalDbOptions options);
  ~LocalDb();
  LocalDb(const LocalDb&) = delete;
  LocalDb& operator=(const LocalDb&) = delete;

  /// Returns a libpq DSN of the running server: reuses a running one, else (under an flock, so
  /// concurrent first starts are safe) initialises the data directory if needed, starts the
  /// server with pg_ctl and creates the database. Errors name the step and carry the log tail.
  absl::StatusOr<std::string> ensureRunning();

  /// Fast shutdown (pg_ctl stop -m fast). OK when it was not running.
  absl::Status stop();

  absl::StatusOr<ServerStatus> status() const;

  /// `postgresql://USER@/DATABASE?host=SOCKETDIR` (works with psql and libpq).
  [[nodiscard]] std::string uri() const;
  /// The same as key/value conninfo.
  [[nodiscard]] std::string dsn() const;
  [[nodiscard]] const std::filesystem::path& dir() const { return options_.dir; }
  [[nodiscard]] std::filesystem::path dataDir() const { return options_.dir / "data"; }
  [[nodiscard]] std::filesystem::path logFile() const { return options_.dir / "server.log"; }

 private:
  explicit LocalDb(LocalDbOptions options);
  absl::Status prepareDir();
  absl::Status initialize();
  absl::Status start();
  absl::Status createDatabase();
  bool accepting() const;

  LocalDbOptions options_;
  bool as_postgres_user_ = false;
  unsigned server_uid_ = 0;
  unsigned server_gid_ = 0;
};

}  // namespace tributary::localdb
