#include "signals.h"

#include <csignal>
#include <iostream>
#include <pthread.h>
#include <signal.h>

namespace tributary::cli {

void blockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

StopOnSignal::StopOnSignal()
    : thread_([this](const std::stop_token& done) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        const timespec tick{0, 200'000'000};
        while (!done.stop_requested()) {
          if (sigtimedwait(&set, nullptr, &tick) > 0) {
            std::cerr << "\ntributary: interrupted; stopping\n";
            source_.request_stop();
            return;
          }
        }
      }) {}

}  // namespace tributary::cli
