// Interop: UNMODIFIED Go go-plugin hosts (gohost-v1_6, gohost-v1_8: hashicorp/go-plugin v1.6.3 and
// v1.8.0) run our C++ and Python test connectors (tests/connectors/README.md), with and without
// AutoMTLS. A missing binary is a test failure, never a skip: these tests are the proof that our
// SDKs speak go-plugin.
#include "gtest/gtest.h"

#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kGohostV16 = TRIBUTARY_GOHOST_V1_6;
constexpr const char* kGohostV18 = TRIBUTARY_GOHOST_V1_8;
constexpr const char* kCppConnector = TRIBUTARY_CPP_CONNECTOR;
constexpr const char* kPython = TRIBUTARY_PYTHON;
constexpr const char* kPythonConnector = TRIBUTARY_PYTHON_CONNECTOR;

// One gohost run must never take this long; a hung run is killed and reported.
constexpr auto kRunTimeout = std::chrono::seconds(180);

bool isExecutable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }
bool isReadable(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

// Single-quotes `s` for sh -c.
std::string shellQuote(const std::string& s) {
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

struct RunResult {
  int exit_code = -1;  // -1: killed by a signal or not run.
  std::string out;
  std::string err;
  double seconds = 0;
  std::string spawn_error;
};

// Runs argv with stdout and stderr captured (both drained concurrently so neither pipe fills),
// with this process's environment plus `env` ("NAME=value" entries).
RunResult run(const std::vector<std::string>& argv, const std::vector<std::string>& env = {}) {
  RunResult result;
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    result.spawn_error = std::string("pipe: ") + std::strerror(errno);
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) {
    envp.push_back(*e);
  }
  for (const auto& e : env) {
    envp.push_back(const_cast<char*>(e.c_str()));
  }
  envp.push_back(nullptr);
  const auto started = Clock::now();
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    result.spawn_error = "spawn " + argv[0] + ": " + std::strerror(rc);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return result;
  }
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  bool killed = false;
  while (open_fds > 0) {
    const auto left = kRunTimeout - (Clock::now() - started);
    if (left <= Clock::duration::zero()) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    const int n = ::poll(fds, 2, 200);
    if (n < 0 && errno != EINTR) {
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
        continue;
      }
      char buf[65536];
      const ssize_t got = ::read(fds[i].fd, buf, sizeof(buf));
      if (got > 0) {
        sinks[i]->append(buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& fd : fds) {
    if (fd.fd >= 0) {
      ::close(fd.fd);
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  if (killed) {
    result.spawn_error = "timed out after " + std::to_string(kRunTimeout.count()) + " s";
  } else if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  }
  return result;
}

enum class Lang { Cpp, Python };

const char* langName(Lang lang) { return lang == Lang::Cpp ? "cpp" : "python"; }

// The shell command gohost runs (go-plugin hosts start plugins through `sh -c`-style commands in
// c1; gohost takes the command as one string).
std::string connectorCommand(Lang lang, const std::string& mode = "") {
  std::string cmd;
  if (!mode.empty()) {
    cmd = "TEST_CONNECTOR_MODE=" + mode + " ";
  }
  if (lang == Lang::Cpp) {
    cmd += "exec " + shellQuote(kCppConnector);
  } else {
    cmd += "exec " + shellQuote(kPython) + " " + shellQuote(kPythonConnector);
  }
  return cmd;
}

// Fails the current test (fatally) when something the interop run needs is missing.
void requireBinaries(const std::string& gohost, Lang lang) {
  ASSERT_TRUE(isExecutable(gohost))
      << "missing Go host binary " << gohost
      << " — build it with `bash scripts/build-go.sh <build>/go-bin` (needs the Go toolchain)";
  if (lang == Lang::Cpp) {
    ASSERT_TRUE(isExecutable(kCppConnector))
        << "missing C++ test connector " << kCppConnector << " — build target test_connector_cpp";
  } else {
    ASSERT_TRUE(isExecutable(kPython)) << "missing Python virtualenv interpreter " << kPython
                                       << " — create <build>/venv with the Python SDK installed";
    ASSERT_TRUE(isReadable(kPythonConnector))
        << "missing Python test connector " << kPythonConnector;
  }
}

struct HostRun {
  RunResult raw;
  nlohmann::json report;  // gohost's one JSON line (null when it failed).
};

HostRun runGohost(const std::string& gohost, const std::string& cmd, const nlohmann::json& options,
                  bool automtls, int repeat = 1, const std::vector<std::string>& extra = {},
                  const std::vector<std::string>& env = {}) {
  std::vector<std::string> argv = {gohost, "--cmd", cmd, "--options", options.dump()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (automtls) {
    argv.emplace_back("--automtls");
  }
  if (repeat != 1) {
    argv.emplace_back("--repeat");
    argv.emplace_back(std::to_string(repeat));
  }
  HostRun host_run;
  host_run.raw = run(argv, env);
  if (host_run.raw.exit_code == 0) {
    // Exactly one JSON line on stdout.
    std::string line = host_run.raw.out;
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
      line.pop_back();
    }
    if (line.find('\n') == std::string::npos) {
      host_run.report = nlohmann::json::parse(line, nullptr, false);
    }
  }
  return host_run;
}

std::string describe(const HostRun& r) {
  std::ostringstream s;
  s << "exit=" << r.raw.exit_code << " seconds=" << r.raw.seconds;
  if (!r.raw.spawn_error.empty()) {
    s << " error=" << r.raw.spawn_error;
  }
  s << "\n--- stdout ---\n" << r.raw.out.substr(0, 4000);
  const std::string& err = r.raw.err;
  s << "\n--- stderr (last 6000 bytes) ---\n"
    << (err.size() > 6000 ? err.substr(err.size() - 6000) : err);
  return s.str();
}

// Checks a successful run's report: counts, and the connector's EndSync metadata as JSON.
void expectReport(const HostRun& r, Lang lang, long pages, long objects, long metadata_pages,
                  long metadata_objects) {
  ASSERT_EQ(r.raw.exit_code, 0) << describe(r);
  ASSERT_TRUE(r.report.is_object()) << "gohost did not print one JSON object\n" << describe(r);
  EXPECT_EQ(r.report.value("pages", -1L), pages) << describe(r);
  EXPECT_EQ(r.report.value("objects", -1L), objects) << describe(r);
  ASSERT_TRUE(r.report.contains("metadata") && r.report["metadata"].is_string()) << describe(r);
  const auto metadata =
      nlohmann::json::parse(r.report["metadata"].get<std::string>(), nullptr, false);
  ASSERT_TRUE(metadata.is_object()) << "EndSync metadata is not JSON: " << r.report["metadata"];
  EXPECT_EQ(metadata.value("pages", -1L), metadata_pages) << metadata.dump();
  EXPECT_EQ(metadata.value("objects", -1L), metadata_objects) << metadata.dump();
  EXPECT_EQ(metadata.value("connector", std::string()), langName(lang)) << metadata.dump();
}

struct Case {
  const char* host_name;  // "v1_6" or "v1_8"
  const char* gohost;
  Lang lang;
  bool automtls;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.host_name << "/" << langName(c.lang) << (c.automtls ? "/automtls" : "/plain");
}

std::string caseName(const testing::TestParamInfo<Case>& info) {
  return std::string(info.param.host_name) + "_" + langName(info.param.lang) +
         (info.param.automtls ? "_automtls" : "_plain");
}

class GoHostInteropTest : public testing::TestWithParam<Case> {};

TEST_P(GoHostInteropTest, ThreePagesOfTen) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(requireBinaries(c.gohost, c.lang));
  const auto r =
      runGohost(c.gohost, connectorCommand(c.lang), {{"pages", 3}, {"page_size", 10}}, c.automtls);
  expectReport(r, c.lang, 3, 30, 3, 30);
  if (r.report.is_object()) {
    EXPECT_GT(r.report.value("bytes", 0L), 0L) << describe(r);
    // The host really links the go-plugin release it is named after.
    EXPECT_EQ(r.report.value("go_plugin", std::string()),
              std::string(c.host_name) == "v1_6" ? "v1.6.3" : "v1.8.0")
        << describe(r);
  }
}

TEST_P(GoHostInteropTest, PaddedObjectsAndDefaults) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(requireBinaries(c.gohost, c.lang));
  // 7 pages of 40 objects of ~4 KiB (~160 KiB pages).
  const auto r = runGohost(c.gohost, connectorCommand(c.lang),
                           {{"pages", 7}, {"page_size", 40}, {"object_bytes", 4096}}, c.automtls);
  expectReport(r, c.lang, 7, 280, 7, 280);
  if (r.report.is_object()) {
    const long bytes = r.report.value("bytes", 0L);
    EXPECT_GE(bytes, 280L * 4096L * 9 / 10) << describe(r);
    EXPECT_LE(bytes, 280L * 4096L * 12 / 10) << describe(r);
  }
  // Empty options: the contract's defaults (3 pages of 10).
  const auto defaults =
      runGohost(c.gohost, connectorCommand(c.lang), nlohmann::json::object(), c.automtls);
  expectReport(defaults, c.lang, 3, 30, 3, 30);
}

TEST_P(GoHostInteropTest, SyncErrorReachesTheHost) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(requireBinaries(c.gohost, c.lang));
  const auto r =
      runGohost(c.gohost, connectorCommand(c.lang, "sync_error"), {{"pages", 3}}, c.automtls);
  EXPECT_EQ(r.raw.exit_code, 1) << describe(r);
  EXPECT_NE(r.raw.err.find("upstream said no"), std::string::npos) << describe(r);
}

