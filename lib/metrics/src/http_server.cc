#include "tributary/metrics/http_server.h"

#include "tributary/common/strings.h"
#include "tributary/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <unistd.h>

namespace tributary::metrics {

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::start(const std::string& address,
                                                              Handler handler) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        strings::cat("bind address \"", address, "\" must be host:port or :port"));
  }
  std::string host = address.substr(0, colon);
  const int port = std::atoi(address.c_str() + colon + 1);
  if (host.empty() || host == "0.0.0.0" || host == "*") {
    host = "0.0.0.0";
  } else if (host == "localhost") {
    host = "127.0.0.1";
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        strings::cat("bind address \"", address, "\": not an IPv4 address"));
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(strings::cat("socket: ", strings::errnoMessage(errno)));
  }
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 64) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(
        strings::cat("cannot listen on ", address, ": ", strings::errnoMessage(err)));
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return std::unique_ptr<HttpServer>(new HttpServer(fd, ntohs(addr.sin_port), std::move(handler)));
}

HttpServer::HttpServer(int fd, int port, Handler handler)
    : fd_(fd), port_(port), handler_(std::move(handler)) {
  thread_ = std::jthread([this](const std::stop_token& stop) { loop(stop); });
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::stop() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void HttpServer::loop(const std::stop_token& stop) {
  while (!stop.stop_requested()) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) {
      continue;
    }
    const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      continue;
    }
    timeval tv{2, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string request;
    char buf[4096];
    while (request.find("\r\n\r\n") == std::string::npos && request.size() < 65536) {
      const ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) {
        break;
      }
      request.append(buf, static_cast<std::size_t>(n));
    }
    HttpReply reply;
    const auto sp1 = request.find(' ');
    const auto sp2 = sp1 == std::string::npos ? sp1 : request.find(' ', sp1 + 1);
    if (sp2 == std::string::npos) {
      reply = {400, "text/plain; charset=utf-8", "bad request\n"};
    } else if (request.compare(0, sp1, "GET") != 0 && request.compare(0, sp1, "HEAD") != 0) {
      reply = {405, "text/plain; charset=utf-8", "method not allowed\n"};
    } else {
      std::string path = request.substr(sp1 + 1, sp2 - sp1 - 1);
      if (const auto q = path.find('?'); q != std::string::npos) {
        path.resize(q);
      }
      reply = handler_(path);
    }
    const char* text = reply.code == 200   ? "OK"
                       : reply.code == 404 ? "Not Found"
                       : reply.code == 503 ? "Service Unavailable"
                                           : "Error";
    std::string out =
        strings::cat("HTTP/1.1 ", reply.code, " ", text, "\r\nContent-Type: ", reply.content_type,
                     "\r\nContent-Length: ", reply.body.size(), "\r\nConnection: close\r\n\r\n");
    if (request.compare(0, 4, "HEAD") != 0) {
      out += reply.body;
    }
    std::size_t sent = 0;
    while (sent < out.size()) {
      const ssize_t n = ::send(c, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) {
        break;
      }
      sent += static_cast<std::size_t>(n);
    }
    ::close(c);
  }
}

HttpServer::Handler operationsHandler(std::shared_ptr<Registry> registry,
                                      std::function<bool()> ready, std::string not_ready) {
  return [registry = std::move(registry), ready = std::move(ready),
          not_ready = std::move(not_ready)](const std::string& path) {
    constexpr const char* kText = "text/plain; charset=utf-8";
    if (path == "/metrics") {
      return HttpReply{200, "text/plain; version=0.0.4; charset=utf-8", registry->expose()};
    }
    if (path == "/healthz" || path == "/livez") {
      return HttpReply{200, kText, "ok\n"};
    }
    if (path == "/readyz") {
      return ready() ? HttpReply{200, kText, "ok\n"} : HttpReply{503, kText, not_ready + "\n"};
    }
    return HttpReply{404, kText, "not found\n"};
  };
}

absl::StatusOr<std::vector<std::unique_ptr<HttpServer>>> serveAll(
    const std::vector<std::string>& addresses, const HttpServer::Handler& handler) {
  std::vector<std::unique_ptr<HttpServer>> servers;
  for (const std::string& address : addresses) {
    if (address.empty() || address == "0") {
      continue;
    }
    auto server = HttpServer::start(address, handler);
    if (!server.ok()) {
      return absl::Status(server.status().code(), strings::cat("cannot serve on ", address, ": ",
                                                               server.status().message()));
    }
    servers.push_back(*std::move(server));
  }
  return servers;
}

}  // namespace tributary::metrics
