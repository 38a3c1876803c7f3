#pragma once

#include "tributary/common/log.h"

#include "absl/status/statusor.h"
#include "crash_dump.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace tributary::plugin_host {

/// Drains a connector's stdout and stderr for its whole life on one thread, so the connector
/// can never block on a full pipe. The first stdout line is the handshake; everything after it
/// on stdout is counted and discarded (go-plugin does the same). stderr lines are parsed as
/// hclog JSON when they are, logged as plain lines otherwise, and rate-limited. A crash dump on
/// stderr (a Go `panic:` / `fatal error:` and its goroutine trace, a Python `Traceback`) is
/// recognised, so an error message can name its cause instead of quoting the dump's tail.
class OutputPump {
 public:
  OutputPump(int stdout_fd, int stderr_fd, log::Logger logger, int max_lines_per_second);
  ~OutputPump();
  OutputPump(const OutputPump&) = delete;
  OutputPump& operator=(const OutputPump&) = delete;

  /// Waits for the first stdout line. Errors: DeadlineExceeded at `deadline`, Unavailable when
  /// stdout closes first (the process exited), FailedPrecondition for an over-long line.
  absl::StatusOr<std::string> waitHandshake(std::chrono::steady_clock::time_point deadline);

  /// Lets the pump finish reading what is left (up to `grace`), then stops it and closes the fds.
  void stop(std::chrono::milliseconds grace);

  /// The last stderr lines, oldest first, for error messages; hclog JSON lines rendered by
  /// renderStderrLine(), crash dumps condensed to their cause (see crash()).
  [[nodiscard]] std::vector<std::string> stderrTail() const;
  /// The first Go crash dump, else the last Python traceback, seen on stderr so far.
  [[nodiscard]] std::optional<Crash> crash() const;
  [[nodiscard]] std::uint64_t discardedStdoutBytes() const { return stdout_discarded_.load(); }

  /// One stderr line to a log record (exposed for tests).
  static log::Record parseStderrLine(std::string_view line);
  /// One stderr line as it appears in error messages: plain lines as they are, hclog JSON as
  /// `[LEVEL] module: message: key=value …` (a Python traceback in a field reduced to its
  /// exception line and frame).
  static std::string renderStderrLine(std::string_view line);

 private:
  void run();
  void onStdout(std::string_view data);
  void onStderr(std::string_view data);
  void emitLine(std::string_view line);
  static std::string render(std::string_view line, const log::Record& record);
  void flushSuppressed();

  int stdout_fd_;
  int stderr_fd_;
  log::Logger logger_;
  int max_lines_per_second_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<std::string> handshake_;  // Guarded by mu_.
  bool stdout_eof_ = false;               // Guarded by mu_.
  bool handshake_too_long_ = false;       // Guarded by mu_.
  std::deque<std::string> tail_;          // Guarded by mu_.
  CrashDumpReader crash_reader_;          // Guarded by mu_.

  // Pump-thread state.
  std::string stdout_partial_;
  std::string stderr_partial_;
  std::chrono::steady_clock::time_point window_start_{};
  int window_lines_ = 0;
  std::uint64_t suppressed_ = 0;

  std::atomic<std::uint64_t> stdout_discarded_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::mutex stop_mu_;  // Serialises stop() callers.
  std::thread thread_;
};

}  // namespace tributary::plugin_host