TEST_P(GoHostInteropTest, CleanAndNeverDial) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(requireBinaries(c.gohost, c.lang));
  const auto clean = runGohost(c.gohost, connectorCommand(c.lang, "clean"),
                               {{"pages", 2}, {"page_size", 5}}, c.automtls);
  expectReport(clean, c.lang, 2, 10, 2, 10);
  if (clean.report.is_object()) {
    EXPECT_EQ(clean.report.value("cleans", -1L), 1) << describe(clean);
  }
  const auto never_dial = runGohost(c.gohost, connectorCommand(c.lang, "never_dial"),
                                    {{"pages", 2}, {"page_size", 5}}, c.automtls);
  expectReport(never_dial, c.lang, 0, 0, 0, 0);
}

// The host rejects the second page: the connector sees the rejection as the Upsert's result and
// fails the sync with it (never a silently dropped page).
TEST_P(GoHostInteropTest, RejectedPageFailsTheSync) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(requireBinaries(c.gohost, c.lang));
  const auto r = runGohost(c.gohost, connectorCommand(c.lang), {{"pages", 3}, {"page_size", 10}},
                           c.automtls, 1, {"--fail-after-pages", "1"});
  EXPECT_EQ(r.raw.exit_code, 1) << describe(r);
  EXPECT_NE(r.raw.err.find("upsert failed:"), std::string::npos) << describe(r);
  EXPECT_NE(r.raw.err.find("page rejected"), std::string::npos) << describe(r);
}

