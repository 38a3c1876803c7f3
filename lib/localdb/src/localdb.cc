#include "tributary/localdb/localdb.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

#include "libpq-fe.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <grp.h>
#include <optional>
#include <pwd.h>
#include <signal.h>
#include <sstream>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

namespace tributary::localdb {
namespace {

namespace fs = std::filesystem;
using strings::cat;

constexpr int kPort = 5432;  // Only names the socket file; nothing listens on TCP.
constexpr std::size_t kMaxSocketPath = 107;

bool isExecutable(const fs::path& path) { return ::access(path.c_str(), X_OK) == 0; }

absl::StatusOr<fs::path> findBinDir(const fs::path& configured) {
  if (!configured.empty()) {
    if (!isExecutable(configured / "pg_ctl")) {
      return absl::NotFoundError(cat("no pg_ctl in ", configured.string()));
    }
    return configured;
  }
  if (const char* env = std::getenv("TRIBUTARY_PG_BINDIR"); env != nullptr && *env != '\0') {
    if (!isExecutable(fs::path(env) / "pg_ctl")) {
      return absl::NotFoundError(cat("TRIBUTARY_PG_BINDIR=", env, " has no pg_ctl"));
    }
    return fs::path(env);
  }
  long best_major = -1;  // NOLINT(google-runtime-int)
  fs::path best;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string name = entry.path().filename().string();
    char* end = nullptr;
    const long major = std::strtol(name.c_str(), &end, 10);  // NOLINT(google-runtime-int)
    const fs::path bin = entry.path() / "bin";
    if (end != name.c_str() && *end == '\0' && major > best_major && isExecutable(bin / "pg_ctl") &&
        isExecutable(bin / "initdb") && isExecutable(bin / "postgres")) {
      best_major = major;
      best = bin;
    }
  }
  if (!best.empty()) {
    return best;
  }
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    for (const std::string_view dir : strings::split(path, ':')) {
      if (!dir.empty() && isExecutable(fs::path(dir) / "pg_ctl")) {
        return fs::path(dir);
      }
    }
  }
  return absl::NotFoundError(
      "no PostgreSQL server binaries found (looked in $TRIBUTARY_PG_BINDIR, "
      "/usr/lib/postgresql/*/bin and PATH); install them with `apt-get install postgresql` "
      "(scripts/bootstrap.sh), or pass --database-url");
}

std::string fileTail(const fs::path& path, std::size_t max_bytes = 3000) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return {};
  }
  std::ostringstream out;
  out << in.rdbuf();
  std::string text = out.str();
  if (text.size() > max_bytes) {
    text = "…" + text.substr(text.size() - max_bytes);
  }
  return std::string(strings::trim(text));
}

std::string conninfoValue(std::string_view value) {
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

std::string uriEncode(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if ((std::isalnum(c) != 0) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4U]);
      out.push_back(kHex[c & 15U]);
    }
  }
  return out;
}

