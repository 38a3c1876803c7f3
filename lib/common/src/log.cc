#include "tributary/common/log.h"

#include "tributary/common/strings.h"

#include <cerrno>
#include <chrono>
#include <ctime>
#include <unistd.h>

namespace tributary::log {
namespace {

std::string utcTimestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::system_clock::to_time_t(now);
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
      1000000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out(buf, n);
  char frac[16];
  std::snprintf(frac, sizeof(frac), ".%06ldZ", static_cast<long>(micros));
  out += frac;
  return out;
}

class JsonLineSink final : public Sink {
 public:
  JsonLineSink(int fd, Level min_level) : fd_(fd), min_level_(min_level) {}

  void write(const Record& record) override {
    if (record.level < min_level_) {
      return;
    }
    nlohmann::json line = nlohmann::json::object();
    line["ts"] = utcTimestamp();
    line["level"] = levelName(record.level);
    line["component"] = record.component;
    line["msg"] = record.message;
    if (record.fields.is_object()) {
      for (const auto& [key, value] : record.fields.items()) {
        if (!line.contains(key)) {
          line[key] = value;
        }
      }
    }
    // Replace invalid UTF-8 rather than throw: log content often comes from plugins.
    std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    text.push_back('\n');
    const std::lock_guard lock(mu_);
    const char* p = text.data();
    size_t left = text.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        return;  // Nowhere left to report a failing log sink.
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }

 private:
  int fd_;
  Level min_level_;
  std::mutex mu_;
};

}  // namespace

std::string_view levelName(Level level) {
  switch (level) {
    case Level::Trace:
      return "trace";
    case Level::Debug:
      return "debug";
    case Level::Info:
      return "info";
    case Level::Warn:
      return "warn";
    case Level::Error:
      return "error";
  }
  return "info";
}

SinkPtr makeJsonLineSink(int fd, Level min_level) {
  return std::make_shared<JsonLineSink>(fd, min_level);
}

std::optional<Level> parseLevel(std::string_view name) {
  const std::string lower = strings::toLower(name);
  if (lower == "trace") {
    return Level::Trace;
  }
  if (lower == "debug") {
    return Level::Debug;
  }
  if (lower == "info") {
    return Level::Info;
  }
  if (lower == "warn" || lower == "warning") {
    return Level::Warn;
  }
  if (lower == "error") {
    return Level::Error;
  }
  return std::nullopt;
}

SinkPtr defaultSink() {
  // The one process-wide default; TRIBUTARY_LOG_LEVEL is read once.
  static const SinkPtr kSink = [] {
    const char* env = std::getenv("TRIBUTARY_LOG_LEVEL");  // NOLINT(concurrency-mt-unsafe)
    const auto level = env != nullptr ? parseLevel(env) : std::nullopt;
    return makeJsonLineSink(2, level.value_or(Level::Info));
  }();
  return kSink;
}

Logger::Logger(std::string component, SinkPtr sink)
    : component_(std::move(component)), sink_(sink ? std::move(sink) : defaultSink()) {}

Logger Logger::with(const nlohmann::json& fields) const {
  Logger child = *this;
  if (fields.is_object()) {
    for (const auto& [key, value] : fields.items()) {
      child.fields_[key] = value;
    }
  }
  return child;
}

Logger Logger::named(std::string component) const {
  Logger child = *this;
  child.component_ = std::move(component);
  return child;
}

void Logger::log(Level level, std::string_view message, nlohmann::json fields) const {
  Record record;
  record.level = level;
  record.component = component_;
  record.message = std::string(message);
  record.fields = fields_;
  if (fields.is_object()) {
    for (auto& [key, value] : fields.items()) {
      record.fields[key] = std::move(value);
    }
  }
  sink_->write(record);
}

}  // namespace tributary::log
