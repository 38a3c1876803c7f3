#include "http_fetch.h"

#include "tributary/common/strings.h"
#include "tributary/installer/spec.h"

#include "util.h"

#include <cpprest/http_client.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fcntl.h>
#include <mutex>
#include <thread>
#include <unistd.h>
#include <vector>

namespace tributary::installer::internal {
namespace {

namespace http = web::http;
namespace client = web::http::client;

// Cancels a request when the overall deadline passes or `stop` is requested.
class Watchdog {
 public:
  Watchdog(pplx::cancellation_token_source cts, Deadline deadline, const std::stop_token& stop)
      : cts_(std::move(cts)),
        thread_([this, deadline, stop](const std::stop_token& own) { run(deadline, stop, own); }) {}
  ~Watchdog() {
    thread_.request_stop();
    cv_.notify_all();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  [[nodiscard]] bool fired() const { return fired_.load(); }

 private:
  void run(Deadline deadline, const std::stop_token& stop, const std::stop_token& own) {
    std::unique_lock lock(mu_);
    while (!own.stop_requested()) {
      if (deadline.expired() || stop.stop_requested()) {
        fired_ = true;
        cts_.cancel();
        return;
      }
      cv_.wait_for(lock, std::min(deadline.remaining(), std::chrono::milliseconds(50)));
    }
  }

  pplx::cancellation_token_source cts_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> fired_{false};
  std::jthread thread_;
};

std::string origin(const web::uri& u) {
  return strings::cat(strings::toLower(u.scheme()), "://", strings::toLower(u.host()), ":",
                      u.port());
}

std::string base64(std::string_view in) {
  static constexpr char kTable[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  while (i + 2 < in.size()) {
    const auto n = (static_cast<unsigned>(static_cast<unsigned char>(in[i])) << 16U) |
                   (static_cast<unsigned>(static_cast<unsigned char>(in[i + 1])) << 8U) |
                   static_cast<unsigned>(static_cast<unsigned char>(in[i + 2]));
    out.push_back(kTable[(n >> 18U) & 63U]);
    out.push_back(kTable[(n >> 12U) & 63U]);
    out.push_back(kTable[(n >> 6U) & 63U]);
    out.push_back(kTable[n & 63U]);
    i += 3;
  }
  if (i < in.size()) {
    auto n = static_cast<unsigned>(static_cast<unsigned char>(in[i])) << 16U;
    if (i + 1 < in.size()) {
      n |= static_cast<unsigned>(static_cast<unsigned char>(in[i + 1])) << 8U;
    }
    out.push_back(kTable[(n >> 18U) & 63U]);
    out.push_back(kTable[(n >> 12U) & 63U]);
    out.push_back(i + 1 < in.size() ? kTable[(n >> 6U) & 63U] : '=');
    out.push_back('=');
  }
  return out;
}

absl::Status statusForHttp(int code, std::string_view reason, std::string_view url) {
  const std::string message = strings::cat("HTTP ", code, " ", reason, " from ", redactUri(url));
  if (code == 404 || code == 410) {
    return absl::NotFoundError(message);
  }
  if (code == 401 || code == 403) {
    return absl::PermissionDeniedError(message);
  }
  if (code == 408 || code == 429 || code >= 500) {
    return absl::UnavailableError(message);
  }
  return absl::FailedPreconditionError(message);
}

// Writes the body to `fd`, hashing and counting; enforces the size limit.
class BodyWriter {
 public:
  BodyWriter(int fd, std::uint64_t max_bytes) : fd_(fd), max_bytes_(max_bytes) {}

  absl::Status write(const unsigned char* data, std::size_t size, std::string_view url) {
    bytes_ += size;
    if (bytes_ > max_bytes_) {
      return absl::ResourceExhaustedError(strings::cat(
          "download from ", redactUri(url), " exceeds the size limit of ", max_bytes_, " bytes"));
    }
    sha_.update(data, size);
    std::size_t off = 0;
    while (off < size) {
      const ssize_t n = ::write(fd_, data + off, size - off);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        return errnoStatus(errno, "cannot write the downloaded file");
      }
      off += static_cast<std::size_t>(n);
    }
    return absl::OkStatus();
  }

  [[nodiscard]] std::uint64_t bytes() const { return bytes_; }
  std::string digest() { return sha_.hexDigest(); }

 private:
  int fd_;
  std::uint64_t max_bytes_;
  std::uint64_t bytes_ = 0;
  Sha256 sha_;
};

int hexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

}  // namespace

std::string fileNameFromUrl(std::string_view url) {
  std::string_view rest = url;
  if (const auto scheme = rest.find("://"); scheme != std::string_view::npos) {
    rest = rest.substr(scheme + 3);
  }
  rest = rest.substr(0, rest.find_first_of("?#"));
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos) {
    return "download";
  }
  rest = rest.substr(slash);
  const std::string_view last = rest.substr(rest.rfind('/') + 1);
  std::string name;
  for (std::size_t i = 0; i < last.size(); ++i) {
    if (last[i] == '%' && i + 2 < last.size() && hexValue(last[i + 1]) >= 0 &&
        hexValue(last[i + 2]) >= 0) {
      name.push_back(static_cast<char>(hexValue(last[i + 1]) * 16 + hexValue(last[i + 2])));
      i += 2;
    } else {
      name.push_back(last[i]);
    }
  }
  const bool bad = name.empty() || name == "." || name == ".." || name.size() > 200 ||
                   name.find('/') != std::string::npos || name.find('\0') != std::string::npos ||
                   std::any_of(name.begin(), name.end(), [](char c) {
                     return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
                   });
  return bad ? "download" : name;
}

absl::StatusOr<Download> download(const DownloadSpec& spec, std::stop_token stop) {
  const Deadline deadline = Deadline::after(spec.total_timeout);
  const fs::path file = spec.dest_dir / spec.file_name;
  Download result;
  result.file = file;
  std::string url = spec.url;
  web::uri first_uri;
  try {
    first_uri = web::uri(url);
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(strings::cat("invalid URL ", redactUri(url)));
  }
  const std::string first_origin = origin(first_uri);

  std::string authorization;
  if (spec.credentials != nullptr) {
    if (!spec.credentials->token.empty()) {
      authorization = strings::cat("Bearer ", spec.credentials->token);
    } else if (!spec.credentials->password.empty()) {
      authorization = strings::cat("Basic ", base64(strings::cat(spec.credentials->username, ":",
                                                                 spec.credentials->password)));
    }
  }

  for (int hop = 0;; ++hop) {
    web::uri current;
    try {
      current = web::uri(url);
    } catch (const std::exception&) {
      return absl::InvalidArgumentError(strings::cat("invalid URL ", redactUri(url)));
    }
    const std::string scheme = strings::toLower(current.scheme());
    if (scheme != "http" && scheme != "https") {
      return absl::InvalidArgumentError(
          strings::cat("redirect to unsupported URL scheme '", scheme, "' (", redactUri(url), ")"));
    }
    if (hop > 0 && scheme == "http" && strings::toLower(first_uri.scheme()) == "https") {
      return absl::InvalidArgumentError(
          strings::cat("refusing redirect from https to http (", redactUri(url), ")"));
    }

    client::http_client_config config;
    config.set_timeout(spec.idle_timeout);
    config.set_max_redirects(0);
    config.set_validate_certificates(true);
    config.set_proxy(web::web_proxy(web::web_proxy::disabled));
    pplx::cancellation_token_source cts;
    Watchdog watchdog(cts, deadline, stop);
    auto timeout_or = [&](absl::Status status) -> absl::Status {
      if (watchdog.fired()) {
        if (stop.stop_requested()) {
          return absl::CancelledError(strings::cat("download of ", redactUri(url), " cancelled"));
        }
        return absl::DeadlineExceededError(strings::cat("download of ", redactUri(spec.url),
                                                        " did not finish within ",
                                                        spec.total_timeout.count(), " ms"));
      }
      return status;
    };

    int fd = -1;
    auto cleanup_file = [&] {
      if (fd >= 0) {
        ::close(fd);
        fd = -1;
      }
      ::unlink(file.c_str());
    };
    try {
      web::uri_builder base;
      base.set_scheme(current.scheme()).set_host(current.host()).set_port(current.port());
      if (!current.user_info().empty()) {
        base.set_user_info(current.user_info());
      }
      client::http_client http_client(base.to_uri(), config);
      http::http_request request(http::methods::GET);
      web::uri_builder resource;
      resource.set_path(current.path()).set_query(current.query());
      request.set_request_uri(resource.to_uri());
      request.headers().add("User-Agent", "tributary-installer/1");
      if (!authorization.empty() && origin(current) == first_origin) {
        request.headers().add("Authorization", authorization);
      }
      http::http_response response = http_client.request(request, cts.get_token()).get();
      const int code = response.status_code();
      if (code == 301 || code == 302 || code == 303 || code == 307 || code == 308) {
        if (hop >= spec.max_redirects) {
          return absl::InvalidArgumentError(strings::cat("too many redirects (more than ",
                                                         spec.max_redirects, ") from ",
                                                         redactUri(spec.url)));
        }
        std::string location;
        if (!response.headers().match("Location", location) || location.empty()) {
          return absl::InvalidArgumentError(
              strings::cat("HTTP ", code, " without Location from ", redactUri(url)));
        }
        url = current.resolve_uri(location);
        result.redirects = hop + 1;
        continue;
      }
      if (code < 200 || code >= 300) {
        return statusForHttp(code, response.reason_phrase(), url);
      }
      const auto declared = response.headers().content_length();
      if (declared > spec.max_bytes) {
        return absl::ResourceExhaustedError(
            strings::cat("download from ", redactUri(url), " is ", declared,
                         " bytes, over the size limit of ", spec.max_bytes, " bytes"));
      }
      fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
      if (fd < 0) {
        return errnoStatus(errno, strings::cat("cannot create ", file.string()));
      }
      BodyWriter writer(fd, spec.max_bytes);
      auto body = response.body().streambuf();
      std::vector<unsigned char> buf(1U << 16U);
      while (true) {
        const std::size_t n = body.getn(buf.data(), buf.size()).get();
        if (n == 0) {
          break;
        }
        if (absl::Status s = writer.write(buf.data(), n, url); !s.ok()) {
          cleanup_file();
          return s;
        }
        if (watchdog.fired()) {
          cleanup_file();
          return timeout_or(absl::OkStatus());
        }
      }
      // Surfaces a connection error or timeout that ended the body early.
      response.content_ready().get();
      if (declared != 0 && writer.bytes() != declared && response.headers().has("Content-Length")) {
        cleanup_file();
        return absl::UnavailableError(strings::cat("download from ", redactUri(url),
                                                   " ended after ", writer.bytes(), " of ",
                                                   declared, " bytes"));
      }
      if (::fsync(fd) != 0 || ::close(fd) != 0) {
        fd = -1;
        const int err = errno;
        cleanup_file();
        return errnoStatus(err, strings::cat("cannot write ", file.string()));
      }
      fd = -1;
      result.bytes = writer.bytes();
      result.sha256 = writer.digest();
      result.final_url = url;
      return result;
    } catch (const pplx::task_canceled&) {
      cleanup_file();
      return timeout_or(
          absl::CancelledError(strings::cat("download of ", redactUri(url), " cancelled")));
    } catch (const http::http_exception& e) {
      cleanup_file();
      const std::string what = e.what();
      if (what.find("timed out") != std::string::npos || e.error_code() == std::errc::timed_out) {
        return timeout_or(absl::DeadlineExceededError(
            strings::cat("download from ", redactUri(url), " timed out (no data for ",
                         spec.idle_timeout.count(), " ms)")));
      }
      return timeout_or(
          absl::UnavailableError(strings::cat("cannot download ", redactUri(url), ": ", what)));
    } catch (const std::exception& e) {
      cleanup_file();
      return timeout_or(
          absl::UnavailableError(strings::cat("cannot download ", redactUri(url), ": ", e.what())));
    }
  }
}

}  // namespace tributary::installer::internal
