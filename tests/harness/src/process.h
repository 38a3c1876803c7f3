#pragma once

// Private helpers of the harness: spawning server processes safely from a multi-threaded test
// binary, waiting for them, and small filesystem/network utilities.

#include "tributary/testing/services.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace tributary::harness::internal {

/// A user to run a child as (when the test runs as root; postgres refuses to run as root).
struct RunAs {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;
  std::string home;
};

/** Looks up a system user. */
absl::StatusOr<RunAs> lookupUser(const std::string& name);

struct SpawnOptions {
  /// argv[0] must be an absolute path (no PATH search happens after fork).
  std::vector<std::string> argv;
  /// The complete environment of the child ("K=V").
  std::vector<std::string> env;
  std::string workdir = "/";
  /// stdout and stderr are appended here. Empty: both go to /dev/null, unless inherit_stderr.
  std::string log_path;
  /// Keep this process's stderr as the child's stderr (stdout then goes to /dev/null).
  bool inherit_stderr = false;
  /// If >= 0, becomes the child's stdin (else /dev/null).
  int stdin_fd = -1;
  std::optional<RunAs> run_as;
};

/**
 * Forks and execs a child in a new process group (pgid == pid), with default signal dispositions,
 * an empty signal mask and every fd above 2 closed on exec. Only async-signal-safe calls happen
 * between fork and exec. Returns the pid; exec failures are reported as errors (not as a child
 * that exits 127).
 */
absl::StatusOr<pid_t> spawn(const SpawnOptions& options);

/** Result of waiting for a child. */
struct ExitInfo {
  bool exited = false;        // false: still running when the wait timed out
  int wait_status = 0;        // raw waitpid status (valid when exited and known)
  bool status_known = false;  // false if someone else reaped it (ECHILD)
};

/** Waits up to `timeout` for child `pid` to exit, reaping it. */
ExitInfo waitForExit(pid_t pid, std::chrono::milliseconds timeout);

/** True if child `pid` has exited; reaps it and fills `info`. */
bool hasExited(pid_t pid, ExitInfo* info);

/** "exited with status 3", "killed by signal 9 (Killed)", … */
std::string describeExit(const ExitInfo& info);

/** Runs a command to completion (with a timeout); returns its wait status description error if
 *  it did not exit 0. */
absl::Status runToCompletion(const SpawnOptions& options, std::chrono::milliseconds timeout);

/** Sends `sig` to the process group `pgid` (ESRCH is not an error). */
void signalGroup(pid_t pgid, int sig);

/** A TCP port on 127.0.0.1 that was free a moment ago. */
absl::StatusOr<int> pickFreePort();

/** Creates a fresh directory `<base>/tributary-<prefix>-XXXXXX`, mode 0700, chowned to `owner`
 *  if given. The base is $TRIBUTARY_TEST_TMPDIR, $TMPDIR or /tmp; when another user must reach
 *  it, a base that user cannot traverse is replaced by /tmp. */
absl::StatusOr<std::string> makeTempDir(const std::string& prefix,
                                        const std::optional<RunAs>& owner);

/** rm -rf; errors are ignored (best effort). */
void removeTree(const std::string& path);

/** The last `max_bytes` of a file ("" if unreadable), starting at a line boundary if possible. */
std::string fileTail(const std::string& path, std::size_t max_bytes);

/** The source tree (scripts/, crds/): $TRIBUTARY_SOURCE_DIR, else the one the harness was
 *  built from. */
std::string sourceDir();

/** Writes scripts/test-tls-pki.sh's certificates into `dir` (a directory `owner`, the server's
 *  user, may create: the keys must belong to it). Logs to `log_path`. */
absl::Status writeTestTlsFiles(const std::string& dir, const std::optional<RunAs>& owner,
                               const std::string& log_path);
/** Their paths. */
TlsFiles testTlsFilesIn(const std::string& dir);

/** Whether `path` is an executable file. */
bool isExecutable(const std::string& path);

/** Looks a program up on $PATH, then in /usr/sbin, /usr/bin, /sbin, /bin. */
std::optional<std::string> findProgram(const std::string& name);

/** The environment for server children: PATH plus the C locale. */
std::vector<std::string> serverEnvironment();

/** Marks pids as the harness's own, so childProcesses() can leave them out. */
void registerHarnessPid(pid_t pid);
void unregisterHarnessPid(pid_t pid);
bool isHarnessPid(pid_t pid);

}  // namespace tributary::harness::internal
