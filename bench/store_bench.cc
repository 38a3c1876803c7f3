// store_bench: the store's page writer against a plain-libpq raw ceiling and c1's naive method,
// in one run on one private PostgreSQL 15 (started through tests/harness).
//
//   store_bench [--objects 1000000] [--page-sizes 100,1000,10000] [--repeat 1]
//               [--methods raw-unnest,raw-copy,writer,writer-copy,naive]
//               [--dsn DSN --server-pid PID]  (an existing server instead of a private one)
//               [--fast]  (fsync and synchronous_commit off; durable by default, as users run)
//   (more writer variants: writer-classify, writer-insert: the page shapes fixed)
//
// For every page size and method, on a fresh schema with the store's objects table:
//   1. initial load of N objects,
//   2. identical re-sync,
//   3. re-sync with 1% of the objects changed,
// each paged at the page size, one transaction per page, timing rows/s and measuring the WAL
// each phase wrote (pg_current_wal_lsn() difference; CHECKPOINT before every phase so full-page
// images are counted as a real hourly sync pays them). The writer phases are complete runs
// (beginRun → pages → finish with the Mark policy); the table shows page throughput and the
// finish time separately, because the other methods do no stale detection at all.

#include "tributary/common/strings.h"
#include "tributary/store/store.h"
#include "tributary/testing/services.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <iostream>
#include <libpq-fe.h>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using tributary::strings::cat;
using Clock = std::chrono::steady_clock;
namespace store = tributary::store;

// ---------------------------------------------------------------------------------------------
// Data: S3-listing-like objects, ~450 bytes each.

proto::DataObject makeObject(int i, int version) {
  proto::DataObject o;
  const auto u = static_cast<unsigned>(i);
  char id[96];
  std::snprintf(id, sizeof(id), "datasets/partition-%04d/object-%08d.parquet", i / 1000, i);
  o.set_remote_id(id);
  o.set_resource_name(cat("object-", i, ".parquet"));
  o.set_uri(cat("s3://tributary-bench-bucket/", id));
  char meta[512];
  std::snprintf(meta, sizeof(meta),
                "{\"size\":%d,\"etag\":\"%08x%08x%08x%08x\",\"last_modified\":"
                "\"2026-11-%02dT%02d:%02d:%02dZ\",\"storage_class\":\"STANDARD\",\"owner\":{"
                "\"id\":\"7a1d0c2e9b8f\",\"display_name\":\"data-platform\"},\"content_type\":"
                "\"application/vnd.apache.parquet\",\"version\":%d,\"tags\":{\"team\":\"ingest\","
                "\"pii\":\"false\",\"retention\":\"90d\"}}",
                (i * 7919) % 1000000, u * 2654435761U, u ^ 0x5bd1e995U,
                static_cast<unsigned>(version * 31 + i), u * 40503U, 1 + i % 28, i % 24, i % 60,
                (i / 60) % 60, version);
  o.set_metadata(meta);
  return o;
}

std::vector<proto::SyncResponse> makePages(int objects, int page_size, int changed_every) {
  std::vector<proto::SyncResponse> pages;
  for (int start = 0; start < objects; start += page_size) {
    proto::SyncResponse page;
    const int end = std::min(objects, start + page_size);
    page.mutable_response()->Reserve(end - start);
    for (int i = start; i < end; ++i) {
      const bool changed = changed_every > 0 && i % changed_every == 0;
      *page.add_response() = makeObject(i, changed ? 2 : 1);
    }
    pages.push_back(std::move(page));
  }
  return pages;
}

// ---------------------------------------------------------------------------------------------
// CPU accounting. The machine may be shared (other builds), which makes wall-clock rates noisy;
// CPU seconds spent by the server (postmaster, its live children, and the children it reaped)
// plus this client are a steadier measure of the work each method costs.

