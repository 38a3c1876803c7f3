// Installer behaviour with Local sources: copying, the cache (versions, reuse, staging,
// atomicity, leases, GC), install/update commands and every bad input that needs no network.

#include "tributary/installer/installer.h"

#include "test_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

namespace tributary::installer {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::TempDir;

class LocalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    source_ = tmp_.path() / "src";
    cache_ = tmp_.path() / "cache";
    fs::create_directories(source_);
    testing::writeFile(source_ / "conn.sh", "#!/bin/sh\necho v1\n", static_cast<fs::perms>(0755));
    testing::writeFile(source_ / "lib/data.txt", "data");
    fs::create_symlink("../conn.sh", source_ / "lib/conn-link");
  }

  std::unique_ptr<Installer> make(Options options) {
    auto installer = Installer::create(std::move(options));
    EXPECT_TRUE(installer.ok()) << installer.status();
    return installer.ok() ? *std::move(installer) : nullptr;
  }
  std::unique_ptr<Installer> make() { return make(testing::testOptions(cache_, sink_)); }

  ConnectorSpec spec() const {
    ConnectorSpec s;
    s.name = "local-conn";
    s.source = Source::Local;
    s.uri = source_.string();
    s.command = "./conn.sh";
    return s;
  }

  // Nothing half-done anywhere in the cache.
  void expectNoLeftovers() {
    EXPECT_THAT(testing::listTree(cache_ / "staging"), IsEmpty());
    EXPECT_THAT(testing::listTree(cache_ / "trash"), IsEmpty());
  }

  TempDir tmp_;
  fs::path source_;
  fs::path cache_;
  std::shared_ptr<testing::CapturingSink> sink_ = std::make_shared<testing::CapturingSink>();
};

TEST_F(LocalTest, InstallsTreeAndReusesIt) {
  auto installer = make();
  auto inst = installer->install(spec());
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_TRUE(inst->installed_now);
  EXPECT_TRUE(inst->root.is_absolute());
  EXPECT_EQ(inst->root.filename(), "root");
  EXPECT_EQ(inst->root.parent_path().filename().string(), inst->version);
  EXPECT_EQ(inst->version, inst->spec_hash + "-" + inst->revision);
  EXPECT_THAT(testing::listTree(inst->root),
              ElementsAre("conn.sh", "lib", "lib/conn-link", "lib/data.txt"));
  EXPECT_TRUE(fs::is_symlink(inst->root / "lib/conn-link"));
  EXPECT_EQ(fs::read_symlink(inst->root / "lib/conn-link"), "../conn.sh");

  EXPECT_EQ(inst->command, "./conn.sh");
  EXPECT_EQ(testing::shOk("sh -c ./conn.sh", inst->root), "v1\n");

  auto again = installer->install(spec());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->installed_now);
  EXPECT_EQ(again->root, inst->root);
  expectNoLeftovers();
}

TEST_F(LocalTest, InstallsASingleFile) {
  ConnectorSpec s = spec();
  s.uri = (source_ / "conn.sh").string();
  Options options = testing::testOptions(cache_, sink_);
  options.durable = true;  // syncfs + fsync before and after the rename
  auto inst = make(std::move(options))->install(s);
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_THAT(testing::listTree(inst->root), ElementsAre("conn.sh"));
  struct stat st {};
  ASSERT_EQ(::stat((inst->root / "conn.sh").c_str(), &st), 0);
  EXPECT_TRUE((st.st_mode & S_IXUSR) != 0U);
}

TEST_F(LocalTest, SymlinksArePreservedNeverFollowed) {
  TempDir outside;
  testing::writeFile(outside.path() / "secret.txt", "outside data");
  fs::create_symlink(outside.path(), source_ / "out-dir");
  fs::create_symlink(outside.path() / "secret.txt", source_ / "out-file");
  auto inst = make()->install(spec());
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_TRUE(fs::is_symlink(inst->root / "out-dir"));
  EXPECT_TRUE(fs::is_symlink(inst->root / "out-file"));
  for (const auto& entry : testing::listTree(inst->root)) {
    EXPECT_THAT(entry, ::testing::Not(HasSubstr("secret.txt"))) << "copied through a symlink";
  }
}