// go-plugin itself parses the connector's stderr (as stock hosts such as c1 do, where a malformed
// hclog line crashes the host). Trace logging makes the connector log as much as it can.
TEST_P(GoHostInteropTest, StockHostParsesOurLogs) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(requireBinaries(c.gohost, c.lang));
  const auto r =
      runGohost(c.gohost, "TRIBUTARY_LOG_LEVEL=trace " + connectorCommand(c.lang),
                {{"pages", 3}, {"page_size", 10}}, c.automtls, 1, {"--go-plugin-stderr"});
  expectReport(r, c.lang, 3, 30, 3, 30);
  EXPECT_EQ(r.raw.err.find("panic"), std::string::npos) << describe(r);
}

const Case kCases[] = {
    {"v1_6", kGohostV16, Lang::Cpp, false},    {"v1_6", kGohostV16, Lang::Cpp, true},
    {"v1_6", kGohostV16, Lang::Python, false}, {"v1_6", kGohostV16, Lang::Python, true},
    {"v1_8", kGohostV18, Lang::Cpp, false},    {"v1_8", kGohostV18, Lang::Cpp, true},
    {"v1_8", kGohostV18, Lang::Python, false}, {"v1_8", kGohostV18, Lang::Python, true},
};

INSTANTIATE_TEST_SUITE_P(Hosts, GoHostInteropTest, testing::ValuesIn(kCases), caseName);

// --repeat 20: twenty plugin processes, one sync each, counts add up.
class GoHostRepeatTest : public testing::TestWithParam<Case> {};

TEST_P(GoHostRepeatTest, TwentySyncs) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(requireBinaries(c.gohost, c.lang));
  const auto r = runGohost(c.gohost, connectorCommand(c.lang), {{"pages", 3}, {"page_size", 10}},
                           c.automtls, 20);
  // Totals over the twenty runs; the metadata is the last run's EndSync.
  expectReport(r, c.lang, 60, 600, 3, 30);
}

const Case kRepeatCases[] = {
    {"v1_6", kGohostV16, Lang::Cpp, false},
    {"v1_8", kGohostV18, Lang::Cpp, true},
    {"v1_8", kGohostV18, Lang::Python, false},
};

INSTANTIATE_TEST_SUITE_P(Hosts, GoHostRepeatTest, testing::ValuesIn(kRepeatCases), caseName);

// The C++ SDK's GRPCController.Shutdown path: every connector process exits by itself with status
// 0, promptly (a Go host's Kill waits 2 s and then SIGKILLs a plugin that did not exit).
class CppShutdownTest : public testing::TestWithParam<Case> {};

