#pragma once

// Crash dumps in a connector's stderr: a Go `panic:` / `fatal error:` with its goroutine trace, a
// Python traceback (plain, or inside an hclog field), so that an error can name the cause of a
// crash instead of quoting the last lines of the dump.

#include "tributary/common/log.h"

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::plugin_host {

/// What a crash dump said.
struct Crash {
  /// Go: the `panic: …` / `fatal error: …` line; Python: the exception line (`KeyError: 'x'`).
  std::string cause;
  /// The innermost frame of the connector's own code (not the Go runtime, go-plugin, gRPC, the
  /// SDKs or the Python standard library), else the innermost frame: `function (file:line)`.
  /// Empty when the dump had no frame.
  std::string location;
  /// The last warning and error lines logged before the dump (rendered), oldest first.
  std::vector<std::string> warnings_before;
};

/// A Python traceback held in one string (an hclog field): its exception line and frame.
std::optional<Crash> pythonTracebackIn(std::string_view text);

/// Reads stderr line by line (one thread) and keeps the crash that ended the process: the first
/// Go crash, else the last Python traceback.
class CrashDumpReader {
 public:
  /// One non-empty stderr line, its parsed record and how it is rendered in messages. Returns
  /// true when the line belongs to a dump (it is then left out of "last lines").
  bool feed(std::string_view line, const log::Record& record, const std::string& rendered);
  /// A blank line: it ends the panicking goroutine's trace.
  void blankLine();
  /// The end of stderr: a Go dump cut short is kept as far as it went.
  void end();
  [[nodiscard]] const std::optional<Crash>& crash() const { return crash_; }

 private:
  bool scan(std::string_view line, const log::Record& record);
  void finishGoDump();

  enum class Dump { None, GoHeader, GoFrames, Python };
  Dump dump_ = Dump::None;
  std::size_t dump_lines_ = 0;
  bool go_crash_seen_ = false;
  bool go_frames_done_ = false;
  std::string frame_function_;  // The Go function line awaiting its file line.
  bool frame_is_own_ = false;
  std::string go_location_;
  std::string go_fallback_location_;
  std::string py_location_;
  std::string py_fallback_location_;
  std::deque<std::string> warnings_;  // The last warn/error lines outside dumps.
  std::optional<Crash> crash_;
};

}  // namespace tributary::plugin_host