TEST_F(LocalTest, InstallCommandRunsInTheRootWithSpecEnv) {
  ConnectorSpec s = spec();
  s.env["GREETING"] = "hello";
  s.install_command =
      "printf '#!/bin/sh\\necho %s\\n' \"$GREETING\" > built.sh && chmod +x built.sh";
  s.command = "./built.sh";
  auto inst = make()->install(s);
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_EQ(testing::shOk("./built.sh", inst->root), "hello\n");
  EXPECT_EQ(inst->env.at("GREETING"), "hello");
  EXPECT_EQ(inst->env.at("GREETING"), "hello");
}

TEST_F(LocalTest, FailingInstallCommandLeavesNothing) {
  ConnectorSpec s = spec();
  s.install_command = "echo compiling; echo 'error: it broke' >&2; exit 3";
  auto inst = make()->install(s);
  ASSERT_FALSE(inst.ok());
  EXPECT_EQ(inst.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(inst.status().message()), HasSubstr("exited with code 3"));
  EXPECT_THAT(std::string(inst.status().message()), HasSubstr("error: it broke"));
  EXPECT_THAT(testing::listTree(cache_ / "connectors"), IsEmpty());
  expectNoLeftovers();
}

TEST_F(LocalTest, InstallCommandTimeout) {
  Options options = testing::testOptions(cache_, sink_);
  options.command_timeout = std::chrono::milliseconds(300);
  ConnectorSpec s = spec();
  s.install_command = "echo waiting; sleep 30";
  auto inst = make(std::move(options))->install(s);
  ASSERT_FALSE(inst.ok());
  EXPECT_EQ(inst.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(inst.status().message()), HasSubstr("waiting"));
  EXPECT_THAT(testing::listTree(cache_ / "connectors"), IsEmpty());
  expectNoLeftovers();
}

TEST_F(LocalTest, CommandChecks) {
  auto installer = make();
  struct Case {
    std::string command;
    absl::StatusCode code;
    std::string message;
  };
  for (const Case& c :
       {Case{"./missing", absl::StatusCode::kNotFound, "not found in the connector directory"},
        Case{"/usr/bin/env x", absl::StatusCode::kInvalidArgument, "is absolute"},
        Case{"../../bin/sh", absl::StatusCode::kInvalidArgument, "escapes"},
        Case{"./lib/data.txt", absl::StatusCode::kFailedPrecondition, "not an executable"},
        Case{"no-such-program-xyz --flag", absl::StatusCode::kNotFound, "not found on PATH"}}) {
    ConnectorSpec s = spec();
    s.command = c.command;
    auto inst = installer->install(s);
    ASSERT_FALSE(inst.ok()) << c.command;
    EXPECT_EQ(inst.status().code(), c.code) << c.command << ": " << inst.status();
    EXPECT_THAT(std::string(inst.status().message()), HasSubstr(c.message)) << c.command;
  }
  // Interpreters on PATH, env assignments and exec are fine.
  for (const char* ok : {"sh ./conn.sh", "MODE=x exec ./conn.sh", "./lib/conn-link"}) {
    ConnectorSpec s = spec();
    s.command = ok;
    EXPECT_TRUE(installer->install(s).ok()) << ok;
  }
  expectNoLeftovers();
}

