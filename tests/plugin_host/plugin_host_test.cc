// The C++ host running real connectors: Go (go-plugin v1.4, v1.6.3, v1.8.0), C++ SDK, Python SDK.
#include "tributary/plugin_host/plugin_host.h"

#include "test_support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <mutex>

namespace tributary::plugin_host::testing {
namespace {

constexpr auto kSyncTimeout = std::chrono::seconds(60);

struct Case {
  ConnectorProgram program;
  bool auto_mtls;
};

std::string caseName(const ::testing::TestParamInfo<Case>& info) {
  return info.param.program.name + (info.param.auto_mtls ? "_automtls" : "_plain");
}

std::vector<Case> allCases() {
  std::vector<Case> cases;
  for (const auto& program : allTestConnectors()) {
    cases.push_back({program, false});
    cases.push_back({program, true});
  }
  return cases;
}

class HostRunsConnector : public ::testing::TestWithParam<Case> {};

TEST_P(HostRunsConnector, DeliversEveryPageAndReturnsMetadata) {
  const Case& c = GetParam();
  ScopedTmpDir tmp;
  auto logs = std::make_shared<CapturingLogSink>();
  Options options = testOptions(logs);
  options.auto_mtls = c.auto_mtls;
  auto client = PluginClient::start(launchSpec(c.program), options);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->handshake().network, "unix");
  EXPECT_EQ((*client)->handshake().app_version, 1);
  EXPECT_EQ((*client)->handshake().server_cert_der.empty(), !c.auto_mtls);
  EXPECT_TRUE((*client)->ping().ok());

  RecordingSink sink;
  auto result = (*client)->sync(R"({"pages":5,"page_size":100})", sink, kSyncTimeout);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->pages, 5U);
  EXPECT_EQ(result->objects, 500U);
  EXPECT_GT(result->bytes, 500U * 20U);
  EXPECT_EQ(sink.remoteIds(), expectedIds(5, 100));
  const auto metadata = nlohmann::json::parse(result->metadata);
  EXPECT_EQ(metadata["pages"], 5);
  EXPECT_EQ(metadata["objects"], 500);
  EXPECT_TRUE(metadata["connector"].get<std::string>().starts_with(c.program.label))
      << result->metadata;

  // A second Sync on the same process gets a fresh broker id and callback server.
  RecordingSink second;
  auto again = (*client)->sync(R"({"pages":2,"page_size":3})", second, kSyncTimeout);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(second.remoteIds(), expectedIds(2, 3));

  const ExitInfo exit = (*client)->kill();
  EXPECT_TRUE(exit.exited);
  EXPECT_FALSE(exit.forced) << "connector needed SIGKILL: " << exit.describe();
  EXPECT_EQ(exit.exit_code, 0) << exit.describe();
  EXPECT_TRUE(tmp.leftovers().empty());
}

INSTANTIATE_TEST_SUITE_P(AllConnectors, HostRunsConnector, ::testing::ValuesIn(allCases()),
                         caseName);

class HostServesClean : public ::testing::TestWithParam<ConnectorProgram> {};

TEST_P(HostServesClean, CleanReachesTheSink) {
  auto client = PluginClient::start(launchSpec(GetParam(), "clean"), testOptions());
  ASSERT_TRUE(client.ok()) << client.status();
  RecordingSink sink;
  auto result = (*client)->sync(R"({"pages":2,"page_size":4})", sink, kSyncTimeout);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->cleans, 1U);
  EXPECT_EQ(sink.cleans(), 1);
  EXPECT_EQ(sink.pages(), 2);
}

INSTANTIATE_TEST_SUITE_P(AllConnectors, HostServesClean, ::testing::ValuesIn(allTestConnectors()),
                         [](const auto& param_info) { return param_info.param.name; });

// Keeps each object's encoded size and metadata.
class ObjectShapeSink : public PageSink {
 public:
  absl::Status onPage(const proto::SyncResponse& page) override {
    const std::lock_guard lock(mu);
    for (const auto& object : page.response()) {
      sizes.push_back(static_cast<long>(object.ByteSizeLong()));
      metadata.push_back(object.metadata());
    }
    return absl::OkStatus();
  }
  absl::Status onClean() override { return absl::OkStatus(); }

  std::mutex mu;
  std::vector<long> sizes;
  std::vector<std::string> metadata;
};

// The benchmarks' objects: each test connector pads its metadata to the size asked, marks one
// object in a hundred with the revision asked (the 1 %-changed re-sync), and the metadata stays the
// contract's JSON.
TEST(HostRunsConnector, ObjectsHaveTheSizeAndRevisionAskedFor) {
  constexpr int kPageSize = 250;
  for (const auto& program : allTestConnectors()) {
    SCOPED_TRACE(program.name);
    auto client = PluginClient::start(launchSpec(program), testOptions());
    ASSERT_TRUE(client.ok()) << client.status();
    ObjectShapeSink sink;
    auto result = (*client)->sync(R"({"pages":2,"page_size":250,"object_bytes":300,"revision":5})",
                                  sink, kSyncTimeout);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(sink.sizes.size(), 2U * kPageSize);
    for (size_t i = 0; i < sink.sizes.size(); ++i) {
      EXPECT_LE(std::abs(sink.sizes[i] - 300), 2) << sink.sizes[i] << ": " << sink.metadata[i];
      const auto meta = nlohmann::json::parse(sink.metadata[i], nullptr, false);
      ASSERT_TRUE(meta.is_object()) << sink.metadata[i];
      const int index = static_cast<int>(i % kPageSize);
      EXPECT_EQ(meta["page"], static_cast<int>(i / kPageSize));
      EXPECT_EQ(meta["index"], index);
      EXPECT_EQ(meta.contains("rev"), index % 100 == 0) << sink.metadata[i];
      EXPECT_EQ(meta.value("rev", 5), 5) << sink.metadata[i];
      EXPECT_TRUE(meta["pad"].is_string()) << sink.metadata[i];
    }
  }
}

