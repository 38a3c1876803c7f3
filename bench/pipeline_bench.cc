// pipeline_bench: the whole path — connector → plugin host → store → PostgreSQL — through
// `tributary run`, for the C++ SDK, Go go-plugin v1.6.3 and Python SDK test connectors, beside
// the raw ceiling (store_bench's raw-unnest) on the same PostgreSQL in the same run.
//
//   pipeline_bench [--objects 1000000] [--page-size 1000] [--object-bytes 300]
//                  [--connectors cpp,go,python] [--fast] [--samples FILE.csv]
//
// PostgreSQL is reached over its unix socket and is durable (fsync, synchronous_commit and
// full_page_writes on) unless --fast. Every connector loads a source of its own in three runs:
//   1. initial load,
//   2. identical re-sync at once (what §0 of issue 15 found quadratic),
//   3. re-sync with 1 % of the objects changed (the connectors' `revision` option),
// each after a CHECKPOINT, so each run's WAL counts the full-page images an hourly sync pays.
// Rows/s are objects over the store run (started_at → finished_at: the pages and the finish
// step); the finish step alone runs from the CLI's "finishing the run" log line to finished_at.
// While each run goes, the RSS of `tributary run` and the private RSS (RssAnon) of its PostgreSQL
// backend are sampled every 250 ms (--samples writes them all as CSV); peaks are printed: flat in
// the number of objects means a small and a large run print the same.

#include "tributary/common/strings.h"
#include "tributary/testing/services.h"
#include "tributary/testing/spawn.h"
#include "tributary/testing/temp_dir.h"

#include "bench_support.h"
#include "proc_stats.h"

#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

namespace {

using namespace tributary;
using namespace std::chrono_literals;
using bench::readFile;
using bench::scalar;
using strings::cat;
namespace fs = std::filesystem;

[[noreturn]] void die(const std::string& what) { bench::die("pipeline_bench", what); }

struct Connector {
  std::string name;  // the source's name too
  fs::path program;  // copied into its install directory, run as ./connector (python: a script)
};

struct Phase {
  double store_seconds = 0;
  double finish_seconds = 0;
  double wal_bytes = 0;
  double cli_cpu_seconds = 0;  // tributary run with its connector (wait4 rusage)
  long cli_peak_kb = 0;
  long backend_peak_kb = 0;
  long inserted = 0;
  long updated = 0;
  long unchanged = 0;
};

struct Sample {
  std::string connector;
  int phase;
  double seconds;
  long cli_kb;
  long backend_kb;
};

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    out.push_back(item);
  }
  return out;
}

// Seconds since the epoch of an RFC 3339 UTC timestamp with fractional seconds.
double epochSeconds(const std::string& dsn, const std::string& timestamp) {
  return std::stod(scalar(dsn, cat("SELECT extract(epoch FROM '", timestamp, "'::timestamptz)")));
}