struct ProcStat {
  pid_t ppid = 0;
  char state = '?';
  double self = 0;      // utime + stime
  double children = 0;  // cutime + cstime (reaped children)
};

std::optional<ProcStat> readStat(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string line;
  if (!std::getline(in, line)) {
    return std::nullopt;
  }
  const std::size_t close = line.rfind(')');
  if (close == std::string::npos) {
    return std::nullopt;
  }
  std::istringstream fields(line.substr(close + 2));
  std::vector<std::string> f;
  std::string token;
  while (fields >> token) {
    f.push_back(token);
  }
  if (f.size() < 15) {
    return std::nullopt;
  }
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  ProcStat st;  // f[0] is field 3 (state)
  st.state = f[0].empty() ? '?' : f[0][0];
  st.ppid = static_cast<pid_t>(std::stol(f[1]));
  st.self = (std::stod(f[11]) + std::stod(f[12])) / tick;
  st.children = (std::stod(f[13]) + std::stod(f[14])) / tick;
  return st;
}

// A backend that exited but is not reaped yet shows no CPU time, and its whole lifetime lands in
// the postmaster's cutime when it is reaped: wait for the zombies to go before sampling.
double serverCpuSeconds(pid_t postmaster) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    bool zombie = false;
    DIR* scan = opendir("/proc");
    while (dirent* entry = readdir(scan)) {
      if (entry->d_name[0] >= '0' && entry->d_name[0] <= '9') {
        if (auto st = readStat(entry->d_name); st && st->ppid == postmaster && st->state == 'Z') {
          zombie = true;
        }
      }
    }
    closedir(scan);
    if (!zombie) {
      break;
    }
    usleep(10000);
  }
  double total = 0;
  if (auto st = readStat(std::to_string(postmaster))) {
    total += st->self + st->children;
  }
  DIR* dir = opendir("/proc");
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') {
      continue;
    }
    if (auto st = readStat(entry->d_name); st && st->ppid == postmaster) {
      total += st->self;
    }
  }
  closedir(dir);
  return total;
}

double clientCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// ---------------------------------------------------------------------------------------------
// Plain libpq helpers.

struct Conn {
  PGconn* c;
  explicit Conn(const std::string& dsn) : c(PQconnectdb(dsn.c_str())) {
    if (PQstatus(c) != CONNECTION_OK) {
      std::cerr << "connect: " << PQerrorMessage(c);
      std::exit(1);
    }
    PQsetNoticeProcessor(
        c, [](void*, const char*) {}, nullptr);
  }
  ~Conn() { PQfinish(c); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  std::string exec(const std::string& sql) {
    PGresult* r = PQexec(c, sql.c_str());
    check(r, sql);
    std::string out = PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return out;
  }
  static void check(PGresult* r, const std::string& what) {
    const ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_COPY_IN) {
      std::cerr << "SQL failed: " << what.substr(0, 200) << "\n" << PQresultErrorMessage(r);
      std::exit(1);
    }
  }
};

void putInt32(std::string& out, std::int32_t v) {
  const auto u = static_cast<std::uint32_t>(v);
  const char b[4] = {static_cast<char>(u >> 24U), static_cast<char>(u >> 16U),
                     static_cast<char>(u >> 8U), static_cast<char>(u)};
  out.append(b, 4);
}

std::string textArray(const proto::SyncResponse& page,
                      const std::string& (proto::DataObject::*get)() const) {
  std::string payload;
  for (const auto& o : page.response()) {
    const std::string& v = (o.*get)();
    putInt32(payload, static_cast<std::int32_t>(v.size()));
    payload.append(v);
  }
  std::string out;
  putInt32(out, 1);
  putInt32(out, 0);
  putInt32(out, 25);
  putInt32(out, page.response_size());
  putInt32(out, 1);
  out.append(payload);
  return out;
}

