#include "tributary/common/status.h"
#include "tributary/testing/services.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "libpq-fe.h"
#include "process.h"
#include "watchdog.h"

#include <sys/ipc.h>
#include <sys/shm.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <signal.h>
#include <sstream>
#include <thread>
#include <unistd.h>
#include <vector>

namespace tributary::harness {
namespace {

using internal::ExitInfo;

constexpr int kLaunchAttempts = 5;

// The newest installed PostgreSQL: $TRIBUTARY_PG_BINDIR, /usr/lib/postgresql/<major>/bin (Debian),
// or the directory of `postgres` on $PATH.
absl::StatusOr<std::string> findBinDir() {
  if (const char* env = std::getenv("TRIBUTARY_PG_BINDIR"); env != nullptr && env[0] != '\0') {
    if (!internal::isExecutable(absl::StrCat(env, "/postgres"))) {
      return absl::NotFoundError(absl::StrCat("TRIBUTARY_PG_BINDIR=", env, " has no postgres"));
    }
    return std::string(env);
  }
  int best_major = -1;
  std::string best;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string name = entry.path().filename().string();
    char* end = nullptr;
    const long major = std::strtol(name.c_str(), &end, 10);  // NOLINT(google-runtime-int)
    if (end == name.c_str() || *end != '\0') {
      continue;
    }
    const std::string bin = entry.path().string() + "/bin";
    if (major > best_major && internal::isExecutable(bin + "/postgres") &&
        internal::isExecutable(bin + "/initdb")) {
      best_major = static_cast<int>(major);
      best = bin;
    }
  }
  if (!best.empty()) {
    return best;
  }
  if (std::optional<std::string> postgres = internal::findProgram("postgres")) {
    return std::filesystem::path(*postgres).parent_path().string();
  }
  return absl::NotFoundError(
      "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin and $PATH); "
      "run scripts/bootstrap.sh");
}

// Contents of `path` from byte `offset` on.
std::string readFrom(const std::string& path, std::uintmax_t offset) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return {};
  }
  in.seekg(static_cast<std::streamoff>(offset));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::uintmax_t fileSize(const std::string& path) {
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  return ec ? 0 : size;
}

// Quotes a libpq conninfo value when needed.
std::string conninfoValue(std::string_view value) {
  if (!value.empty() && value.find_first_of(" '\\") == std::string_view::npos) {
    return std::string(value);
  }
  std::string quoted = "'";
  for (const char c : value) {
    if (c == '\'' || c == '\\') {
      quoted.push_back('\\');
    }
    quoted.push_back(c);
  }
  quoted.push_back('\'');
  return quoted;
}

std::optional<internal::RunAs> serverUser(absl::Status* error) {
  if (::geteuid() != 0) {
    return std::nullopt;  // run as ourselves
  }
  absl::StatusOr<internal::RunAs> user = internal::lookupUser("postgres");
  if (!user.ok()) {
    *error = absl::FailedPreconditionError(absl::StrCat(
        "running as root, PostgreSQL must run as the 'postgres' system user: ",
        user.status().message(), " (install the postgresql package: scripts/bootstrap.sh)"));
    return std::nullopt;
  }
  return *user;
}

// Processes whose working directory is `dir`. Every postgres process chdirs into its data
// directory, so this finds the old instance's backends even if one escaped the group SIGKILL
// (forked at that very moment): a survivor keeps the shared memory attached and the next start
// fails with "pre-existing shared memory block is still in use".
std::vector<pid_t> processesIn(const std::string& dir) {
  std::vector<pid_t> out;
  std::error_code ec;
  const auto wanted = std::filesystem::weakly_canonical(dir, ec);
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::error_code link_ec;
    const auto cwd = std::filesystem::read_symlink(entry.path() / "cwd", link_ec);
    if (!link_ec && cwd == wanted) {
      out.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return out;
}

}  // namespace

PostgresServer::PostgresServer(PostgresOptions options)
    : options_(std::move(options)), owner_pid_(::getpid()) {}

PostgresServer::~PostgresServer() {
  if (::getpid() != owner_pid_ || dir_.empty()) {
    return;  // a fork()ed child (death test) must not tear down its parent's server
  }
  if (running()) {
    if (absl::Status status = stop(); !status.ok()) {
      std::fprintf(stderr, "tributary test harness: postgres stop: %s\n",
                   status.ToString().c_str());
      static_cast<void>(kill());
    }
  }
  cleanupAfterDeath();
  internal::removeTree(dir_);
  internal::Watchdog::get().untrackDir(dir_);  // only now: a crash mid-removal is still covered
}

