// VCS sources against real git servers on loopback: file://, git daemon (git://) and git's smart
// HTTP protocol (git http-backend behind fixture_server.py), with refs, updates and credentials.

#include "tributary/installer/installer.h"

#include "test_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tributary::installer {
namespace {

namespace fs = std::filesystem;
using testing::GitRepo;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using testing::TempDir;

constexpr const char* kToken = "tok-9f8e7d6c5b4a";

std::string script(const std::string& version) { return "#!/bin/sh\necho " + version + "\n"; }

class VcsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repos_ = tmp_.path() / "repos";
    cache_ = tmp_.path() / "cache";
    fs::create_directories(repos_);
    repo_ = std::make_unique<GitRepo>(repos_, "conn");
    c1_ = repo_->commit({{"run.sh", script("v1")}, {"README", "readme"}}, "first");
  }

  std::unique_ptr<Installer> make(Options options) {
    auto installer = Installer::create(std::move(options));
    EXPECT_TRUE(installer.ok()) << installer.status();
    return installer.ok() ? *std::move(installer) : nullptr;
  }
  std::unique_ptr<Installer> make() { return make(testing::testOptions(cache_, sink_)); }

  ConnectorSpec spec(const std::string& uri, const std::string& ref = "") const {
    ConnectorSpec s;
    s.name = "git-conn";
    s.source = Source::Vcs;
    s.uri = uri;
    s.ref = ref;
    s.install_command = "cp run.sh built.sh && chmod +x built.sh";
    s.command = "./built.sh";
    return s;
  }

  static std::string run(const Installation& inst) {
    return testing::shOk("./built.sh", inst.root);
  }
  static std::string checkedOut(const Installation& inst) {
    std::string head = testing::shOk("git rev-parse HEAD", inst.root);
    head.pop_back();
    return head;
  }

  void expectNoLeftovers() {
    EXPECT_THAT(testing::listTree(cache_ / "staging"), IsEmpty());
    EXPECT_THAT(testing::listTree(cache_ / "trash"), IsEmpty());
  }

  TempDir tmp_;
  fs::path repos_;
  fs::path cache_;
  std::unique_ptr<GitRepo> repo_;
  std::string c1_;
  std::shared_ptr<testing::CapturingSink> sink_ = std::make_shared<testing::CapturingSink>();
};

TEST_F(VcsTest, FileUrlDefaultsToRemoteHead) {
  auto inst = make()->install(spec(repo_->fileUrl()));
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_EQ(inst->resolved_commit, c1_);
  EXPECT_EQ(inst->revision, c1_);
  EXPECT_EQ(inst->resolved_ref, "refs/heads/main");
  EXPECT_EQ(inst->version, inst->spec_hash + "-" + c1_);
  EXPECT_EQ(checkedOut(*inst), c1_);
  EXPECT_EQ(run(*inst), "v1\n");
  EXPECT_TRUE(fs::exists(inst->root / "README"));
  expectNoLeftovers();
}

TEST_F(VcsTest, PlainPathAndOtherDefaultBranch) {
  GitRepo trunk(repos_, "trunky", "trunk");
  const std::string commit = trunk.commit({{"run.sh", script("trunk")}}, "t");
  auto inst = make()->install(spec(trunk.bare().string()));
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_EQ(inst->resolved_ref, "refs/heads/trunk");
  EXPECT_EQ(inst->resolved_commit, commit);
}

TEST_F(VcsTest, BranchesTagsAndCommits) {
  repo_->tag("v1", /*annotated=*/true);
  repo_->tag("v1-light", /*annotated=*/false);
  const std::string c2 = repo_->commit({{"run.sh", script("v2")}}, "second");
  repo_->checkoutNewBranch("feature");
  const std::string c3 = repo_->commit({{"run.sh", script("feature")}}, "feature work");
  repo_->checkout("main");

  auto installer = make();
  struct Case {
    std::string ref;
    std::string commit;
    std::string output;
    std::string resolved_ref;
  };
  for (const Case& c :
       {Case{"feature", c3, "feature\n", "refs/heads/feature"},
        Case{"refs/heads/feature", c3, "feature\n", "refs/heads/feature"},
        Case{"main", c2, "v2\n", "refs/heads/main"}, Case{"v1", c1_, "v1\n", "refs/tags/v1"},
        Case{"v1-light", c1_, "v1\n", "refs/tags/v1-light"},
        Case{c2, c2, "v2\n", ""},       // a branch tip
        Case{c1_, c1_, "v1\n", ""}}) {  // not a tip any more: fetches everything
    auto inst = installer->install(spec(repo_->fileUrl(), c.ref));
    ASSERT_TRUE(inst.ok()) << c.ref << ": " << inst.status();
    EXPECT_EQ(inst->resolved_commit, c.commit) << c.ref;
    EXPECT_EQ(inst->resolved_ref, c.resolved_ref) << c.ref;
    EXPECT_EQ(checkedOut(*inst), c.commit) << c.ref;
    EXPECT_EQ(run(*inst), c.output) << c.ref;
  }
  expectNoLeftovers();
}

