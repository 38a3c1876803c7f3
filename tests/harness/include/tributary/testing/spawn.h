#pragma once
// Starting a binary under test as a separate process.

#include <absl/status/statusor.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace tributary::harness {

/// Starts `argv` (argv[0] an absolute path) in its own process group with this process's
/// environment; its stdout and stderr are appended to `log_path`. Exec failures are errors. The
/// caller signals and waits for the child (waitpid).
absl::StatusOr<pid_t> spawnLogged(const std::vector<std::string>& argv,
                                  const std::string& log_path);

}  // namespace tributary::harness