// After a long Sync the connector still exits on Shutdown: go-plugin hosts kill a plugin that has
// not exited 2 s after it (the C++ SDK's gRPC teardown once waited ~10 s on a poller here).
TEST(HostRunsConnector, ExitsOnShutdownAfterALongSync) {
  for (const auto& program : {goConnector("v1_6"), cppConnector()}) {
    SCOPED_TRACE(program.name);
    for (int round = 0; round < 3; ++round) {
      auto client = PluginClient::start(launchSpec(program), testOptions());
      ASSERT_TRUE(client.ok()) << client.status();
      RecordingSink sink;
      auto result = (*client)->sync(R"({"pages":100,"page_size":1000,"object_bytes":300})", sink,
                                    kSyncTimeout);
      ASSERT_TRUE(result.ok()) << result.status();
      const auto asked = std::chrono::steady_clock::now();
      const ExitInfo exit = (*client)->kill();
      EXPECT_FALSE(exit.forced) << "round " << round << ": " << exit.describe();
      EXPECT_EQ(exit.exit_code, 0) << exit.describe();
      EXPECT_LT(std::chrono::steady_clock::now() - asked, std::chrono::milliseconds(1500));
    }
  }
}

TEST(HostRunsConnector, LargePagesUnderTheLimitArriveWhole) {
  // 2 000 objects of ~2.2 KB: pages over gRPC's default 4 MiB receive limit (where c1 fails).
  auto client = PluginClient::start(launchSpec(goConnector("v1_6")), testOptions());
  ASSERT_TRUE(client.ok()) << client.status();
  RecordingSink sink;
  auto result =
      (*client)->sync(R"({"pages":2,"page_size":2000,"object_bytes":2200})", sink, kSyncTimeout);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->objects, 4000U);
  EXPECT_GT(result->bytes / result->pages, 4U << 20U);
}

TEST(HostRunsConnector, SinkErrorFailsTheUpsertAndTheSync) {
  for (const auto& program : allTestConnectors()) {
    SCOPED_TRACE(program.name);
    auto client = PluginClient::start(launchSpec(program), testOptions());
    ASSERT_TRUE(client.ok()) << client.status();
    RecordingSink sink;
    sink.failFromPage(1, absl::UnavailableError("database is down"));
    auto result = (*client)->sync(R"({"pages":4,"page_size":5})", sink, kSyncTimeout);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
    EXPECT_NE(result.status().message().find("database is down"), std::string::npos)
        << result.status();
    EXPECT_EQ(sink.pages(), 1);
  }
}

TEST(HostRunsConnector, ConnectorIgnoringUpsertErrorsIsNotASuccess) {
  auto client =
      PluginClient::start(launchSpec(goConnector("v1_6"), "ignore_upsert_errors"), testOptions());
  ASSERT_TRUE(client.ok()) << client.status();
  RecordingSink sink;
  sink.failFromPage(2, absl::AbortedError("fenced out"));
  auto result = (*client)->sync(R"({"pages":4,"page_size":5})", sink, kSyncTimeout);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kAborted);
  EXPECT_NE(result.status().message().find(
                "reported success but the host refused 2 callback call(s) (2 Upsert"),
            std::string::npos)
      << result.status();
}

TEST(HostRunsConnector, CancellationStopsASync) {
  auto client = PluginClient::start(launchSpec(cppConnector(), "hang_in_sync"), testOptions());
  ASSERT_TRUE(client.ok()) << client.status();
  RecordingSink sink;
  std::stop_source stop;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop.request_stop();
  });
  auto result = (*client)->sync("{}", sink, kSyncTimeout, stop.get_token());
  canceller.join();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  const ExitInfo exit = (*client)->kill();
  EXPECT_TRUE(exit.exited);
}

TEST(HostRunsConnector, EnvironmentIsExplicit) {
  ::setenv("TRIBUTARY_TEST_SECRET", "must-not-leak", 1);
  LaunchSpec spec;
  // A shell connector that prints its environment to stderr and then exits: no handshake.
  spec.command = "env >&2; exit 4";
  spec.env["CONNECTOR_OWN"] = "yes";
  auto logs = std::make_shared<CapturingLogSink>();
  auto client = PluginClient::start(spec, testOptions(logs));
  ::unsetenv("TRIBUTARY_TEST_SECRET");
  ASSERT_FALSE(client.ok());
  EXPECT_TRUE(logs->contains("BASIC_PLUGIN=hello"));
  EXPECT_TRUE(logs->contains("PLUGIN_PROTOCOL_VERSIONS=1"));
  EXPECT_TRUE(logs->contains("PLUGIN_MIN_PORT=10000"));
  EXPECT_TRUE(logs->contains("PLUGIN_MAX_PORT=25000"));
  EXPECT_TRUE(logs->contains("CONNECTOR_OWN=yes"));
  EXPECT_TRUE(logs->contains("PATH="));
  EXPECT_FALSE(logs->contains("TRIBUTARY_TEST_SECRET"));
  EXPECT_FALSE(logs->contains("PLUGIN_CLIENT_CERT"));
}

}  // namespace
}  // namespace tributary::plugin_host::testing
