#include "redis_tls_tunnel.h"

#include "tributary/common/strings.h"
#include "tributary/plugin_host/child_process.h"

#include <arpa/inet.h>

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fcntl.h>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <poll.h>
#include <signal.h>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace tributary::agent {
namespace {

using Clock = std::chrono::steady_clock;
using strings::cat;

// A failure older than this is not what the lock client just ran into.
constexpr auto kFailureRelevance = std::chrono::seconds(30);
constexpr std::size_t kRecentLines = 12;
constexpr const char* kSystemRoots = "/etc/ssl/certs/ca-certificates.crt";  // Debian's bundle

bool isIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Whether a unix socket at `path` accepts connections: its file appears at bind(), before
// listen(). /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path", Flags having
// __SO_ACCEPTCON (0x10000) once listening.
bool isListening(const std::string& path) {
  std::ifstream in("/proc/net/unix");
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string num, refcount, protocol, flags, type, state, inode, socket_path;
    if (fields >> num >> refcount >> protocol >> flags >> type >> state >> inode >> socket_path &&
        socket_path == path && (std::strtoul(flags.c_str(), nullptr, 16) & 0x10000U) != 0) {
      return true;
    }
  }
  return false;
}

std::optional<std::string> findInPath(std::initializer_list<const char*> names) {
  const char* path = std::getenv("PATH");
  const std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  for (const char* name : names) {
    for (const std::string_view dir : strings::split(dirs, ':')) {
      const std::string candidate = cat(dir.empty() ? "." : dir, "/", name);
      if (::access(candidate.c_str(), X_OK) == 0) {
        return candidate;
      }
    }
  }
  return std::nullopt;
}

// One stunnel log line: "2026.12.04 01:03:09 LOG3[0]: SSL_connect: …" or "[!] …".
struct LogLine {
  int level = 5;           // syslog level: 3 error, 4 warning, 5 notice, …
  std::string connection;  // "ui" for the service itself, else a connection number
  std::string text;
};

std::optional<LogLine> parseLine(std::string_view line) {
  // Before its log is set up (reading the configuration) stunnel writes "[!] text": ! for
  // errors, . for notices, a space for debug.
  if (line.size() >= 4 && line[0] == '[' && line[2] == ']' && line[3] == ' ') {
    const int level = line[1] == '!' ? 3 : line[1] == '.' ? 5 : 7;
    return LogLine{level, "ui", std::string(line.substr(4))};
  }
  const auto at = line.find("LOG");
  if (at == std::string_view::npos || at + 4 >= line.size() || line[at + 3] < '0' ||
      line[at + 3] > '7' || line[at + 4] != '[') {
    return std::nullopt;
  }
  const auto close = line.find("]: ", at);
  if (close == std::string_view::npos) {
    return std::nullopt;
  }
  return LogLine{line[at + 3] - '0', std::string(line.substr(at + 5, close - at - 5)),
                 std::string(line.substr(close + 3))};
}

// What to change, for the failures a setting causes.
std::string hintFor(std::string_view problems, bool has_client_cert) {
  auto has = [&](std::string_view what) { return problems.find(what) != std::string_view::npos; };
  if (has("Subject checks failed")) {
    return "the server's certificate does not carry the expected name: set "
           "--redis-tls-server-name to a name it has";
  }
  if (has("CERT: Pre-verification error") || has("certificate verify failed")) {
    return "the server's certificate does not verify: check --redis-tls-ca-file";
  }
  if (has("certificate required") || has("alert bad certificate") || has("alert unknown ca")) {
    return "the server wants a client certificate it trusts: set --redis-tls-cert-file and "
           "--redis-tls-key-file";
  }
  // TLS 1.3: the server checks the client's certificate after the handshake; when it refuses,
  // stunnel may see only the closed socket, not the alert.
  if (!has_client_cert && has("TLS socket closed")) {
    return "the server closed the connection after the handshake: if it wants client "
           "certificates (Redis's default, tls-auth-clients yes), set --redis-tls-cert-file and "
           "--redis-tls-key-file";
  }
  if (has("wrong version number") || has("packet length too long")) {
    return "the server does not speak TLS on this port";
  }
  return {};
}

}  // namespace

