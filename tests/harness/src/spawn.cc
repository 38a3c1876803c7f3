#include "tributary/testing/spawn.h"

#include "absl/strings/str_cat.h"
#include "process.h"

#include <sys/wait.h>

#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

extern char** environ;

namespace tributary::harness {
namespace {

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool writeFile(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  return static_cast<bool>(out);
}

}  // namespace

CommandResult runCommand(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                         const std::string& workdir, const std::string& scratch,
                         std::string_view input, std::chrono::milliseconds timeout) {
  CommandResult result;
  internal::SpawnOptions options;
  options.argv = argv;
  options.env = env;
  options.workdir = workdir;
  options.log_path = scratch + ".out";
  int stdin_fd = -1;
  if (!input.empty()) {
    if (!writeFile(scratch + ".in", input)) {
      result.error = absl::StrCat("cannot write ", scratch, ".in");
      return result;
    }
    stdin_fd = ::open((scratch + ".in").c_str(), O_RDONLY | O_CLOEXEC);
    options.stdin_fd = stdin_fd;
  }
  std::error_code ec;
  std::filesystem::remove(options.log_path, ec);
  absl::StatusOr<pid_t> pid = internal::spawn(options);
  if (stdin_fd >= 0) {
    ::close(stdin_fd);
  }
  if (!pid.ok()) {
    result.error = std::string(pid.status().message());
    return result;
  }
  internal::ExitInfo info = internal::waitForExit(*pid, timeout);
  if (!info.exited) {
    internal::signalGroup(*pid, SIGKILL);
    info = internal::waitForExit(*pid, std::chrono::seconds(10));
    result.error = absl::StrCat(argv[0], " did not finish within ", timeout.count(), " ms");
  } else if (info.status_known && WIFEXITED(info.wait_status)) {
    result.exit_code = WEXITSTATUS(info.wait_status);
  } else if (info.status_known) {
    result.error = absl::StrCat(argv[0], " ", internal::describeExit(info));
  }
  result.output = readFile(options.log_path);
  std::filesystem::remove(options.log_path, ec);
  std::filesystem::remove(scratch + ".in", ec);
  return result;
}

absl::StatusOr<pid_t> spawnLogged(const std::vector<std::string>& argv,
                                  const std::string& log_path) {
  internal::SpawnOptions options;
  options.argv = argv;
  for (char** e = environ; *e != nullptr; ++e) {
    options.env.emplace_back(*e);
  }
  options.log_path = log_path;
  return internal::spawn(options);
}

}  // namespace tributary::harness
