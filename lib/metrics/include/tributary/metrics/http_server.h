#pragma once

// A minimal HTTP/1.1 server for /healthz, /readyz and /metrics: GET only, one request per
// connection, handled on one thread (probes and scrapes are rare and small).

#include "absl/status/statusor.h"

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace tributary::metrics {

struct HttpReply {
  int code = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpReply(const std::string& path)>;
  /// Listens on "host:port" (":port" = all interfaces; port 0 = any free port).
  static absl::StatusOr<std::unique_ptr<HttpServer>> start(const std::string& address,
                                                           Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  [[nodiscard]] int port() const { return port_; }
  void stop();

 private:
  HttpServer(int fd, int port, Handler handler);
  void loop(const std::stop_token& stop);
  int fd_;
  int port_;
  Handler handler_;
  std::jthread thread_;
};

class Registry;

/// The endpoints of our binaries: /metrics (the registry, text format 0.0.4), /healthz and
/// /livez (always ok), /readyz (200 while `ready()`, else 503 with `not_ready`).
HttpServer::Handler operationsHandler(std::shared_ptr<Registry> registry,
                                      std::function<bool()> ready, std::string not_ready);

/// One server with `handler` per address that is set ("" or "0" disables it): a binary's metrics
/// and probe addresses. Errors name the address.
absl::StatusOr<std::vector<std::unique_ptr<HttpServer>>> serveAll(
    const std::vector<std::string>& addresses, const HttpServer::Handler& handler);

}  // namespace tributary::metrics
