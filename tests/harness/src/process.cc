#include "process.h"

#include "absl/strings/str_cat.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <grp.h>
#include <mutex>
#include <pthread.h>
#include <pwd.h>
#include <set>
#include <system_error>
#include <thread>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace tributary::harness::internal {
namespace {

std::string errnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset(other.release());
    }
    return *this;
  }

  [[nodiscard]] int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Everything the child needs, prepared before fork() so the child only makes system calls.
struct ChildPlan {
  std::vector<char*> argv;
  std::vector<char*> envp;
  const char* workdir = "/";
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  int error_fd = -1;  // write end of the exec-error pipe (O_CLOEXEC)
  bool set_ids = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Runs in the forked child: async-signal-safe calls only.
[[noreturn]] void runChild(const ChildPlan& plan) {
  int step = 0;
  auto fail = [&plan, &step]() {
    const int err[2] = {step, errno};
    // A failed write leaves the parent with "exec failed" anyway.
    [[maybe_unused]] const ssize_t n = ::write(plan.error_fd, err, sizeof(err));
    ::_exit(127);
  };

  step = 1;
  if (::setpgid(0, 0) != 0) {
    fail();
  }
  sigset_t all;
  ::sigemptyset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    ::sigaction(sig, &dfl, nullptr);  // fails harmlessly for SIGKILL/SIGSTOP and RT gaps
  }

  step = 2;
  if (::dup2(plan.stdin_fd, 0) < 0 || ::dup2(plan.stdout_fd, 1) < 0 ||
      ::dup2(plan.stderr_fd, 2) < 0) {
    fail();
  }
  step = 3;
  if (::chdir(plan.workdir) != 0) {
    fail();
  }
  if (plan.set_ids) {
    step = 4;
    const gid_t groups[1] = {plan.gid};
    if (::setgroups(1, groups) != 0 || ::setgid(plan.gid) != 0 || ::setuid(plan.uid) != 0) {
      fail();
    }
  }
  // Nothing of the test process leaks into the server (sockets, pipes to ctest, …).
  step = 5;
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    for (int fd = 3; fd < 65536; ++fd) {
      if (fd != plan.error_fd) {
        ::close(fd);
      }
    }
  }
  step = 6;
  ::execve(plan.argv[0], plan.argv.data(), plan.envp.data());
  fail();
  ::_exit(127);  // not reached
}

const char* stepName(int step) {
  switch (step) {
    case 1:
      return "setpgid";
    case 2:
      return "redirecting stdio";
    case 3:
      return "chdir";
    case 4:
      return "switching user";
    case 5:
      return "closing fds";
    case 6:
      return "exec";
    default:
      return "starting";
  }
}

// Leaked on purpose: used from atexit handlers, after static destructors may have run.
std::mutex& harnessPidsMutex() {
  static auto* mu = new std::mutex();
  return *mu;
}
std::set<pid_t>& harnessPids() {
  static auto* pids = new std::set<pid_t>();
  return *pids;
}

}  // namespace

absl::StatusOr<RunAs> lookupUser(const std::string& name) {
  struct passwd pwd {};
  struct passwd* result = nullptr;
  std::vector<char> buf(16384);
  const int rc = ::getpwnam_r(name.c_str(), &pwd, buf.data(), buf.size(), &result);
  if (rc != 0 || result == nullptr) {
    return absl::NotFoundError(absl::StrCat("system user '", name, "' not found",
                                            rc != 0 ? ": " + errnoText(rc) : std::string()));
  }
  RunAs user;
  user.uid = pwd.pw_uid;
  user.gid = pwd.pw_gid;
  user.name = name;
  user.home = pwd.pw_dir != nullptr ? pwd.pw_dir : "/";
  return user;
}

