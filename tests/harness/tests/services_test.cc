#include "tributary/testing/services.h"

#include "tributary/testing/probes.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "libpq-fe.h"

#include <hiredis/hiredis.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <signal.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace tributary::harness {
namespace {

// ---------------------------------------------------------------------------------------------
// Small libpq / hiredis helpers.

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnDeleter>;

PgConnPtr pgConnect(const std::string& dsn) { return PgConnPtr(PQconnectdb(dsn.c_str())); }

// Runs `sql`; returns the first column of every row, or nullopt (with the error in `error`).
std::optional<std::vector<std::string>> pgQuery(PGconn* conn, const std::string& sql,
                                                std::string* error = nullptr) {
  PGresult* result = PQexec(conn, sql.c_str());
  const ExecStatusType status = PQresultStatus(result);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    if (error != nullptr) {
      *error = PQresultErrorMessage(result);
    }
    PQclear(result);
    return std::nullopt;
  }
  std::vector<std::string> rows;
  rows.reserve(static_cast<std::size_t>(PQntuples(result)));
  for (int i = 0; i < PQntuples(result); ++i) {
    rows.emplace_back(PQgetvalue(result, i, 0));
  }
  PQclear(result);
  return rows;
}

struct RedisDeleter {
  void operator()(redisContext* ctx) const { redisFree(ctx); }
};
using RedisPtr = std::unique_ptr<redisContext, RedisDeleter>;

RedisPtr redisConnectTo(int port) {
  return RedisPtr(redisConnectWithTimeout("127.0.0.1", port, timeval{2, 0}));
}

// Runs a command; returns the reply as a string ("(nil)" for nil), or nullopt on I/O errors.
std::optional<std::string> redisRun(redisContext* ctx, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& arg : args) {
    argv.push_back(arg.data());
    lens.push_back(arg.size());
  }
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(ctx, static_cast<int>(argv.size()), argv.data(), lens.data()));
  if (reply == nullptr) {
    return std::nullopt;
  }
  std::string text;
  switch (reply->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
      text.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_INTEGER:
      text = std::to_string(reply->integer);
      break;
    case REDIS_REPLY_NIL:
      text = "(nil)";
      break;
    default:
      text = "(other)";
  }
  freeReplyObject(reply);
  return text;
}

// The real (not effective) uid a process runs as, from /proc/<pid>/status.
std::optional<uid_t> processUid(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Uid:", 0) == 0) {
      std::vector<std::string> fields = absl::StrSplit(line.substr(4), '\t', absl::SkipEmpty());
      unsigned int uid = 0;
      if (!fields.empty() && absl::SimpleAtoi(fields[0], &uid)) {
        return uid;
      }
    }
  }
  return std::nullopt;
}

// Gone, or a zombie nobody reaped yet (both mean: not running any more).
bool processGone(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) {
    return true;
  }
  const std::size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z';
}

// Fixtures: the binary's shared servers, (re)started before each test since earlier tests may
// have stopped or killed them.
class PostgresServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<PostgresServer*> pg = SharedServices::postgres();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *pg;
    ASSERT_TRUE(pg_->start().ok()) << pg_->logTail();
  }
  PostgresServer* pg_ = nullptr;
};

class RedisServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<RedisServer*> redis = SharedServices::redis();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = *redis;
    ASSERT_TRUE(redis_->start().ok()) << redis_->logTail();
  }
  RedisServer* redis_ = nullptr;
};

class ProbesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<PostgresServer*> pg = SharedServices::postgres();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *pg;
    ASSERT_TRUE(pg_->start().ok()) << pg_->logTail();
    absl::StatusOr<RedisServer*> redis = SharedServices::redis();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = *redis;
    ASSERT_TRUE(redis_->start().ok()) << redis_->logTail();
  }
  PostgresServer* pg_ = nullptr;
  RedisServer* redis_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// PostgreSQL

