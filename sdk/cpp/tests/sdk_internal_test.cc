#include "broker.h"
#include "gtest/gtest.h"
#include "hclog.h"
#include "plugin_env.h"

#include <nlohmann/json.hpp>
#include <sys/stat.h>

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

}  // namespace
}  // namespace tributary::sdk::internal
