// End to end: a Go connector (the Go SDK's hello example as its own module) in a git repository,
// installed with `install_command: go build …`, started through the plugin host and synced; then
// updated to a new commit while a sync of the old version keeps running from its own files.

#include "tributary/installer/installer.h"
#include "tributary/plugin_host/plugin_host.h"
#include "tributary/sync/sync.h"

#include "test_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tributary::installer {
namespace {

namespace fs = std::filesystem;
using testing::GitRepo;
using ::testing::HasSubstr;
using testing::TempDir;

class CountingSink : public plugin_host::PageSink {
 public:
  absl::Status onPage(const proto::SyncResponse& page) override {
    const std::lock_guard lock(mu_);
    ++pages_;
    objects_ += page.response_size();
    for (const auto& o : page.response()) {
      ids_.push_back(o.remote_id());
    }
    return absl::OkStatus();
  }
  absl::Status onClean() override { return absl::OkStatus(); }
  int pages() const {
    const std::lock_guard lock(mu_);
    return pages_;
  }
  int objects() const {
    const std::lock_guard lock(mu_);
    return objects_;
  }

 private:
  mutable std::mutex mu_;
  int pages_ = 0;
  int objects_ = 0;
  std::vector<std::string> ids_;
};

// go.mod of a standalone module using the SDK from this source tree.
std::string goMod() {
  const fs::path sdk = testing::sourceDir() / "sdk/go";
  std::string requires_block;
  const std::string sdk_mod = testing::readFile(sdk / "go.mod");
  // Every requirement of the SDK (direct and indirect) so `go build` needs no go.mod update.
  std::size_t pos = 0;
  while ((pos = sdk_mod.find("require (", pos)) != std::string::npos) {
    const std::size_t end = sdk_mod.find(')', pos);
    requires_block += sdk_mod.substr(pos, end - pos + 1) + "\n\n";
    pos = end;
  }
  return "module example.com/helloconn\n\ngo 1.24\n\nrequire tributary.dev/sdk/go v0.0.0\n\n"
         "replace tributary.dev/sdk/go => " +
         sdk.string() + "\n\n" + requires_block;
}

TEST(EndToEndTest, GoConnectorFromGitThroughThePluginHost) {
  TempDir tmp;
  const fs::path sdk = testing::sourceDir() / "sdk/go";
  ASSERT_TRUE(fs::exists(sdk / "proto/connector.pb.go"))
      << "run scripts/build-go.sh (the go_fixtures target) first: the SDK's protobuf code is "
         "generated";
  GitRepo repo(tmp.path(), "hello-connector");
  const std::string hello = testing::readFile(sdk / "examples/hello/main.go");
  const std::string c1 = repo.commit(
      {{"main.go", hello}, {"go.mod", goMod()}, {"go.sum", testing::readFile(sdk / "go.sum")}},
      "hello connector");

  Options options = testing::testOptions(tmp.path() / "cache");
  options.command_timeout = std::chrono::minutes(5);
  options.command_env["GOFLAGS"] = "-mod=mod";
  auto installer = Installer::create(std::move(options));
  ASSERT_TRUE(installer.ok()) << installer.status();

  ConnectorSpec spec;
  spec.name = "hello";
  spec.source = Source::Vcs;
  spec.uri = repo.fileUrl();
  spec.install_command = "go build -o hello-conn .";
  spec.command = "./hello-conn";
  auto v1 = (*installer)->install(spec);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->resolved_commit, c1);

  plugin_host::Options host_options;
  host_options.start_timeout = std::chrono::seconds(30);
  auto client = plugin_host::PluginClient::start(sync::launchSpec(*v1), host_options);
  ASSERT_TRUE(client.ok()) << client.status();
  CountingSink sink;
  auto result = (*client)->sync(R"({"names":["Ada","Linus"]})", sink, std::chrono::seconds(60));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->pages, 3U);
  EXPECT_EQ(result->objects, 6U);
  EXPECT_EQ(sink.pages(), 3);
  EXPECT_THAT(result->metadata, HasSubstr("\"pages\":3"));

  // A new commit upstream (a fourth language); update while v1's process is still running.
  std::string hello4 = hello;
  const std::string anchor = "{\"es\", \"Hola\"},";
  ASSERT_NE(hello4.find(anchor), std::string::npos);
  hello4.replace(hello4.find(anchor), anchor.size(), anchor + "\n\t{\"de\", \"Hallo\"},");
  const std::string c2 = repo.commit({{"main.go", hello4}}, "german");
  auto v2 = (*installer)->update(spec);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->resolved_commit, c2);
  EXPECT_NE(v2->root, v1->root);

  // The old connector still syncs from its own files...
  CountingSink old_sink;
  auto old_again = (*client)->sync("{}", old_sink, std::chrono::seconds(60));
  ASSERT_TRUE(old_again.ok()) << old_again.status();
  EXPECT_EQ(old_sink.pages(), 3);
  (*client)->kill();

  // ...and the new one has four pages.
  auto client2 = plugin_host::PluginClient::start(sync::launchSpec(*v2), host_options);
  ASSERT_TRUE(client2.ok()) << client2.status();
  CountingSink sink2;
  auto result2 = (*client2)->sync("{}", sink2, std::chrono::seconds(60));
  ASSERT_TRUE(result2.ok()) << result2.status();
  EXPECT_EQ(result2->pages, 4U);
  (*client2)->kill();
}

}  // namespace
}  // namespace tributary::installer
