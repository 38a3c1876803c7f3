#include "command.h"

#include "tributary/testing/probes.h"

#include "test_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tributary::installer {
namespace {

using internal::CommandSpec;
using internal::runCommand;
using ::testing::HasSubstr;
using testing::TempDir;

CommandSpec spec(const std::string& command, const std::filesystem::path& dir) {
  CommandSpec s;
  s.command = command;
  s.dir = dir;
  s.env = internal::buildEnv({"PATH"}, {}, {{"FROM_SPEC", "yes"}});
  s.timeout = std::chrono::seconds(20);
  s.tail_bytes = 64;
  return s;
}

TEST(CommandTest, RunsInDirWithControlledEnv) {
  TempDir tmp;
  ::setenv("INSTALLER_TEST_SECRET", "do-not-leak", 1);  // NOLINT(concurrency-mt-unsafe): one thread
  auto r =
      runCommand(spec("pwd; echo \"spec=$FROM_SPEC secret=${INSTALLER_TEST_SECRET:-unset}\"; "
                      "read x || echo stdin-closed",
                      tmp.path()));
  ::unsetenv("INSTALLER_TEST_SECRET");  // NOLINT(concurrency-mt-unsafe)
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->succeeded());
  EXPECT_THAT(r->output_tail, HasSubstr(tmp.path().string()));
  EXPECT_THAT(r->output_tail, HasSubstr("spec=yes secret=unset"));
  EXPECT_THAT(r->output_tail, HasSubstr("stdin-closed"));
}

TEST(CommandTest, FailureKeepsTailAndExitCode) {
  TempDir tmp;
  const auto s =
      spec("i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done; echo boom >&2; exit 3",
           tmp.path());
  auto r = runCommand(s);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->output_tail.size(), 64U);
  EXPECT_THAT(r->output_tail, HasSubstr("boom"));
  EXPECT_GT(r->output_bytes, 64U);
  const absl::Status err = internal::commandError("install_command", s, *r);
  EXPECT_EQ(err.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(err.message()), HasSubstr("exited with code 3"));
  EXPECT_THAT(std::string(err.message()), HasSubstr("boom"));
  EXPECT_THAT(std::string(err.message()), HasSubstr("last 64 of"));
}

TEST(CommandTest, NotFoundIs127) {
  TempDir tmp;
  const auto s = spec("no-such-program-xyz", tmp.path());
  auto r = runCommand(s);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 127);
  EXPECT_THAT(std::string(internal::commandError("install_command", s, *r).message()),
              HasSubstr("command not found"));
}

TEST(CommandTest, TimeoutKillsTheWholeGroup) {
  TempDir tmp;
  auto s = spec("(sleep 30; touch late) & echo started; sleep 30", tmp.path());
  s.timeout = std::chrono::milliseconds(500);
  const auto start = std::chrono::steady_clock::now();
  auto r = runCommand(s);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->timed_out);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  const absl::Status err = internal::commandError("install_command", s, *r);
  EXPECT_EQ(err.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(err.message()), HasSubstr("timed out"));
  EXPECT_THAT(std::string(err.message()), HasSubstr("started"));
  EXPECT_TRUE(harness::eventually([] { return harness::childProcesses().empty(); }))
      << harness::describeChildProcesses();
}

TEST(CommandTest, BackgroundProcessesDoNotOutliveTheCommand) {
  TempDir tmp;
  auto r = runCommand(spec("(sleep 2; touch late) >/dev/null 2>&1 & echo done", tmp.path()));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->succeeded());
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_FALSE(std::filesystem::exists(tmp.path() / "late"));
}

TEST(CommandTest, Cancellation) {
  TempDir tmp;
  std::stop_source stop;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop.request_stop();
  });
  auto r = runCommand(spec("sleep 30", tmp.path()), stop.get_token());
  canceller.join();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->cancelled);
}

TEST(CommandTest, NoFdLeaks) {
  TempDir tmp;
  const int before = harness::openFdCount();
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(runCommand(spec("true", tmp.path())).ok());
  }
  EXPECT_EQ(harness::openFdCount(), before) << harness::describeOpenFds();
}

}  // namespace
}  // namespace tributary::installer