std::string copyData(const proto::SyncResponse& page) {
  std::string out("PGCOPY\n\377\r\n\0", 11);
  putInt32(out, 0);
  putInt32(out, 0);
  for (const auto& o : page.response()) {
    out.append("\0\4", 2);
    for (const std::string* v : {&o.remote_id(), &o.resource_name(), &o.uri(), &o.metadata()}) {
      putInt32(out, static_cast<std::int32_t>(v->size()));
      out.append(*v);
    }
  }
  out.append("\377\377", 2);
  return out;
}

// The same columns our writer fills, written unconditionally by the naive method and only when
// different by the raw-ceiling methods.
constexpr const char* kInsertColumns =
    "(source_id, remote_id, resource_name, uri, metadata, metadata_json, first_seen, first_run, "
    "last_changed, last_changed_run, seen_at, seen_run, listing_id)";
constexpr const char* kUpdateSet =
    "resource_name = EXCLUDED.resource_name, uri = EXCLUDED.uri, metadata = EXCLUDED.metadata, "
    "metadata_json = EXCLUDED.metadata_json, last_changed = EXCLUDED.last_changed, "
    "last_changed_run = EXCLUDED.last_changed_run, seen_at = EXCLUDED.seen_at, "
    "seen_run = EXCLUDED.seen_run, listing_id = EXCLUDED.listing_id";
constexpr const char* kDistinct =
    " WHERE (o.resource_name, o.uri, o.metadata) IS DISTINCT FROM "
    "(EXCLUDED.resource_name, EXCLUDED.uri, EXCLUDED.metadata)";

// ---------------------------------------------------------------------------------------------
// Methods. Each writes all pages of one phase.

class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;
  virtual void setUp(const std::string& schema) = 0;
  virtual void writePhase(const std::vector<proto::SyncResponse>& pages, int phase) = 0;
  /// Seconds spent in end-of-run work (writer finish), included in the phase time.
  double finishSeconds() const { return finish_seconds_; }

 protected:
  double finish_seconds_ = 0;
};

// (1a) raw ceiling: one INSERT … SELECT FROM unnest(binary arrays) … ON CONFLICT DO UPDATE
// WHERE IS DISTINCT FROM per page (autocommit).
class RawUnnest final : public Method {
 public:
  explicit RawUnnest(std::string dsn) : conn_(dsn) {}
  std::string name() const override { return "raw-unnest"; }
  void setUp(const std::string& schema) override {
    // The ceiling gets the same planner settings as the writer: a generic plan made once
    // (custom plans would re-plan every page with its arrays as constants) and no JIT.
    conn_.exec("SET plan_cache_mode = force_generic_plan; SET jit = off");
    const std::string sql =
        cat("INSERT INTO ", schema, ".objects AS o ", kInsertColumns,
            " SELECT 1, i.r, i.n, i.u, i.m, i.m::jsonb, now(), $1, now(), $1, now(), $1, $1 "
            "FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS i(r, n, u, m) "
            "ON CONFLICT (source_id, remote_id) DO UPDATE SET ",
            kUpdateSet, kDistinct);
    Conn::check(PQprepare(conn_.c, "raw", sql.c_str(), 0, nullptr), "prepare raw");
  }
  void writePhase(const std::vector<proto::SyncResponse>& pages, int phase) override {
    const std::string run = std::to_string(phase);
    for (const auto& page : pages) {
      const std::string ids = textArray(page, &proto::DataObject::remote_id);
      const std::string names = textArray(page, &proto::DataObject::resource_name);
      const std::string uris = textArray(page, &proto::DataObject::uri);
      const std::string metas = textArray(page, &proto::DataObject::metadata);
      const char* values[] = {run.c_str(), ids.data(), names.data(), uris.data(), metas.data()};
      const int lengths[] = {0, static_cast<int>(ids.size()), static_cast<int>(names.size()),
                             static_cast<int>(uris.size()), static_cast<int>(metas.size())};
      const int formats[] = {0, 1, 1, 1, 1};
      PGresult* r = PQexecPrepared(conn_.c, "raw", 5, values, lengths, formats, 0);
      Conn::check(r, "raw page");
      PQclear(r);
    }
  }

