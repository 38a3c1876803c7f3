#include "command.h"

#include "tributary/common/strings.h"

#include "util.h"

#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <signal.h>
#include <thread>
#include <unistd.h>

extern char** environ;  // NOLINT(readability-redundant-declaration)

namespace tributary::installer::internal {
namespace {

struct ChildError {
  int step;  // 1 = chdir, 2 = exec, 3 = setup
  int err;
};

// Only async-signal-safe calls between fork and exec: the parent is multi-threaded.
[[noreturn]] void runChild(pid_t parent, int devnull, int out_w, int errpipe_w, const char* dir,
                           char* const* argv, char* const* envp) {
  auto fail = [errpipe_w](int step) {
    const ChildError e{step, errno};
    [[maybe_unused]] const ssize_t n = ::write(errpipe_w, &e, sizeof(e));
    ::_exit(127);
  };
  ::setsid();
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) {
    ::_exit(127);
  }
  sigset_t all;
  ::sigemptyset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, nullptr);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGQUIT}) {
    ::signal(sig, SIG_DFL);  // NOLINT(concurrency-mt-unsafe): the forked child has one thread
  }
  if (::dup2(devnull, 0) < 0 || ::dup2(out_w, 1) < 0 || ::dup2(out_w, 2) < 0) {
    fail(3);
  }
  if (::chdir(dir) != 0) {
    fail(1);
  }
  // Lock files, sockets and database connections stay in the installer.
  const auto keep = static_cast<unsigned>(errpipe_w);
  const bool closed = (keep <= 3U || ::syscall(SYS_close_range, 3U, keep - 1U, 0U) == 0) &&
                      ::syscall(SYS_close_range, keep + 1U, ~0U, 0U) == 0;
  if (!closed) {
    for (int fd = 3; fd < 65536; ++fd) {
      if (fd != errpipe_w) {
        ::close(fd);
      }
    }
  }
  ::execve(argv[0], argv, envp);
  fail(2);
  ::_exit(127);
}

void closeFd(int& fd) {
  if (fd >= 0) {
    ::close(fd);
    fd = -1;
  }
}

std::string formatDuration(std::chrono::milliseconds d) {
  const auto ms = d.count();
  return strings::cat(ms / 1000, ".", (ms % 1000) / 100, "s");
}

}  // namespace

std::map<std::string, std::string> buildEnv(const std::vector<std::string>& inherited,
                                            const std::map<std::string, std::string>& extra,
                                            const std::map<std::string, std::string>& spec_env) {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos) {
      continue;
    }
    const std::string_view key = entry.substr(0, eq);
    for (const auto& pattern : inherited) {
      const bool prefix = !pattern.empty() && pattern.back() == '*';
      std::string_view p = pattern;
      if (prefix) {
        p.remove_suffix(1);
      }
      if (prefix ? key.substr(0, p.size()) == p : key == p) {
        env[std::string(key)] = std::string(entry.substr(eq + 1));
        break;
      }
    }
  }
  if (env.find("PATH") == env.end()) {
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  }
  for (const auto& [k, v] : extra) {
    env[k] = v;
  }
  for (const auto& [k, v] : spec_env) {
    env[k] = v;
  }
  return env;
}