std::string PostgresServer::dataDir() const { return dir_.empty() ? dir_ : dir_ + "/data"; }

TlsFiles PostgresServer::tlsFiles() const {
  if (!options_.tls || dir_.empty()) {
    return {};
  }
  return internal::testTlsFilesIn(dir_ + "/tls");
}

std::string PostgresServer::dsn(std::string_view dbname) const {
  return absl::StrCat(
      "host=127.0.0.1 port=", port_, " user=postgres dbname=", conninfoValue(dbname),
      options_.tls ? absl::StrCat(" sslmode=verify-full sslrootcert=", conninfoValue(tlsFiles().ca))
                   : std::string());
}

std::string PostgresServer::uri(std::string_view dbname) const {
  return absl::StrCat("postgresql://postgres@127.0.0.1:", port_, "/", std::string(dbname),
                      options_.tls
                          ? absl::StrCat("?sslmode=verify-full&sslrootcert=", tlsFiles().ca)
                          : std::string());
}

std::string PostgresServer::socketDsn(std::string_view dbname) const {
  return absl::StrCat("host=", conninfoValue(dir_), " port=", port_,
                      " user=postgres dbname=", conninfoValue(dbname));
}

std::string PostgresServer::logTail(std::size_t max_bytes) const {
  return dir_.empty() ? std::string() : internal::fileTail(dir_ + "/postgres.log", max_bytes);
}

absl::Status PostgresServer::initDataDir() {
  absl::Status user_error;
  const std::optional<internal::RunAs> user = serverUser(&user_error);
  TRIBUTARY_RETURN_IF_ERROR(user_error);

  internal::SpawnOptions options;
  options.argv = {
      bin_dir_ + "/initdb", "-D",       dataDir(), "-U", "postgres", "-A", "trust", "-E", "UTF8",
      "--locale=C",         "--no-sync"};
  options.env = internal::serverEnvironment();
  options.workdir = dir_;
  options.log_path = dir_ + "/postgres.log";
  options.run_as = user;
  if (absl::Status status = internal::runToCompletion(options, std::chrono::minutes(3));
      !status.ok()) {
    return absl::InternalError(
        absl::StrCat("initdb failed: ", status.message(), "\n--- log tail ---\n", logTail()));
  }
  initialized_ = true;
  return configureAccess();
}

// pg_hba.conf and the certificates for options.tls and options.password.
absl::Status PostgresServer::configureAccess() {
  if (!options_.tls && options_.password.empty()) {
    return absl::OkStatus();
  }
  if (options_.tls) {
    absl::Status user_error;
    const std::optional<internal::RunAs> user = serverUser(&user_error);
    TRIBUTARY_RETURN_IF_ERROR(user_error);
    TRIBUTARY_RETURN_IF_ERROR(internal::writeTestTlsFiles(dir_ + "/tls", user, dir_ + "/pki.log"));
  }
  const std::string method = options_.password.empty() ? "trust" : "scram-sha-256";
  std::ofstream hba(dataDir() + "/pg_hba.conf", std::ios::trunc);  // keeps its owner
  hba << "local all all trust\n"
      << (options_.tls ? "hostssl" : "host") << " all all 127.0.0.1/32 " << method << "\n";
  if (options_.tls) {
    hba << "hostnossl all all 127.0.0.1/32 reject\n";
  }
  hba.close();
  return hba ? absl::OkStatus()
             : absl::InternalError(absl::StrCat("cannot write ", dataDir(), "/pg_hba.conf"));
}

// Over the unix socket (trust), once: the password lives in the data directory from then on.
absl::Status PostgresServer::setPassword() {
  if (options_.password.empty() || password_set_) {
    return absl::OkStatus();
  }
  PGconn* conn = PQconnectdb(socketDsn().c_str());
  std::string error;
  if (PQstatus(conn) == CONNECTION_OK) {
    char* literal = PQescapeLiteral(conn, options_.password.data(), options_.password.size());
    PGresult* result = PQexec(conn, absl::StrCat("ALTER USER postgres PASSWORD ", literal).c_str());
    PQfreemem(literal);
    if (PQresultStatus(result) != PGRES_COMMAND_OK) {
      error = PQresultErrorMessage(result);
    }
    PQclear(result);
  } else {
    error = PQerrorMessage(conn);
  }
  PQfinish(conn);
  if (!error.empty()) {
    return absl::InternalError(absl::StrCat("cannot set the postgres password: ", error));
  }
  password_set_ = true;
  return absl::OkStatus();
}

