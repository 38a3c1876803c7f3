#include "tributary/plugin_host/child_process.h"

#include "tributary/common/strings.h"

#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <pthread.h>
#include <set>
#include <signal.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace tributary::plugin_host {
namespace {

// Written by the child to the error pipe when exec fails: which step, then errno.
struct ChildError {
  int step;  // 1 = chdir, 2 = exec, 3 = setup, 4 = limits or user, 5 = no_new_privs/Landlock
  int err;
};

void closeFd(int& fd) {
  if (fd >= 0) {
    ::close(fd);
    fd = -1;
  }
}

// Pids of live ChildProcesses: reapEscapedChildren spares them.
std::mutex live_mu;
std::set<pid_t> live_children;  // Guarded by live_mu.

void forgetChild(pid_t pid) {
  const std::lock_guard lock(live_mu);
  live_children.erase(pid);
}

// "PPid:" and "Uid:" (real) of /proc/<pid>/status.
bool parentAndUid(const std::filesystem::path& status_file, pid_t& ppid, uid_t& uid) {
  std::ifstream in(status_file);
  bool have_ppid = false;
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("PPid:")) {
      ppid = static_cast<pid_t>(std::strtol(line.c_str() + 5, nullptr, 10));
      have_ppid = true;
    } else if (line.starts_with("Uid:")) {
      uid = static_cast<uid_t>(std::strtoul(line.c_str() + 4, nullptr, 10));
      return have_ppid;
    }
  }
  return false;
}

ExitInfo decodeStatus(int status) {
  ExitInfo info;
  info.exited = true;
  if (WIFEXITED(status)) {
    info.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    info.signal = WTERMSIG(status);
  }
  return info;
}

// Only async-signal-safe calls between fork and exec: the parent is multi-threaded.
[[noreturn]] void runChild(pid_t parent, int devnull, int out_w, int err_w, int errpipe_w,
                           const char* dir, char* const* argv, char* const* envp,
                           const sandbox::Prepared* sandbox) {
  auto fail = [errpipe_w](int step, int err) {
    const ChildError e{step, err};
    [[maybe_unused]] const ssize_t n = ::write(errpipe_w, &e, sizeof(e));
    ::_exit(127);
  };
  ::setpgid(0, 0);
  // Before PR_SET_PDEATHSIG: changing credentials clears it.
  if (sandbox != nullptr) {
    if (const int err = sandbox->applyLimitsAndUser(); err != 0) {
      fail(4, err);
    }
  }
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) {
    ::_exit(127);  // Parent already gone: do not run orphaned.
  }
  // Signals are still blocked (the parent blocked them around fork): reset every handler the
  // host installed before unblocking, so none of them can run in the child.
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) {
      ::signal(sig, SIG_DFL);  // NOLINT(concurrency-mt-unsafe): single-threaded child
    }
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (::dup2(devnull, 0) < 0 || ::dup2(out_w, 1) < 0 || ::dup2(err_w, 2) < 0) {
    fail(3, errno);
  }
  if (::chdir(dir) != 0) {
    fail(1, errno);
  }
  if (sandbox != nullptr) {
    if (const int err = sandbox->applyRestrictions(); err != 0) {
      fail(5, err);
    }
  }
  // Every other descriptor (gRPC sockets, database connections) stays in the host.
  const auto keep = static_cast<unsigned>(errpipe_w);
  const bool closed = (keep <= 3U || ::syscall(SYS_close_range, 3U, keep - 1U, 0U) == 0) &&
                      ::syscall(SYS_close_range, keep + 1U, ~0U, 0U) == 0;
  if (!closed) {  // Kernels before 5.9.
    for (int fd = 3; fd < 65536; ++fd) {
      if (fd != errpipe_w) {
        ::close(fd);
      }
    }
  }
  ::execve(argv[0], argv, envp);
  fail(2, errno);
  ::_exit(127);
}

}  // namespace

