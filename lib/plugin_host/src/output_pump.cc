#include "output_pump.h"

#include "tributary/common/strings.h"

#include "crash_dump.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <poll.h>
#include <unistd.h>

namespace tributary::plugin_host {
namespace {

// go-plugin's default stderr line buffer; longer lines are logged in fragments.
constexpr std::size_t kMaxLineBytes = 64U * 1024U;
constexpr std::size_t kTailLines = 20;
constexpr std::size_t kTailLineBytes = 512;
constexpr auto kPollInterval = std::chrono::milliseconds(100);

// Plain lines: go-plugin's `[LEVEL]` prefixes, and crash output promoted to errors.
log::Level plainLineLevel(std::string_view line) {
  for (const auto& [prefix, level] : std::initializer_list<std::pair<std::string_view, log::Level>>{
           {"[TRACE]", log::Level::Trace},
           {"[DEBUG]", log::Level::Debug},
           {"[INFO]", log::Level::Info},
           {"[WARN]", log::Level::Warn},
           {"[ERROR]", log::Level::Error},
           {"panic: ", log::Level::Error},
           {"fatal error: ", log::Level::Error},
           {"Traceback ", log::Level::Error}}) {
    if (line.starts_with(prefix)) {
      return level;
    }
  }
  return log::Level::Info;
}

std::string upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

// An hclog field value for a one-line message.
std::string fieldText(const nlohmann::json& value) {
  if (!value.is_string()) {
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string text = value.get<std::string>();
  if (auto traceback = pythonTracebackIn(text)) {
    text = traceback->location.empty()
               ? traceback->cause
               : strings::cat(traceback->cause, ", at ", traceback->location);
  }
  std::replace(text.begin(), text.end(), '\n', ' ');
  if (text.empty() || text.find_first_of(" =\"") != std::string::npos) {
    return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return text;
}

}  // namespace

OutputPump::OutputPump(int stdout_fd, int stderr_fd, log::Logger logger, int max_lines_per_second)
    : stdout_fd_(stdout_fd),
      stderr_fd_(stderr_fd),
      logger_(std::move(logger)),
      max_lines_per_second_(max_lines_per_second),
      thread_([this] { run(); }) {}

OutputPump::~OutputPump() { stop(std::chrono::milliseconds(0)); }

log::Record OutputPump::parseStderrLine(std::string_view line) {
  log::Record record;
  record.component = "connector";
  if (!line.empty() && line.front() == '{') {
    // Never throws: a connector's log line is untrusted input (a Go host crashes on
    // non-string @message; we must not).
    nlohmann::json parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_discarded() && parsed.is_object()) {
      record.level = log::Level::Info;
      for (auto& [key, value] : parsed.items()) {
        if (key == "@message") {
          record.message = value.is_string() ? value.get<std::string>()
                                             : value.dump(-1, ' ', false,
                                                          nlohmann::json::error_handler_t::replace);
        } else if (key == "@level") {
          const auto level =
              value.is_string() ? log::parseLevel(value.get<std::string>()) : std::nullopt;
          record.level = level.value_or(log::Level::Info);
        } else if (key == "@timestamp") {
          record.fields["connector_ts"] = value;
        } else if (key == "@module") {
          record.fields["module"] = value;
        } else if (key == "@caller") {
          record.fields["caller"] = value;
        } else {
          record.fields[key] = value;
        }
      }
      return record;
    }
  }
  record.level = plainLineLevel(line);
  record.message = std::string(line);
  return record;
}

std::string OutputPump::renderStderrLine(std::string_view line) {
  return render(line, parseStderrLine(line));
}

std::string OutputPump::render(std::string_view line, const log::Record& record) {
  if (record.message == line && record.fields.empty()) {
    return std::string(line);  // A plain line.
  }
  std::string out = strings::cat("[", upper(log::levelName(record.level)), "] ");
  if (const auto module = record.fields.find("module");
      module != record.fields.end() && module->is_string() && !module->get<std::string>().empty()) {
    out += strings::cat(module->get<std::string>(), ": ");
  }
  out += record.message;
  bool first = true;
  for (const auto& [key, value] : record.fields.items()) {
    if (key == "module" || key == "connector_ts" || key == "caller") {
      continue;
    }
    out += strings::cat(first ? ": " : " ", key, "=", fieldText(value));
    first = false;
  }
  return out;
}

absl::StatusOr<std::string> OutputPump::waitHandshake(
    std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, deadline,
                 [this] { return handshake_.has_value() || stdout_eof_ || handshake_too_long_; });
  if (handshake_) {
    return *handshake_;
  }
  if (handshake_too_long_) {
    return absl::FailedPreconditionError(
        strings::cat("the connector's first stdout line is longer than ", kMaxLineBytes,
                     " bytes; it must be the go-plugin handshake line"));
  }
  if (stdout_eof_) {
    return absl::UnavailableError("the connector closed stdout before printing a handshake");
  }
  return absl::DeadlineExceededError("no handshake line from the connector before the timeout");
}

void OutputPump::stop(std::chrono::milliseconds grace) {
  const std::lock_guard lock(stop_mu_);
  if (!thread_.joinable()) {
    return;
  }
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (!done_.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop_.store(true);
  thread_.join();
  for (int* fd : {&stdout_fd_, &stderr_fd_}) {
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
  }
}

std::vector<std::string> OutputPump::stderrTail() const {
  const std::lock_guard lock(mu_);
  return {tail_.begin(), tail_.end()};
}

std::optional<Crash> OutputPump::crash() const {
  const std::lock_guard lock(mu_);
  return crash_reader_.crash();
}

void OutputPump::run() {
  std::array<char, kMaxLineBytes> buf{};
  bool out_open = stdout_fd_ >= 0;
  bool err_open = stderr_fd_ >= 0;
  while (!stop_.load() && (out_open || err_open)) {
    std::array<pollfd, 2> fds{pollfd{out_open ? stdout_fd_ : -1, POLLIN, 0},
                              pollfd{err_open ? stderr_fd_ : -1, POLLIN, 0}};
    const int ready = ::poll(fds.data(), fds.size(), static_cast<int>(kPollInterval.count()));
    if (ready < 0 && errno != EINTR) {
      break;
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
        continue;
      }
      const ssize_t n = ::read(fds[i].fd, buf.data(), buf.size());
      if (n > 0) {
        const std::string_view data(buf.data(), static_cast<std::size_t>(n));
        i == 0 ? onStdout(data) : onStderr(data);
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        if (i == 0) {
          out_open = false;
          const std::lock_guard lock(mu_);
          stdout_eof_ = true;
          cv_.notify_all();
        } else {
          err_open = false;
          if (!stderr_partial_.empty()) {
            emitLine(stderr_partial_);
            stderr_partial_.clear();
          }
        }
      }
    }
    if (window_lines_ > 0 &&
        std::chrono::steady_clock::now() - window_start_ >= std::chrono::seconds(1)) {
      flushSuppressed();
    }
  }
  flushSuppressed();
  {
    const std::lock_guard lock(mu_);
    crash_reader_.end();
    stdout_eof_ = true;
    cv_.notify_all();
  }
  const auto discarded = stdout_discarded_.load();
  if (discarded > 0) {
    logger_.debug("discarded connector stdout written after the handshake", {{"bytes", discarded}});
  }
  done_.store(true);
}

void OutputPump::onStdout(std::string_view data) {
  {
    const std::lock_guard lock(mu_);
    if (handshake_ || handshake_too_long_) {
      stdout_discarded_ += data.size();
      return;
    }
  }
  const auto newline = data.find('\n');
  if (newline == std::string_view::npos) {
    stdout_partial_.append(data);
    if (stdout_partial_.size() > kMaxLineBytes) {
      const std::lock_guard lock(mu_);
      handshake_too_long_ = true;
      cv_.notify_all();
    }
    return;
  }
  stdout_partial_.append(data.substr(0, newline));
  stdout_discarded_ += data.size() - newline - 1;
  const std::lock_guard lock(mu_);
  handshake_ = std::move(stdout_partial_);
  stdout_partial_.clear();
  cv_.notify_all();
}

void OutputPump::onStderr(std::string_view data) {
  while (!data.empty()) {
    const auto newline = data.find('\n');
    const auto chunk = data.substr(0, newline);
    if (stderr_partial_.size() + chunk.size() > kMaxLineBytes) {
      // Over-long line: log what fits as a fragment; the rest continues as a new fragment.
      const std::size_t room = kMaxLineBytes - stderr_partial_.size();
      stderr_partial_.append(chunk.substr(0, room));
      emitLine(stderr_partial_);
      stderr_partial_.clear();
      data.remove_prefix(room);
      continue;
    }
    stderr_partial_.append(chunk);
    if (newline == std::string_view::npos) {
      return;
    }
    emitLine(stderr_partial_);
    stderr_partial_.clear();
    data.remove_prefix(newline + 1);
  }
}

void OutputPump::emitLine(std::string_view raw) {
  std::string_view line = raw;
  if (!line.empty() && line.back() == '\r') {
    line.remove_suffix(1);
  }
  if (line.empty()) {
    const std::lock_guard lock(mu_);
    crash_reader_.blankLine();
    return;
  }
  log::Record record = parseStderrLine(line);
  {
    std::string text = render(line, record);
    if (text.size() > kTailLineBytes) {
      text.resize(kTailLineBytes);
    }
    const std::lock_guard lock(mu_);
    if (!crash_reader_.feed(line, record, text)) {
      tail_.push_back(std::move(text));
      if (tail_.size() > kTailLines) {
        tail_.pop_front();
      }
    }
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - window_start_ >= std::chrono::seconds(1)) {
    flushSuppressed();
    window_start_ = now;
  }
  if (++window_lines_ > max_lines_per_second_) {
    ++suppressed_;
    return;
  }
  logger_.log(record.level, record.message, std::move(record.fields));
}

void OutputPump::flushSuppressed() {
  if (suppressed_ > 0) {
    logger_.warn(
        "connector log lines suppressed by rate limit",
        {{"suppressed_lines", suppressed_}, {"max_lines_per_second", max_lines_per_second_}});
    suppressed_ = 0;
  }
  window_lines_ = 0;
  window_start_ = std::chrono::steady_clock::now();
}

}  // namespace tributary::plugin_host