TEST_F(LocalTest, UpdateMakesANewVersionAndKeepsTheRunningOne) {
  Options options = testing::testOptions(cache_, sink_);
  options.keep_versions = 1;
  auto installer = make(std::move(options));
  auto v1 = installer->install(spec());
  ASSERT_TRUE(v1.ok()) << v1.status();

  // Unchanged source: the same version.
  auto same = installer->update(spec());
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->version, v1->version);
  EXPECT_FALSE(same->installed_now);

  testing::writeFile(source_ / "conn.sh", "#!/bin/sh\necho v2\n", static_cast<fs::perms>(0755));
  auto v2 = installer->update(spec());
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_TRUE(v2->installed_now);
  EXPECT_NE(v2->version, v1->version);
  EXPECT_EQ(testing::shOk("./conn.sh", v2->root), "v2\n");
  // v1 is leased (a "running sync"): still there and unchanged despite keep_versions = 1.
  EXPECT_EQ(testing::shOk("./conn.sh", v1->root), "v1\n");
  // install() now returns the newest selected version.
  auto current = installer->install(spec());
  ASSERT_TRUE(current.ok());
  EXPECT_EQ(current->version, v2->version);

  auto report = installer->collectGarbage();
  ASSERT_TRUE(report.ok());
  EXPECT_THAT(report->kept_in_use, ElementsAre("local-conn/" + v1->version));
  const fs::path v1_root = v1->root;
  v1 = absl::UnknownError("released");  // drops the lease
  same = absl::UnknownError("released");
  report = installer->collectGarbage();
  ASSERT_TRUE(report.ok());
  EXPECT_THAT(report->removed,
              ElementsAre("local-conn/" + fs::path(v1_root).parent_path().filename().string()));
  EXPECT_FALSE(fs::exists(v1_root));
  EXPECT_TRUE(fs::exists(v2->root / "conn.sh"));
  auto versions = installer->listVersions("local-conn");
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 1U);
  EXPECT_TRUE((*versions)[0].in_use);  // v2, current still holds it
  expectNoLeftovers();
}

TEST_F(LocalTest, GcKeepsTheCurrentVersionOfEachSpecOfAName) {
  // Two Connectors named local-conn (two namespaces, say) with different specs share the name's
  // cache directory: the installs and updates of one never remove the other's current version.
  Options options = testing::testOptions(cache_, sink_);
  options.keep_versions = 1;
  auto installer = make(std::move(options));
  const ConnectorSpec a = spec();
  ConnectorSpec b = spec();
  b.env = {{"REGION", "eu"}};
  auto a1 = installer->install(a);
  ASSERT_TRUE(a1.ok()) << a1.status();
  const std::string a_version = a1->version;
  const fs::path a_root = a1->root;
  a1 = absl::UnknownError("released");  // No sync of A runs: only GC's rules protect it.
  auto b1 = installer->install(b);
  ASSERT_TRUE(b1.ok()) << b1.status();
  ASSERT_NE(b1->version, a_version);
  b1 = absl::UnknownError("released");
  testing::writeFile(source_ / "conn.sh", "#!/bin/sh\necho v2\n", static_cast<fs::perms>(0755));
  auto b2 = installer->update(b);
  ASSERT_TRUE(b2.ok()) << b2.status();
  ASSERT_TRUE(b2->installed_now);
  const std::string b_version = b2->version;
  b2 = absl::UnknownError("released");
  ASSERT_TRUE(installer->collectGarbage().ok());

  auto versions = installer->listVersions("local-conn");
  ASSERT_TRUE(versions.ok());
  std::vector<std::string> names;
  for (const auto& v : *versions) {
    names.push_back(v.version);
  }
  // B's previous version went (keep_versions = 1 per spec); A's only one stayed.
  EXPECT_THAT(names, ElementsAre(b_version, a_version));
  EXPECT_EQ(testing::shOk("./conn.sh", a_root), "v1\n");
  auto again = installer->install(a);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->installed_now);
  EXPECT_EQ(again->version, a_version);
  expectNoLeftovers();
}

TEST_F(LocalTest, GcForgetsASpecNotSelectedWithinTheRetention) {
  Options options = testing::testOptions(cache_, sink_);
  options.keep_versions = 1;
  options.spec_retention = std::chrono::milliseconds(0);
  auto installer = make(std::move(options));
  ConnectorSpec b = spec();
  b.env = {{"REGION", "eu"}};
  ASSERT_TRUE(installer->install(spec()).ok());  // Its lease ends with the statement.
  auto b1 = installer->install(b);
  ASSERT_TRUE(b1.ok()) << b1.status();
  // Every spec is forgotten at once: the name-wide keep_versions = 1 alone decides.
  auto versions = installer->listVersions("local-conn");
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 1U);
  EXPECT_EQ((*versions)[0].version, b1->version);
  expectNoLeftovers();
}