TEST_F(PostgresServerTest, CreateInsertSelect) {
  PostgresServer& pg = *pg_;
  EXPECT_GT(pg.port(), 0);
  EXPECT_EQ(pg.dsn(),
            absl::StrCat("host=127.0.0.1 port=", pg.port(), " user=postgres dbname=postgres"));
  PgConnPtr conn = pgConnect(pg.dsn());
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  std::string error;
  ASSERT_TRUE(
      pgQuery(conn.get(), "CREATE TABLE harness_basic (id int primary key, v text)", &error))
      << error;
  ASSERT_TRUE(
      pgQuery(conn.get(), "INSERT INTO harness_basic VALUES (1, 'one'), (2, 'two')", &error))
      << error;
  auto rows = pgQuery(conn.get(), "SELECT v FROM harness_basic ORDER BY id", &error);
  ASSERT_TRUE(rows) << error;
  EXPECT_EQ(*rows, (std::vector<std::string>{"one", "two"}));

  auto settings = pgQuery(conn.get(),
                          "SELECT current_setting('fsync') || ',' || "
                          "current_setting('max_connections') || ',' || current_user");
  ASSERT_TRUE(settings);
  EXPECT_EQ(settings->at(0), "off,100,postgres");
}

TEST_F(PostgresServerTest, RunsAsPostgresUserWhenRoot) {
  PostgresServer& pg = *pg_;
  const std::optional<uid_t> uid = processUid(pg.pid());
  ASSERT_TRUE(uid.has_value());
  if (::geteuid() == 0) {
    EXPECT_NE(*uid, 0U) << "postgres must not run as root";
  } else {
    EXPECT_EQ(*uid, ::geteuid());
  }
}

TEST_F(PostgresServerTest, UnixSocketDsnWorks) {
  PostgresServer& pg = *pg_;
  PgConnPtr conn = pgConnect(pg.socketDsn());
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  auto rows = pgQuery(conn.get(), "SELECT 1");
  ASSERT_TRUE(rows);
  EXPECT_EQ(rows->at(0), "1");
}

TEST_F(PostgresServerTest, CreateDatabaseIsolates) {
  PostgresServer& pg = *pg_;
  absl::StatusOr<std::string> dsn = pg.createDatabase("harness_isolated");
  ASSERT_TRUE(dsn.ok()) << dsn.status();
  {
    PgConnPtr conn = pgConnect(*dsn);
    ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
    ASSERT_TRUE(pgQuery(conn.get(), "CREATE TABLE t (x int)"));
    auto db = pgQuery(conn.get(), "SELECT current_database()");
    ASSERT_TRUE(db);
    EXPECT_EQ(db->at(0), "harness_isolated");
  }
  // Creating it again gives a fresh, empty database even with a client still connected.
  PgConnPtr holder = pgConnect(*dsn);
  ASSERT_EQ(PQstatus(holder.get()), CONNECTION_OK);
  dsn = pg.createDatabase("harness_isolated");
  ASSERT_TRUE(dsn.ok()) << dsn.status();
  PgConnPtr conn = pgConnect(*dsn);
  auto tables = pgQuery(conn.get(), "SELECT count(*) FROM pg_tables WHERE tablename = 't'");
  ASSERT_TRUE(tables);
  EXPECT_EQ(tables->at(0), "0");
}

TEST_F(PostgresServerTest, RestartKeepsPortAndData) {
  PostgresServer& pg = *pg_;
  const int port = pg.port();
  const pid_t old_pid = pg.pid();
  PgConnPtr conn = pgConnect(pg.dsn());
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK);
  ASSERT_TRUE(pgQuery(conn.get(), "CREATE TABLE harness_restart (x int)"));
  ASSERT_TRUE(pgQuery(conn.get(), "INSERT INTO harness_restart VALUES (42)"));

  ASSERT_TRUE(pg.restart().ok()) << pg.logTail();
  EXPECT_EQ(pg.port(), port);
  EXPECT_NE(pg.pid(), old_pid);
  EXPECT_TRUE(processGone(old_pid));

  // The old connection is broken; a new one sees the committed data.
  std::string error;
  EXPECT_FALSE(pgQuery(conn.get(), "SELECT 1", &error));
  PgConnPtr again = pgConnect(pg.dsn());
  ASSERT_EQ(PQstatus(again.get()), CONNECTION_OK) << PQerrorMessage(again.get());
  auto rows = pgQuery(again.get(), "SELECT x FROM harness_restart");
  ASSERT_TRUE(rows);
  EXPECT_EQ(*rows, std::vector<std::string>{"42"});
}

