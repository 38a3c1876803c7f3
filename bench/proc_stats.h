#pragma once

// CPU time of a live process from /proc, for the benchmarks' per-process figures.

#include <sys/resource.h>
#include <sys/types.h>

#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace tributary::bench {

/// utime + stime of `pid` (plus cutime + cstime, its reaped children, with `children`), in s.
inline double cpuSeconds(pid_t pid, bool children = false) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto close = line.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) {
    return 0;
  }
  std::istringstream in(line.substr(close + 2));
  std::vector<std::string> fields;
  for (std::string f; in >> f;) {
    fields.push_back(f);
  }
  // After the command: state(0) … utime(11) stime(12) cutime(13) cstime(14).
  if (fields.size() < 15) {
    return 0;
  }
  double ticks = std::stod(fields[11]) + std::stod(fields[12]);
  if (children) {
    ticks += std::stod(fields[13]) + std::stod(fields[14]);
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// User + system CPU seconds of a wait4()/getrusage() result.
inline double rusageSeconds(const rusage& usage) {
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

}  // namespace tributary::bench
