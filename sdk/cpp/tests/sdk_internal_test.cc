#include "broker.h"
#include "gtest/gtest.h"
#include "hclog.h"
#include "plugin_env.h"

#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <poll.h>
#include <regex>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace tributary::sdk::internal {
namespace {

TEST(NegotiateVersionTest, PicksHighestCommonElseLowest) {
  EXPECT_EQ(negotiateVersion({1}, "1"), 1);
  EXPECT_EQ(negotiateVersion({1, 2, 3}, "2,3"), 3);
  EXPECT_EQ(negotiateVersion({3, 1, 2}, "1,2"), 2);
  EXPECT_EQ(negotiateVersion({2, 3}, "5,6"), 2);  // No match: our lowest; the host decides.
  EXPECT_EQ(negotiateVersion({2, 3}, ""), 2);
  std::vector<std::string> invalid;
  EXPECT_EQ(negotiateVersion({1, 2}, "x,2,,3y", &invalid), 2);
  EXPECT_EQ(invalid, (std::vector<std::string>{"x", "", "3y"}));
}

TEST(HandshakeTest, SixFieldsAlways) {
  EXPECT_EQ(formatHandshake(1, "unix", "/tmp/plugin123", ""), "1|1|unix|/tmp/plugin123|grpc|\n");
  EXPECT_EQ(formatHandshake(5, "unix", "/tmp/p", "MIIB"), "1|5|unix|/tmp/p|grpc|MIIB\n");
}

TEST(SocketPathTest, FreshPathInDir) {
  char dir_template[] = "/tmp/sdktestXXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  auto a = reserveSocketPath(dir);
  auto b = reserveSocketPath(dir + "/");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(*a, *b);
  EXPECT_EQ(a->rfind(dir + "/plugin", 0), 0U);
  struct stat st {};
  EXPECT_NE(stat(a->c_str(), &st), 0) << "the reserved name must not exist yet";
  EXPECT_FALSE(reserveSocketPath("/tmp/" + std::string(120, 'x')).ok());
  rmdir(dir_template);
}

TEST(SocketPathTest, DirFromEnvironment) {
  setenv("PLUGIN_UNIX_SOCKET_DIR", "/run/plugins", 1);
  setenv("TMPDIR", "/var/tmp", 1);
  EXPECT_EQ(socketDir(), "/run/plugins");
  unsetenv("PLUGIN_UNIX_SOCKET_DIR");
  EXPECT_EQ(socketDir(), "/var/tmp");
  unsetenv("TMPDIR");
  EXPECT_EQ(socketDir(), "/tmp");
}

TEST(GroupTest, NumericAndNamed) {
  auto numeric = resolveGroup("0");
  ASSERT_TRUE(numeric.ok());
  EXPECT_EQ(*numeric, 0U);
  auto named = resolveGroup("root");
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(*named, 0U);
  EXPECT_FALSE(resolveGroup("no-such-group-tributary").ok());
}

TEST(GroupTest, MakeGroupWritable) {
  char path[] = "/tmp/sdkgroupXXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  chmod(path, 0600);
  ASSERT_TRUE(makeGroupWritable(path, std::to_string(getgid())).ok());
  struct stat st {};
  ASSERT_EQ(stat(path, &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660U);
  EXPECT_EQ(st.st_gid, getgid());
  EXPECT_FALSE(makeGroupWritable(path, "no-such-group-tributary").ok());
  unlink(path);
}

TEST(HclogTest, TimestampLayout) {
  const std::regex layout(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)");
  EXPECT_TRUE(std::regex_match(hclogTimestamp(std::chrono::system_clock::now()), layout));
  const auto epoch_plus =
      std::chrono::system_clock::time_point(std::chrono::microseconds(1'500'042));
  EXPECT_EQ(hclogTimestamp(epoch_plus), "1970-01-01T00:00:01.500042Z");
}

TEST(HclogTest, LineIsJsonWithStringKeys) {
  const std::string line =
      formatHclogLine(LogLevel::Warn, "connector", "hello \xff world",
                      {{"k", "v"}, {"@level", "bogus"}}, std::chrono::system_clock::now());
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  const auto json = nlohmann::json::parse(line);
  EXPECT_EQ(json.at("@level"), "warn");
  EXPECT_TRUE(json.at("@message").is_string());
  EXPECT_EQ(json.at("@module"), "connector");
  EXPECT_TRUE(json.at("@timestamp").is_string());
  EXPECT_EQ(json.at("k"), "v");
}

plugin::ConnInfo connInfo(uint32_t id, const std::string& address) {
  plugin::ConnInfo info;
  info.set_service_id(id);
  info.set_network("unix");
  info.set_address(address);
  return info;
}

TEST(BrokerTest, TakeWaitsForConnInfoAndIsSingleUse) {
  Broker broker(std::nullopt, std::chrono::milliseconds(5000));
  std::thread sender([&broker] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    broker.put(connInfo(2, "/tmp/other"));
    broker.put(connInfo(1, "/tmp/plugin1"));
  });
  auto info = broker.take(1);  // Arrives after the wait started, like a Go host's ConnInfo.
  sender.join();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->address(), "/tmp/plugin1");
  auto channel = broker.channelFor(*info);
  EXPECT_TRUE(channel.ok()) << channel.status();
  auto other = broker.take(2);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->address(), "/tmp/other");
}

