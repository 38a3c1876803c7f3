// A git server that accepts the connection and then sends nothing: libgit2 1.5 would wait in
// recv() until TCP gives up. The fetch runs in the git helper process, which is killed at the
// deadline or on a stop request; the install fails within the deadline plus a small slack and
// leaves nothing behind.

#include "tributary/common/strings.h"
#include "tributary/installer/installer.h"

#include "test_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <thread>

namespace tributary::installer {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using testing::TempDir;
using Clock = std::chrono::steady_clock;

constexpr auto kTimeout = std::chrono::seconds(2);
// Poll interval of the helper runner plus kill and reap, with room for a loaded CI machine.
constexpr auto kSlack = std::chrono::milliseconds(750);

class StallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GT(server_.port(), 0);
    Options options = testing::testOptions(tmp_.path() / "cache", sink_);
    options.fetch_timeout = kTimeout;
    Credentials creds;
    creds.username = "git";
    creds.password = "stall-password-123";
    creds.known_hosts =
        strings::cat("[127.0.0.1]:", server_.port(),
                     " ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIDsCLOPXkomFY51Q1hXm8rcqWsGWvc8AwRJHujzxaJto");
    options.secrets = std::make_shared<StaticSecretResolver>(
        std::map<std::string, Credentials, std::less<>>{{"s", creds}});
    auto installer = Installer::create(std::move(options));
    ASSERT_TRUE(installer.ok()) << installer.status();
    installer_ = *std::move(installer);
  }

  ConnectorSpec spec(const std::string& uri) const {
    ConnectorSpec s;
    s.name = "stalled";
    s.source = Source::Vcs;
    s.uri = uri;
    s.secret_ref = "s";
    s.command = "true";
    return s;
  }

  void expectNothingLeft() {
    const fs::path cache = tmp_.path() / "cache";
    EXPECT_THAT(testing::listTree(cache / "staging"), IsEmpty());
    EXPECT_THAT(testing::listTree(cache / "trash"), IsEmpty());
    EXPECT_THAT(testing::listTree(cache / "connectors"), IsEmpty());
  }

  TempDir tmp_;
  testing::SilentServer server_;
  std::shared_ptr<testing::CapturingSink> sink_ = std::make_shared<testing::CapturingSink>();
  std::unique_ptr<Installer> installer_;
};

TEST_F(StallTest, DeadlineBoundsEveryTransport) {
  const std::string port = std::to_string(server_.port());
  struct Case {
    std::string uri;
    std::string shown;  // the redacted URI in the message
  };
  for (const Case& c : {
           Case{"git://127.0.0.1:" + port + "/x.git", "git://127.0.0.1:" + port + "/x.git"},
           Case{"http://127.0.0.1:" + port + "/x.git", "http://127.0.0.1:" + port + "/x.git"},
           Case{"http://u:url-password-456@127.0.0.1:" + port + "/x.git",
                "http://u:***@127.0.0.1:" + port + "/x.git"},
           Case{"https://127.0.0.1:" + port + "/x.git", "https://127.0.0.1:" + port + "/x.git"},
           Case{"ssh://git@127.0.0.1:" + port + "/x.git", "ssh://git@127.0.0.1:" + port + "/x.git"},
       }) {
    const int accepted_before = server_.accepted();
    const auto started = Clock::now();
    auto inst = installer_->install(spec(c.uri));
    const auto took = Clock::now() - started;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
    std::cout << "[ stall    ] " << c.shown << ": failed after " << ms << " ms (timeout "
              << std::chrono::milliseconds(kTimeout).count() << " ms)\n";
    ASSERT_FALSE(inst.ok()) << c.uri;
    EXPECT_EQ(inst.status().code(), absl::StatusCode::kDeadlineExceeded) << inst.status();
    EXPECT_EQ(inst.status().message(), "timed out after 2.0s fetching " + c.shown);
    EXPECT_GT(server_.accepted(), accepted_before) << "the server must have been reached";
    EXPECT_GE(took, kTimeout);
    EXPECT_LT(took, kTimeout + kSlack);
    expectNothingLeft();
  }
  EXPECT_THAT(sink_->all(), Not(HasSubstr("url-password-456")));
  EXPECT_THAT(sink_->all(), Not(HasSubstr("stall-password-123")));
}

TEST_F(StallTest, StopRequestEndsAStalledFetch) {
  const std::string uri = "git://127.0.0.1:" + std::to_string(server_.port()) + "/x.git";
  std::stop_source stop;
  const auto delay = std::chrono::milliseconds(400);
  std::thread stopper([&] {
    std::this_thread::sleep_for(delay);
    stop.request_stop();
  });
  const auto started = Clock::now();
  auto inst = installer_->install(spec(uri), stop.get_token());
  const auto took = Clock::now() - started;
  stopper.join();
  std::cout << "[ stall    ] stop request: returned "
            << std::chrono::duration_cast<std::chrono::milliseconds>(took - delay).count()
            << " ms after it\n";
  ASSERT_FALSE(inst.ok());
  EXPECT_EQ(inst.status().code(), absl::StatusCode::kCancelled) << inst.status();
  EXPECT_THAT(std::string(inst.status().message()), HasSubstr("cancelled while fetching " + uri));
  EXPECT_LT(took, delay + kSlack);
  expectNothingLeft();
}

TEST_F(StallTest, UpdateOfAnInstalledVersionIsBoundedToo) {
  // Installed from a real daemon, then the same URI stalls: ls-remote must time out too.
  TempDir repos;
  testing::GitRepo repo(repos.path(), "conn");
  repo.commit({{"run.sh", "#!/bin/sh\necho hi\n"}}, "first");
  testing::GitDaemon daemon(repos.path());
  ASSERT_TRUE(daemon.ok());
  ConnectorSpec s = spec(daemon.url("conn.git"));
  s.secret_ref.clear();
  s.command = "./run.sh";
  auto v1 = installer_->install(s);
  ASSERT_TRUE(v1.ok()) << v1.status();
  // Freeze the daemon: the connection is accepted by the kernel, nobody answers.
  // (`[h]`: the pattern must not match the shell running pgrep.)
  const std::string pids = "$(pgrep -f -- '--base-pat[h]=" + repos.path().string() + "')";
  testing::shOk("kill -STOP " + pids);
  const auto started = Clock::now();
  auto v2 = installer_->update(s);
  const auto took = Clock::now() - started;
  testing::sh("kill -CONT " + pids);
  ASSERT_FALSE(v2.ok());
  EXPECT_EQ(v2.status().code(), absl::StatusCode::kDeadlineExceeded) << v2.status();
  EXPECT_THAT(std::string(v2.status().message()), HasSubstr("timed out after 2.0s fetching"));
  EXPECT_LT(took, kTimeout + kSlack);
  EXPECT_THAT(testing::listTree(tmp_.path() / "cache" / "staging"), IsEmpty());
}

}  // namespace
}  // namespace tributary::installer