absl::StatusOr<pid_t> spawn(const SpawnOptions& options) {
  if (options.argv.empty() || options.argv[0].empty() || options.argv[0][0] != '/') {
    return absl::InvalidArgumentError("spawn: argv[0] must be an absolute path");
  }
  std::vector<std::string> argv = options.argv;
  std::vector<std::string> env = options.env;
  ChildPlan plan;
  for (auto& arg : argv) {
    plan.argv.push_back(arg.data());
  }
  plan.argv.push_back(nullptr);
  for (auto& var : env) {
    plan.envp.push_back(var.data());
  }
  plan.envp.push_back(nullptr);
  plan.workdir = options.workdir.c_str();

  Fd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (devnull.get() < 0) {
    return absl::InternalError(absl::StrCat("open /dev/null: ", errnoText(errno)));
  }
  Fd log;
  if (!options.log_path.empty()) {
    log.reset(::open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (log.get() < 0) {
      return absl::InternalError(absl::StrCat("open ", options.log_path, ": ", errnoText(errno)));
    }
  }
  plan.stdin_fd = options.stdin_fd >= 0 ? options.stdin_fd : devnull.get();
  plan.stdout_fd = log.get() >= 0 ? log.get() : devnull.get();
  if (log.get() >= 0) {
    plan.stderr_fd = log.get();
  } else {
    plan.stderr_fd = options.inherit_stderr ? 2 : devnull.get();
  }
  if (options.run_as.has_value()) {
    plan.set_ids = true;
    plan.uid = options.run_as->uid;
    plan.gid = options.run_as->gid;
  }

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", errnoText(errno)));
  }
  Fd error_read(pipe_fds[0]);
  Fd error_write(pipe_fds[1]);
  plan.error_fd = error_write.get();

  const pid_t pid = ::fork();
  if (pid < 0) {
    return absl::ResourceExhaustedError(absl::StrCat("fork: ", errnoText(errno)));
  }
  if (pid == 0) {
    runChild(plan);
  }
  // Also from the parent, so the group exists before we ever signal it.
  ::setpgid(pid, pid);
  error_write.reset();

  int err[2] = {0, 0};
  ssize_t n = 0;
  do {
    n = ::read(error_read.get(), err, sizeof(err));
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot start ", options.argv[0], ": ", stepName(err[0]), " failed: ", errnoText(err[1])));
  }
  return pid;
}

bool hasExited(pid_t pid, ExitInfo* info) {
  int status = 0;
  pid_t rc = 0;
  do {
    rc = ::waitpid(pid, &status, WNOHANG);
  } while (rc < 0 && errno == EINTR);
  if (rc == pid) {
    info->exited = true;
    info->wait_status = status;
    info->status_known = true;
    return true;
  }
  if (rc < 0 && errno == ECHILD) {
    // Reaped by somebody else (a waitpid(-1) elsewhere in the test binary), or not our child.
    info->exited = true;
    info->status_known = false;
    return true;
  }
  return false;
}

ExitInfo waitForExit(pid_t pid, std::chrono::milliseconds timeout) {
  ExitInfo info;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto sleep = std::chrono::milliseconds(1);
  while (!hasExited(pid, &info)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return info;
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, std::chrono::milliseconds(50));
  }
  return info;
}

std::string describeExit(const ExitInfo& info) {
  if (!info.exited) {
    return "still running";
  }
  if (!info.status_known) {
    return "exited (status unknown: reaped elsewhere)";
  }
  if (WIFEXITED(info.wait_status)) {
    return absl::StrCat("exited with status ", WEXITSTATUS(info.wait_status));
  }
  if (WIFSIGNALED(info.wait_status)) {
    const int sig = WTERMSIG(info.wait_status);
    const char* name = ::sigdescr_np(sig);  // thread-safe, unlike strsignal()
    return absl::StrCat("killed by signal ", sig, " (", name != nullptr ? name : "?", ")");
  }
  return absl::StrCat("ended with wait status ", info.wait_status);
}

absl::Status runToCompletion(const SpawnOptions& options, std::chrono::milliseconds timeout) {
  absl::StatusOr<pid_t> pid = spawn(options);
  if (!pid.ok()) {
    return pid.status();
  }
  ExitInfo info = waitForExit(*pid, timeout);
  if (!info.exited) {
    signalGroup(*pid, SIGKILL);
    info = waitForExit(*pid, std::chrono::seconds(10));
    return absl::DeadlineExceededError(
        absl::StrCat(options.argv[0], " did not finish within ", timeout.count(), " ms"));
  }
  if (info.status_known && !(WIFEXITED(info.wait_status) && WEXITSTATUS(info.wait_status) == 0)) {
    return absl::InternalError(absl::StrCat(options.argv[0], " ", describeExit(info)));
  }
  return absl::OkStatus();
}

void signalGroup(pid_t pgid, int sig) {
  if (pgid > 1) {
    ::kill(-pgid, sig);
  }
}

absl::StatusOr<int> pickFreePort() {
  Fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) {
    return absl::InternalError(absl::StrCat("socket: ", errnoText(errno)));
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::InternalError(absl::StrCat("bind 127.0.0.1:0: ", errnoText(errno)));
  }
  socklen_t len = sizeof(addr);
  if (::getsockname(sock.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::InternalError(absl::StrCat("getsockname: ", errnoText(errno)));
  }
  return static_cast<int>(ntohs(addr.sin_port));
}