absl::StatusOr<CommandResult> runCommand(const CommandSpec& spec, const std::stop_token& stop) {
  std::vector<std::string> argv = {"/bin/sh", "-c", spec.command};
  std::vector<std::string> env_strings;
  env_strings.reserve(spec.env.size());
  for (const auto& [k, v] : spec.env) {
    env_strings.push_back(strings::cat(k, "=", v));
  }
  std::vector<char*> argv_c;
  argv_c.reserve(argv.size() + 1);
  for (auto& a : argv) {
    argv_c.push_back(a.data());
  }
  argv_c.push_back(nullptr);
  std::vector<char*> env_c;
  env_c.reserve(env_strings.size() + 1);
  for (auto& e : env_strings) {
    env_c.push_back(e.data());
  }
  env_c.push_back(nullptr);
  const std::string dir = spec.dir.string();

  int out_pipe[2] = {-1, -1};
  int exec_pipe[2] = {-1, -1};
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    for (int* fd : {&devnull, &out_pipe[0], &out_pipe[1], &exec_pipe[0], &exec_pipe[1]}) {
      closeFd(*fd);
    }
    return errnoStatus(err, "cannot create pipes for the install command");
  }
  const auto started = Clock::now();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    runChild(parent, devnull, out_pipe[1], exec_pipe[1], dir.c_str(), argv_c.data(), env_c.data());
  }
  const int fork_errno = errno;
  for (int* fd : {&devnull, &out_pipe[1], &exec_pipe[1]}) {
    closeFd(*fd);
  }
  if (pid < 0) {
    closeFd(out_pipe[0]);
    closeFd(exec_pipe[0]);
    return errnoStatus(fork_errno, "cannot fork the install command");
  }
  ChildError child_error{};
  ssize_t n = 0;
  do {
    n = ::read(exec_pipe[0], &child_error, sizeof(child_error));
  } while (n < 0 && errno == EINTR);
  closeFd(exec_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(child_error))) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    closeFd(out_pipe[0]);
    return errnoStatus(child_error.err, child_error.step == 1
                                            ? strings::cat("cannot enter ", dir)
                                            : std::string("cannot start /bin/sh"));
  }

  CommandResult result;
  TailBuffer tail(spec.tail_bytes);
  const Deadline deadline = Deadline::after(spec.timeout);
  bool exited = false;
  int status = 0;
  std::optional<Clock::time_point> drain_until;
  std::array<char, 16384> buf{};
  int out_fd = out_pipe[0];
  auto kill_group = [pid](int sig) { ::kill(-pid, sig); };
  while (true) {
    if (!exited) {
      const pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        exited = true;
        // Background children may hold the pipe open: give them a moment, then stop reading.
        drain_until = Clock::now() + std::chrono::milliseconds(500);
      }
    }
    if (out_fd < 0 && exited) {
      break;
    }
    if (drain_until && Clock::now() >= *drain_until) {
      break;
    }
    if (!exited && (deadline.expired() || stop.stop_requested())) {
      (deadline.expired() ? result.timed_out : result.cancelled) = true;
      kill_group(SIGTERM);
      // Short grace, then SIGKILL the whole group.
      const auto grace_end = Clock::now() + std::chrono::seconds(2);
      while (Clock::now() < grace_end) {
        if (::waitpid(pid, &status, WNOHANG) == pid) {
          exited = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      kill_group(SIGKILL);
      if (!exited) {
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
      }
      break;
    }
    if (out_fd >= 0) {
      pollfd pfd{out_fd, POLLIN, 0};
      const int pr = ::poll(&pfd, 1, 50);
      if (pr > 0) {
        const ssize_t got = ::read(out_fd, buf.data(), buf.size());
        if (got > 0) {
          tail.append(std::string_view(buf.data(), static_cast<std::size_t>(got)));
          result.output_bytes += static_cast<std::uint64_t>(got);
        } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
          closeFd(out_fd);
        }
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  // Nothing the command started may keep running (or writing into the connector directory).
  kill_group(SIGKILL);
  closeFd(out_fd);
  result.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  result.output_tail = tail.text();
  return result;
}

absl::Status commandError(std::string_view what, const CommandSpec& spec,
                          const CommandResult& result) {
  std::string reason;
  if (result.timed_out) {
    reason = strings::cat("timed out after ", formatDuration(spec.timeout), " and was killed");
  } else if (result.cancelled) {
    reason = strings::cat("was cancelled after ", formatDuration(result.duration));
  } else if (result.signal != 0) {
    reason =
        strings::cat("was killed by signal ", result.signal, " (",
                     sigdescr_np(result.signal) != nullptr ? sigdescr_np(result.signal) : "unknown",
                     ") after ", formatDuration(result.duration));
  } else {
    reason = strings::cat("exited with code ", result.exit_code, " after ",
                          formatDuration(result.duration));
    if (result.exit_code == 127) {
      reason += " (command not found)";
    }
  }
  std::string output;
  if (result.output_tail.empty()) {
    output = "no output";
  } else if (result.output_bytes > result.output_tail.size()) {
    output = strings::cat("output (last ", result.output_tail.size(), " of ", result.output_bytes,
                          " bytes):\n", result.output_tail);
  } else {
    output = strings::cat("output:\n", result.output_tail);
  }
  std::string message = strings::cat(what, " `", spec.command, "` ", reason, "; ", output);
  if (result.timed_out) {
    return absl::DeadlineExceededError(message);
  }
  if (result.cancelled) {
    return absl::CancelledError(message);
  }
  return absl::FailedPreconditionError(message);
}

}  // namespace tributary::installer::internal

namespace tributary::installer::internal {
namespace {

// Only async-signal-safe calls: the parent is multi-threaded.
[[noreturn]] void runHelperChild(pid_t parent, int in_r, int out_w, int err_w, int errpipe_w,
                                 char* const* argv, char* const* envp) {
  ::setsid();
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) {
    ::_exit(127);
  }
  sigset_t all;
  ::sigemptyset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, nullptr);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGQUIT}) {
    ::signal(sig, SIG_DFL);  // NOLINT(concurrency-mt-unsafe): the forked child has one thread
  }
  if (::dup2(in_r, 0) < 0 || ::dup2(out_w, 1) < 0 || ::dup2(err_w, 2) < 0) {
    const ChildError e{3, errno};
    [[maybe_unused]] const ssize_t n = ::write(errpipe_w, &e, sizeof(e));
    ::_exit(127);
  }
  const auto keep = static_cast<unsigned>(errpipe_w);
  const bool closed = (keep <= 3U || ::syscall(SYS_close_range, 3U, keep - 1U, 0U) == 0) &&
                      ::syscall(SYS_close_range, keep + 1U, ~0U, 0U) == 0;
  if (!closed) {
    for (int fd = 3; fd < 65536; ++fd) {
      if (fd != errpipe_w) {
        ::close(fd);
      }
    }
  }
  ::execve(argv[0], argv, envp);
  const ChildError e{2, errno};
  [[maybe_unused]] const ssize_t n = ::write(errpipe_w, &e, sizeof(e));
  ::_exit(127);
}

void setNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

absl::StatusOr<ProcessResult> runProcess(const ProcessSpec& spec, const std::stop_token& stop) {
  if (spec.argv.empty()) {
    return absl::InvalidArgumentError("runProcess: empty argv");
  }
  std::vector<std::string> argv = spec.argv;
  std::vector<char*> argv_c;
  argv_c.reserve(argv.size() + 1);
  for (auto& a : argv) {
    argv_c.push_back(a.data());
  }
  argv_c.push_back(nullptr);

  // stdin is a socket so that writing after the child died is EPIPE, never SIGPIPE.
  int in_sock[2] = {-1, -1};
  int out_pipe[2] = {-1, -1};
  int err_pipe[2] = {-1, -1};
  int exec_pipe[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_sock) != 0 ||
      ::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0 ||
      ::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    for (int* fd : {&in_sock[0], &in_sock[1], &out_pipe[0], &out_pipe[1], &err_pipe[0],
                    &err_pipe[1], &exec_pipe[0], &exec_pipe[1]}) {
      closeFd(*fd);
    }
    return errnoStatus(err, strings::cat("cannot create pipes for ", spec.argv[0]));
  }
  const auto started = Clock::now();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    runHelperChild(parent, in_sock[1], out_pipe[1], err_pipe[1], exec_pipe[1], argv_c.data(),
                   environ);
  }
  const int fork_errno = errno;
  for (int* fd : {&in_sock[1], &out_pipe[1], &err_pipe[1], &exec_pipe[1]}) {
    closeFd(*fd);
  }
  if (pid < 0) {
    for (int* fd : {&in_sock[0], &out_pipe[0], &err_pipe[0], &exec_pipe[0]}) {
      closeFd(*fd);
    }
    return errnoStatus(fork_errno, strings::cat("cannot fork ", spec.argv[0]));
  }
  ChildError child_error{};
  ssize_t n = 0;
  do {
    n = ::read(exec_pipe[0], &child_error, sizeof(child_error));
  } while (n < 0 && errno == EINTR);
  closeFd(exec_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(child_error))) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    for (int* fd : {&in_sock[0], &out_pipe[0], &err_pipe[0]}) {
      closeFd(*fd);
    }
    return errnoStatus(child_error.err, strings::cat("cannot start ", spec.argv[0]));
  }

  ProcessResult result;
  TailBuffer err_tail(spec.stderr_tail_bytes);
  int in_fd = in_sock[0];
  int out_fd = out_pipe[0];
  int err_fd = err_pipe[0];
  for (int fd : {in_fd, out_fd, err_fd}) {
    setNonBlocking(fd);
  }
  std::size_t written = 0;
  if (spec.input.empty()) {
    closeFd(in_fd);
  }
  bool exited = false;
  int status = 0;
  std::optional<Clock::time_point> drain_until;
  std::array<char, 16384> buf{};
  while (true) {
    if (!exited && ::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      drain_until = Clock::now() + std::chrono::milliseconds(500);
      closeFd(in_fd);
    }
    if (exited && out_fd < 0 && err_fd < 0) {
      break;
    }
    if (drain_until && Clock::now() >= *drain_until) {
      break;
    }
    if (!exited && (Clock::now() >= spec.deadline || stop.stop_requested())) {
      (Clock::now() >= spec.deadline ? result.timed_out : result.cancelled) = true;
      ::kill(-pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    std::array<pollfd, 3> pfds{};
    nfds_t count = 0;
    if (in_fd >= 0) {
      pfds[count++] = {in_fd, POLLOUT, 0};
    }
    if (out_fd >= 0) {
      pfds[count++] = {out_fd, POLLIN, 0};
    }
    if (err_fd >= 0) {
      pfds[count++] = {err_fd, POLLIN, 0};
    }
    if (count == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    if (::poll(pfds.data(), count, 20) <= 0) {
      continue;
    }
    for (nfds_t i = 0; i < count; ++i) {
      if (pfds[i].revents == 0) {
        continue;
      }
      const int fd = pfds[i].fd;
      if (fd == in_fd) {
        const ssize_t w = ::send(fd, spec.input.data() + written, spec.input.size() - written,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
          written += static_cast<std::size_t>(w);
        }
        if (written == spec.input.size() || (w < 0 && errno != EAGAIN && errno != EINTR)) {
          closeFd(in_fd);
        }
        continue;
      }
      const ssize_t got = ::read(fd, buf.data(), buf.size());
      if (got > 0) {
        const std::string_view data(buf.data(), static_cast<std::size_t>(got));
        if (fd == out_fd) {
          if (result.output.size() < spec.max_output_bytes) {
            result.output.append(data.substr(0, spec.max_output_bytes - result.output.size()));
          }
        } else {
          err_tail.append(data);
        }
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        closeFd(fd == out_fd ? out_fd : err_fd);
      }
    }
  }
  ::kill(-pid, SIGKILL);
  for (int* fd : {&in_fd, &out_fd, &err_fd}) {
    closeFd(*fd);
  }
  result.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  result.errors = err_tail.text();
  return result;
}

}  // namespace tributary::installer::internal
