#include "hclog.h"

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "plugin_env.h"

#include <google/protobuf/stubs/logging.h>
#include <grpc/support/log.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <ctime>
#include <string>

namespace tributary::sdk {
namespace internal {
namespace {

std::string_view levelName(LogLevel level) {
  switch (level) {
    case LogLevel::Trace:
      return "trace";
    case LogLevel::Debug:
      return "debug";
    case LogLevel::Info:
      return "info";
    case LogLevel::Warn:
      return "warn";
    case LogLevel::Error:
      return "error";
  }
  return "info";
}

// Process-wide log settings. A function-local static so logging works before serve() and
// during static destruction of other objects' users (it is never destroyed).
struct LogState {
  absl::Mutex mu;
  std::string module ABSL_GUARDED_BY(mu) = "connector";
  LogLevel min_level ABSL_GUARDED_BY(mu) = LogLevel::Info;
};

LogState& state() {
  static auto* const s = new LogState();
  return *s;
}

void grpcLogFunction(gpr_log_func_args* args) {
  LogLevel level = LogLevel::Info;
  switch (args->severity) {
    case GPR_LOG_SEVERITY_DEBUG:
      level = LogLevel::Debug;
      break;
    case GPR_LOG_SEVERITY_INFO:
      level = LogLevel::Info;
      break;
    case GPR_LOG_SEVERITY_ERROR:
      level = LogLevel::Error;
      break;
  }
  log(level, args->message != nullptr ? args->message : "",
      {{"library", "grpc"},
       {"file", args->file != nullptr ? args->file : ""},
       {"line", std::to_string(args->line)}});
}

void protobufLogHandler(google::protobuf::LogLevel pb_level, const char* filename, int line,
                        const std::string& message) {
  LogLevel level = LogLevel::Error;
  switch (pb_level) {
    case google::protobuf::LOGLEVEL_INFO:
      level = LogLevel::Info;
      break;
    case google::protobuf::LOGLEVEL_WARNING:
      level = LogLevel::Warn;
      break;
    default:
      level = LogLevel::Error;
      break;
  }
  log(level, message,
      {{"library", "protobuf"},
       {"file", filename != nullptr ? filename : ""},
       {"line", std::to_string(line)}});
}

}  // namespace

std::string hclogTimestamp(std::chrono::system_clock::time_point when) {
  const auto since_epoch = when.time_since_epoch();
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(since_epoch - secs).count();
  if (micros < 0) {  // Before 1970: keep the fraction positive.
    micros += 1000000;
    secs -= std::chrono::seconds(1);
  }
  const std::time_t t = static_cast<std::time_t>(secs.count());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  const int n = std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
                              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                              tm.tm_sec, static_cast<long>(micros));
  return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

std::string formatHclogLine(LogLevel level, std::string_view module, std::string_view message,
                            const LogFields& fields, std::chrono::system_clock::time_point when) {
  nlohmann::json line = nlohmann::json::object();
  for (const auto& [key, value] : fields) {
    if (!key.empty() && key[0] != '@') {
      line[key] = value;
    }
  }
  line["@level"] = levelName(level);
  line["@message"] = std::string(message);
  line["@timestamp"] = hclogTimestamp(when);
  if (!module.empty()) {
    line["@module"] = std::string(module);
  }
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.push_back('\n');
  return text;
}

void configureLog(std::string_view module, LogLevel min_level) {
  LogState& s = state();
  absl::MutexLock lock(&s.mu);
  s.module = std::string(module);
  s.min_level = min_level;
}

void routeLibraryLogs() {
  gpr_set_log_function(&grpcLogFunction);
  google::protobuf::SetLogHandler(&protobufLogHandler);
}

}  // namespace internal

void log(LogLevel level, std::string_view message, const LogFields& fields) {
  internal::LogState& s = internal::state();
  std::string module;
  {
    absl::MutexLock lock(&s.mu);
    if (level < s.min_level) {
      return;
    }
    module = s.module;
  }
  const std::string line =
      internal::formatHclogLine(level, module, message, fields, std::chrono::system_clock::now());
  // One write per line under the lock, so concurrent lines never interleave.
  absl::MutexLock lock(&s.mu);
  (void)internal::writeAll(2, line);  // Nowhere left to report a failing stderr.
}

}  // namespace tributary::sdk
