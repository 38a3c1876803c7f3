#include "crash_dump.h"

#include "tributary/common/strings.h"

#include <algorithm>
#include <array>

namespace tributary::plugin_host {
namespace {

// How long a cause is kept, how many lines of a dump are read at most, and how many warnings
// before it are kept.
constexpr std::size_t kCauseBytes = 512;
constexpr std::size_t kGoHeaderLines = 10;
constexpr std::size_t kMaxDumpLines = 2000;
constexpr std::size_t kWarningsKept = 3;
constexpr std::string_view kPythonTraceback = "Traceback (most recent call last):";

// Go modules that are never the connector's own code: go-plugin and its dependencies, gRPC,
// protobuf, x/ packages and our Go SDK.
constexpr std::array<std::string_view, 8> kGoFrameworkPrefixes = {"github.com/hashicorp/go-plugin",
                                                                  "github.com/hashicorp/yamux",
                                                                  "github.com/hashicorp/go-hclog",
                                                                  "google.golang.org/grpc",
                                                                  "google.golang.org/protobuf",
                                                                  "github.com/golang/protobuf",
                                                                  "golang.org/x/",
                                                                  "tributary.dev/sdk/"};

// `pkg/path.(*T).Method(0x1, {0x2, 0x3})` → `pkg/path.(*T).Method`.
std::string_view goFunctionName(std::string_view line) {
  if (!line.ends_with(')')) {
    return line;
  }
  int depth = 0;
  for (std::size_t i = line.size(); i-- > 0;) {
    if (line[i] == ')') {
      ++depth;
    } else if (line[i] == '(' && --depth == 0) {
      return line.substr(0, i);
    }
  }
  return line;
}

// The package of a Go function name ("" for builtins such as `panic`).
std::string_view goPackage(std::string_view function) {
  const auto slash = function.rfind('/');
  const auto dot = function.find('.', slash == std::string_view::npos ? 0 : slash + 1);
  return dot == std::string_view::npos ? std::string_view() : function.substr(0, dot);
}

bool goRuntimeFrame(std::string_view function) {
  const std::string_view package = goPackage(function);
  return package.empty() || package == "runtime" || package.starts_with("runtime/");
}

// The connector's own code: package main, or a module (its first path element has a dot, unlike
// the standard library's) that is not one of the framework modules.
bool goOwnFrame(std::string_view function) {
  const std::string_view package = goPackage(function);
  if (package == "main") {
    return true;
  }
  if (package.substr(0, package.find('/')).find('.') == std::string_view::npos) {
    return false;
  }
  return std::none_of(kGoFrameworkPrefixes.begin(), kGoFrameworkPrefixes.end(),
                      [&](std::string_view prefix) { return package.starts_with(prefix); });
}

// `\t/src/x.go:12 +0x1d` → `/src/x.go:12`.
std::string_view goFileLine(std::string_view line) {
  line = strings::trim(line);
  if (const auto offset = line.rfind(" +0x"); offset != std::string_view::npos) {
    line = line.substr(0, offset);
  }
  return line;
}

// A Python frame line `  File "/x/c.py", line 3, in load` → `load (/x/c.py:3)` in `location`
// (every frame: the last one read is the innermost) and, for the connector's own files (not
// the standard library, site-packages or our SDK), in `own`. False for other lines.
bool pythonFrame(std::string_view line, std::string& location, std::string& own) {
  constexpr std::string_view kFile = "  File \"";
  if (!line.starts_with(kFile)) {
    return false;
  }
  line.remove_prefix(kFile.size());
  const auto quote = line.find('"');
  if (quote == std::string_view::npos) {
    return false;
  }
  const std::string_view path = line.substr(0, quote);
  std::string_view rest = line.substr(quote + 1);
  std::string_view number;
  std::string_view function;
  if (rest.starts_with(", line ")) {
    rest.remove_prefix(7);
    number = rest.substr(0, rest.find(','));
    if (const auto in = rest.find(", in "); in != std::string_view::npos) {
      function = rest.substr(in + 5);
    }
  }
  location = function.empty() ? strings::cat(path, ":", number)
                              : strings::cat(function, " (", path, ":", number, ")");
  const bool library = path.starts_with("<") ||
                       path.find("/lib/python") != std::string_view::npos ||
                       path.find("/site-packages/") != std::string_view::npos ||
                       path.find("/dist-packages/") != std::string_view::npos ||
                       path.find("/tributary_connector/") != std::string_view::npos;
  if (!library) {
    own = location;
  }
  return true;
}

}  // namespace

std::optional<Crash> pythonTracebackIn(std::string_view text) {
  const auto start = text.find(kPythonTraceback);
  if (start == std::string_view::npos) {
    return std::nullopt;
  }
  Crash crash;
  std::string location;
  std::string own;
  for (const std::string_view raw : strings::split(text.substr(start), '\n')) {
    const std::string_view line = raw.ends_with('\r') ? raw.substr(0, raw.size() - 1) : raw;
    if (line == kPythonTraceback) {
      location.clear();  // A chained traceback: the last one is the exception that ended it.
      own.clear();
      continue;
    }
    if (line.empty() || pythonFrame(line, location, own) || line.front() == ' ' ||
        line.front() == '\t') {
      continue;
    }
    crash.cause = std::string(line);  // The last unindented line: the (last chained) exception.
    crash.location = own.empty() ? location : own;
  }
  if (crash.cause.empty()) {
    return std::nullopt;
  }
  return crash;
}

bool CrashDumpReader::feed(std::string_view line, const log::Record& record,
                           const std::string& rendered) {
  if (scan(line, record)) {
    return true;
  }
  if (record.level >= log::Level::Warn) {
    warnings_.push_back(rendered);
    if (warnings_.size() > kWarningsKept) {
      warnings_.pop_front();
    }
  }
  return false;
}

void CrashDumpReader::blankLine() {
  if (dump_ == Dump::GoFrames) {
    finishGoDump();
  }
}

void CrashDumpReader::end() {
  if (dump_ == Dump::GoHeader || dump_ == Dump::GoFrames) {
    finishGoDump();
  }
}

bool CrashDumpReader::scan(std::string_view line, const log::Record& record) {
  const bool plain = record.message == line && record.fields.empty();
  switch (dump_) {
    case Dump::None: {
      if (plain && (line.starts_with("panic: ") || line.starts_with("fatal error: "))) {
        if (go_crash_seen_) {
          return false;  // The first Go crash is the one that ends the process.
        }
        go_crash_seen_ = true;
        {
          crash_ = Crash{
              std::string(line.substr(0, kCauseBytes)), "", {warnings_.begin(), warnings_.end()}};
        }
        dump_ = Dump::GoHeader;
        dump_lines_ = 0;
        go_frames_done_ = false;
        frame_function_.clear();
        go_location_.clear();
        go_fallback_location_.clear();
        return false;  // The cause stays in the tail.
      }
      if (plain && line == kPythonTraceback) {
        dump_ = Dump::Python;
        dump_lines_ = 0;
        py_location_.clear();
        py_fallback_location_.clear();
        return true;
      }
      if (!plain && record.level >= log::Level::Error && !go_crash_seen_) {
        for (const auto& [key, value] : record.fields.items()) {
          if (value.is_string()) {
            if (auto traceback = pythonTracebackIn(value.get<std::string>())) {
              traceback->warnings_before = {warnings_.begin(), warnings_.end()};
              crash_ = *std::move(traceback);
              break;
            }
          }
        }
      }
      return false;
    }
    case Dump::GoHeader:
      // The panic value may span lines; `[signal SIGSEGV …]` and nested `\tpanic:` lines follow.
      if (line.starts_with("goroutine ") && line.ends_with(":")) {
        dump_ = Dump::GoFrames;
        return true;
      }
      if (!plain || ++dump_lines_ > kGoHeaderLines) {
        // Not a Go crash dump after all (a log line that happens to start with `panic: `).
        dump_ = Dump::None;
        go_crash_seen_ = false;
        crash_.reset();
        return false;
      }
      return true;
    case Dump::GoFrames:
      if (!plain || ++dump_lines_ > kMaxDumpLines) {
        finishGoDump();
        return false;
      }
      if (line.front() == '\t') {
        if (!frame_function_.empty()) {
          const std::string location = strings::cat(frame_function_, " (", goFileLine(line), ")");
          if (go_location_.empty() && frame_is_own_) {
            go_location_ = location;
          }
          if (go_fallback_location_.empty() && !goRuntimeFrame(frame_function_)) {
            go_fallback_location_ = location;
          }
          frame_function_.clear();
        }
        return true;
      }
      if (go_frames_done_) {
        finishGoDump();  // Past the panicking goroutine's trace.
        return false;
      }
      if (line.starts_with("created by ")) {
        go_frames_done_ = true;  // Its file line follows; the goroutine's trace ends there.
        frame_function_.clear();
        return true;
      }
      if (!line.starts_with("...")) {
        frame_function_ = std::string(goFunctionName(line));
        frame_is_own_ = goOwnFrame(frame_function_);
      }
      return true;
    case Dump::Python:
      if (!plain || ++dump_lines_ > kMaxDumpLines) {
        dump_ = Dump::None;
        return false;
      }
      if (pythonFrame(line, py_fallback_location_, py_location_) || line.front() == ' ' ||
          line.front() == '\t') {
        return true;
      }
      if (!go_crash_seen_) {
        // The exception line. A chained traceback that follows replaces it: the last one is the
        // exception that ended the program.
        crash_ = Crash{std::string(line.substr(0, kCauseBytes)),
                       py_location_.empty() ? py_fallback_location_ : py_location_,
                       {warnings_.begin(), warnings_.end()}};
      }
      dump_ = Dump::None;
      return false;
  }
  return false;
}

void CrashDumpReader::finishGoDump() {
  if (crash_ && crash_->location.empty()) {
    crash_->location = go_location_.empty() ? go_fallback_location_ : go_location_;
  }
  dump_ = Dump::None;
}

}  // namespace tributary::plugin_host
