#pragma once

// Private PostgreSQL and Redis servers for integration tests.
//
// Every integration suite uses these instead of a machine-wide service: each server runs from a
// fresh temporary directory on a free 127.0.0.1 port, in its own process group, and is removed
// again when the owning object is destroyed. A watchdog process kills the servers and removes
// their directories if the test binary dies without cleaning up (abort, SIGKILL, ctest timeout).
//
// The namespace is tributary::harness rather than tributary::testing so that test code inside
// namespace tributary still finds gtest's ::testing unqualified.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::harness {

/// The certificates of a server started with `tls` (scripts/test-tls-pki.sh).
struct TlsFiles {
  std::string ca;        ///< The CA that signed the server's certificate.
  std::string other_ca;  ///< A CA that signed nothing here (a wrong CA).
  std::string cert;      ///< Server certificate: 127.0.0.1 and localhost only.
  std::string key;
  std::string client_cert;  ///< A client certificate the CA signed (CN tributary-test-client).
  std::string client_key;
};

struct PostgresOptions {
  /// Extra `name=value` server settings passed as `-c name=value` (e.g. "log_statement=all").
  std::vector<std::string> settings;
  int max_connections = 100;
  /// TCP connections only over TLS (hostssl; a generated CA, tlsFiles()); dsn() verifies the
  /// server (sslmode=verify-full). The unix socket stays plain.
  bool tls = false;
  /// TCP connections authenticate user postgres with this password (scram-sha-256); the unix
  /// socket stays trust. dsn() does not hold it: give it as PGPASSWORD or password=.
  std::string password;
  /// How long start() waits for the server to accept connections.
  std::chrono::milliseconds start_timeout{60000};
  /// How long stop() waits for a fast shutdown before SIGKILL.
  std::chrono::milliseconds stop_timeout{30000};
};

/**
 * A private PostgreSQL server (initdb into a temp dir, postgres on 127.0.0.1:<free port> plus a
 * unix socket in the temp dir; fsync off). When the process runs as root the server runs as the
 * `postgres` system user. Superuser `postgres`, trust authentication.
 *
 * Lifecycle: start() (initdb on first call) → stop()/kill() → start() again (same data, same
 * port; after kill() the server does crash recovery) … → destructor (stops and removes the dir).
 *
 * Not thread-safe: call from one thread at a time. The getters are cheap and valid while the
 * object lives.
 */
class PostgresServer {
 public:
  explicit PostgresServer(PostgresOptions options = {});
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;
  PostgresServer(PostgresServer&&) = delete;
  PostgresServer& operator=(PostgresServer&&) = delete;

  /** Initialises the data dir if needed, starts the server and waits until it accepts
   *  connections. Errors carry the tail of the server log. No-op if already running. */
  absl::Status start();
  /** Fast shutdown (SIGINT); SIGKILL after stop_timeout. No-op if not running. */
  absl::Status stop();
  /** stop() then start() on the same port and data. */
  absl::Status restart();
  /** SIGKILL to the whole server process group (a crash). start() recovers. */
  absl::Status kill();