 private:
  Conn conn_;
};

// (1b) raw ceiling: COPY (binary) → temp table → INSERT … SELECT … ON CONFLICT DO UPDATE WHERE
// IS DISTINCT FROM, one transaction per page.
class RawCopy final : public Method {
 public:
  explicit RawCopy(std::string dsn) : conn_(dsn) {}
  std::string name() const override { return "raw-copy"; }
  void setUp(const std::string& schema) override {
    conn_.exec("SET plan_cache_mode = force_generic_plan; SET jit = off");
    conn_.exec(
        "CREATE TEMP TABLE stage (r text COLLATE \"C\", n text, u text, m text) "
        "ON COMMIT DELETE ROWS");
    const std::string sql =
        cat("INSERT INTO ", schema, ".objects AS o ", kInsertColumns,
            " SELECT 1, r, n, u, m, m::jsonb, now(), $1, now(), $1, now(), $1, $1 FROM stage "
            "ON CONFLICT (source_id, remote_id) DO UPDATE SET ",
            kUpdateSet, kDistinct);
    Conn::check(PQprepare(conn_.c, "rawcopy", sql.c_str(), 0, nullptr), "prepare rawcopy");
  }
  void writePhase(const std::vector<proto::SyncResponse>& pages, int phase) override {
    const std::string run = std::to_string(phase);
    for (const auto& page : pages) {
      const std::string data = copyData(page);
      conn_.exec("BEGIN");
      PGresult* r = PQexec(conn_.c, "COPY stage FROM STDIN (FORMAT binary)");
      Conn::check(r, "copy");
      PQclear(r);
      PQputCopyData(conn_.c, data.data(), static_cast<int>(data.size()));
      PQputCopyEnd(conn_.c, nullptr);
      while (PGresult* res = PQgetResult(conn_.c)) {
        Conn::check(res, "copy end");
        PQclear(res);
      }
      const char* values[] = {run.c_str()};
      r = PQexecPrepared(conn_.c, "rawcopy", 1, values, nullptr, nullptr, 0);
      Conn::check(r, "rawcopy page");
      PQclear(r);
      conn_.exec("COMMIT");
    }
  }

 private:
  Conn conn_;
};

// (3) c1's method: one multi-row INSERT … VALUES … ON CONFLICT DO UPDATE per page, every column
// overwritten (text parameters; a new statement text per page size).
class Naive final : public Method {
 public:
  explicit Naive(std::string dsn) : conn_(dsn) {}
  std::string name() const override { return "naive"; }
  void setUp(const std::string& schema) override { schema_ = schema; }
  void writePhase(const std::vector<proto::SyncResponse>& pages, int phase) override {
    const std::string run = std::to_string(phase);
    for (const auto& page : pages) {
      std::string sql = cat("INSERT INTO ", schema_, ".objects AS o ", kInsertColumns, " VALUES ");
      std::vector<const char*> values;
      values.push_back(run.c_str());
      int n = 2;
      for (int i = 0; i < page.response_size(); ++i) {
        const auto& o = page.response(i);
        sql += cat(i == 0 ? "" : ",", "(1,$", n, ",$", n + 1, ",$", n + 2, ",$", n + 3, ",$", n + 3,
                   "::text::jsonb,now(),$1::bigint,now(),$1::bigint,now(),$1::bigint,$1::bigint)");
        values.push_back(o.remote_id().c_str());
        values.push_back(o.resource_name().c_str());
        values.push_back(o.uri().c_str());
        values.push_back(o.metadata().c_str());
        n += 4;
      }
      sql += cat(" ON CONFLICT (source_id, remote_id) DO UPDATE SET ", kUpdateSet);
      PGresult* r = PQexecParams(conn_.c, sql.c_str(), static_cast<int>(values.size()), nullptr,
                                 values.data(), nullptr, nullptr, 0);
      Conn::check(r, "naive page");
      PQclear(r);
    }
  }

