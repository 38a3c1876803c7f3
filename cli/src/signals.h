#pragma once

#include <stop_token>
#include <thread>

namespace tributary::cli {

/// Blocks SIGINT/SIGTERM in the calling thread (call before any thread starts: threads inherit
/// the mask).
void blockStopSignals();

/// Waits for SIGINT/SIGTERM on its own thread (the signals must be blocked everywhere) and
/// requests stop on the source; stops waiting when destroyed.
class StopOnSignal {
 public:
  StopOnSignal();
  ~StopOnSignal() = default;
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

  [[nodiscard]] std::stop_token token() const { return source_.get_token(); }
  [[nodiscard]] bool interrupted() const { return source_.stop_requested(); }

 private:
  std::stop_source source_;
  std::jthread thread_;
};

}  // namespace tributary::cli
