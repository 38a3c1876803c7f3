#pragma once

#include "tributary/plugin_host/plugin_host.h"
#include "tributary/sandbox/sandbox.h"

#include "absl/status/statusor.h"

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace tributary::plugin_host {

/// A child process (a connector; the agent's Redis TLS tunnel) in its own process group with piped
/// stdout/stderr and stdin on /dev/null.
/// Thread-safe. The destructor SIGKILLs the group and reaps the child if that has not happened yet.
class ChildProcess {
 public:
  /// fork+exec `argv` with exactly `env`, in `dir`. The child dies with the calling thread
  /// (PR_SET_PDEATHSIG). exec, chdir and sandbox failures are reported here, not as an exit
  /// code. `sandbox`, when set, confines the child from before chdir to exec.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> spawn(
      const std::vector<std::string>& argv, const std::vector<std::string>& env,
      const std::filesystem::path& dir, const sandbox::Prepared* sandbox = nullptr);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  /// Ownership of the pipe read ends passes to the caller.
  int releaseStdout();
  int releaseStderr();

  /// Reaps the child if it has exited within `timeout` (0 = just check).
  std::optional<ExitInfo> waitFor(std::chrono::milliseconds timeout);
  /// Sends `sig` to the whole process group (and the child itself).
  void signalGroup(int sig);
  /// SIGKILL the group and reap the child (blocking; SIGKILL cannot be ignored).
  ExitInfo killAndReap();

 private:
  ChildProcess(pid_t pid, int stdout_fd, int stderr_fd)
      : pid_(pid), stdout_fd_(stdout_fd), stderr_fd_(stderr_fd) {}

  std::optional<ExitInfo> reapIfExited();

  pid_t pid_;
  int stdout_fd_;
  int stderr_fd_;
  std::mutex mu_;
  std::optional<ExitInfo> exit_;  // Guarded by mu_.
};

/// Kills and reaps this process's children that run as `uid` and are no live ChildProcess: what
/// a sandboxed connector left outside its process group (a `setsid` child), handed to us when
/// its parent died because the agent and the CLI are child subreapers with a connector user
/// (sandbox::adoptOrphans). Repeats until none is left (killing one hands us its children).
/// Returns how many it killed.
int reapEscapedChildren(uid_t uid);

}  // namespace tributary::plugin_host
