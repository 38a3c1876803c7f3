// Many installers at once (threads of one process, and separate processes sharing the cache)
// install a version once; a process killed (SIGKILL) mid-install leaves a cache the next
// install repairs.

#include "tributary/installer/installer.h"
#include "tributary/testing/probes.h"

#include "test_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <fcntl.h>
#include <fstream>
#include <signal.h>
#include <thread>
#include <unistd.h>

namespace tributary::installer {
namespace {

namespace fs = std::filesystem;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using testing::TempDir;

class ConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    source_ = tmp_.path() / "src";
    cache_ = tmp_.path() / "cache";
    counter_ = tmp_.path() / "installs.log";
    testing::writeFile(source_ / "conn.sh", "#!/bin/sh\necho ok\n", static_cast<fs::perms>(0755));
  }

  // Each run of install_command appends one line to the counter file, slowly, so that
  // concurrent installers really overlap.
  ConnectorSpec spec(const std::string& extra_install = "sleep 1") const {
    ConnectorSpec s;
    s.name = "busy";
    s.source = Source::Local;
    s.uri = source_.string();
    s.env["COUNTER"] = counter_.string();
    s.install_command = "echo $$ >> \"$COUNTER\"; " + extra_install;
    s.command = "./conn.sh";
    return s;
  }

  int installsRun() const {
    std::ifstream in(counter_);
    int lines = 0;
    std::string line;
    while (std::getline(in, line)) {
      ++lines;
    }
    return lines;
  }

  fs::path writeSpec(const ConnectorSpec& s) const {
    fs::path path = tmp_.path() / "spec.json";
    testing::writeFile(path, toJson(s));
    return path;
  }

  // Starts the helper; its stdout goes to `out`.
  static pid_t startHelper(const fs::path& cache, const fs::path& spec_file, const fs::path& out) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::execl(TRIBUTARY_INSTALLER_HELPER, TRIBUTARY_INSTALLER_HELPER, cache.c_str(),
              spec_file.c_str(), "install", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return pid;
  }

  static int waitExit(pid_t pid) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  TempDir tmp_;
  fs::path source_;
  fs::path cache_;
  fs::path counter_;
};

TEST_F(ConcurrencyTest, ThreadsInstallOnce) {
  auto installer = Installer::create(testing::testOptions(cache_));
  ASSERT_TRUE(installer.ok()) << installer.status();
  constexpr int kThreads = 6;
  std::vector<absl::StatusOr<Installation>> results(kThreads, absl::UnknownError("not run"));
  {
    std::vector<std::jthread> threads;
    threads.reserve(kThreads);
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back(
          [&, i] { results[static_cast<std::size_t>(i)] = (*installer)->install(spec()); });
    }
  }
  int fresh = 0;
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->root, results[0]->root);
    fresh += r->installed_now ? 1 : 0;
  }
  EXPECT_EQ(fresh, 1);
  EXPECT_EQ(installsRun(), 1);
}

TEST_F(ConcurrencyTest, ProcessesInstallOnce) {
  const fs::path spec_file = writeSpec(spec("sleep 2"));
  const pid_t a = startHelper(cache_, spec_file, tmp_.path() / "a.out");
  const pid_t b = startHelper(cache_, spec_file, tmp_.path() / "b.out");
  ASSERT_EQ(waitExit(a), 0);
  ASSERT_EQ(waitExit(b), 0);
  const auto ra = nlohmann::json::parse(testing::readFile(tmp_.path() / "a.out"));
  const auto rb = nlohmann::json::parse(testing::readFile(tmp_.path() / "b.out"));
  EXPECT_EQ(ra["root"], rb["root"]);
  EXPECT_NE(ra["installed_now"].get<bool>(), rb["installed_now"].get<bool>());
  EXPECT_EQ(installsRun(), 1);
  EXPECT_THAT(testing::listTree(cache_ / "staging"), IsEmpty());
}

TEST_F(ConcurrencyTest, KillDuringInstallIsRepairedByTheNextInstall) {
  const fs::path started = tmp_.path() / "started";
  const fs::path release = tmp_.path() / "release";
  // Blocks until `release` exists (the loop lives in the shell, which dies with the helper).
  const ConnectorSpec s =
      spec("touch '" + started.string() + "'; while [ ! -f '" + release.string() +
           "' ]; do sleep 0.05; done; echo partial > half-done");
  const pid_t helper = startHelper(cache_, writeSpec(s), tmp_.path() / "killed.out");
  ASSERT_TRUE(harness::eventually([&] { return fs::exists(started); }, std::chrono::seconds(30)));
  // Mid-install: staging exists, no version yet. Another installer meanwhile has to wait.
  EXPECT_THAT(testing::listTree(cache_ / "staging"), ::testing::Not(IsEmpty()));
  auto installer = Installer::create(testing::testOptions(cache_));
  ASSERT_TRUE(installer.ok());
  absl::StatusOr<Installation> repaired = absl::UnknownError("not run");
  std::jthread waiter([&] { repaired = (*installer)->install(s); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(installsRun(), 1) << "the second install must wait for the lock";

  ASSERT_EQ(::kill(helper, SIGKILL), 0);
  EXPECT_EQ(waitExit(helper), 128 + SIGKILL);
  testing::writeFile(release, "go");
  waiter.join();

  ASSERT_TRUE(repaired.ok()) << repaired.status();
  EXPECT_TRUE(repaired->installed_now);
  EXPECT_EQ(installsRun(), 2);  // the killed attempt, then the repair
  EXPECT_EQ(testing::readFile(repaired->root / "half-done"), "partial\n");
  auto versions = (*installer)->listVersions("busy");
  ASSERT_TRUE(versions.ok());
  EXPECT_THAT(*versions, SizeIs(1));
  EXPECT_THAT(testing::listTree(cache_ / "staging"), IsEmpty());
  EXPECT_THAT(testing::listTree(cache_ / "trash"), IsEmpty());
}

}  // namespace
}  // namespace tributary::installer