TEST_F(PostgresServerTest, KillThenStartRecoversCommittedData) {
  PostgresServer& pg = *pg_;
  PgConnPtr conn = pgConnect(pg.dsn());
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK);
  ASSERT_TRUE(pgQuery(conn.get(), "CREATE TABLE harness_crash (x int)"));
  ASSERT_TRUE(pgQuery(conn.get(), "INSERT INTO harness_crash VALUES (7)"));
  const pid_t old_pid = pg.pid();

  ASSERT_TRUE(pg.kill().ok());
  EXPECT_FALSE(pg.running());
  EXPECT_TRUE(processGone(old_pid));
  EXPECT_NE(PQping(pg.dsn().c_str()), PQPING_OK);

  ASSERT_TRUE(pg.start().ok()) << pg.logTail();
  PgConnPtr again = pgConnect(pg.dsn());
  ASSERT_EQ(PQstatus(again.get()), CONNECTION_OK) << PQerrorMessage(again.get());
  auto rows = pgQuery(again.get(), "SELECT x FROM harness_crash");
  ASSERT_TRUE(rows);
  EXPECT_EQ(*rows, std::vector<std::string>{"7"});
}

TEST(PostgresServerOwnTest, OwnInstanceIsRemovedByDestructor) {
  std::string dir;
  pid_t pid = 0;
  {
    PostgresOptions options;
    options.settings = {"work_mem=8MB"};
    PostgresServer pg(options);
    ASSERT_TRUE(pg.start().ok()) << pg.logTail();
    dir = pg.socketDir();
    pid = pg.pid();
    EXPECT_TRUE(std::filesystem::exists(pg.dataDir() + "/PG_VERSION"));
    PgConnPtr conn = pgConnect(pg.dsn());
    auto rows = pgQuery(conn.get(), "SHOW work_mem");
    ASSERT_TRUE(rows);
    EXPECT_EQ(rows->at(0), "8MB");
  }
  EXPECT_FALSE(std::filesystem::exists(dir));
  EXPECT_TRUE(processGone(pid));
}

// ---------------------------------------------------------------------------------------------
// Redis

TEST_F(RedisServerTest, SetGet) {
  RedisServer& redis = *redis_;
  RedisPtr ctx = redisConnectTo(redis.port());
  ASSERT_TRUE(ctx != nullptr && ctx->err == 0) << (ctx ? ctx->errstr : "no context");
  EXPECT_EQ(redisRun(ctx.get(), {"SET", "harness:key", "value"}), "OK");
  EXPECT_EQ(redisRun(ctx.get(), {"GET", "harness:key"}), "value");
  EXPECT_EQ(redisRun(ctx.get(), {"CONFIG", "GET", "appendonly"}), "(other)");  // an array
  EXPECT_EQ(redis.url(), absl::StrCat("redis://127.0.0.1:", redis.port()));
}

TEST_F(RedisServerTest, UnixSocketWorks) {
  RedisServer& redis = *redis_;
  RedisPtr ctx(redisConnectUnix(redis.unixSocket().c_str()));
  ASSERT_TRUE(ctx != nullptr && ctx->err == 0) << (ctx ? ctx->errstr : "no context");
  EXPECT_EQ(redisRun(ctx.get(), {"PING"}), "PONG");
}

