#include "tributary/testing/net.h"

#include "process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <unistd.h>

namespace tributary::harness {

absl::StatusOr<int> freeLoopbackPort() { return internal::pickFreePort(); }

std::string httpGetLoopback(int port, std::string_view path, int* code) {
  std::string out;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string request =
        std::string("GET ").append(path).append(" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    char buf[16384];
    for (ssize_t n = 0; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  if (fd >= 0) {
    ::close(fd);
  }
  if (code != nullptr) {
    *code = out.size() > 12 ? std::atoi(out.substr(9, 3).c_str()) : 0;
  }
  const auto body = out.find("\r\n\r\n");
  return body == std::string::npos ? std::string() : out.substr(body + 4);
}

}  // namespace tributary::harness
