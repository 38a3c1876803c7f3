#pragma once

// Small helpers the benchmark programs share: files, one-value SQL queries, medians, /proc.

#include "tributary/common/strings.h"
#include "tributary/testing/spawn.h"

#include <sys/types.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <libpq-fe.h>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace tributary::bench {

inline std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Prints "<program>: <what>" and exits 1: a benchmark that cannot measure stops.
[[noreturn]] inline void die(const std::string& program, const std::string& what) {
  std::cerr << program << ": " << what << "\n";
  std::exit(1);
}

/// The first column of the first row of `sql` on a fresh connection; dies when there is none.
inline std::string scalar(const std::string& dsn, const std::string& sql) {
  PGconn* conn = PQconnectdb(dsn.c_str());
  PGresult* r = PQexec(conn, sql.c_str());
  const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
  std::string out = ok ? PQgetvalue(r, 0, 0) : strings::cat(sql, ": ", PQerrorMessage(conn));
  PQclear(r);
  PQfinish(conn);
  if (!ok) {
    die("bench", strings::cat("query failed: ", out));
  }
  return out;
}

inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n == 0 ? 0 : (n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2);
}

/// A "VmRSS:"/"VmHWM:" line of /proc/<pid>/status in KiB; -1 when the process is gone.
inline long statusKb(pid_t pid, const std::string& field) {
  const std::string status = readFile("/proc/" + std::to_string(pid) + "/status");
  const auto at = status.find(field);
  return at == std::string::npos ? -1 : std::stol(status.substr(at + field.size()));
}

/// The raw ceiling on an existing database: store_bench's raw-unnest at `page_size`, rows/s of
/// its initial load, identical re-sync and 1 %-changed re-sync. `log` keeps store_bench's output.
inline std::vector<double> rawCeiling(const std::string& store_bench, const std::string& dsn,
                                      pid_t postmaster, long objects, long page_size,
                                      const std::string& log) {
  auto raw =
      harness::spawnLogged({store_bench, "--dsn", dsn, "--server-pid", std::to_string(postmaster),
                            "--objects", std::to_string(objects), "--page-sizes",
                            std::to_string(page_size), "--methods", "raw-unnest"},
                           log);
  if (!raw.ok()) {
    die("bench", strings::cat("store_bench: ", raw.status().message()));
  }
  int status = 0;
  ::waitpid(*raw, &status, 0);
  const std::string text = readFile(log);
  const std::string key = strings::cat("| ", page_size, " | raw-unnest | ");
  const auto at = text.find(key);
  if (at == std::string::npos) {
    die("bench", strings::cat("store_bench printed no raw-unnest row:\n", text));
  }
  // "| 1000 | raw-unnest | 86k | 85k | 87k | …": thousands of rows/s.
  std::vector<double> rates;
  std::stringstream cells(text.substr(at + key.size()));
  for (std::string cell; rates.size() < 3 && std::getline(cells, cell, '|');) {
    rates.push_back(std::stod(cell) * 1000);
  }
  return rates;
}

}  // namespace tributary::bench