// An flock held for the life of the object (O_CLOEXEC: the server never inherits it).
class FileLock {
 public:
  static absl::StatusOr<FileLock> acquire(const fs::path& path, std::chrono::milliseconds wait) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      return absl::FailedPreconditionError(
          cat("cannot open lock file ", path.string(), ": ", strings::errnoMessage(errno)));
    }
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) {
        const int err = errno;
        ::close(fd);
        return absl::FailedPreconditionError(
            cat("cannot lock ", path.string(), ": ", strings::errnoMessage(err)));
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        ::close(fd);
        return absl::DeadlineExceededError(
            cat("another tributary process kept ", path.string(), " locked for ",
                std::chrono::duration_cast<std::chrono::seconds>(wait).count(),
                " s (starting or stopping the local database)"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return FileLock(fd);
  }
  FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileLock& operator=(FileLock&&) = delete;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

struct Identity {
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Runs argv to completion with stdout and stderr appended to `log`, as the server user.
// Returns the exit status (or an error when it could not run or timed out).
absl::StatusOr<int> runCommand(const std::vector<std::string>& argv, const fs::path& log,
                               const Identity& who, std::chrono::milliseconds timeout) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));  // NOLINT: execve's signature
  }
  args.push_back(nullptr);
  std::vector<std::string> env_storage = {"LC_ALL=C", "LANG=C", "TZ=UTC"};
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    env_storage.push_back(cat("PATH=", path));
  } else {
    env_storage.emplace_back("PATH=/usr/local/bin:/usr/bin:/bin");
  }
  std::vector<char*> env;
  for (std::string& e : env_storage) {
    env.push_back(e.data());
  }
  env.push_back(nullptr);

  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) {
    return absl::FailedPreconditionError(
        cat("cannot open ", log.string(), ": ", strings::errnoMessage(errno)));
  }
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(out);
    ::close(devnull);
    return absl::InternalError(cat("fork: ", strings::errnoMessage(err)));
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    ::setsid();  // Own session: a Ctrl-C on the terminal never reaches the server.
    if (who.switch_user) {
      const gid_t groups[1] = {who.gid};
      if (::setgroups(1, groups) != 0 || ::setgid(who.gid) != 0 || ::setuid(who.uid) != 0) {
        ::_exit(126);
      }
    }
    ::dup2(devnull, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    ::close_range(3, ~0U, 0);
    ::execve(args[0], args.data(), env.data());
    ::_exit(127);
  }
  ::close(out);
  ::close(devnull);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      if (WIFEXITED(status)) {
        const int code = WEXITSTATUS(status);
        if (code == 126 && who.switch_user) {
          return absl::PermissionDeniedError(
              cat("cannot switch to the server user (uid ", who.uid, ") to run ", argv[0]));
        }
        if (code == 127) {
          return absl::NotFoundError(cat("cannot execute ", argv[0]));
        }
        return code;
      }
      return absl::InternalError(cat(argv[0], " was killed by signal ", WTERMSIG(status)));
    }
    if (done < 0 && errno != EINTR) {
      return absl::InternalError(cat("waitpid: ", strings::errnoMessage(errno)));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      return absl::DeadlineExceededError(
          cat(argv[0], " did not finish within ",
              std::chrono::duration_cast<std::chrono::seconds>(timeout).count(), " s"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Can `uid`/`gid` enter every directory on the way to `dir`?
std::optional<fs::path> firstUntraversable(const fs::path& dir, uid_t uid, gid_t gid) {
  fs::path walk;
  for (const fs::path& part : dir) {
    walk /= part;
    struct stat st {};
    if (::stat(walk.c_str(), &st) != 0) {
      return std::nullopt;  // Created later by us, with a traversable mode.
    }
    const bool ok = (st.st_uid == uid && (st.st_mode & S_IXUSR) != 0) ||
                    (st.st_gid == gid && (st.st_mode & S_IXGRP) != 0) ||
                    (st.st_mode & S_IXOTH) != 0;
    if (!ok) {
      return walk;
    }
  }
  return std::nullopt;
}

}  // namespace

fs::path defaultDir() {
  if (const char* state = std::getenv("XDG_STATE_HOME"); state != nullptr && *state == '/') {
    return fs::path(state) / "tributary" / "postgres";
  }
  if (::geteuid() == 0) {
    return "/var/lib/tributary/postgres";
  }
  const char* home = std::getenv("HOME");
  std::string base = home != nullptr && *home == '/' ? home : "";
  if (base.empty()) {
    if (const passwd* pw = ::getpwuid(::geteuid()); pw != nullptr && pw->pw_dir != nullptr) {
      base = pw->pw_dir;
    }
  }
  if (base.empty()) {
    base = "/tmp";
  }
  return fs::path(base) / ".local" / "state" / "tributary" / "postgres";
}

LocalDb::LocalDb(LocalDbOptions options) : options_(std::move(options)) {}
LocalDb::~LocalDb() = default;

absl::StatusOr<std::unique_ptr<LocalDb>> LocalDb::create(LocalDbOptions options) {
  if (options.dir.empty()) {
    options.dir = defaultDir();
  }
  options.dir = fs::absolute(options.dir).lexically_normal();
  if (options.dir.has_filename() == false) {
    options.dir = options.dir.parent_path();
  }
  const std::string socket = (options.dir / cat(".s.PGSQL.", kPort)).string();
  if (socket.size() > kMaxSocketPath) {
    return absl::InvalidArgumentError(cat(
        "the local database directory ", options.dir.string(), " is too long for a unix socket (",
        socket.size(), " > ", kMaxSocketPath, " bytes); set XDG_STATE_HOME to a shorter path"));
  }
  for (const char c : options.dir.string()) {
    if (c == ',' || c == '\'' || c == '\n') {
      return absl::InvalidArgumentError(
          cat("the local database directory ", options.dir.string(),
              " contains a character PostgreSQL cannot use in unix_socket_directories"));
    }
  }
  std::unique_ptr<LocalDb> db(new LocalDb(std::move(options)));
  if (::geteuid() == 0) {
    passwd pwd{};
    passwd* found = nullptr;
    std::vector<char> buf(16384);
    if (::getpwnam_r("postgres", &pwd, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
      return absl::FailedPreconditionError(
          "running as root, the local PostgreSQL must run as the 'postgres' system user, which "
          "does not exist; install the postgresql package (scripts/bootstrap.sh) or pass "
          "--database-url");
    }
    db->as_postgres_user_ = true;
    db->server_uid_ = pwd.pw_uid;
    db->server_gid_ = pwd.pw_gid;
  } else {
    db->server_uid_ = ::geteuid();
    db->server_gid_ = ::getegid();
  }
  return db;
}

std::string LocalDb::dsn() const {
  return cat("host=", conninfoValue(options_.dir.string()), " port=", kPort,
             " user=", conninfoValue(options_.user), " dbname=", conninfoValue(options_.database));
}

std::string LocalDb::uri() const {
  return cat("postgresql://", uriEncode(options_.user), "@/", uriEncode(options_.database),
             "?host=", uriEncode(options_.dir.string()), "&port=", kPort);
}

bool LocalDb::accepting() const {
  const std::string ping = cat(dsn(), " connect_timeout=2");
  return PQping(ping.c_str()) == PQPING_OK;
}

absl::StatusOr<ServerStatus> LocalDb::status() const {
  ServerStatus st;
  std::error_code ec;
  st.initialized = fs::exists(dataDir() / "PG_VERSION", ec);
  st.running = st.initialized && accepting();
  if (st.running) {
    std::ifstream pidfile(dataDir() / "postmaster.pid");
    pidfile >> st.pid;
  }
  return st;
}

absl::Status LocalDb::prepareDir() {
  std::error_code ec;
  const fs::path parent = options_.dir.parent_path();
  fs::create_directories(parent, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        cat("cannot create ", parent.string(), ": ", ec.message()));
  }
  if (as_postgres_user_) {
    if (auto blocked = firstUntraversable(options_.dir, server_uid_, server_gid_)) {
      return absl::FailedPreconditionError(cat(
          "running as root, the local PostgreSQL runs as the 'postgres' user, which cannot enter ",
          blocked->string(), " on the way to ", options_.dir.string(),
          "; set XDG_STATE_HOME to a directory it can reach (e.g. /var/lib), run tributary as a "
          "normal user, or pass --database-url"));
    }
  }
  if (::mkdir(options_.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(
        cat("cannot create ", options_.dir.string(), ": ", strings::errnoMessage(errno)));
  }
  struct stat st {};
  if (::stat(options_.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(cat(options_.dir.string(), " is not a directory"));
  }
  if (st.st_uid != server_uid_) {
    if (!as_postgres_user_ || ::chown(options_.dir.c_str(), server_uid_, server_gid_) != 0) {
      return absl::FailedPreconditionError(cat(options_.dir.string(), " belongs to uid ", st.st_uid,
                                               ", not to the server user (uid ", server_uid_,
                                               "); remove it or use another XDG_STATE_HOME"));
    }
  }
  ::chmod(options_.dir.c_str(), 0700);
  return absl::OkStatus();
}

absl::Status LocalDb::initialize() {
  std::error_code ec;
  if (fs::exists(dataDir() / "PG_VERSION", ec)) {
    return absl::OkStatus();
  }
  fs::remove_all(dataDir(), ec);  // A half-finished initdb (we hold the lock: nobody else runs).
  TRIBUTARY_ASSIGN_OR_RETURN(const fs::path bin, findBinDir(options_.bin_dir));
  const Identity who{as_postgres_user_, server_uid_, server_gid_};
  const fs::path log = options_.dir / "initdb.log";
  fs::remove(log, ec);
  TRIBUTARY_ASSIGN_OR_RETURN(
      const int code,
      runCommand({(bin / "initdb").string(), "-D", dataDir().string(), "-U", options_.user,
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"},
                 log, who, std::chrono::minutes(5)));
  if (code != 0) {
    return absl::InternalError(
        cat("initdb of ", dataDir().string(), " failed with status ", code, ":\n", fileTail(log)));
  }
  std::ofstream conf(dataDir() / "postgresql.conf", std::ios::app);
  conf << "\n# Added by tributary (lib/localdb): a private server reachable only through the unix\n"
          "# socket in the directory above this one (mode 0700).\n"
          "listen_addresses = ''\n"
          "unix_socket_directories = '"
       << options_.dir.string() << "'\nport = " << kPort
       << "\nmax_connections = 50\nshared_buffers = 64MB\nlogging_collector = off\n"
          "timezone = 'UTC'\nlog_timezone = 'UTC'\n";
  if (!conf.flush()) {
    return absl::InternalError(cat("cannot write ", (dataDir() / "postgresql.conf").string()));
  }
  return absl::OkStatus();
}

absl::Status LocalDb::start() {
  TRIBUTARY_ASSIGN_OR_RETURN(const fs::path bin, findBinDir(options_.bin_dir));
  const Identity who{as_postgres_user_, server_uid_, server_gid_};
  const fs::path log = options_.dir / "pg_ctl.log";
  std::error_code ec;
  fs::remove(log, ec);
  const auto seconds = std::max<std::int64_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(options_.start_timeout).count());
  TRIBUTARY_ASSIGN_OR_RETURN(
      const int code, runCommand({(bin / "pg_ctl").string(), "-D", dataDir().string(), "-l",
                                  logFile().string(), "-w", "-t", std::to_string(seconds), "start"},
                                 log, who, options_.start_timeout + std::chrono::seconds(10)));
  if (code != 0 || !accepting()) {
    return absl::InternalError(cat("the local PostgreSQL (", dataDir().string(),
                                   ") did not start: pg_ctl exited with status ", code, ": ",
                                   fileTail(log, 1000), "\n--- ", logFile().string(), " ---\n",
                                   fileTail(logFile())));
  }
  return absl::OkStatus();
}

absl::Status LocalDb::createDatabase() {
  const std::string admin =
      cat("host=", conninfoValue(options_.dir.string()), " port=", kPort,
          " user=", conninfoValue(options_.user), " dbname=postgres connect_timeout=5");
  PGconn* conn = PQconnectdb(admin.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string error = PQerrorMessage(conn);
    PQfinish(conn);
    return absl::UnavailableError(
        cat("cannot connect to the local PostgreSQL: ", strings::trim(error)));
  }
  const char* params[1] = {options_.database.c_str()};
  PGresult* found = PQexecParams(conn, "SELECT 1 FROM pg_database WHERE datname = $1", 1, nullptr,
                                 params, nullptr, nullptr, 0);
  const bool exists = PQresultStatus(found) == PGRES_TUPLES_OK && PQntuples(found) > 0;
  PQclear(found);
  absl::Status result = absl::OkStatus();
  if (!exists) {
    char* ident = PQescapeIdentifier(conn, options_.database.c_str(), options_.database.size());
    const std::string sql = cat("CREATE DATABASE ", ident, " ENCODING 'UTF8'");
    PQfreemem(ident);
    PGresult* created = PQexec(conn, sql.c_str());
    if (PQresultStatus(created) != PGRES_COMMAND_OK) {
      result = absl::InternalError(cat("cannot create database ", options_.database, ": ",
                                       strings::trim(PQerrorMessage(conn))));
    }
    PQclear(created);
  }
  PQfinish(conn);
  return result;
}

absl::StatusOr<std::string> LocalDb::ensureRunning() {
  {
    // Fast path: a running server with our database.
    const std::string probe = cat(dsn(), " connect_timeout=2");
    PGconn* conn = PQconnectdb(probe.c_str());
    const bool ok = PQstatus(conn) == CONNECTION_OK;
    PQfinish(conn);
    if (ok) {
      return dsn();
    }
  }
  TRIBUTARY_RETURN_IF_ERROR(prepareDir());
  TRIBUTARY_ASSIGN_OR_RETURN(FileLock lock,
                             FileLock::acquire(options_.dir.parent_path() / "postgres.lock",
                                               options_.start_timeout + std::chrono::seconds(30)));
  static_cast<void>(lock);
  TRIBUTARY_RETURN_IF_ERROR(initialize());
  if (!accepting()) {
    TRIBUTARY_RETURN_IF_ERROR(start());
  }
  TRIBUTARY_RETURN_IF_ERROR(createDatabase());
  return dsn();
}

absl::Status LocalDb::stop() {
  std::error_code ec;
  if (!fs::exists(dataDir() / "postmaster.pid", ec)) {
    return absl::OkStatus();
  }
  TRIBUTARY_ASSIGN_OR_RETURN(
      FileLock lock,
      FileLock::acquire(options_.dir.parent_path() / "postgres.lock", options_.stop_timeout));
  static_cast<void>(lock);
  if (!fs::exists(dataDir() / "postmaster.pid", ec)) {
    return absl::OkStatus();
  }
  TRIBUTARY_ASSIGN_OR_RETURN(const fs::path bin, findBinDir(options_.bin_dir));
  const Identity who{as_postgres_user_, server_uid_, server_gid_};
  const fs::path log = options_.dir / "pg_ctl.log";
  fs::remove(log, ec);
  const auto seconds = std::max<std::int64_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(options_.stop_timeout).count());
  TRIBUTARY_ASSIGN_OR_RETURN(
      const int code, runCommand({(bin / "pg_ctl").string(), "-D", dataDir().string(), "-m", "fast",
                                  "-w", "-t", std::to_string(seconds), "stop"},
                                 log, who, options_.stop_timeout + std::chrono::seconds(10)));
  if (code != 0 && fs::exists(dataDir() / "postmaster.pid", ec) && accepting()) {
    return absl::InternalError(cat("pg_ctl stop exited with status ", code, ": ", fileTail(log)));
  }
  return absl::OkStatus();
}

}  // namespace tributary::localdb