TEST_F(RedisServerTest, RestartKeepsPortAndStartsEmpty) {
  RedisServer& redis = *redis_;
  const int port = redis.port();
  {
    RedisPtr ctx = redisConnectTo(port);
    ASSERT_TRUE(ctx != nullptr && ctx->err == 0);
    EXPECT_EQ(redisRun(ctx.get(), {"SET", "harness:restart", "1"}), "OK");
  }
  RedisPtr old_ctx = redisConnectTo(port);
  ASSERT_TRUE(redis.restart().ok()) << redis.logTail();
  EXPECT_EQ(redis.port(), port);
  EXPECT_EQ(redisRun(old_ctx.get(), {"PING"}), std::nullopt);  // the old connection is gone
  RedisPtr ctx = redisConnectTo(port);
  ASSERT_TRUE(ctx != nullptr && ctx->err == 0) << (ctx ? ctx->errstr : "no context");
  EXPECT_EQ(redisRun(ctx.get(), {"GET", "harness:restart"}), "(nil)");  // persistence is off
  EXPECT_EQ(redisRun(ctx.get(), {"SET", "harness:restart", "2"}), "OK");
}

TEST_F(RedisServerTest, KillThenStart) {
  RedisServer& redis = *redis_;
  const pid_t old_pid = redis.pid();
  ASSERT_TRUE(redis.kill().ok());
  EXPECT_TRUE(processGone(old_pid));
  RedisPtr refused = redisConnectTo(redis.port());
  EXPECT_TRUE(refused == nullptr || refused->err != 0);
  ASSERT_TRUE(redis.start().ok()) << redis.logTail();
  RedisPtr ctx = redisConnectTo(redis.port());
  ASSERT_TRUE(ctx != nullptr && ctx->err == 0);
  EXPECT_EQ(redisRun(ctx.get(), {"PING"}), "PONG");
}

// ---------------------------------------------------------------------------------------------
// Probes

TEST_F(ProbesTest, OpenFdCountFollowsOpenAndClose) {
  const int before = openFdCount();
  ASSERT_GE(before, 3) << describeOpenFds();
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(openFdCount(), before + 1);
  bool found = false;
  for (const OpenFd& entry : openFds()) {
    found = found || (entry.fd == fd && entry.target == "/dev/null");
  }
  EXPECT_TRUE(found) << describeOpenFds();
  ::close(fd);
  EXPECT_EQ(openFdCount(), before);
}

TEST_F(ProbesTest, ThreadCountFollowsThreads) {
  const int before = threadCount();
  ASSERT_GE(before, 1);
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::thread worker([&] {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });
  });
  EXPECT_EQ(threadCount(), before + 1);
  {
    const std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  worker.join();
  EXPECT_TRUE(eventually([&] { return threadCount() == before; })) << threadCount();
}

TEST_F(ProbesTest, ChildProcessesShowsZombiesAndHidesHarness) {
  // Make sure harness children exist, so "hidden by default" is really tested.
  const pid_t redis_pid = redis_->pid();
  EXPECT_TRUE(childProcesses().empty()) << describeChildProcesses();
  bool redis_listed = false;
  for (const ChildProcess& child : childProcesses(ChildFilter::IncludeHarness)) {
    if (child.pid == redis_pid) {
      redis_listed = true;
      EXPECT_TRUE(child.harness);
    }
  }
  EXPECT_TRUE(redis_listed) << describeChildProcesses(ChildFilter::IncludeHarness);

  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::_exit(0);
  }
  // Not reaped yet: a zombie.
  ASSERT_TRUE(eventually([&] {
    auto children = childProcesses();
    return children.size() == 1 && children[0].pid == pid && children[0].zombie();
  })) << describeChildProcesses();
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(childProcesses().empty()) << describeChildProcesses();
}

TEST_F(ProbesTest, ListFiles) {
  char templ[] = "/tmp/tributary-probes-XXXXXX";
  ASSERT_NE(::mkdtemp(templ), nullptr);
  const std::string dir = templ;
  EXPECT_TRUE(listFiles(dir).empty());
  std::filesystem::create_directories(dir + "/sub/deeper");
  std::ofstream(dir + "/b.txt") << "b";
  std::ofstream(dir + "/sub/deeper/a.txt") << "a";
  EXPECT_EQ(listFiles(dir), (std::vector<std::string>{"b.txt", "sub/deeper/a.txt"}));
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(listFiles(dir).empty());
}

