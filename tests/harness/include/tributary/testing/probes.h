#pragma once

// Process-resource probes for leak tests: open fds, threads, child processes, files in a dir.
// All read /proc of the calling process; all are thread-safe.
//
// Typical use: take a baseline, exercise the code under test, then expect the counts to come back
// (use eventually(), resources are often released asynchronously).

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace tributary::harness {

/** Number of open file descriptors of this process (not counting the one used to list them). */
int openFdCount();

struct OpenFd {
  int fd = -1;
  /// readlink of /proc/self/fd/N: a path, "socket:[inode]", "pipe:[inode]", "anon_inode:…".
  std::string target;
};
/** Open file descriptors with what they point at; sorted by fd. Handy in failure messages. */
std::vector<OpenFd> openFds();
/** openFds() as one line per fd, for gtest messages. */
std::string describeOpenFds();

/** Number of threads of this process (`Threads:` in /proc/self/status). */
int threadCount();

struct ChildProcess {
  pid_t pid = 0;
  /// State letter from /proc/<pid>/stat: R running, S sleeping, D disk wait, Z zombie, T stopped…
  char state = '?';
  /// The command name (comm, at most 15 chars).
  std::string command;
  /// True for processes the harness itself started (servers, watchdog).
  bool harness = false;

  [[nodiscard]] bool zombie() const { return state == 'Z'; }
};

enum class ChildFilter { ExcludeHarness, IncludeHarness };

/** Direct children of this process (ppid == getpid()), zombies included, sorted by pid. By
 *  default the harness's own servers and watchdog are left out, so a leak test can expect an
 *  empty list after the code under test cleaned up. */
std::vector<ChildProcess> childProcesses(ChildFilter filter = ChildFilter::ExcludeHarness);
/** childProcesses() as text ("1234 Z connector"), for gtest messages. */
std::string describeChildProcesses(ChildFilter filter = ChildFilter::ExcludeHarness);

/** Regular files and other non-directories under `dir`, recursively, as paths relative to `dir`,
 *  sorted. Empty if `dir` does not exist. */
std::vector<std::string> listFiles(const std::string& dir);

/** Polls `condition` every `interval` until it is true or `timeout` passed; returns its last
 *  value. For "the fd count comes back down" style assertions. */
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(10),
                std::chrono::milliseconds interval = std::chrono::milliseconds(20));

}  // namespace tributary::harness