// The "ts" of the CLI's JSON log line announcing the finish step.
std::string finishingTimestamp(const std::string& log) {
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("finishing the run of") == std::string::npos) {
      continue;
    }
    const auto record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_object() && record.contains("ts")) {
      return record["ts"].get<std::string>();
    }
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  long objects = 1000000;
  long page_size = 1000;
  long object_bytes = 300;
  std::vector<std::string> wanted = {"cpp", "go", "python"};
  bool fast = false;
  std::string samples_path;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--fast") {
      fast = true;
      continue;
    }
    if (i + 1 >= argc) {
      die(cat(flag, " needs a value"));
    }
    const std::string value = argv[++i];
    if (flag == "--objects") {
      objects = std::stol(value);
    } else if (flag == "--page-size") {
      page_size = std::stol(value);
    } else if (flag == "--object-bytes") {
      object_bytes = std::stol(value);
    } else if (flag == "--connectors") {
      wanted = split(value);
    } else if (flag == "--samples") {
      samples_path = value;
    } else {
      die(cat("unknown flag ", flag));
    }
  }
  const std::vector<Connector> known = {
      {"cpp", TRIBUTARY_CPP_CONNECTOR},
      {"go", fs::path(TRIBUTARY_GO_BIN_DIR) / "connector-go-v1_6"},
      {"python", TRIBUTARY_PYTHON_CONNECTOR},
  };
  std::vector<Connector> connectors;
  for (const std::string& name : wanted) {
    const auto it = std::find_if(known.begin(), known.end(),
                                 [&](const Connector& c) { return c.name == name; });
    if (it == known.end()) {
      die(cat("unknown connector ", name, " (cpp, go, python)"));
    }
    connectors.push_back(*it);
  }

  harness::PostgresOptions pg_options;
  // No autovacuum: each run's WAL is its own, and every re-sync meets the statistics of before
  // the load (the worst case for the finish step's plan, issue 15 §0). work_mem stays at its
  // default, as in the private PostgreSQL `tributary run` starts.
  pg_options.settings = {"shared_buffers=1GB", "max_wal_size=8GB", "checkpoint_timeout=1h",
                         "autovacuum=off", "full_page_writes=on"};
  pg_options.settings.push_back(fast ? "fsync=off" : "fsync=on");
  pg_options.settings.push_back(fast ? "synchronous_commit=off" : "synchronous_commit=on");
  harness::PostgresServer pg(pg_options);
  if (absl::Status st = pg.start(); !st.ok()) {
    die(cat("cannot start PostgreSQL: ", st.message()));
  }
  const std::string dsn = pg.socketDsn();
  const std::string settings = cat("PostgreSQL ", scalar(dsn, "SHOW server_version"),
                                   " over its unix socket, fsync=", scalar(dsn, "SHOW fsync"),
                                   " synchronous_commit=", scalar(dsn, "SHOW synchronous_commit"),
                                   " full_page_writes=", scalar(dsn, "SHOW full_page_writes"));
  std::cerr << settings << "\n";

  harness::TempDir tmp("pipeline-bench");
  const fs::path dir = tmp.path();
  const std::string ns = "bench";
  std::vector<Sample> samples;

  auto runOnce = [&](const Connector& c, int phase, int revision) {
    const fs::path install = dir / c.name;
    const fs::path manifest = dir / cat(c.name, "-", phase, ".yaml");
    const fs::path log = dir / cat(c.name, "-", phase, ".log");
    std::ofstream(manifest) << "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n"
                            << "  name: " << c.name << "\n  namespace: " << ns
                            << "\nspec:\n  source: Local\n  uri: " << install.string()
                            << "\n  command: ./connector\n---\n"
                            << "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n"
                            << "  name: " << c.name << "\n  namespace: " << ns
                            << "\nspec:\n  connectorRef:\n    name: " << c.name
                            << "\n  options: {\"pages\": " << objects / page_size
                            << ", \"page_size\": " << page_size
                            << ", \"object_bytes\": " << object_bytes
                            << ", \"revision\": " << revision << "}\n";
    PGconn* admin = PQconnectdb(dsn.c_str());
    PQclear(PQexec(admin, "CHECKPOINT"));
    PQfinish(admin);
    const std::string wal_before = scalar(dsn, "SELECT pg_current_wal_lsn()::text");
    std::cerr << c.name << " connector, run " << phase << ": " << objects << " objects…\n";
    std::vector<std::string> cli_argv = {TRIBUTARY_CLI,           "run",       "-f",
                                         manifest.string(),       "--syncjob", ns + "/" + c.name,
                                         "--database-url",        dsn,         "--cache-dir",
                                         (dir / "cache").string()};
    if (c.program.extension() == ".py") {  // the sandbox lets it read its interpreter and SDK
      for (const fs::path& path : {fs::path(TRIBUTARY_PYTHON).parent_path().parent_path(),
                                   fs::path(TRIBUTARY_PYTHON_SDK_DIR)}) {
        cli_argv.insert(cli_argv.end(), {"--sandbox-read-only", path.string()});
      }
    }
    auto cli = harness::spawnLogged(cli_argv, log.string());
    if (!cli.ok()) {
      die(cat("tributary run: ", cli.status().message()));
    }
    Phase result;
    std::atomic<bool> done{false};
    std::thread sampler([&] {
      const auto started = std::chrono::steady_clock::now();
      while (!done.load()) {
        const long cli_kb = bench::statusKb(*cli, "VmRSS:");
        long backend_kb = 0;
        // The run's backends (the client backends other than this query's own), by their private
        // memory: their RSS also counts the shared buffers they touched.
        PGconn* conn = PQconnectdb(dsn.c_str());
        PGresult* r = PQexec(conn,
                             "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client "
                             "backend' AND pid <> pg_backend_pid()");
        for (int row = 0; PQresultStatus(r) == PGRES_TUPLES_OK && row < PQntuples(r); ++row) {
          backend_kb = std::max(
              backend_kb,
              bench::statusKb(static_cast<pid_t>(std::stol(PQgetvalue(r, row, 0))), "RssAnon:"));
        }
        PQclear(r);
        PQfinish(conn);
        result.cli_peak_kb = std::max(result.cli_peak_kb, cli_kb);
        result.backend_peak_kb = std::max(result.backend_peak_kb, backend_kb);
        samples.push_back(
            {c.name, phase,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
             cli_kb, backend_kb});
        std::this_thread::sleep_for(250ms);
      }
    });
    int status = 0;
    rusage usage{};
    ::wait4(*cli, &status, 0, &usage);
    done.store(true);
    sampler.join();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      die(cat("tributary run failed:\n", readFile(log.string())));
    }
    result.cli_cpu_seconds = bench::rusageSeconds(usage);
    result.wal_bytes = std::stod(scalar(
        dsn, cat("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '", wal_before, "'::pg_lsn)")));
    const std::string row = cat(" FROM tributary.sync_runs WHERE sync_job = '", c.name,
                                "' ORDER BY run_id DESC LIMIT 1");
    result.store_seconds =
        std::stod(scalar(dsn, "SELECT extract(epoch FROM finished_at - started_at)" + row));
    const std::string finishing = finishingTimestamp(readFile(log.string()));
    if (finishing.empty()) {
      die(cat("no 'finishing the run' line in the log of ", c.name, " run ", phase));
    }
    result.finish_seconds = std::stod(scalar(dsn, "SELECT extract(epoch FROM finished_at)" + row)) -
                            epochSeconds(dsn, finishing);
    result.inserted = std::stol(scalar(dsn, "SELECT objects_inserted" + row));
    result.updated = std::stol(scalar(dsn, "SELECT objects_updated" + row));
    result.unchanged = std::stol(scalar(dsn, "SELECT objects_unchanged" + row));
    return result;
  };

  // The ceiling first, on the empty database: the connectors' runs then meet a larger table.
  std::cerr << "raw ceiling (store_bench raw-unnest, same database): " << objects << " objects…\n";
  const std::vector<double> raw_rates = bench::rawCeiling(
      TRIBUTARY_STORE_BENCH, dsn, pg.pid(), objects, page_size, (dir / "raw.txt").string());

  std::map<std::string, std::vector<Phase>> results;
  for (const Connector& c : connectors) {
    const fs::path install = dir / c.name;
    fs::create_directories(install);
    if (c.program.extension() == ".py") {
      fs::copy_file(c.program, install / "connector.py");
      std::ofstream(install / "connector")
          << "#!/bin/sh\nexec " << TRIBUTARY_PYTHON << " \"$(dirname \"$0\")/connector.py\"\n";
    } else {
      fs::copy_file(c.program, install / "connector");
    }
    // 0755: a root `tributary run` starts connectors as another user.
    fs::permissions(install / "connector", fs::perms::owner_all | fs::perms::group_read |
                                               fs::perms::group_exec | fs::perms::others_read |
                                               fs::perms::others_exec);
    results[c.name] = {runOnce(c, 1, 0), runOnce(c, 2, 0), runOnce(c, 3, 1)};
    const std::vector<Phase>& p = results[c.name];
    const long n = objects;
    if (p[0].inserted != n || p[1].unchanged != n || p[2].updated != n / 100) {
      die(cat(c.name, ": the store's counters do not match the runs: inserted ", p[0].inserted,
              ", then unchanged ", p[1].unchanged, ", then updated ", p[2].updated));
    }
  }

  if (!samples_path.empty()) {
    std::ofstream csv(samples_path);
    csv << "connector,run,seconds,tributary_run_rss_kb,postgres_backend_rss_anon_kb\n";
    for (const Sample& s : samples) {
      csv << s.connector << "," << s.phase << "," << s.seconds << "," << s.cli_kb << ","
          << s.backend_kb << "\n";
    }
  }

  const double n = static_cast<double>(objects);
  std::printf("\n# pipeline_bench: %ld objects of ~%ld B in pages of %ld, %s\n\n", objects,
              object_bytes, page_size, settings.c_str());
  std::printf(
      "| connector | run | rows/s | vs raw | store run s | finish s | WAL MB (%% of load) | "
      "CPU ms / 1 000 obj | tributary run peak RSS MB | backend peak private RSS MB |\n"
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  const char* names[] = {"initial load", "identical re-sync", "1 % changed"};
  for (const Connector& c : connectors) {
    const std::vector<Phase>& p = results[c.name];
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double rate = n / p[i].store_seconds;
      std::printf("| %s | %s | %.0f | %.2f | %.1f | %.2f | %.1f (%.1f %%) | %.2f | %.1f | %.1f |\n",
                  c.name.c_str(), names[i], rate, rate / raw_rates[i], p[i].store_seconds,
                  p[i].finish_seconds, p[i].wal_bytes / 1e6,
                  100 * p[i].wal_bytes / std::max(1.0, p[0].wal_bytes),
                  p[i].cli_cpu_seconds / n * 1e6, static_cast<double>(p[i].cli_peak_kb) / 1024,
                  static_cast<double>(p[i].backend_peak_kb) / 1024);
    }
  }
  std::printf(
      "| raw ceiling | initial / identical / 1 %% | %.0f / %.0f / %.0f | 1.00 | | | | | | |\n",
      raw_rates[0], raw_rates[1], raw_rates[2]);
  std::printf(
      "\ngoals: initial load >= 0.80 of raw (C++, Go); identical re-sync faster than the load and "
      "<= 5 %% of its WAL\n");
  return 0;
}