namespace {

// Whether every ancestor of `path` lets "others" traverse it.
bool traversableByOthers(const std::filesystem::path& path) {
  std::filesystem::path current;
  for (const auto& part : path) {
    current /= part;
    struct stat st {};
    if (::stat(current.c_str(), &st) != 0 || (st.st_mode & S_IXOTH) == 0) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> makeTempDir(const std::string& prefix,
                                        const std::optional<RunAs>& owner) {
  std::string base = "/tmp";
  for (const char* var : {"TRIBUTARY_TEST_TMPDIR", "TMPDIR"}) {
    const char* value = std::getenv(var);
    if (value != nullptr && value[0] == '/') {
      base = value;
      break;
    }
  }
  if (owner.has_value() && !traversableByOthers(base)) {
    base = "/tmp";
  }
  std::string templ = absl::StrCat(base, "/tributary-", prefix, "-XXXXXX");
  if (::mkdtemp(templ.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", templ, ": ", errnoText(errno)));
  }
  if (owner.has_value() && ::chown(templ.c_str(), owner->uid, owner->gid) != 0) {
    const int err = errno;
    removeTree(templ);
    return absl::InternalError(
        absl::StrCat("chown ", templ, " to ", owner->name, ": ", errnoText(err)));
  }
  return templ;
}

void removeTree(const std::string& path) {
  if (path.empty() || path == "/") {
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::string sourceDir() {
  const char* dir = std::getenv("TRIBUTARY_SOURCE_DIR");  // NOLINT(concurrency-mt-unsafe)
  return dir != nullptr && *dir != '\0' ? std::string(dir) : std::string(TRIBUTARY_SOURCE_DIR);
}

absl::Status writeTestTlsFiles(const std::string& dir, const std::optional<RunAs>& owner,
                               const std::string& log_path) {
  SpawnOptions pki;
  pki.argv = {"/bin/bash", sourceDir() + "/scripts/test-tls-pki.sh", dir};
  pki.env = serverEnvironment();
  pki.workdir = std::filesystem::path(dir).parent_path().string();
  pki.log_path = log_path;
  pki.run_as = owner;
  if (absl::Status status = runToCompletion(pki, std::chrono::minutes(1)); !status.ok()) {
    return absl::InternalError(absl::StrCat("scripts/test-tls-pki.sh failed: ", status.message(),
                                            "\n", fileTail(log_path, 2048)));
  }
  return absl::OkStatus();
}

TlsFiles testTlsFilesIn(const std::string& dir) {
  const std::string d = dir + "/";
  return {.ca = d + "ca.crt",
          .other_ca = d + "other-ca.crt",
          .cert = d + "server.crt",
          .key = d + "server.key",
          .client_cert = d + "client.crt",
          .client_key = d + "client.key"};
}

std::string fileTail(const std::string& path, std::size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return {};
  }
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const auto max = static_cast<std::streamoff>(max_bytes);
  const std::streamoff start = size > max ? size - max : 0;
  in.seekg(start);
  std::string text(static_cast<std::size_t>(size - start), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (start > 0) {
    const auto newline = text.find('\n');
    if (newline != std::string::npos && newline + 1 < text.size()) {
      text.erase(0, newline + 1);
    }
  }
  return text;
}

bool isExecutable(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::optional<std::string> findProgram(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::string all = path;
    std::size_t begin = 0;
    while (begin <= all.size()) {
      const std::size_t end = std::min(all.find(':', begin), all.size());
      if (end > begin) {
        dirs.push_back(all.substr(begin, end - begin));
      }
      begin = end + 1;
    }
  }
  for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
    dirs.emplace_back(dir);
  }
  for (const auto& dir : dirs) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (candidate[0] == '/' && isExecutable(candidate)) {
      return candidate;
    }
  }
  return std::nullopt;
}

std::vector<std::string> serverEnvironment() {
  return {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C", "LC_ALL=C", "TZ=UTC"};
}

void registerHarnessPid(pid_t pid) {
  const std::lock_guard<std::mutex> lock(harnessPidsMutex());
  harnessPids().insert(pid);
}

void unregisterHarnessPid(pid_t pid) {
  const std::lock_guard<std::mutex> lock(harnessPidsMutex());
  harnessPids().erase(pid);
}

bool isHarnessPid(pid_t pid) {
  const std::lock_guard<std::mutex> lock(harnessPidsMutex());
  return harnessPids().count(pid) > 0;
}

}  // namespace tributary::harness::internal