TEST_P(CppShutdownTest, FiveRunsExitZeroQuickly) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(requireBinaries(c.gohost, c.lang));
  char dir_template[] = "/tmp/tributary-interop-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr) << std::strerror(errno);
  const std::string status_file = std::string(dir_template) + "/exit-codes";
  // The shell waits for the connector and records its exit status; a connector SIGKILLed by the
  // host (or still running when its shell is killed) leaves no line or a non-zero one.
  const std::string cmd = shellQuote(kCppConnector) + "; echo $? >> " + shellQuote(status_file);
  const auto r = runGohost(c.gohost, cmd, {{"pages", 1}, {"page_size", 1}}, c.automtls, 5);
  expectReport(r, Lang::Cpp, 5, 5, 1, 1);
  EXPECT_LT(r.raw.seconds, 5.0) << "5 launches + syncs + shutdowns took too long\n" << describe(r);

  std::ifstream in(status_file);
  std::vector<std::string> codes;
  for (std::string line; std::getline(in, line);) {
    codes.push_back(line);
  }
  EXPECT_EQ(codes, std::vector<std::string>(5, "0"))
      << "connector exit statuses (one line per run) in " << status_file << "\n"
      << describe(r);
  ::unlink(status_file.c_str());
  ::rmdir(dir_template);
}

const Case kShutdownCases[] = {
    {"v1_6", kGohostV16, Lang::Cpp, false},
    {"v1_8", kGohostV18, Lang::Cpp, false},
    {"v1_8", kGohostV18, Lang::Cpp, true},
};

INSTANTIATE_TEST_SUITE_P(Hosts, CppShutdownTest, testing::ValuesIn(kShutdownCases), caseName);

// C++ only: every Upsert result is checked, so the Go host's rejection of invalid UTF-8 (grpc-go
// refuses to unmarshal it) fails the sync with the contract's "upsert failed:" text.
class CppInvalidUtf8Test : public testing::TestWithParam<Case> {};

TEST_P(CppInvalidUtf8Test, HostRejectionIsReported) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(requireBinaries(c.gohost, c.lang));
  const auto r =
      runGohost(c.gohost, connectorCommand(Lang::Cpp, "invalid_utf8"), {{"pages", 1}}, c.automtls);
  EXPECT_EQ(r.raw.exit_code, 1) << describe(r);
  EXPECT_NE(r.raw.err.find("upsert failed:"), std::string::npos) << describe(r);
  EXPECT_NE(r.raw.err.find("UTF-8"), std::string::npos) << describe(r);
}

// PLUGIN_UNIX_SOCKET_DIR / PLUGIN_UNIX_SOCKET_GROUP (set by go-plugin v1.5.1+ hosts that use a
// RunnerFunc; here passed through the host's environment): the connector's socket is created in
// that directory and removed when the connector exits.
class CppSocketDirTest : public testing::TestWithParam<Case> {};

TEST_P(CppSocketDirTest, SocketInDirAndRemoved) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(requireBinaries(c.gohost, c.lang));
  char dir_template[] = "/tmp/tributary-sockdir-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr) << std::strerror(errno);
  const std::string dir = dir_template;
  const auto r = runGohost(
      c.gohost, "TRIBUTARY_LOG_LEVEL=debug " + connectorCommand(Lang::Cpp),
      {{"pages", 2}, {"page_size", 3}}, c.automtls, 1, {},
      {"PLUGIN_UNIX_SOCKET_DIR=" + dir, "PLUGIN_UNIX_SOCKET_GROUP=" + std::to_string(::getgid())});
  expectReport(r, Lang::Cpp, 2, 6, 2, 6);
  // The connector logs its address at debug level ("plugin address").
  EXPECT_NE(r.raw.err.find("\"address\":\"" + dir + "/plugin"), std::string::npos) << describe(r);
  EXPECT_EQ(r.raw.err.find("cannot make the plugin socket group-writable"), std::string::npos)
      << describe(r);
  std::vector<std::string> left;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
        left.emplace_back(e->d_name);
      }
    }
    ::closedir(d);
  }
  EXPECT_TRUE(left.empty()) << "files left in " << dir << ": " << left.front();
  for (const auto& name : left) {
    ::unlink((dir + "/" + name).c_str());
  }
  ::rmdir(dir.c_str());
}

const Case kSocketDirCases[] = {
    {"v1_6", kGohostV16, Lang::Cpp, false},
    {"v1_8", kGohostV18, Lang::Cpp, true},
};

INSTANTIATE_TEST_SUITE_P(Hosts, CppSocketDirTest, testing::ValuesIn(kSocketDirCases), caseName);

const Case kUtf8Cases[] = {
    {"v1_6", kGohostV16, Lang::Cpp, false},
    {"v1_8", kGohostV18, Lang::Cpp, true},
};

INSTANTIATE_TEST_SUITE_P(Hosts, CppInvalidUtf8Test, testing::ValuesIn(kUtf8Cases), caseName);

}  // namespace