TEST_F(ProbesTest, ServerRestartsLeakNothing) {
  PostgresServer& pg = *pg_;
  RedisServer& redis = *redis_;
  const int fds = openFdCount();
  const int threads = threadCount();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(pg.restart().ok()) << pg.logTail();
    ASSERT_TRUE(redis.restart().ok()) << redis.logTail();
    PgConnPtr conn = pgConnect(pg.dsn());
    ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK);
    RedisPtr ctx = redisConnectTo(redis.port());
    ASSERT_TRUE(ctx != nullptr && ctx->err == 0);
  }
  EXPECT_EQ(openFdCount(), fds) << describeOpenFds();
  EXPECT_EQ(threadCount(), threads);
  EXPECT_TRUE(childProcesses().empty()) << describeChildProcesses();
}

// ---------------------------------------------------------------------------------------------
// Cleanup after a crashed test binary: this binary runs itself with a helper test that starts
// both services and then SIGKILLs itself; the watchdog must kill the servers and remove their
// directories.

constexpr const char* kCrashHelperEnv = "TRIBUTARY_HARNESS_CRASH_HELPER";

TEST(CrashHelper, DISABLED_StartServicesThenDie) {
  if (std::getenv(kCrashHelperEnv) == nullptr) {
    GTEST_SKIP() << "helper for WatchdogTest, runs only as its child";
  }
  PostgresServer pg;
  ASSERT_TRUE(pg.start().ok()) << pg.logTail();
  RedisServer redis;
  ASSERT_TRUE(redis.start().ok()) << redis.logTail();
  std::printf("SERVICE %d %d %s\n", static_cast<int>(pg.pid()), pg.port(), pg.socketDir().c_str());
  std::printf("SERVICE %d %d %s\n", static_cast<int>(redis.pid()), redis.port(),
              std::filesystem::path(redis.unixSocket()).parent_path().c_str());
  std::fflush(stdout);
  ::raise(SIGKILL);
}

TEST(WatchdogTest, CleansUpAfterKilledTestBinary) {
  const std::string command =
      absl::StrCat("exec env ", kCrashHelperEnv, "=1 /proc/", ::getpid(),
                   "/exe --gtest_filter=CrashHelper.* --gtest_also_run_disabled_tests 2>&1");
  FILE* child = ::popen(command.c_str(), "r");
  ASSERT_NE(child, nullptr);
  std::string output;
  char buffer[4096];
  while (std::fgets(buffer, sizeof(buffer), child) != nullptr) {
    output += buffer;
  }
  const int status = ::pclose(child);
  ASSERT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGKILL))
      << "status " << status << ", output:\n"
      << output;

  struct Service {
    pid_t pid;
    int port;
    std::string dir;
  };
  std::vector<Service> services;
  const std::vector<std::string> lines = absl::StrSplit(output, '\n');
  for (const std::string& line : lines) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    int pid = 0;
    int port = 0;
    if (f.size() == 4 && f[0] == "SERVICE" && absl::SimpleAtoi(f[1], &pid) &&
        absl::SimpleAtoi(f[2], &port)) {
      services.push_back(Service{pid, port, f[3]});
    }
  }
  ASSERT_EQ(services.size(), 2U) << output;
  for (const Service& service : services) {
    EXPECT_TRUE(eventually([&] { return processGone(service.pid); }))
        << "server pid " << service.pid << " still running";
    EXPECT_TRUE(eventually([&] { return !std::filesystem::exists(service.dir); }))
        << service.dir << " not removed";
  }
  EXPECT_NE(
      PQping(absl::StrCat("host=127.0.0.1 connect_timeout=2 port=", services[0].port).c_str()),
      PQPING_OK);
}

}  // namespace
}  // namespace tributary::harness
