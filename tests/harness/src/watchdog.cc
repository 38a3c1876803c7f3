#include "watchdog.h"

#include "absl/strings/str_cat.h"
#include "process.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <unistd.h>

namespace tributary::harness::internal {
namespace {

// Runs under bash; reads commands from stdin until EOF, then cleans up what is left.
constexpr const char* kScript = R"script(
trap '' INT HUP TERM QUIT PIPE
declare -A groups=() dirs=()
while IFS= read -r line; do
  op=${line%% *}
  arg=${line#* }
  case "$op" in
    pg) groups["$arg"]=1 ;;
    unpg) unset "groups[$arg]" ;;
    dir) dirs["$arg"]=1 ;;
    undir) unset "dirs[$arg]" ;;
  esac
done
if (( ${#groups[@]} + ${#dirs[@]} == 0 )); then
  exit 0
fi
echo "tributary test harness watchdog: the test process ended without stopping its services;" \
     "killing process groups [${!groups[*]}], removing [${!dirs[*]}]" >&2
for g in "${!groups[@]}"; do
  kill -KILL -- "-$g" 2>/dev/null
done
for _ in $(seq 50); do
  alive=0
  for g in "${!groups[@]}"; do
    if kill -0 -- "-$g" 2>/dev/null; then alive=1; fi
  done
  (( alive )) || break
  sleep 0.1
done
for d in "${!dirs[@]}"; do
  rm -rf -- "$d"
done
)script";

}  // namespace

Watchdog& Watchdog::get() {
  // Intentionally leaked: the socket must stay open until the process itself ends.
  static auto* instance = new Watchdog();
  return *instance;
}

void Watchdog::ensureStarted() {
  if (tried_ && owner_pid_ == ::getpid()) {
    return;
  }
  if (tried_ && owner_pid_ != ::getpid()) {
    // We are a fork()ed child (e.g. a gtest death test): the parent's watchdog is not ours.
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = -1;
    pid_ = 0;
  }
  tried_ = true;
  owner_pid_ = ::getpid();

  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    std::fprintf(stderr, "tributary test harness: no watchdog (socketpair failed, errno %d)\n",
                 errno);
    return;
  }
  SpawnOptions options;
  const std::optional<std::string> bash = findProgram("bash");
  // --norc: bash sources ~/.bashrc when its stdin is a socket, even non-interactively.
  options.argv = {bash.value_or("/bin/bash"), "--norc", "--noprofile", "-c", kScript,
                  "tributary-test-watchdog"};
  options.env = serverEnvironment();
  options.stdin_fd = fds[1];
  options.inherit_stderr = true;
  absl::StatusOr<pid_t> pid = spawn(options);
  ::close(fds[1]);
  if (!pid.ok()) {
    ::close(fds[0]);
    std::fprintf(stderr, "tributary test harness: no watchdog: %s\n",
                 pid.status().ToString().c_str());
    return;
  }
  fd_ = fds[0];
  pid_ = *pid;
  registerHarnessPid(pid_);
}

void Watchdog::send(const std::string& line) {
  const std::lock_guard<std::mutex> lock(mu_);
  ensureStarted();
  if (fd_ < 0) {
    return;
  }
  const std::string message = line + "\n";
  std::size_t sent = 0;
  while (sent < message.size()) {
    const ssize_t n = ::send(fd_, message.data() + sent, message.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      std::fprintf(stderr, "tributary test harness: watchdog is gone (errno %d)\n", errno);
      ::close(fd_);
      fd_ = -1;
      return;
    }
    sent += static_cast<std::size_t>(n);
  }
}

void Watchdog::trackGroup(pid_t pgid) { send(absl::StrCat("pg ", pgid)); }
void Watchdog::untrackGroup(pid_t pgid) { send(absl::StrCat("unpg ", pgid)); }
void Watchdog::trackDir(const std::string& dir) { send(absl::StrCat("dir ", dir)); }
void Watchdog::untrackDir(const std::string& dir) { send(absl::StrCat("undir ", dir)); }

pid_t Watchdog::pid() {
  const std::lock_guard<std::mutex> lock(mu_);
  return pid_;
}

}  // namespace tributary::harness::internal