std::string ExitInfo::describe() const {
  if (!exited) {
    return "still running";
  }
  std::string out = signal != 0
                        ? strings::cat("killed by signal ", signal, " (", sigdescr_np(signal), ")")
                        : strings::cat("exited with status ", exit_code);
  if (forced) {
    absl::StrAppend(&out, " after SIGKILL");
  }
  return out;
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::spawn(
    const std::vector<std::string>& argv, const std::vector<std::string>& env,
    const std::filesystem::path& dir, const sandbox::Prepared* sandbox) {
  std::vector<char*> argv_c;
  argv_c.reserve(argv.size() + 1);
  for (const auto& a : argv) {
    argv_c.push_back(const_cast<char*>(a.c_str()));
  }
  argv_c.push_back(nullptr);
  std::vector<char*> env_c;
  env_c.reserve(env.size() + 1);
  for (const auto& e : env) {
    env_c.push_back(const_cast<char*>(e.c_str()));
  }
  env_c.push_back(nullptr);
  const std::string dir_str = dir.string();

  int out_pipe[2] = {-1, -1};
  int err_pipe[2] = {-1, -1};
  int exec_pipe[2] = {-1, -1};
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0 ||
      ::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    for (int* fd : {&devnull, &out_pipe[0], &out_pipe[1], &err_pipe[0], &err_pipe[1], &exec_pipe[0],
                    &exec_pipe[1]}) {
      closeFd(*fd);
    }
    return absl::ResourceExhaustedError(
        strings::cat("cannot create pipes for ", argv.front(), ": ", strings::errnoMessage(err)));
  }
  const pid_t parent = ::getpid();
  sigset_t all;
  sigset_t previous;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  const pid_t pid = ::fork();
  if (pid == 0) {
    runChild(parent, devnull, out_pipe[1], err_pipe[1], exec_pipe[1], dir_str.c_str(),
             argv_c.data(), env_c.data(), sandbox);
  }
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  for (int* fd : {&devnull, &out_pipe[1], &err_pipe[1], &exec_pipe[1]}) {
    closeFd(*fd);
  }
  if (pid < 0) {
    for (int* fd : {&out_pipe[0], &err_pipe[0], &exec_pipe[0]}) {
      closeFd(*fd);
    }
    return absl::ResourceExhaustedError(
        strings::cat("cannot fork ", argv.front(), ": ", strings::errnoMessage(fork_errno)));
  }
  // Also set the group from the parent side so a signal sent right away reaches it.
  ::setpgid(pid, pid);
  std::unique_ptr<ChildProcess> child(new ChildProcess(pid, out_pipe[0], err_pipe[0]));
  {
    const std::lock_guard lock(live_mu);
    live_children.insert(pid);
  }

  ChildError child_error{};
  ssize_t n = 0;
  do {
    n = ::read(exec_pipe[0], &child_error, sizeof(child_error));
  } while (n < 0 && errno == EINTR);
  closeFd(exec_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(child_error))) {
    child->waitFor(std::chrono::seconds(5));
    const char* what = child_error.step == 1   ? "cannot enter the connector directory "
                       : child_error.step == 2 ? "cannot execute "
                       : child_error.step == 4 ? "cannot apply the sandbox's limits and user to "
                       : child_error.step == 5 ? "cannot confine (no_new_privs, Landlock) "
                                               : "cannot set up the connector process for ";
    const std::string subject = child_error.step == 1 ? dir_str : argv.front();
    std::string message = strings::cat(what, subject, ": ", strings::errnoMessage(child_error.err));
    if (sandbox != nullptr && (child_error.step == 1 || child_error.step == 2)) {
      message += strings::cat(" (sandboxed: ", sandbox->describe(),
                              "; the directory and the command must be readable there)");
    }
    return absl::FailedPreconditionError(std::move(message));
  }
  return child;
}

ChildProcess::~ChildProcess() {
  killAndReap();
  closeFd(stdout_fd_);
  closeFd(stderr_fd_);
}

int ChildProcess::releaseStdout() {
  const int fd = stdout_fd_;
  stdout_fd_ = -1;
  return fd;
}

int ChildProcess::releaseStderr() {
  const int fd = stderr_fd_;
  stderr_fd_ = -1;
  return fd;
}

std::optional<ExitInfo> ChildProcess::reapIfExited() {
  const std::lock_guard lock(mu_);
  if (exit_) {
    return exit_;
  }
  int status = 0;
  pid_t r = 0;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    exit_ = decodeStatus(status);
  } else if (r < 0) {
    exit_ = ExitInfo{.exited = true};  // ECHILD: reaped elsewhere; it is gone either way.
  } else {
    return std::nullopt;
  }
  forgetChild(pid_);
  // Whatever the connector left behind in its group goes with it.
  ::kill(-pid_, SIGKILL);
  return exit_;
}

std::optional<ExitInfo> ChildProcess::waitFor(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (true) {
    if (auto info = reapIfExited()) {
      return info;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
}

void ChildProcess::signalGroup(int sig) {
  const std::lock_guard lock(mu_);
  ::kill(-pid_, sig);
  if (!exit_) {
    ::kill(pid_, sig);  // Once reaped, the pid may belong to someone else.
  }
}

ExitInfo ChildProcess::killAndReap() {
  signalGroup(SIGKILL);
  const std::lock_guard lock(mu_);
  if (exit_) {
    return *exit_;
  }
  int status = 0;
  pid_t r = 0;
  do {
    r = ::waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  exit_ = r == pid_ ? decodeStatus(status) : ExitInfo{.exited = true};
  exit_->forced = true;
  forgetChild(pid_);
  return *exit_;
}

int reapEscapedChildren(uid_t uid) {
  const pid_t self = ::getpid();
  int killed = 0;
  for (int round = 0; round < 1000; ++round) {
    std::vector<pid_t> escaped;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      const std::string name = it->path().filename().string();
      pid_t pid = 0;
      if (std::from_chars(name.data(), name.data() + name.size(), pid).ec != std::errc()) {
        continue;
      }
      pid_t ppid = 0;
      uid_t owner = 0;
      if (parentAndUid(it->path() / "status", ppid, owner) && ppid == self && owner == uid) {
        const std::lock_guard lock(live_mu);
        if (!live_children.contains(pid)) {
          escaped.push_back(pid);
        }
      }
    }
    if (escaped.empty()) {
      break;
    }
    for (const pid_t pid : escaped) {
      ::kill(pid, SIGKILL);
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      ++killed;
    }
  }
  return killed;
}

}  // namespace tributary::plugin_host