 private:
  Conn conn_;
  std::string schema_;
};

// (2) our page writer: complete runs with the Mark policy.
class Writer final : public Method {
 public:
  Writer(std::string dsn, std::string name, store::WriteMethod method, store::PageShape shape)
      : dsn_(std::move(dsn)), name_(std::move(name)), method_(method), shape_(shape) {}
  std::string name() const override { return name_; }
  void setUp(const std::string& schema) override {
    store::StoreOptions options;
    options.dsn = dsn_;
    options.schema = schema;
    options.write_method = method_;
    options.page_shape = shape_;
    options.logger = tributary::log::Logger(
        "store", tributary::log::makeJsonLineSink(2, tributary::log::Level::Warn));
    auto opened = store::Store::open(options);
    if (!opened.ok()) {
      std::cerr << opened.status() << "\n";
      std::exit(1);
    }
    store_ = *std::move(opened);
  }
  void writePhase(const std::vector<proto::SyncResponse>& pages, int phase) override {
    store::RunSpec spec;
    spec.ns = "bench";
    spec.name = "objects";
    spec.connector = "bench";
    spec.holder = "store_bench";
    spec.fencing_token = phase;
    spec.lease_id = cat("bench-lease-", phase);
    auto run = store_->beginRun(spec);
    if (!run.ok()) {
      std::cerr << run.status() << "\n";
      std::exit(1);
    }
    for (const auto& page : pages) {
      if (absl::Status s = (*run)->writePage(page); !s.ok()) {
        std::cerr << s << "\n";
        std::exit(1);
      }
    }
    const Clock::time_point finish_start = Clock::now();
    auto summary = (*run)->finish(store::FinishRequest::succeeded());
    finish_seconds_ = std::chrono::duration<double>(Clock::now() - finish_start).count();
    if (!summary.ok()) {
      std::cerr << summary.status() << "\n";
      std::exit(1);
    }
  }

 private:
  std::string dsn_;
  std::string name_;
  store::WriteMethod method_;
  store::PageShape shape_;
  store::StorePtr store_;
};

struct PhaseResult {
  double seconds = 1e30;
  double finish_seconds = 0;
  double cpu_seconds = 1e30;  // server + client
  double wal_bytes = 0;
  [[nodiscard]] double rowsPerSecond(int n) const { return n / (seconds - finish_seconds); }
  [[nodiscard]] double endToEnd(int n) const { return n / seconds; }
  [[nodiscard]] double rowsPerCpuSecond(int n) const { return n / cpu_seconds; }
};

struct Result {
  PhaseResult load, identical, changed;
  double table_bytes = 0;
};

std::vector<int> parseInts(const std::string& text) {
  std::vector<int> out;
  for (auto part : tributary::strings::split(text, ',')) {
    out.push_back(std::stoi(std::string(part)));
  }
  return out;
}

std::vector<std::string> parseNames(const std::string& text) {
  std::vector<std::string> out;
  for (auto part : tributary::strings::split(text, ',')) {
    out.emplace_back(part);
  }
  return out;
}