TEST(BrokerTest, TimeoutAndClose) {
  Broker broker(std::nullopt, std::chrono::milliseconds(50));
  broker.put(connInfo(1, "/tmp/plugin1"));
  ASSERT_TRUE(broker.take(1).ok());
  auto again = broker.take(1);  // Consumed: a second take waits for a new ConnInfo.
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDeadlineExceeded) << again.status();
  broker.close();
  EXPECT_EQ(broker.take(7).status().code(), absl::StatusCode::kUnavailable);
}

TEST(BrokerTest, UnknownNetworkIsAnError) {
  Broker broker(std::nullopt, std::chrono::milliseconds(50));
  plugin::ConnInfo info = connInfo(1, "x");
  info.set_network("pipe");
  EXPECT_EQ(broker.channelFor(info).status().code(), absl::StatusCode::kInvalidArgument);
}

#ifdef HELLO_CONNECTOR_PATH
// Reads from `fd` until `done(text)` or EOF or `deadline`; returns false on timeout.
bool readUntil(int fd, std::string& text, std::chrono::steady_clock::time_point deadline,
               bool until_eof) {
  char buf[4096];
  while (true) {
    if (!until_eof && text.find('\n') != std::string::npos) {
      return true;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return false;
    }
    struct pollfd pfd {};
    pfd.fd = fd;
    pfd.events = POLLIN;
    const int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) {
      continue;
    }
    if (ready <= 0) {
      return false;
    }
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return until_eof;
    }
    text.append(buf, static_cast<size_t>(n));
  }
}

// The host (here a `sh -c` wrapper) is SIGKILLed without calling Shutdown: the connector notices
// it was re-parented and exits by itself instead of running orphaned.
TEST(HostDeathTest, ConnectorExitsWhenHostIsKilled) {
  int out[2];  // The connector's stdout: the handshake line.
  int err[2];  // Its stderr, kept open and drained here (so only the re-parenting is detected).
  int pid_pipe[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(err, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(pid_pipe, O_CLOEXEC), 0);

  std::vector<std::string> env_strings = {"BASIC_PLUGIN=hello", "PLUGIN_PROTOCOL_VERSIONS=1"};
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string_view(*e).rfind("BASIC_PLUGIN=", 0) != 0) {
      env_strings.emplace_back(*e);
    }
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) {
    envp.push_back(e.data());
  }
  envp.push_back(nullptr);
  std::string sh = "/bin/sh";
  std::string dash_c = "-c";
  std::string script = R"("$0" 3>&- & echo $! >&3; wait)";
  std::string connector = HELLO_CONNECTOR_PATH;
  char* argv[] = {sh.data(), dash_c.data(), script.data(), connector.data(), nullptr};

  const pid_t shell = ::fork();
  ASSERT_GE(shell, 0);
  if (shell == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::dup2(pid_pipe[1], 3);
    ::execve(argv[0], argv, envp.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  ::close(pid_pipe[1]);

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::string pid_text;
  ASSERT_TRUE(readUntil(pid_pipe[0], pid_text, deadline, false));
  const pid_t child = static_cast<pid_t>(std::atol(pid_text.c_str()));
  ASSERT_GT(child, 0);
  std::string handshake;
  const bool started = readUntil(out[0], handshake, deadline, false);
  std::string stderr_text;
  if (!started) {
    ::kill(child, SIGKILL);
    ::kill(shell, SIGKILL);
    ::waitpid(shell, nullptr, 0);
    FAIL() << "no handshake from the connector: " << handshake;
  }
  EXPECT_EQ(handshake.rfind("1|1|unix|", 0), 0u) << handshake;

  ASSERT_EQ(::kill(shell, SIGKILL), 0);
  ASSERT_EQ(::waitpid(shell, nullptr, 0), shell);
  const auto killed_at = std::chrono::steady_clock::now();
  // EOF on stderr: the connector (the last holder of the pipe's write end) has exited.
  const bool exited =
      readUntil(err[0], stderr_text, killed_at + std::chrono::seconds(5), /*until_eof=*/true);
  if (!exited) {
    ::kill(child, SIGKILL);
  }
  EXPECT_TRUE(exited) << "the connector still runs 5 s after its host was killed";
  EXPECT_NE(stderr_text.find("the host process is gone"), std::string::npos) << stderr_text;
  ::close(out[0]);
  ::close(err[0]);
  ::close(pid_pipe[0]);
}
#endif  // HELLO_CONNECTOR_PATH

}  // namespace
}  // namespace tributary::sdk::internal
