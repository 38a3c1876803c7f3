#include "cli_test_support.h"

#include "tributary/testing/sandbox.h"
#include "tributary/testing/services.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <signal.h>
#include <sstream>
#include <thread>
#include <unistd.h>

extern char** environ;  // NOLINT: POSIX

namespace tributary::cli_test {

std::string databaseForTest(const std::string& prefix) {
  auto pg = harness::SharedServices::postgres();
  EXPECT_TRUE(pg.ok()) << pg.status();
  if (!pg.ok()) {
    return "";
  }
  std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) {
    return std::isalnum(c) != 0 ? static_cast<char>(std::tolower(c)) : '_';
  });
  auto dsn = (*pg)->createDatabase(prefix + name.substr(0, 50));
  EXPECT_TRUE(dsn.ok()) << dsn.status();
  return dsn.ok() ? *dsn : "";
}

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Can every user enter every directory of `path`? (The CLI's local PostgreSQL runs as the
// `postgres` user when the tests run as root.)
bool traversableByAll(const std::string& path) {
  std::filesystem::path walk;
  for (const auto& part : std::filesystem::path(path)) {
    walk /= part;
    struct stat st {};
    if (::stat(walk.c_str(), &st) != 0 || (st.st_mode & S_IXOTH) == 0) {
      return false;
    }
  }
  return true;
}

std::string tempBase() {
  for (const char* name : {"TRIBUTARY_TEST_TMPDIR", "TMPDIR"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v == '/') {
      if (::geteuid() != 0 || traversableByAll(v)) {
        return v;
      }
    }
  }
  return "/tmp";
}

}  // namespace

TempDir::TempDir() {
  std::string templ = tempBase() + "/tributary-cli-test-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    std::abort();
  }
  ::chmod(templ.c_str(), 0755);
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& text) const {
  const std::string full = path_ + "/" + name;
  std::filesystem::create_directories(std::filesystem::path(full).parent_path());
  std::ofstream(full, std::ios::binary) << text;
  return full;
}

Result run(const std::string& binary, const std::vector<std::string>& args,
           const std::map<std::string, std::string>& env, std::chrono::seconds timeout) {
  const TempDir io;
  const std::string out_path = io.path() + "/out";
  const std::string err_path = io.path() + "/err";
  std::map<std::string, std::string> full_env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string kv(*e);
    const auto eq = kv.find('=');
    if (eq != std::string::npos) {
      full_env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
  }
  // Connectors read their test trees (temporary directories) and the build's Python: the
  // sandbox's default paths do not hold them.
  full_env.try_emplace("TRIBUTARY_SANDBOX_READ_ONLY",
                       tempBase() + ":" + harness::pythonReadOnlyPaths(TRIBUTARY_TEST_PYTHON));
  for (const auto& [key, value] : env) {
    if (value.empty()) {
      full_env.erase(key);
    } else {
      full_env[key] = value;
    }
  }
  std::vector<std::string> env_strings;
  for (const auto& [key, value] : full_env) {
    env_strings.push_back(key + "=" + value);
  }
  std::vector<char*> envp;
  for (auto& s : env_strings) {
    envp.push_back(s.data());
  }
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = {binary};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_strings) {
    argv.push_back(s.data());
  }
  argv.push_back(nullptr);

  const auto started = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::close_range(3, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  Result result;
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (std::chrono::steady_clock::now() - started > timeout) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.exit_code = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  result.out = slurp(out_path);
  result.err = slurp(err_path);
  return result;
}

}  // namespace tributary::cli_test