std::string fmtRate(double rows_per_second) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0fk", rows_per_second / 1000);
  return buf;
}
std::string fmtMb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", bytes / 1e6);
  return buf;
}
std::string fmtRatio(double a, double b) {
  if (b <= 0) {
    return "-";
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", a / b);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  int objects = 1000000;
  std::vector<int> page_sizes = {100, 1000, 10000};
  std::vector<std::string> methods = {"raw-unnest", "raw-copy", "writer", "writer-copy", "naive"};
  int repeat = 1;
  std::string external_dsn;  // another benchmark's database (agent_bench): same server, same run
  pid_t external_pid = 0;
  bool fast = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--fast") {
      fast = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::cerr << "store_bench: " << flag << " needs a value\n";
      return 2;
    }
    const std::string value = argv[++i];
    if (flag == "--objects") {
      objects = std::stoi(value);
    } else if (flag == "--page-sizes") {
      page_sizes = parseInts(value);
    } else if (flag == "--repeat") {
      repeat = std::stoi(value);
    } else if (flag == "--methods") {
      methods = parseNames(value);
    } else if (flag == "--dsn") {
      external_dsn = value;
    } else if (flag == "--server-pid") {  // with --dsn: the postmaster, for the CPU figures
      external_pid = std::stoi(value);
    } else {
      std::cerr << "store_bench: unknown flag " << flag << "\n";
      return 2;
    }
  }

  tributary::harness::PostgresOptions pg_options;
  // Production-like: WAL with full-page images, a buffer pool that holds the table, no
  // autovacuum interfering with the measurements (VACUUM ANALYZE runs between phases).
  pg_options.settings = {"shared_buffers=1GB",    "max_wal_size=8GB", "full_page_writes=on",
                         "checkpoint_timeout=1h", "autovacuum=off",   "wal_level=replica",
                         "work_mem=64MB"};
  // The harness runs its databases with fsync off; a user's database is durable.
  pg_options.settings.push_back(fast ? "fsync=off" : "fsync=on");
  pg_options.settings.push_back(fast ? "synchronous_commit=off" : "synchronous_commit=on");
  tributary::harness::PostgresServer server(pg_options);
  if (external_dsn.empty()) {
    if (absl::Status s = server.start(); !s.ok()) {
      std::cerr << "cannot start PostgreSQL: " << s << "\n";
      return 1;
    }
  }
  const std::string dsn = external_dsn.empty() ? server.dsn() : external_dsn;
  const pid_t postmaster = external_dsn.empty() ? server.pid() : external_pid;
  Conn admin(dsn);
  std::cerr << "PostgreSQL " << admin.exec("SHOW server_version") << " on " << dsn
            << " (fsync=" << admin.exec("SHOW fsync")
            << ", full_page_writes=" << admin.exec("SHOW full_page_writes")
            << ", synchronous_commit=" << admin.exec("SHOW synchronous_commit") << ")\n";

  auto walNow = [&] { return admin.exec("SELECT pg_current_wal_lsn()::text"); };
  auto walDiff = [&](const std::string& a, const std::string& b) {
    return std::stod(admin.exec(cat("SELECT pg_wal_lsn_diff('", b, "', '", a, "')")));
  };

  std::map<std::pair<int, std::string>, Result> results;
  for (int page_size : page_sizes) {
    std::cerr << "building pages of " << page_size << "…\n";
    const auto load_pages = makePages(objects, page_size, 0);
    const auto changed_pages = makePages(objects, page_size, 100);
    for (int round = 0; round < repeat; ++round) {
      for (const std::string& method_name : methods) {
        std::unique_ptr<Method> method;
        if (method_name == "raw-unnest") {
          method = std::make_unique<RawUnnest>(dsn);
        } else if (method_name == "raw-copy") {
          method = std::make_unique<RawCopy>(dsn);
        } else if (method_name == "naive") {
          method = std::make_unique<Naive>(dsn);
        } else if (method_name == "writer") {
          method = std::make_unique<Writer>(dsn, method_name, store::WriteMethod::UnnestArrays,
                                            store::PageShape::Adaptive);
        } else if (method_name == "writer-copy") {
          method = std::make_unique<Writer>(dsn, method_name, store::WriteMethod::CopyStaging,
                                            store::PageShape::Adaptive);
        } else if (method_name == "writer-classify") {
          method = std::make_unique<Writer>(dsn, method_name, store::WriteMethod::UnnestArrays,
                                            store::PageShape::ClassifyFirst);
        } else if (method_name == "writer-insert") {
          method = std::make_unique<Writer>(dsn, method_name, store::WriteMethod::UnnestArrays,
                                            store::PageShape::InsertFirst);
        } else {
          std::cerr << "unknown method " << method_name << "\n";
          return 2;
        }
        std::string schema = cat("bench_", page_size, "_", method_name);
        std::replace(schema.begin(), schema.end(), '-', '_');
        admin.exec(cat("DROP SCHEMA IF EXISTS ", schema, " CASCADE"));
        // Every method writes the store's own objects table.
        store::StoreOptions layout;
        layout.dsn = dsn;
        layout.schema = schema;
        if (absl::Status s = store::Store::migrate(layout); !s.ok()) {
          std::cerr << s << "\n";
          return 1;
        }
        method->setUp(schema);
        Result& result = results[{page_size, method_name}];
        const std::vector<std::pair<PhaseResult*, const std::vector<proto::SyncResponse>*>> phases =
            {{&result.load, &load_pages},
             {&result.identical, &load_pages},
             {&result.changed, &changed_pages}};
        int phase_number = 0;
        for (const auto& [phase, pages] : phases) {
          ++phase_number;
          admin.exec(cat("VACUUM ANALYZE ", schema, ".objects"));
          admin.exec("CHECKPOINT");
          const std::string before = walNow();
          const double client_before = clientCpuSeconds();
          const double cpu_before = serverCpuSeconds(postmaster) + client_before;
          const Clock::time_point start = Clock::now();
          method->writePhase(*pages, phase_number);
          const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
          const double client_cpu = clientCpuSeconds() - client_before;
          const double cpu = serverCpuSeconds(postmaster) + clientCpuSeconds() - cpu_before;
          phase->wal_bytes = walDiff(before, walNow());
          if (seconds - method->finishSeconds() < phase->seconds - phase->finish_seconds) {
            phase->seconds = seconds;
            phase->finish_seconds = method->finishSeconds();
          }
          phase->cpu_seconds = std::min(phase->cpu_seconds, cpu);
          std::cerr << "  page " << page_size << " " << method_name << " phase " << phase_number
                    << ": " << fmtRate(objects / (seconds - method->finishSeconds())) << " rows/s, "
                    << seconds << " s (finish " << method->finishSeconds() << " s), cpu " << cpu
                    << " s (client " << client_cpu << " s), WAL " << fmtMb(phase->wal_bytes)
                    << " MB\n";
        }
        result.table_bytes =
            std::stod(admin.exec(cat("SELECT pg_total_relation_size('", schema, ".objects')")));
        const std::string count = admin.exec(cat("SELECT count(*) FROM ", schema, ".objects"));
        if (count != std::to_string(objects)) {
          std::cerr << "  WRONG ROW COUNT " << count << "\n";
          return 1;
        }
        admin.exec(cat("DROP SCHEMA ", schema, " CASCADE"));
      }
    }
  }

  // Report. "raw" = the better of raw-unnest and raw-copy for that page size and phase.
  std::printf("\n# store_bench: %d objects, PostgreSQL %s, one transaction per page, best of %d\n",
              objects, admin.exec("SHOW server_version").c_str(), repeat);
  std::printf(
      "\nwall-clock rows/s of the page phase (writer: pages only; finish = its end-of-run "
      "stale detection, in seconds) and rows per CPU-second (server + client)\n\n");
  std::printf(
      "| page | method | load | ident | 1%% | load/cpu-s | ident/cpu-s | 1%%/cpu-s | "
      "finish s (ident) | WAL MB load | WAL MB ident (%% of load) | WAL MB 1%% | "
      "table MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int page_size : page_sizes) {
    for (const std::string& m : methods) {
      const Result& r = results[{page_size, m}];
      std::printf("| %d | %s | %s | %s | %s | %s | %s | %s | %.1f | %s | %s (%.2f%%) | %s | %s |\n",
                  page_size, m.c_str(), fmtRate(r.load.rowsPerSecond(objects)).c_str(),
                  fmtRate(r.identical.rowsPerSecond(objects)).c_str(),
                  fmtRate(r.changed.rowsPerSecond(objects)).c_str(),
                  fmtRate(r.load.rowsPerCpuSecond(objects)).c_str(),
                  fmtRate(r.identical.rowsPerCpuSecond(objects)).c_str(),
                  fmtRate(r.changed.rowsPerCpuSecond(objects)).c_str(), r.identical.finish_seconds,
                  fmtMb(r.load.wal_bytes).c_str(), fmtMb(r.identical.wal_bytes).c_str(),
                  100.0 * r.identical.wal_bytes / std::max(1.0, r.load.wal_bytes),
                  fmtMb(r.changed.wal_bytes).c_str(), fmtMb(r.table_bytes).c_str());
    }
  }
  auto has = [&](int p, const std::string& m) { return results.count({p, m}) > 0; };
  for (const char* writer : {"writer", "writer-copy", "writer-classify", "writer-insert"}) {
    if (std::find(methods.begin(), methods.end(), writer) == methods.end()) {
      continue;
    }
    std::printf(
        "\nratios for %s: vs raw ceiling (best raw method per cell) and vs naive; "
        "wall / CPU-normalised\n\n",
        writer);
    std::printf(
        "| page | vs raw: load | ident | 1%% | vs naive: load | ident | 1%% | "
        "ident incl. finish (wall) |\n|---|---|---|---|---|---|---|---|\n");
    for (int page_size : page_sizes) {
      if (!has(page_size, writer)) {
        continue;
      }
      const Result& w = results[{page_size, writer}];
      auto bestRaw = [&](auto get) {
        double value = 0;
        for (const char* m : {"raw-unnest", "raw-copy"}) {
          if (has(page_size, m)) {
            value = std::max(value, get(results[{page_size, m}]));
          }
        }
        return value;
      };
      auto pair = [&](double wall_a, double wall_b, double cpu_a, double cpu_b) {
        return cat(fmtRatio(wall_a, wall_b), " / ", fmtRatio(cpu_a, cpu_b));
      };
      const int n = objects;
      auto raw = [&](auto phase) {
        return std::make_pair(
            bestRaw([&](const Result& r) { return (r.*phase).rowsPerSecond(n); }),
            bestRaw([&](const Result& r) { return (r.*phase).rowsPerCpuSecond(n); }));
      };
      const auto rl = raw(&Result::load);
      const auto ri = raw(&Result::identical);
      const auto rc = raw(&Result::changed);
      const bool naive = has(page_size, "naive");
      const Result& nv = naive ? results[{page_size, "naive"}] : w;
      auto vsNaive = [&](const PhaseResult& a, const PhaseResult& b) {
        return naive ? pair(a.rowsPerSecond(n), b.rowsPerSecond(n), a.rowsPerCpuSecond(n),
                            b.rowsPerCpuSecond(n))
                     : std::string("-");
      };
      std::printf(
          "| %d | %s | %s | %s | %s | %s | %s | %s |\n", page_size,
          pair(w.load.rowsPerSecond(n), rl.first, w.load.rowsPerCpuSecond(n), rl.second).c_str(),
          pair(w.identical.rowsPerSecond(n), ri.first, w.identical.rowsPerCpuSecond(n), ri.second)
              .c_str(),
          pair(w.changed.rowsPerSecond(n), rc.first, w.changed.rowsPerCpuSecond(n), rc.second)
              .c_str(),
          vsNaive(w.load, nv.load).c_str(), vsNaive(w.identical, nv.identical).c_str(),
          vsNaive(w.changed, nv.changed).c_str(),
          naive ? fmtRatio(w.identical.endToEnd(n), nv.identical.endToEnd(n)).c_str() : "-");
    }
  }
  std::fflush(stdout);
  return 0;
}
