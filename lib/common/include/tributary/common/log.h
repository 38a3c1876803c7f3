#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace tributary::log {

class Redactor;  // redact.h

enum class Level { Trace = 0, Debug = 1, Info = 2, Warn = 3, Error = 4 };

std::string_view levelName(Level level);

/// Parses a level name (trace, debug, info, warn or warning, error; any case).
std::optional<Level> parseLevel(std::string_view name);

/// One structured log record. `fields` is a JSON object of extra key/values.
struct Record {
  Level level = Level::Info;
  std::string component;
  std::string message;
  nlohmann::json fields = nlohmann::json::object();
};

/// Where records go. Implementations must be thread-safe.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void write(const Record& record) = 0;
};
using SinkPtr = std::shared_ptr<Sink>;

/// Writes one JSON object per line to a file descriptor (stderr by default), with an RFC 3339
/// UTC timestamp. Invalid UTF-8 in messages is replaced, never thrown on.
SinkPtr makeJsonLineSink(int fd = 2, Level min_level = Level::Info);

/// Logger: a component name plus fields carried into every record, writing to a sink.
/// Cheap to copy; thread-safe if the sink is.
class Logger {
 public:
  explicit Logger(std::string component, SinkPtr sink = nullptr);

  /// A child logger that adds `fields` (a JSON object) to every record.
  [[nodiscard]] Logger with(const nlohmann::json& fields) const;

  /// The same logger (fields, sink) under another component name.
  [[nodiscard]] Logger named(std::string component) const;

  /// The same logger, with `secrets` replaced in every record's message and fields
  /// (redact.h). Null or empty: this logger.
  [[nodiscard]] Logger redacting(std::shared_ptr<const Redactor> secrets) const;

  void log(Level level, std::string_view message, nlohmann::json fields = {}) const;
  void debug(std::string_view message, nlohmann::json fields = {}) const {
    log(Level::Debug, message, std::move(fields));
  }
  void info(std::string_view message, nlohmann::json fields = {}) const {
    log(Level::Info, message, std::move(fields));
  }
  void warn(std::string_view message, nlohmann::json fields = {}) const {
    log(Level::Warn, message, std::move(fields));
  }
  void error(std::string_view message, nlohmann::json fields = {}) const {
    log(Level::Error, message, std::move(fields));
  }

  [[nodiscard]] const SinkPtr& sink() const { return sink_; }

 private:
  std::string component_;
  nlohmann::json fields_ = nlohmann::json::object();
  SinkPtr sink_;
};

/// The process default sink (JSON lines on stderr at Info), used when a Logger gets no sink.
SinkPtr defaultSink();

}  // namespace tributary::log
