// HTTP-level robustness of the cpprestsdk transport and the watch decoder against a tiny real
// loopback HTTP/1.1 server written here (unit level; the same paths run against the real
// kube-apiserver in kube_integration_test): events split across chunks, server end of stream,
// connection lost mid-stream, idle timeout, cancellation, HTTP 410.

#include "tributary/kube/client.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace tributary::kube {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

// Accepts connections one at a time; `handler(request_head, fd)` answers.
class LoopbackServer {
 public:
  using Handler = std::function<void(const std::string& head, int fd, const std::stop_token& stop)>;
  explicit LoopbackServer(Handler handler) : handler_(std::move(handler)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    const int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd_, 16) != 0) {
      throw std::runtime_error("cannot listen");
    }
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::jthread([this](const std::stop_token& stop) { run(stop); });
  }
  ~LoopbackServer() {
    thread_.request_stop();
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
    handlers_.clear();  // stops and joins the connection threads
  }
  LoopbackServer(const LoopbackServer&) = delete;
  LoopbackServer& operator=(const LoopbackServer&) = delete;

  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::atomic<int> connections{0};

  static void send(int fd, std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        return;
      }
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  // Sleeps for `d` unless the server is being destroyed.
  static void hold(const std::stop_token& stop, std::chrono::milliseconds d) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait_for(lock, stop, d, [] { return false; });
  }
  static void chunk(int fd, std::string_view data) {
    char size[32];
    std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
    send(fd, std::string(size) + std::string(data) + "\r\n");
  }

 private:
  void run(const std::stop_token& stop) {
    while (!stop.stop_requested()) {
      const int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) {
        return;
      }
      ++connections;
      std::string head;
      char buf[4096];
      while (head.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(client, buf, sizeof(buf), 0);
        if (n <= 0) {
          break;
        }
        head.append(buf, static_cast<std::size_t>(n));
      }
      handlers_.emplace_back([this, head, client](const std::stop_token& own) {
        handler_(head, client, own);
        ::close(client);
      });
    }
  }

  Handler handler_;
  std::vector<std::jthread> handlers_;
  int fd_ = -1;
  int port_ = 0;
  std::jthread thread_;
};

constexpr std::string_view kChunkedHead =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

std::shared_ptr<Client> clientFor(const LoopbackServer& server) {
  Config config;
  config.server = server.url();
  config.request_timeout = 5s;
  auto client = Client::create(config);
  if (!client.ok()) {
    throw std::runtime_error(std::string(client.status().message()));
  }
  return *client;
}

TEST(Transport, WatchDecodesEventsSplitAcrossChunksUntilTheServerEndsTheStream) {
  std::atomic<bool> saw_query{false};
  LoopbackServer server([&](const std::string& head, int fd, const std::stop_token&) {
    saw_query = head.find("watch=1") != std::string::npos &&
                head.find("allowWatchBookmarks=true") != std::string::npos &&
                head.find("resourceVersion=41") != std::string::npos &&
                head.find("timeoutSeconds=7") != std::string::npos;
    LoopbackServer::send(fd, kChunkedHead);
    LoopbackServer::chunk(fd, R"({"type":"ADDED","object":{"metadata":{"name":"a","resour)");
    std::this_thread::sleep_for(20ms);
    LoopbackServer::chunk(fd,
                          "ceVersion\":\"42\"}}}\n{\"type\":\"BOOKMARK\",\"object\":{\"metadata\""
                          ":{\"resourceVersion\":\"50\"}}}\n{\"type\":\"MODI");
    LoopbackServer::chunk(fd, R"(FIED","object":{"metadata":{"name":"a","resourceVersion":"51"}}})"
                              "\n");
    LoopbackServer::chunk(fd, "");
  });
  auto client = clientFor(server);
  std::vector<std::string> seen;
  WatchOptions options;
  options.resource_version = "41";
  options.timeout_seconds = 7;
  const absl::Status status =
      client->watch(resources::syncJob(), "ns", options, [&](WatchEvent&& e) {
        seen.push_back(std::string(watchEventTypeName(e.type)) + ":" + resourceVersionOf(e.object));
        return true;
      });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_TRUE(saw_query.load());
  EXPECT_THAT(seen, ::testing::ElementsAre("ADDED:42", "BOOKMARK:50", "MODIFIED:51"));
}