TEST_F(VcsTest, UnknownRefsAndUnreachableRemotes) {
  auto installer = make();
  struct Case {
    std::string uri;
    std::string ref;
    absl::StatusCode code;
    std::string message;
  };
  const std::string missing_commit(40, 'a');
  for (const Case& c :
       {Case{repo_->fileUrl(), "no-such-branch", absl::StatusCode::kNotFound,
             "unknown ref 'no-such-branch'"},
        Case{repo_->fileUrl(), c1_.substr(0, 10), absl::StatusCode::kNotFound,
             "full 40-character id"},
        Case{repo_->fileUrl(), missing_commit, absl::StatusCode::kNotFound, "commit not found"},
        Case{"file://" + (tmp_.path() / "nowhere.git").string(), "", absl::StatusCode::kNotFound,
             "cannot reach"},
        Case{"git://127.0.0.1:1/nothing.git", "", absl::StatusCode::kUnavailable, "cannot reach"},
        Case{"http://127.0.0.1:1/nothing.git", "", absl::StatusCode::kUnavailable,
             "cannot reach"}}) {
    auto inst = installer->install(spec(c.uri, c.ref));
    ASSERT_FALSE(inst.ok()) << c.uri << " " << c.ref;
    EXPECT_EQ(inst.status().code(), c.code) << inst.status();
    EXPECT_THAT(std::string(inst.status().message()), HasSubstr(c.message)) << inst.status();
  }
  EXPECT_THAT(testing::listTree(cache_ / "connectors"), IsEmpty());
  expectNoLeftovers();
}

TEST_F(VcsTest, EmptyRepository) {
  GitRepo empty(repos_, "empty");
  auto inst = make()->install(spec(empty.fileUrl()));
  ASSERT_FALSE(inst.ok());
  EXPECT_THAT(std::string(inst.status().message()), HasSubstr("empty"));
}

TEST_F(VcsTest, UpdateAfterANewCommitIsPushed) {
  auto installer = make();
  ConnectorSpec s = spec(repo_->fileUrl());
  // A build cache the install command keeps between versions (incremental builds).
  s.install_command = "[ -f build-cache ] || echo first > build-cache; cp run.sh built.sh";
  auto v1 = installer->install(s);
  ASSERT_TRUE(v1.ok()) << v1.status();

  fs::remove(repo_->work() / "README");  // deleted upstream: must vanish from the checkout
  const std::string c2 = repo_->commit({{"run.sh", script("v2")}}, "second");
  // install() never contacts the remote once a version is installed.
  auto still = installer->install(s);
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(still->resolved_commit, c1_);

  auto v2 = installer->update(s);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_TRUE(v2->installed_now);
  EXPECT_EQ(v2->resolved_commit, c2);
  EXPECT_EQ(checkedOut(*v2), c2);
  EXPECT_EQ(run(*v2), "v2\n");
  EXPECT_EQ(testing::readFile(v2->root / "build-cache"), "first\n");  // seeded from v1
  EXPECT_FALSE(fs::exists(v2->root / "README"));
  EXPECT_TRUE(fs::exists(v1->root / "README"));
  // The running version is untouched.
  EXPECT_EQ(run(*v1), "v1\n");
  EXPECT_EQ(checkedOut(*v1), c1_);

  auto again = installer->update(s);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->installed_now);
  EXPECT_EQ(again->version, v2->version);
  auto now = installer->install(s);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->version, v2->version);
  expectNoLeftovers();
}

TEST_F(VcsTest, UpdateCommandRunsInTheCheckout) {
  auto installer = make();
  ConnectorSpec s = spec(repo_->fileUrl());
  s.update_command =
      "git pull -q --ff-only origin main && cp run.sh built.sh && echo by-update > how";
  auto v1 = installer->install(s);
  ASSERT_TRUE(v1.ok()) << v1.status();
  const std::string c2 = repo_->commit({{"run.sh", script("v2")}}, "second");
  auto v2 = installer->update(s);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->resolved_commit, c2);
  EXPECT_EQ(v2->version, v2->spec_hash + "-" + c2);
  EXPECT_EQ(run(*v2), "v2\n");
  EXPECT_EQ(testing::readFile(v2->root / "how"), "by-update\n");
  EXPECT_EQ(run(*v1), "v1\n");
  // Nothing new upstream: the update command leaves HEAD where it is: same version.
  auto v3 = installer->update(s);
  ASSERT_TRUE(v3.ok()) << v3.status();
  EXPECT_EQ(v3->version, v2->version);
  expectNoLeftovers();
}