absl::Status PostgresServer::start() {
  if (running()) {
    return absl::OkStatus();
  }
  if (bin_dir_.empty()) {
    absl::StatusOr<std::string> bin_dir = findBinDir();
    if (!bin_dir.ok()) {
      return bin_dir.status();
    }
    bin_dir_ = *bin_dir;
  }
  if (dir_.empty()) {
    absl::Status user_error;
    const std::optional<internal::RunAs> user = serverUser(&user_error);
    TRIBUTARY_RETURN_IF_ERROR(user_error);
    absl::StatusOr<std::string> dir = internal::makeTempDir("pg", user);
    if (!dir.ok()) {
      return dir.status();
    }
    dir_ = *dir;
    internal::Watchdog::get().trackDir(dir_);
  }
  if (!initialized_) {
    TRIBUTARY_RETURN_IF_ERROR(initDataDir());
  }

  const bool fixed_port = port_ != 0;  // restarts keep their port: clients hold the DSN
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
    if (last.ok()) {
      return setPassword();
    }
    if (last.code() != absl::StatusCode::kUnavailable) {
      return last;
    }
  }
  return last;
}

absl::Status PostgresServer::launch() {
  absl::Status user_error;
  const std::optional<internal::RunAs> user = serverUser(&user_error);
  TRIBUTARY_RETURN_IF_ERROR(user_error);
  cleanupAfterDeath();

  const std::string log_path = dir_ + "/postgres.log";
  const std::uintmax_t log_start = fileSize(log_path);
  internal::SpawnOptions options;
  options.argv = {bin_dir_ + "/postgres", "-D", dataDir(), "-p", std::to_string(port_), "-c",
                  "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + dir_, "-c",
                  "max_connections=" + std::to_string(options_.max_connections), "-c", "fsync=off",
                  "-c", "full_page_writes=off", "-c", "shared_buffers=32MB",
                  // DSM segments as files in the data dir: nothing is left in /dev/shm after a
                  // kill(), the temp dir removal takes them along.
                  "-c", "dynamic_shared_memory_type=mmap", "-c", "logging_collector=off", "-c",
                  "log_destination=stderr", "-c", "log_timezone=UTC", "-c", "timezone=UTC"};
  if (options_.tls) {
    const TlsFiles tls = tlsFiles();
    for (const std::string& setting :
         {std::string("ssl=on"), "ssl_cert_file=" + tls.cert, "ssl_key_file=" + tls.key}) {
      options.argv.emplace_back("-c");
      options.argv.push_back(setting);
    }
  }
  for (const std::string& setting : options_.settings) {
    options.argv.emplace_back("-c");
    options.argv.push_back(setting);
  }
  options.env = internal::serverEnvironment();
  options.workdir = dir_;
  options.log_path = log_path;
  options.run_as = user;

  absl::StatusOr<pid_t> pid = internal::spawn(options);
  if (!pid.ok()) {
    return pid.status();
  }
  pid_ = *pid;
  internal::registerHarnessPid(pid_);
  internal::Watchdog::get().trackGroup(pid_);

  const std::string ping_dsn = dsn() + " connect_timeout=2";
  const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
  while (true) {
    if (PQping(ping_dsn.c_str()) == PQPING_OK) {
      return absl::OkStatus();
    }
    ExitInfo info;
    if (internal::hasExited(pid_, &info)) {
      internal::Watchdog::get().untrackGroup(pid_);
      internal::unregisterHarnessPid(pid_);
      pid_ = 0;
      const std::string output = readFrom(log_path, log_start);
      const std::string message =
          absl::StrCat("postgres on port ", port_, " ", internal::describeExit(info),
                       " during startup\n--- log tail ---\n", logTail());
      if (absl::StrContains(output, "Address already in use")) {
        return absl::UnavailableError(message);  // retried on another port
      }
      return absl::InternalError(message);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      static_cast<void>(kill());
      return absl::DeadlineExceededError(
          absl::StrCat("postgres did not accept connections on port ", port_, " within ",
                       options_.start_timeout.count(), " ms\n--- log tail ---\n", logTail()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

absl::Status PostgresServer::stop() {
  if (!running()) {
    return absl::OkStatus();
  }
  absl::Status result = absl::OkStatus();
  ::kill(pid_, SIGINT);  // fast shutdown: roll back open transactions, disconnect clients
  ExitInfo info = internal::waitForExit(pid_, options_.stop_timeout);
  if (!info.exited) {
    // Still alive (so the group id cannot have been reused): kill the whole group.
    internal::signalGroup(pid_, SIGKILL);
    info = internal::waitForExit(pid_, std::chrono::seconds(10));
    result = absl::DeadlineExceededError(
        absl::StrCat("postgres did not shut down within ", options_.stop_timeout.count(),
                     " ms; killed\n--- log tail ---\n", logTail()));
  }
  internal::Watchdog::get().untrackGroup(pid_);
  internal::unregisterHarnessPid(pid_);
  pid_ = 0;
  cleanupAfterDeath();
  return result;
}

absl::Status PostgresServer::restart() {
  TRIBUTARY_RETURN_IF_ERROR(stop());
  return start();
}

absl::Status PostgresServer::kill() {
  if (!running()) {
    return absl::OkStatus();
  }
  // The postmaster is not reaped yet, so its group id is still ours to signal.
  internal::signalGroup(pid_, SIGKILL);
  const ExitInfo info = internal::waitForExit(pid_, std::chrono::seconds(10));
  // Backends are in the same group; give them (and init's reaping) a moment to vanish.
  for (int i = 0; i < 100 && ::kill(-pid_, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int i = 0; i < 250; ++i) {
    const std::vector<pid_t> left = processesIn(dataDir());
    if (left.empty()) {
      break;
    }
    for (const pid_t p : left) {
      ::kill(p, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  internal::Watchdog::get().untrackGroup(pid_);
  internal::unregisterHarnessPid(pid_);
  pid_ = 0;
  cleanupAfterDeath();
  if (!info.exited) {
    return absl::InternalError("postgres did not die from SIGKILL within 10 s");
  }
  return absl::OkStatus();
}

void PostgresServer::cleanupAfterDeath() {
  if (running() || dir_.empty()) {
    return;
  }
  // A killed postmaster leaves its lock files (whose pid may be reused by the time we restart)
  // and its small SysV shared memory segment. Line 7 of postmaster.pid is "<shm key> <shm id>".
  const std::string pid_file = dataDir() + "/postmaster.pid";
  std::ifstream in(pid_file);
  std::string line;
  for (int i = 0; i < 7 && std::getline(in, line); ++i) {
  }
  if (in) {
    std::istringstream fields(line);
    long key = 0;  // NOLINT(google-runtime-int)
    int shm_id = -1;
    if (fields >> key >> shm_id && shm_id >= 0) {
      struct shmid_ds info {};
      if (::shmctl(shm_id, IPC_STAT, &info) == 0 && info.shm_nattch == 0) {
        ::shmctl(shm_id, IPC_RMID, nullptr);
      }
    }
  }
  std::error_code ec;
  std::filesystem::remove(pid_file, ec);
  if (port_ != 0) {
    std::filesystem::remove(absl::StrCat(dir_, "/.s.PGSQL.", port_, ".lock"), ec);
    std::filesystem::remove(absl::StrCat(dir_, "/.s.PGSQL.", port_), ec);
  }
}

absl::StatusOr<std::string> PostgresServer::createDatabase(std::string_view name) {
  if (!running()) {
    return absl::FailedPreconditionError("postgres is not running");
  }
  PGconn* conn = PQconnectdb(socketDsn().c_str());  // trust, whatever TCP requires
  auto close = [conn]() { PQfinish(conn); };
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string error = PQerrorMessage(conn);
    close();
    return absl::UnavailableError(absl::StrCat("connect: ", error));
  }
  PQsetNoticeProcessor(
      conn, [](void* /*arg*/, const char* /*message*/) {}, nullptr);
  char* quoted = PQescapeIdentifier(conn, name.data(), name.size());
  if (quoted == nullptr) {
    std::string error = PQerrorMessage(conn);
    close();
    return absl::InvalidArgumentError(absl::StrCat("bad database name: ", error));
  }
  const std::string identifier = quoted;
  PQfreemem(quoted);
  for (const std::string& sql :
       {absl::StrCat("DROP DATABASE IF EXISTS ", identifier, " WITH (FORCE)"),
        absl::StrCat("CREATE DATABASE ", identifier)}) {
    PGresult* result = PQexec(conn, sql.c_str());
    const bool ok = PQresultStatus(result) == PGRES_COMMAND_OK;
    std::string error = ok ? std::string() : PQresultErrorMessage(result);
    PQclear(result);
    if (!ok) {
      close();
      return absl::InternalError(absl::StrCat(sql, ": ", error));
    }
  }
  close();
  return dsn(name);
}

}  // namespace tributary::harness