TEST(Transport, IdleStreamTimesOutAndConnectionLossIsUnavailable) {
  LoopbackServer idle([](const std::string&, int fd, const std::stop_token& stop) {
    LoopbackServer::send(fd, kChunkedHead);
    LoopbackServer::chunk(fd, "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\n");
    LoopbackServer::hold(stop, 3s);  // then silence
  });
  auto client = clientFor(idle);
  WatchOptions options;
  options.idle_timeout = 500ms;
  int events = 0;
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = client->watch(resources::syncJob(), "ns", options, [&](WatchEvent&&) {
    ++events;
    return true;
  });
  EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
  EXPECT_EQ(events, 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2500ms);

  LoopbackServer dropping([](const std::string&, int fd, const std::stop_token&) {
    LoopbackServer::send(fd, kChunkedHead);
    LoopbackServer::chunk(fd, "{\"type\":\"ADDED\",\"object\":{}}\n");
    ::shutdown(fd, SHUT_RDWR);  // no terminating chunk
  });
  auto client2 = clientFor(dropping);
  status =
      client2->watch(resources::syncJob(), "ns", WatchOptions{}, [](WatchEvent&&) { return true; });
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
}

TEST(Transport, StopCancelsABlockedWatchPromptly) {
  LoopbackServer server([](const std::string&, int fd, const std::stop_token& stop) {
    LoopbackServer::send(fd, kChunkedHead);
    LoopbackServer::hold(stop, 5s);
  });
  auto client = clientFor(server);
  std::stop_source stop;
  std::jthread stopper([&] {
    std::this_thread::sleep_for(200ms);
    stop.request_stop();
  });
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = client->watch(
      resources::syncJob(), "ns", WatchOptions{}, [](WatchEvent&&) { return true; },
      stop.get_token());
  EXPECT_TRUE(absl::IsCancelled(status)) << status;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST(Transport, GoneAndStatusBodies) {
  LoopbackServer server([](const std::string& head, int fd, const std::stop_token&) {
    std::string body;
    std::string line;
    if (head.find("watch=1") != std::string::npos) {
      line = "HTTP/1.1 410 Gone";
      body =
          R"j({"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 1 (200)","reason":"Expired","code":410})j";
    } else {
      line = "HTTP/1.1 409 Conflict";
      body =
          R"({"kind":"Status","apiVersion":"v1","status":"Failure","message":"Operation cannot be fulfilled on syncjobs.tributary.dev \"j\": the object has been modified; please apply your changes to the latest version and try again","reason":"Conflict","code":409})";
    }
    LoopbackServer::send(fd, line + "\r\nContent-Type: application/json\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\n\r\n" + body);
  });
  auto client = clientFor(server);
  WatchOptions options;
  options.resource_version = "1";
  const absl::Status gone =
      client->watch(resources::syncJob(), "ns", options, [](WatchEvent&&) { return true; });
  EXPECT_TRUE(isGone(gone)) << gone;
  EXPECT_THAT(gone.message(), HasSubstr("too old resource version"));

  auto updated = client->update(resources::syncJob(),
                                Json{{"metadata", {{"name", "j"}, {"namespace", "ns"}}}});
  ASSERT_FALSE(updated.ok());
  EXPECT_TRUE(isConflict(updated.status())) << updated.status();
  EXPECT_TRUE(absl::IsAborted(updated.status()));
  EXPECT_THAT(updated.status().message(),
              HasSubstr("update syncjobs.tributary.dev ns/j: Operation cannot be fulfilled"));
}

TEST(Transport, ConnectionRefusedIsUnavailable) {
  Config config;
  config.server = "https://127.0.0.1:1";
  config.request_timeout = 2s;
  auto client = Client::create(config);
  ASSERT_TRUE(client.ok());
  auto result = (*client)->get(resources::syncJob(), "ns", "x");
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::IsUnavailable(result.status())) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("/apis/tributary.dev/v1alpha1"));
}

}  // namespace
}  // namespace tributary::kube
