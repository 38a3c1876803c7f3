#include "tributary/sandbox/sandbox.h"

#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <unistd.h>

namespace tributary::sandbox {
namespace {

namespace fs = std::filesystem;

// Runs `probe` in a forked child confined by `prepared`; returns what it returned (0..125),
// or 200 + the errno of a sandbox step that failed.
int inChild(const Prepared& prepared, const std::function<int()>& probe) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (const int err = prepared.applyLimitsAndUser(); err != 0) {
      ::_exit(200 + err);
    }
    if (const int err = prepared.applyRestrictions(); err != 0) {
      ::_exit(200 + err);
    }
    ::_exit(probe());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

// 0 when `path` opens with `flags`, else its errno.
int openError(const fs::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
  if (fd < 0) {
    return errno;
  }
  ::close(fd);
  return 0;
}

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GT(landlockAbi(), 0) << "this machine's kernel offers Landlock (ABI 7 on ours)";
    char templ[] = "/tmp/sandbox-test-XXXXXX";
    ASSERT_NE(::mkdtemp(templ), nullptr);
    root_ = templ;
    fs::create_directories(root_ / "allowed-ro");
    fs::create_directories(root_ / "allowed-rw");
    fs::create_directories(root_ / "secret");
    std::ofstream(root_ / "allowed-ro" / "file") << "visible";
    std::ofstream(root_ / "secret" / "token") << "hunter2";
    fs::permissions(root_, fs::perms::owner_all | fs::perms::others_exec);
    fs::permissions(root_ / "allowed-rw", fs::perms::all);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  Policy policy() const {
    Policy p = Policy::forConnector();
    p.read_only.push_back(root_ / "allowed-ro");
    p.read_write.push_back(root_ / "allowed-rw");
    return p;
  }