class RedisTlsTunnel::Impl {
 public:
  explicit Impl(RedisTlsOptions options) : options_(std::move(options)) {}

  ~Impl() {
    supervisor_.request_stop();
    if (supervisor_.joinable()) {
      supervisor_.join();
    }
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  absl::Status start() {
    if (absl::Status status = prepare(); !status.ok()) {
      return status;
    }
    std::promise<absl::Status> first;
    std::future<absl::Status> started = first.get_future();
    // The supervisor spawns stunnel itself: the child's parent-death signal follows the thread
    // that forked it, and this one lives exactly as long as the tunnel.
    supervisor_ =
        std::jthread([this, first = std::move(first)](const std::stop_token& stop) mutable {
          supervise(stop, first);
        });
    absl::Status status = started.get();
    if (!status.ok()) {
      supervisor_.join();
    }
    return status;
  }

  [[nodiscard]] std::string socketPath() const { return (options_.dir / "redis.sock").string(); }

  std::string lastFailure() {
    const std::lock_guard lock(mu_);
    readAvailable();
    if (last_failure_.empty() || Clock::now() - last_failure_at_ > kFailureRelevance) {
      return {};
    }
    const std::string hint = hintFor(last_failure_, !options_.cert_file.empty());
    return cat("TLS tunnel to ", options_.host, ":", options_.port, ": ", last_failure_,
               hint.empty() ? "" : "; ", hint);
  }

  bool lastFailureIsConfiguration() {
    return !hintFor(lastFailure(), !options_.cert_file.empty()).empty();
  }

 private:
  absl::Status prepare() {
    if (options_.host.empty()) {
      return absl::InvalidArgumentError("Redis TLS: no Redis host");
    }
    if (options_.ca_file.empty()) {
      options_.ca_file = kSystemRoots;
    }
    if (options_.cert_file.empty() != options_.key_file.empty()) {
      return absl::InvalidArgumentError(
          "Redis TLS: --redis-tls-cert-file and --redis-tls-key-file go together");
    }
    for (const std::string* value : {&options_.host, &options_.ca_file, &options_.server_name,
                                     &options_.cert_file, &options_.key_file}) {
      if (value->find_first_of("\r\n") != std::string::npos) {
        return absl::InvalidArgumentError(cat("Redis TLS: a setting holds a line break: ", *value));
      }
    }
    for (const std::string* file : {&options_.ca_file, &options_.cert_file, &options_.key_file}) {
      if (!file->empty() && ::access(file->c_str(), R_OK) != 0) {
        return absl::FailedPreconditionError(
            cat("Redis TLS: cannot read ", *file, ": ", strings::errnoMessage(errno)));
      }
    }
    if (options_.stunnel.empty()) {
      auto found = findInPath({"stunnel4", "stunnel"});
      if (!found) {
        return absl::FailedPreconditionError(
            "Redis TLS needs stunnel (Debian package stunnel4), and neither stunnel4 nor stunnel "
            "is in PATH");
      }
      options_.stunnel = *found;
    }
    std::error_code ec;
    std::filesystem::remove_all(options_.dir, ec);
    std::filesystem::create_directories(options_.dir, ec);
    if (!ec) {
      // The socket carries the client certificate's identity: only this uid may reach it.
      std::filesystem::permissions(options_.dir, std::filesystem::perms::owner_all, ec);
    }
    if (ec) {
      return absl::InternalError(
          cat("Redis TLS: cannot create ", options_.dir.string(), ": ", ec.message()));
    }
    const std::string name = options_.server_name.empty() ? options_.host : options_.server_name;
    std::ofstream conf(options_.dir / "stunnel.conf");
    conf << "foreground = yes\npid =\nsyslog = no\ndebug = notice\n\n[redis]\nclient = yes\n"
         << "accept = " << socketPath() << "\nconnect = " << options_.host << ":" << options_.port
         << "\nverifyChain = yes\nCAfile = " << options_.ca_file << "\n";
    if (isIpLiteral(name)) {
      conf << "checkIP = " << name << "\n";
    } else {
      conf << "checkHost = " << name << "\nsni = " << name << "\n";
    }
    if (!options_.cert_file.empty()) {
      conf << "cert = " << options_.cert_file << "\nkey = " << options_.key_file << "\n";
    }
    conf.close();
    if (!conf) {
      return absl::InternalError(
          cat("Redis TLS: cannot write ", options_.dir.string(), "/stunnel.conf"));
    }
    return absl::OkStatus();
  }

  void supervise(const std::stop_token& stop, std::promise<absl::Status>& first) {
    std::promise<absl::Status>* pending = &first;  // until the first start is reported
    auto backoff = std::chrono::seconds(1);
    while (!stop.stop_requested()) {
      const Clock::time_point launched = Clock::now();
      const bool first_start = pending != nullptr;
      bool came_up = false;
      const absl::Status status = runOnce(stop, pending, came_up);
      if (first_start && !came_up) {
        return;  // start() reports it
      }
      if (stop.stop_requested()) {
        return;
      }
      if (Clock::now() - launched > std::chrono::minutes(1)) {
        backoff = std::chrono::seconds(1);  // it ran for a while: a fresh failure
      }
      options_.logger.error("the Redis TLS tunnel (stunnel) stopped; restarting it",
                            {{"error", status.message()}, {"retry_in_seconds", backoff.count()}});
      std::mutex sleep_mu;
      std::unique_lock sleep_lock(sleep_mu);
      std::condition_variable_any().wait_for(sleep_lock, stop, backoff, [] { return false; });
      backoff = std::min(backoff * 2, std::chrono::seconds(30));
    }
  }

  // Runs stunnel until it exits or stop. `first`, when set, learns whether it came up (and is
  // cleared); so does `came_up`.
  absl::Status runOnce(const std::stop_token& stop, std::promise<absl::Status>*& first,
                       bool& came_up) {
    auto report = [&](absl::Status status) {
      if (first != nullptr) {
        first->set_value(status);
        first = nullptr;
      }
      return status;
    };
    std::error_code ec;
    std::filesystem::remove(socketPath(), ec);
    auto child = plugin_host::ChildProcess::spawn(
        {options_.stunnel, (options_.dir / "stunnel.conf").string()}, {}, options_.dir);
    if (!child.ok()) {
      return report(absl::FailedPreconditionError(
          cat("Redis TLS: cannot start stunnel: ", child.status().message())));
    }
    {
      const std::lock_guard lock(mu_);
      problems_.clear();  // connection numbers start again
      partial_.clear();
      stderr_fd_ = (*child)->releaseStderr();
      ::fcntl(stderr_fd_, F_SETFL, ::fcntl(stderr_fd_, F_GETFL) | O_NONBLOCK);
    }
    const Clock::time_point deadline = Clock::now() + options_.start_timeout;
    bool open = true;
    while (open && !stop.stop_requested()) {
      if (first != nullptr && isListening(socketPath())) {
        options_.logger.info(
            "Redis TLS tunnel up",
            {{"redis", cat(options_.host, ":", options_.port)}, {"socket", socketPath()}});
        static_cast<void>(report(absl::OkStatus()));
        came_up = true;
      }
      if (first != nullptr && Clock::now() >= deadline) {
        break;
      }
      pollfd pfd{stderr_fd_, POLLIN, 0};
      ::poll(&pfd, 1, first != nullptr ? 20 : 500);
      const std::lock_guard lock(mu_);
      open = readAvailable();
    }
    std::string recent;
    {
      const std::lock_guard lock(mu_);
      readAvailable();
      ::close(stderr_fd_);
      stderr_fd_ = -1;
      for (const std::string& line : recent_) {
        recent += cat(recent.empty() ? "" : "; ", line);
      }
      recent_.clear();
    }
    (*child)->signalGroup(SIGTERM);
    std::optional<plugin_host::ExitInfo> exit = (*child)->waitFor(std::chrono::seconds(2));
    const plugin_host::ExitInfo info = exit ? *exit : (*child)->killAndReap();
    if (first != nullptr) {
      return report(absl::FailedPreconditionError(
          cat("Redis TLS: stunnel did not come up (",
              open ? "no socket within the start timeout" : info.describe(),
              "): ", recent.empty() ? "it said nothing" : recent)));
    }
    return absl::UnavailableError(cat("stunnel ", info.describe(), ": ", recent));
  }

  // Under mu_. Reads what stunnel wrote so far; false at end of file.
  bool readAvailable() {
    if (stderr_fd_ < 0) {
      return false;
    }
    char buf[4096];
    while (true) {
      const ssize_t n = ::read(stderr_fd_, buf, sizeof(buf));
      if (n > 0) {
        partial_.append(buf, static_cast<std::size_t>(n));
        for (auto nl = partial_.find('\n'); nl != std::string::npos; nl = partial_.find('\n')) {
          handleLine(partial_.substr(0, nl));
          partial_.erase(0, nl + 1);
        }
        continue;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      return n < 0 && errno == EAGAIN;  // EWOULDBLOCK is EAGAIN on Linux
    }
  }

  // Under mu_.
  void handleLine(const std::string& raw) {
    const std::optional<LogLine> line = parseLine(raw);
    if (!line) {
      options_.logger.info("stunnel", {{"output", raw}});
      return;
    }
    const log::Level level = line->level <= 3   ? log::Level::Error
                             : line->level == 4 ? log::Level::Warn
                                                : log::Level::Debug;
    options_.logger.log(level, "stunnel",
                        {{"connection", line->connection}, {"output", line->text}});
    if (line->connection == "ui") {
      if (line->level <= 4) {  // its warnings and errors, not its version banner
        recent_.push_back(line->text);
        if (recent_.size() > kRecentLines) {
          recent_.pop_front();
        }
      }
      return;
    }
    // stunnel logs a failure before it closes the client's connection: by the time the lock
    // client sees the reset, the reason is in the pipe (lastFailure() reads it).
    std::string& problems = problems_[line->connection];
    if (line->level <= 4) {
      problems += cat(problems.empty() ? "" : "; ", line->text);
      last_failure_ = problems;
      last_failure_at_ = Clock::now();
    }
    if (line->text.starts_with("Connection closed")) {
      if (problems.empty() && line->text.starts_with("Connection closed:")) {
        last_failure_.clear();  // a clean end: whatever failed before is over
      }
      problems_.erase(line->connection);
    }
  }

  RedisTlsOptions options_;
  std::jthread supervisor_;

  std::mutex mu_;
  int stderr_fd_ = -1;                           // Guarded by mu_.
  std::string partial_;                          // Guarded by mu_.
  std::map<std::string, std::string> problems_;  // Guarded by mu_: per open connection.
  std::string last_failure_;                     // Guarded by mu_.
  Clock::time_point last_failure_at_;            // Guarded by mu_.
  std::deque<std::string> recent_;               // Guarded by mu_: its own warnings, errors.
};

absl::StatusOr<std::unique_ptr<RedisTlsTunnel>> RedisTlsTunnel::start(RedisTlsOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  if (absl::Status status = impl->start(); !status.ok()) {
    return status;
  }
  return std::unique_ptr<RedisTlsTunnel>(new RedisTlsTunnel(std::move(impl)));
}

RedisTlsTunnel::RedisTlsTunnel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RedisTlsTunnel::~RedisTlsTunnel() = default;

std::string RedisTlsTunnel::socketPath() const { return impl_->socketPath(); }
std::string RedisTlsTunnel::lastFailure() { return impl_->lastFailure(); }
bool RedisTlsTunnel::lastFailureIsConfiguration() { return impl_->lastFailureIsConfiguration(); }

}  // namespace tributary::agent
