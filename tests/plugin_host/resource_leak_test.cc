// Hundreds of Syncs in a row: file descriptors, threads and child processes must not grow.
#include "tributary/plugin_host/plugin_host.h"
#include "tributary/testing/probes.h"

#include "test_support.h"

#include <gtest/gtest.h>

namespace tributary::plugin_host::testing {
namespace {

namespace probes = tributary::harness;

struct Usage {
  int fds;
  int threads;
};

Usage usage() { return {probes::openFdCount(), probes::threadCount()}; }

// gRPC sizes some thread pools lazily; a warm-up lets them reach their steady size first.
constexpr int kWarmup = 10;

void runOneProcessLifecycle(const ConnectorProgram& program) {
  auto client = PluginClient::start(launchSpec(program), testOptions());
  ASSERT_TRUE(client.ok()) << client.status();
  RecordingSink sink;
  auto result = (*client)->sync(R"({"pages":2,"page_size":5})", sink, std::chrono::seconds(30));
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ((*client)->kill().exit_code, 0);
}

TEST(ResourceLeak, ManySyncsOnOneConnectorProcess) {
  ScopedTmpDir tmp;
  auto client = PluginClient::start(launchSpec(goConnector("v1_6")), testOptions());
  ASSERT_TRUE(client.ok()) << client.status();
  auto syncOnce = [&] {
    RecordingSink sink;
    auto result = (*client)->sync(R"({"pages":2,"page_size":5})", sink, std::chrono::seconds(30));
    ASSERT_TRUE(result.ok()) << result.status();
  };
  for (int i = 0; i < kWarmup; ++i) {
    syncOnce();
  }
  const Usage before = usage();
  for (int i = 0; i < 300; ++i) {
    syncOnce();
  }
  // gRPC closes some sockets asynchronously: a leak stays, a closing socket goes away.
  probes::eventually([&] { return usage().fds <= before.fds; });
  const Usage after = usage();
  EXPECT_LE(after.fds, before.fds) << "file descriptors grew over 300 syncs:\n"
                                   << probes::describeOpenFds();
  EXPECT_LE(after.threads, before.threads + 2) << "threads grew over 300 syncs";
  (*client)->kill();
  EXPECT_TRUE(probes::childProcesses().empty());
  EXPECT_TRUE(tmp.leftovers().empty());
}

TEST(ResourceLeak, ManyConnectorProcessesInARow) {
  ScopedTmpDir tmp;
  const std::vector<ConnectorProgram> programs = {goConnector("v1_8"), cppConnector()};
  for (int i = 0; i < kWarmup; ++i) {
    runOneProcessLifecycle(programs[static_cast<std::size_t>(i) % programs.size()]);
  }
  const Usage before = usage();
  for (int i = 0; i < 200; ++i) {
    runOneProcessLifecycle(programs[static_cast<std::size_t>(i) % programs.size()]);
    if (::testing::Test::HasFatalFailure()) {
      return;
    }
  }
  probes::eventually([&] { return usage().fds <= before.fds; });
  const Usage after = usage();
  EXPECT_LE(after.fds, before.fds) << "file descriptors grew over 200 connector processes:\n"
                                   << probes::describeOpenFds();
  EXPECT_LE(after.threads, before.threads + 2) << "threads grew over 200 connector processes";
  EXPECT_TRUE(probes::childProcesses().empty()) << probes::describeChildProcesses();
  EXPECT_TRUE(tmp.leftovers().empty()) << "socket or temp files left behind";
}

}  // namespace
}  // namespace tributary::plugin_host::testing