  fs::path root_;
};

TEST_F(SandboxTest, FilesOutsideThePolicyCannotBeOpened) {
  auto prepared = Prepared::create(policy());
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(inChild(*prepared, [&] { return openError(root_ / "allowed-ro" / "file", O_RDONLY); }),
            0);
  EXPECT_EQ(inChild(*prepared, [&] { return openError(root_ / "allowed-ro" / "file", O_WRONLY); }),
            EACCES);
  EXPECT_EQ(inChild(*prepared,
                    [&] { return openError(root_ / "allowed-ro" / "new", O_WRONLY | O_CREAT); }),
            EACCES);
  EXPECT_EQ(inChild(*prepared, [&] { return openError(root_ / "secret" / "token", O_RDONLY); }),
            EACCES);
  EXPECT_EQ(
      inChild(*prepared, [&] { return openError(root_ / "allowed-rw" / "new", O_RDWR | O_CREAT); }),
      0);
  EXPECT_EQ(inChild(*prepared, [] { return openError("/tmp", O_RDONLY | O_DIRECTORY); }), EACCES);
  // What every program needs still works.
  EXPECT_EQ(inChild(*prepared, [] { return openError("/dev/null", O_RDWR); }), 0);
  EXPECT_EQ(inChild(*prepared, [] { return openError("/etc/passwd", O_RDONLY); }), 0);
  EXPECT_EQ(inChild(*prepared, [] { return openError("/usr/bin/env", O_RDONLY); }), 0);
  // A symbolic link does not lead out: the target's place decides.
  fs::create_symlink(root_ / "secret" / "token", root_ / "allowed-rw" / "link");
  EXPECT_EQ(inChild(*prepared, [&] { return openError(root_ / "allowed-rw" / "link", O_RDONLY); }),
            EACCES);
}

// Runs `body` as an unprivileged process: this one, or (as root) a child switched to 65534 —
// what an agent in a pod is. Returns its exit code.
int unprivileged(const std::function<int()>& body) {
  if (::geteuid() != 0) {
    return body();
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) {
      ::_exit(254);
    }
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

TEST_F(SandboxTest, TheParentCannotBeSignalledOrRead) {
  if (landlockAbi() < 6) {
    GTEST_FAIL() << "Landlock ABI " << landlockAbi() << " has no signal scoping (ABI 6)";
  }
  auto prepared = Prepared::create(policy());
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  // The "agent" is an unprivileged process of the connector's own uid, and dumpable: only
  // Landlock stands between them.
  const int result = unprivileged([&] {
    const pid_t agent = ::getpid();
    const std::string proc = "/proc/" + std::to_string(agent);
    if (inChild(*prepared, [agent] { return ::kill(agent, 0) == 0 ? 0 : errno; }) != EPERM) {
      return 1;
    }
    if (inChild(*prepared, [&] { return openError(proc + "/environ", O_RDONLY); }) != EACCES) {
      return 2;
    }
    if (inChild(*prepared, [&] { return openError(proc + "/mem", O_RDONLY); }) != EACCES) {
      return 3;
    }
    // Its own /proc entries stay readable.
    return inChild(*prepared, [] { return openError("/proc/self/status", O_RDONLY); }) == 0 ? 0 : 4;
  });
  EXPECT_EQ(result, 0) << "1: signal, 2: environ, 3: mem, 4: own /proc";
}

TEST_F(SandboxTest, LimitsAndNoNewPrivsApply) {
  Policy p = policy();
  p.limits.open_files = 100;
  p.limits.file_size_bytes = 1 << 20;
  p.limits.processes = 50;
  auto prepared = Prepared::create(p);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_NE(prepared->describe().find("files=100"), std::string::npos) << prepared->describe();
  EXPECT_EQ(
      inChild(*prepared,
              [] {
                struct rlimit files {};
                struct rlimit core {};
                ::getrlimit(RLIMIT_NOFILE, &files);
                ::getrlimit(RLIMIT_CORE, &core);
                return files.rlim_cur == 100 && files.rlim_max == 100 && core.rlim_max == 0 ? 0 : 1;
              }),
      0);
  EXPECT_EQ(inChild(*prepared, [] { return ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); }), 1);
  // A file may not grow past file_size_bytes.
  EXPECT_EQ(inChild(*prepared,
                    [&] {
                      ::signal(SIGXFSZ, SIG_IGN);
                      const int fd = ::open((root_ / "allowed-rw" / "big").c_str(),
                                            O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
                      const std::string block(1 << 20, 'x');
                      const bool first = ::write(fd, block.data(), block.size()) ==
                                         static_cast<ssize_t>(block.size());
                      const ssize_t second = ::write(fd, block.data(), block.size());
                      return first && second < 0 && errno == EFBIG ? 0 : 1;
                    }),
            0);
}

TEST_F(SandboxTest, RootSwitchesToTheConnectorUser) {
  Policy p = policy();
  p.user = User{.uid = 65534, .gid = 65534};
  auto prepared = Prepared::create(p);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  if (::geteuid() != 0) {
    // Only root can switch: the child's step fails with EPERM, it does not run as us.
    EXPECT_EQ(inChild(*prepared, [] { return 0; }), 200 + EPERM);
    return;
  }
  EXPECT_EQ(inChild(*prepared,
                    [] {
                      gid_t groups[4];
                      return ::getuid() == 65534 && ::geteuid() == 65534 && ::getgid() == 65534 &&
                                     ::getgroups(4, groups) == 0
                                 ? 0
                                 : 1;
                    }),
            0);
  // As that user, root's 0700 files stay closed even where Landlock allows them.
  fs::permissions(root_ / "allowed-ro" / "file", fs::perms::owner_read);
  EXPECT_EQ(inChild(*prepared, [&] { return openError(root_ / "allowed-ro" / "file", O_RDONLY); }),
            EACCES);
}

TEST_F(SandboxTest, ReachabilityNamesTheDirectoryInTheWay) {
  const User nobody{.uid = 65534, .gid = 65534};
  EXPECT_TRUE(checkReachable(root_ / "allowed-ro" / "file", nobody).ok());
  fs::permissions(root_ / "secret", fs::perms::owner_all);
  const absl::Status blocked = checkReachable(root_ / "secret" / "token", nobody);
  EXPECT_EQ(blocked.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(blocked.message(), "uid 65534, gid 65534 cannot get through " +
                                   (root_ / "secret").string() + " (mode 0700, owner uid " +
                                   std::to_string(::getuid()) + ")");
  fs::permissions(root_ / "allowed-ro" / "file", fs::perms::owner_read);
  EXPECT_FALSE(checkReachable(root_ / "allowed-ro" / "file", nobody).ok());
  // The owner's bits count for the owner.
  EXPECT_TRUE(
      checkReachable(root_ / "allowed-ro" / "file", User{.uid = ::getuid(), .gid = ::getgid()})
          .ok());
}

TEST(SandboxUser, Parse) {
  EXPECT_EQ(User::parse("65534")->uid, 65534U);
  EXPECT_EQ(User::parse("65534")->gid, 65534U);
  EXPECT_EQ(User::parse("1000:2000")->gid, 2000U);
  EXPECT_EQ(User::parse("nobody")->uid, 65534U);
  EXPECT_FALSE(User::parse("0").ok());
  EXPECT_FALSE(User::parse("root").ok());
  EXPECT_FALSE(User::parse("no-such-user-here").ok());
  EXPECT_FALSE(User::parse("1000:staff").ok());
}

TEST(SandboxProcess, ProtectThisProcessMakesItNonDumpable) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::_exit(protectThisProcess() && ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace tributary::sandbox