TEST_F(VcsTest, GitDaemon) {
  testing::GitDaemon daemon(repos_);
  ASSERT_TRUE(daemon.ok()) << "git daemon did not start";
  auto installer = make();
  ConnectorSpec s = spec(daemon.url("conn.git"));
  auto v1 = installer->install(s);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->resolved_commit, c1_);
  EXPECT_EQ(run(*v1), "v1\n");
  repo_->tag("v1.0", true);
  const std::string c2 = repo_->commit({{"run.sh", script("v2")}}, "second");
  auto v2 = installer->update(s);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->resolved_commit, c2);
  EXPECT_EQ(run(*v2), "v2\n");
  auto tagged = installer->install(spec(daemon.url("conn.git"), "v1.0"));
  ASSERT_TRUE(tagged.ok()) << tagged.status();
  EXPECT_EQ(tagged->resolved_commit, c1_);
  auto unknown = installer->install(spec(daemon.url("conn.git"), "nope"));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  auto missing_repo = installer->install(spec(daemon.url("missing.git")));
  EXPECT_FALSE(missing_repo.ok());
  expectNoLeftovers();
}

TEST_F(VcsTest, SmartHttp) {
  testing::FixtureServer server(tmp_.path(), repos_, kToken);
  ASSERT_TRUE(server.ok());
  auto installer = make();
  ConnectorSpec s = spec(server.url("/git/conn.git"));
  auto v1 = installer->install(s);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->resolved_commit, c1_);
  const std::string c2 = repo_->commit({{"run.sh", script("v2")}}, "second");
  auto v2 = installer->update(s);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->resolved_commit, c2);
  EXPECT_EQ(run(*v2), "v2\n");
  expectNoLeftovers();
}

TEST_F(VcsTest, SmartHttpWithTokenFromSecret) {
  fs::create_directories(repos_ / "private");
  GitRepo priv(repos_ / "private", "sec");
  const std::string commit = priv.commit({{"run.sh", script("private")}}, "p");
  testing::FixtureServer server(tmp_.path(), repos_, kToken);
  ASSERT_TRUE(server.ok());

  Credentials good;
  good.token = kToken;
  Credentials bad;
  bad.token = "wrong-token-value";
  Options options = testing::testOptions(cache_, sink_);
  options.secrets = std::make_shared<StaticSecretResolver>(
      std::map<std::string, Credentials, std::less<>>{{"good", good}, {"bad", bad}});
  auto installer = make(std::move(options));

  ConnectorSpec s = spec(server.url("/git/private/sec.git"));
  auto anonymous = installer->install(s);
  ASSERT_FALSE(anonymous.ok());
  EXPECT_EQ(anonymous.status().code(), absl::StatusCode::kPermissionDenied) << anonymous.status();
  EXPECT_THAT(std::string(anonymous.status().message()), HasSubstr("requires authentication"));

  s.secret_ref = "bad";
  auto wrong = installer->install(s);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kPermissionDenied) << wrong.status();
  EXPECT_THAT(std::string(wrong.status().message()), Not(HasSubstr("wrong-token-value")));

  s.secret_ref = "good";
  s.install_command = "cp run.sh built.sh && env > install-env.txt";
  auto inst = installer->install(s);
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_EQ(inst->resolved_commit, commit);
  EXPECT_EQ(run(*inst), "private\n");
  // The token reaches neither the install command, nor the logs, nor the manifest.
  EXPECT_THAT(testing::readFile(inst->root / "install-env.txt"), Not(HasSubstr(kToken)));
  EXPECT_THAT(sink_->all(), Not(HasSubstr(kToken)));
  EXPECT_THAT(sink_->all(), Not(HasSubstr("wrong-token-value")));
  EXPECT_THAT(testing::readFile(inst->root.parent_path() / "manifest.json"),
              Not(HasSubstr(kToken)));
  EXPECT_THAT(testing::readFile(inst->root / ".git/config"), Not(HasSubstr(kToken)));
  expectNoLeftovers();
}

}  // namespace
}  // namespace tributary::installer
