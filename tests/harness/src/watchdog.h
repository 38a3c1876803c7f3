#pragma once

#include <sys/types.h>

#include <mutex>
#include <string>

namespace tributary::harness::internal {

/**
 * Cleans up after a test binary that dies without stopping its servers (abort, SIGKILL, a ctest
 * timeout): a small bash process, started on first use, that reads "track"/"untrack" lines from a
 * socket. When the socket reaches EOF (this process is gone, however it ended), it SIGKILLs the
 * process groups still tracked and removes the directories still tracked.
 *
 * One per process, never destroyed (its socket must stay open until the process ends).
 * Thread-safe. If it cannot start, a warning is printed and tracking becomes a no-op.
 */
class Watchdog {
 public:
  static Watchdog& get();

  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  Watchdog(Watchdog&&) = delete;
  Watchdog& operator=(Watchdog&&) = delete;

  void trackGroup(pid_t pgid);
  void untrackGroup(pid_t pgid);
  void trackDir(const std::string& dir);
  void untrackDir(const std::string& dir);

  /** The watchdog's pid (0 if it is not running). */
  pid_t pid();

 private:
  Watchdog() = default;
  ~Watchdog() = default;
  void ensureStarted();  // requires mu_
  void send(const std::string& line);

  std::mutex mu_;
  int fd_ = -1;
  pid_t pid_ = 0;
  pid_t owner_pid_ = 0;
  bool tried_ = false;
};

}  // namespace tributary::harness::internal