TEST_F(LocalTest, UpdateCommandRunsInACopyOfTheCurrentVersion) {
  auto installer = make();
  ConnectorSpec s = spec();
  s.update_command = "echo updated > marker";
  auto v1 = installer->install(s);
  ASSERT_TRUE(v1.ok()) << v1.status();
  auto v2 = installer->update(s);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_NE(v2->version, v1->version);
  EXPECT_EQ(testing::readFile(v2->root / "marker"), "updated\n");
  EXPECT_FALSE(fs::exists(v1->root / "marker"));

  s.update_command = "exit 9";
  auto failed = installer->update(s);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("update_command"));
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("exited with code 9"));
  expectNoLeftovers();
}

TEST_F(LocalTest, BadLocalSources) {
  {
    Options options = testing::testOptions(cache_, sink_);
    options.local_roots = {tmp_.path() / "allowed"};
    auto inst = make(std::move(options))->install(spec());
    ASSERT_FALSE(inst.ok());
    EXPECT_EQ(inst.status().code(), absl::StatusCode::kPermissionDenied);
  }
  auto installer = make();
  ConnectorSpec s = spec();
  s.uri = (tmp_.path() / "nope").string();
  auto missing = installer->install(s);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);

  s.uri = tmp_.path().string();  // contains the cache
  auto overlap = installer->install(s);
  ASSERT_FALSE(overlap.ok());
  EXPECT_THAT(std::string(overlap.status().message()), HasSubstr("overlaps the installer cache"));

  ASSERT_EQ(::mkfifo((source_ / "pipe").c_str(), 0644), 0);
  auto fifo = installer->install(spec());
  ASSERT_FALSE(fifo.ok());
  EXPECT_THAT(std::string(fifo.status().message()), HasSubstr("FIFO"));
  EXPECT_THAT(testing::listTree(cache_ / "connectors"), IsEmpty());
  expectNoLeftovers();
}

TEST_F(LocalTest, SecretWithoutResolverIsAnError) {
  ConnectorSpec s = spec();
  s.secret_ref = "token";
  auto inst = make()->install(s);
  ASSERT_FALSE(inst.ok());
  EXPECT_EQ(inst.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(inst.status().message()), HasSubstr("no secret resolver"));
}

TEST_F(LocalTest, InvalidSpecRejectedBeforeTouchingTheCache) {
  ConnectorSpec s = spec();
  s.name = "../escape";
  auto inst = make()->install(s);
  ASSERT_FALSE(inst.ok());
  EXPECT_EQ(inst.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(tmp_.path() / "escape"));
  EXPECT_THAT(testing::listTree(cache_ / "connectors"), IsEmpty());
}

TEST_F(LocalTest, RepairsLeftoversOfACrashedInstall) {
  auto installer = make();
  // What a process killed mid-install leaves: a staging dir (its lock died with it).
  testing::writeFile(cache_ / "staging/local-conn/0123abcd/root/half-built", "x");
  testing::writeFile(cache_ / "trash/feedface/old", "x");
  auto inst = installer->install(spec());
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_THAT(testing::listTree(cache_ / "staging"), IsEmpty());
  EXPECT_THAT(sink_->all(), HasSubstr("removed unfinished installs left by a crash"));
  ASSERT_TRUE(installer->collectGarbage().ok());
  expectNoLeftovers();
}

TEST_F(LocalTest, DirectorySecretResolver) {
  testing::writeFile(tmp_.path() / "secrets/git-token/token", "abc123\n");
  testing::writeFile(tmp_.path() / "secrets/git-token/username", "bot\n");
  DirectorySecretResolver resolver(tmp_.path() / "secrets");
  auto creds = resolver.resolve("git-token");
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_EQ(creds->token, "abc123");
  EXPECT_EQ(creds->username, "bot");
  EXPECT_EQ(resolver.resolve("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(resolver.resolve("../secrets").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tributary::installer
