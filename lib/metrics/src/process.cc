#include "tributary/metrics/process.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace tributary::metrics {

void addProcessMetrics(Registry& registry) {
  auto& cpu = registry.counter("process_cpu_seconds_total",
                               "Total user and system CPU time spent in seconds.");
  auto& rss = registry.gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
  auto& fds = registry.gauge("process_open_fds", "Number of open file descriptors.");
  auto& start = registry.gauge("process_start_time_seconds",
                               "Start time of the process since unix epoch in seconds.");
  start.with({}).set(static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count()));
  auto last_cpu = std::make_shared<double>(0);
  registry.addCollectHook([&cpu, &rss, &fds, last_cpu] {
    std::ifstream stat("/proc/self/stat");
    std::string line;
    std::getline(stat, line);
    const auto close = line.rfind(')');
    if (close != std::string::npos) {
      std::istringstream in(line.substr(close + 2));
      std::vector<std::string> f;
      std::string x;
      while (in >> x) {
        f.push_back(x);
      }
      // Fields after the command: state(0) ... utime(11) stime(12) ... rss(21).
      if (f.size() > 21) {
        const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
        const double total = (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) / ticks;
        cpu.with({}).inc(total - *last_cpu);
        *last_cpu = total;
        rss.with({}).set(std::atof(f[21].c_str()) * static_cast<double>(sysconf(_SC_PAGESIZE)));
      }
    }
    int n = 0;
    if (DIR* d = opendir("/proc/self/fd"); d != nullptr) {
      while (readdir(d) != nullptr) {
        ++n;
      }
      closedir(d);
    }
    fds.with({}).set(std::max(0, n - 3));
  });
}

}  // namespace tributary::metrics
