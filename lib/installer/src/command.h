#pragma once

// Runs install/update commands: `/bin/sh -c <command>` in a directory, in its own session, with
// an explicit environment, stdin on /dev/null, stdout+stderr captured (tail kept), a timeout and
// cancellation. The whole process group is killed on timeout, on cancellation, and once the
// shell has exited (background processes may not keep writing into the connector directory).

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <stop_token>
#include <string>
#include <vector>

namespace tributary::installer::internal {

struct CommandSpec {
  std::string command;
  std::filesystem::path dir;
  std::map<std::string, std::string> env;  ///< The complete environment.
  std::chrono::milliseconds timeout{std::chrono::minutes(15)};
  std::size_t tail_bytes = 8192;
};

struct CommandResult {
  int exit_code = -1;  ///< When the shell exited normally.
  int signal = 0;      ///< When it was killed by a signal.
  bool timed_out = false;
  bool cancelled = false;
  std::string output_tail;         ///< Last `tail_bytes` of stdout+stderr, interleaved.
  std::uint64_t output_bytes = 0;  ///< Total output size.
  std::chrono::milliseconds duration{0};

  [[nodiscard]] bool succeeded() const {
    return exit_code == 0 && signal == 0 && !timed_out && !cancelled;
  }
};

/// Runs the command to completion. Fails only if it cannot be started at all; a failing command
/// is a result (see commandError).
absl::StatusOr<CommandResult> runCommand(const CommandSpec& spec, const std::stop_token& stop = {});

/// The error for a failed command: "<what> failed: exit code 2 after 1.2s; output (last N
/// bytes): …". Code: DeadlineExceeded (timeout), Cancelled, else FailedPrecondition.
absl::Status commandError(std::string_view what, const CommandSpec& spec,
                          const CommandResult& result);

/// A helper program of ours (not user code): argv[0] is an absolute path, the environment is
/// the installer's own, `input` is written to its stdin (then closed), stdout is kept whole (up
/// to `max_output_bytes`), stderr's tail. Same isolation as commands: own session,
/// PDEATHSIG, no inherited descriptors. At the deadline or on `stop` the process group is
/// killed at once (SIGKILL) and reaped before this returns.
struct ProcessSpec {
  std::vector<std::string> argv;
  std::string input;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::size_t max_output_bytes = 1U << 20U;
  std::size_t stderr_tail_bytes = 4096;
};

struct ProcessResult {
  int exit_code = -1;
  int signal = 0;
  bool timed_out = false;
  bool cancelled = false;
  std::string output;  ///< stdout
  std::string errors;  ///< tail of stderr
  std::chrono::milliseconds duration{0};
};

absl::StatusOr<ProcessResult> runProcess(const ProcessSpec& spec, const std::stop_token& stop = {});

/// Builds the environment of install commands: the host variables named in `inherited`
/// (a trailing `*` matches a prefix), then `extra`, then `spec_env`.
std::map<std::string, std::string> buildEnv(const std::vector<std::string>& inherited,
                                            const std::map<std::string, std::string>& extra,
                                            const std::map<std::string, std::string>& spec_env);

}  // namespace tributary::installer::internal
