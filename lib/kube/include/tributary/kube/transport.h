#pragma once

// The HTTP seam. Everything in lib/kube talks to the API server through this one interface; the
// only implementation is cpprestsdk (makeCppRestTransport). cpprestsdk's upstream is archived: to
// replace it (libcurl, Boost.Beast), implement Transport and nothing else changes.

#include "tributary/kube/config.h"

#include "absl/status/statusor.h"

#include <chrono>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tributary::kube {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method = "GET";
  /// Absolute path, already escaped, e.g. "/apis/tributary.dev/v1alpha1/namespaces/a/syncjobs".
  std::string path;
  /// Query parameters, unescaped (the transport escapes them).
  std::vector<std::pair<std::string, std::string>> query;
  std::string body;
  /// Extra headers (Content-Type, Authorization, Accept...).
  HeaderList headers;
  /// No byte from the server for this long fails the request (an idle timeout, also for
  /// streams). Zero: the transport's default (Config::request_timeout).
  std::chrono::milliseconds timeout{0};
};

struct HttpResponse {
  int status = 0;
  std::string body;
  HeaderList headers;
  /// Case-insensitive header lookup; empty if absent.
  [[nodiscard]] std::string header(std::string_view name) const;
};

/// How a stream ended.
struct StreamResult {
  /// The HTTP status. Non-2xx: `body` holds the (error) body and no data was delivered.
  int status = 0;
  std::string body;
};

class Transport {
 public:
  virtual ~Transport() = default;

  /**
   * One request; the whole body is read. Errors: Unavailable (connect, TLS, connection lost),
   * DeadlineExceeded (idle timeout), Cancelled (`stop`). Any HTTP status is a success here.
   */
  virtual absl::StatusOr<HttpResponse> request(const HttpRequest& request,
                                               std::stop_token stop = {}) = 0;

  /**
   * A streaming request (watch). For a 2xx answer, `on_data` gets the body's bytes as they
   * arrive (chunk boundaries are arbitrary); returning false from it ends the stream. Returns when
   * the server ends the body, on_data returns false (both OK), `stop` is requested (Cancelled),
   * no byte arrives for `request.timeout` (DeadlineExceeded), or the connection fails
   * (Unavailable).
   */
  virtual absl::StatusOr<StreamResult> stream(const HttpRequest& request,
                                              const std::function<bool(std::string_view)>& on_data,
                                              std::stop_token stop = {}) = 0;
};

/// The cpprestsdk transport for `config` (TLS: CA, client certificate, insecure-skip-verify,
/// tls-server-name; proxies are not used). Fails on unreadable PEM.
absl::StatusOr<std::shared_ptr<Transport>> makeCppRestTransport(const Config& config);

/// Sizes cpprestsdk's process-wide I/O thread pool (its default is 40 threads). Requests block
/// their caller, never a pool thread, so a few threads suffice; fewer threads mean far fewer
/// wake-ups per request. Call once from main() before the first request; fails if the pool
/// already exists.
absl::Status setHttpIoThreads(std::size_t threads);

}  // namespace tributary::kube
