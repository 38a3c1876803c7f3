#pragma once
// Starting a binary under test as a separate process.

#include <absl/status/statusor.h>
#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::harness {

/// Starts `argv` (argv[0] an absolute path) in its own process group with this process's
/// environment; its stdout and stderr are appended to `log_path`. Exec failures are errors. The
/// caller signals and waits for the child (waitpid).
absl::StatusOr<pid_t> spawnLogged(const std::vector<std::string>& argv,
                                  const std::string& log_path);

struct CommandResult {
  int exit_code = -1;
  std::string output;  ///< stdout and stderr, interleaved as written
  std::string error;   ///< set when the command could not run, was killed or timed out
  [[nodiscard]] bool ok() const { return error.empty() && exit_code == 0; }
};

/// Runs `argv` (argv[0] an absolute path) to completion in `workdir` with exactly `env`, stdin
/// from `input`, output captured through files `<scratch>.out`/`.in` (removed afterwards).
/// Killed (process group) after `timeout`.
CommandResult runCommand(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                         const std::string& workdir, const std::string& scratch,
                         std::string_view input, std::chrono::milliseconds timeout);

}  // namespace tributary::harness