  [[nodiscard]] bool running() const { return pid_ > 0; }
  [[nodiscard]] std::string host() const { return "127.0.0.1"; }
  /** The TCP port; stays the same across restarts. 0 before the first start(). */
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] std::string user() const { return "postgres"; }
  /** libpq key/value DSN over TCP, e.g. `host=127.0.0.1 port=N user=postgres dbname=postgres`. */
  [[nodiscard]] std::string dsn(std::string_view dbname = "postgres") const;
  /** The same as a URI: `postgresql://postgres@127.0.0.1:N/postgres`. */
  [[nodiscard]] std::string uri(std::string_view dbname = "postgres") const;
  /** libpq DSN over the unix socket in the temp dir. */
  [[nodiscard]] std::string socketDsn(std::string_view dbname = "postgres") const;
  /** Directory holding the unix socket (`.s.PGSQL.<port>`). */
  [[nodiscard]] const std::string& socketDir() const { return dir_; }
  [[nodiscard]] std::string dataDir() const;
  /** The certificates (options.tls; empty paths otherwise), valid after the first start(). */
  [[nodiscard]] TlsFiles tlsFiles() const;
  /** Postmaster pid, 0 when not running. */
  [[nodiscard]] pid_t pid() const { return pid_; }
  /** The last `max_bytes` of the server log (initdb output included). */
  [[nodiscard]] std::string logTail(std::size_t max_bytes = 4096) const;

  /** Creates database `name` (a fresh, empty one: dropped first if it exists) and returns its
   *  DSN. Lets suites isolate themselves from other tests sharing the server. */
  absl::StatusOr<std::string> createDatabase(std::string_view name);

 private:
  absl::Status initDataDir();
  absl::Status configureAccess();
  absl::Status setPassword();
  absl::Status launch();
  void cleanupAfterDeath();

  PostgresOptions options_;
  std::string dir_;      // temp dir (0700, owned by the server user); holds the socket
  std::string bin_dir_;  // e.g. /usr/lib/postgresql/15/bin
  int port_ = 0;
  pid_t pid_ = 0;
  bool initialized_ = false;
  bool password_set_ = false;
  pid_t owner_pid_;  // the process that created us; a fork()ed child never cleans up
};

struct RedisOptions {
  /// Extra arguments for redis-server, e.g. {"--maxmemory", "10mb"}.
  std::vector<std::string> args;
  /// port() speaks only TLS (a generated CA, tlsFiles()) and, as Redis does by default, wants a
  /// client certificate the CA signed. The unix socket stays plain.
  bool tls = false;
  std::chrono::milliseconds start_timeout{30000};
  std::chrono::milliseconds stop_timeout{10000};
};

/**
 * A private redis-server on 127.0.0.1:<free port> (and a unix socket in its temp dir), with
 * persistence off (`--save "" --appendonly no`): a restart starts empty.
 *
 * Same lifecycle and threading rules as PostgresServer.
 */
class RedisServer {
 public:
  explicit RedisServer(RedisOptions options = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  RedisServer(RedisServer&&) = delete;
  RedisServer& operator=(RedisServer&&) = delete;

  /** Starts the server and waits until it answers PING. No-op if already running. */
  absl::Status start();
  /** SIGTERM; SIGKILL after stop_timeout. No-op if not running. */
  absl::Status stop();
  /** stop() then start() on the same port (data is gone: persistence is off). */
  absl::Status restart();
  /** SIGKILL (a crash). */
  absl::Status kill();

  [[nodiscard]] bool running() const { return pid_ > 0; }
  [[nodiscard]] std::string host() const { return "127.0.0.1"; }
  [[nodiscard]] int port() const { return port_; }
  /** `redis://127.0.0.1:N`. */
  [[nodiscard]] std::string url() const;
  [[nodiscard]] std::string unixSocket() const;
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string logTail(std::size_t max_bytes = 4096) const;
  /** The certificates (options.tls; empty paths otherwise), valid after the first start(). */
  [[nodiscard]] TlsFiles tlsFiles() const;

 private:
  absl::Status launch();

  RedisOptions options_;
  std::string dir_;
  std::string binary_;
  int port_ = 0;
  pid_t pid_ = 0;
  pid_t owner_pid_;
};

/**
 * One PostgreSQL and one Redis server per test binary, started on first use and stopped when the
 * binary exits (atexit; the watchdog covers abnormal exits). Thread-safe.
 *
 *   auto pg = SharedServices::postgres();
 *   ASSERT_TRUE(pg.ok()) << pg.status();
 *   PGconn* conn = PQconnectdb((*pg)->dsn().c_str());
 *
 * The servers are owned by SharedServices; the pointers stay valid until exit. A failure to start
 * is remembered and returned to every later caller (no retry storm). Tests may restart() or kill()
 * the shared servers; the next test that needs a live server should call start() (a no-op when
 * running).
 */
class SharedServices {
 public:
  static absl::StatusOr<PostgresServer*> postgres();
  static absl::StatusOr<RedisServer*> redis();
  /** Stops both servers now (also runs automatically at exit). */
  static void shutdown();
};

}  // namespace tributary::harness
