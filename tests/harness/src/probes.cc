#include "tributary/testing/probes.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "process.h"

#include <algorithm>
#include <cstdlib>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace tributary::harness {
namespace {

// Numeric entries of a /proc directory, read with the raw dirent API so that the listing itself
// uses exactly one fd, which we can exclude.
std::vector<int> numericEntries(const char* path, int* listing_fd) {
  std::vector<int> result;
  DIR* dir = ::opendir(path);
  if (dir == nullptr) {
    return result;
  }
  if (listing_fd != nullptr) {
    *listing_fd = ::dirfd(dir);
  }
  while (const dirent* entry = ::readdir(dir)) {  // NOLINT(concurrency-mt-unsafe): own DIR*
    int value = 0;
    if (absl::SimpleAtoi(entry->d_name, &value)) {
      result.push_back(value);
    }
  }
  ::closedir(dir);
  std::sort(result.begin(), result.end());
  return result;
}

}  // namespace

std::vector<OpenFd> openFds() {
  int listing_fd = -1;
  const std::vector<int> fds = numericEntries("/proc/self/fd", &listing_fd);
  std::vector<OpenFd> result;
  for (const int fd : fds) {
    if (fd == listing_fd) {
      continue;
    }
    OpenFd entry;
    entry.fd = fd;
    std::error_code ec;
    entry.target =
        std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(fd), ec).string();
    if (ec) {
      continue;  // closed meanwhile by another thread
    }
    result.push_back(std::move(entry));
  }
  return result;
}

int openFdCount() { return static_cast<int>(openFds().size()); }

std::string describeOpenFds() {
  std::string text;
  for (const OpenFd& fd : openFds()) {
    absl::StrAppend(&text, fd.fd, " -> ", fd.target, "\n");
  }
  return text;
}

int threadCount() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) {
      int count = 0;
      if (absl::SimpleAtoi(line.substr(8), &count)) {
        return count;
      }
    }
  }
  return -1;
}

std::vector<ChildProcess> childProcesses(ChildFilter filter) {
  const pid_t self = ::getpid();
  std::vector<ChildProcess> result;
  for (const int pid : numericEntries("/proc", nullptr)) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    if (!std::getline(in, stat)) {
      continue;  // gone meanwhile
    }
    // "pid (comm) state ppid …"; comm may contain spaces and parentheses.
    const std::size_t open = stat.find('(');
    const std::size_t close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) {
      continue;
    }
    std::istringstream rest(stat.substr(close + 1));
    char state = '?';
    int ppid = 0;
    if (!(rest >> state >> ppid) || ppid != self) {
      continue;
    }
    ChildProcess child;
    child.pid = pid;
    child.state = state;
    child.command = stat.substr(open + 1, close - open - 1);
    child.harness = internal::isHarnessPid(pid);
    if (child.harness && filter == ChildFilter::ExcludeHarness) {
      continue;
    }
    result.push_back(std::move(child));
  }
  return result;
}

std::string describeChildProcesses(ChildFilter filter) {
  std::string text;
  for (const ChildProcess& child : childProcesses(filter)) {
    absl::StrAppend(&text, child.pid, " ", std::string(1, child.state), " ", child.command,
                    child.harness ? " (harness)" : "", "\n");
  }
  return text;
}

std::vector<std::string> listFiles(const std::string& dir) {
  std::vector<std::string> result;
  std::error_code ec;
  const std::filesystem::path root(dir);
  std::filesystem::recursive_directory_iterator it(
      root, std::filesystem::directory_options::skip_permission_denied, ec);
  for (; !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_directory(ec)) {
      result.push_back(std::filesystem::relative(it->path(), root, ec).string());
    }
  }
  std::sort(result.begin(), result.end());
  return result;
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return condition();
    }
    std::this_thread::sleep_for(interval);
  }
}

}  // namespace tributary::harness
