#include "sync_pipeline.h"

#include "tributary/common/strings.h"
#include "tributary/installer/installer.h"
#include "tributary/locks/lock.h"
#include "tributary/plugin_host/plugin_host.h"

#include "common.h"
#include "signals.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace tributary::cli {
namespace {

namespace ph = tributary::plugin_host;
using strings::cat;
using Clock = std::chrono::steady_clock;

/// Pages → store::Run, one committed transaction per page; counters for the progress line.
class StoreSink : public ph::PageSink {
 public:
  explicit StoreSink(store::Run& run) : run_(run) {}

  absl::Status onPage(const proto::SyncResponse& page) override {
    absl::Status written = run_.writePage(page);
    if (!written.ok()) {
      remember(written);
      return written;
    }
    pages_.fetch_add(1);
    objects_.fetch_add(static_cast<std::uint64_t>(page.response_size()));
    return absl::OkStatus();
  }

  absl::Status onClean() override {
    absl::Status cleaned = run_.clean();
    if (!cleaned.ok()) {
      remember(cleaned);
    }
    return cleaned;
  }

  [[nodiscard]] std::uint64_t pages() const { return pages_.load(); }
  [[nodiscard]] std::uint64_t objects() const { return objects_.load(); }
  [[nodiscard]] absl::Status storeError() const {
    const std::lock_guard lock(mu_);
    return store_error_;
  }

 private:
  void remember(const absl::Status& status) {
    const std::lock_guard lock(mu_);
    if (store_error_.ok()) {
      store_error_ = status;
    }
  }

  store::Run& run_;
  std::atomic<std::uint64_t> pages_{0};
  std::atomic<std::uint64_t> objects_{0};
  mutable std::mutex mu_;
  absl::Status store_error_;
};

/// A status line on a terminal (every 200 ms), JSON progress log lines otherwise (every 5 s).
class Progress {
 public:
  Progress(const StoreSink& sink, bool terminal, log::Logger logger, std::string label)
      : sink_(sink),
        terminal_(terminal),
        logger_(std::move(logger)),
        label_(std::move(label)),
        started_(Clock::now()),
        thread_([this](const std::stop_token& stop) { loop(stop); }) {}
  ~Progress() { finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void finish() {
    if (thread_.joinable()) {
      thread_.request_stop();
      cv_.notify_all();
      thread_.join();
      if (terminal_) {
        std::cerr << "\r\033[2K" << std::flush;
      }
    }
  }

 private:
  void loop(const std::stop_token& stop) {
    const auto tick = terminal_ ? std::chrono::milliseconds(200) : std::chrono::seconds(5);
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, tick, [&] { return stop.stop_requested(); })) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - started_).count();
      const auto objects = sink_.objects();
      const double rate = elapsed > 0 ? static_cast<double>(objects) / elapsed : 0;
      if (terminal_) {
        std::fprintf(stderr, "\r\033[2K%s: %llu pages, %llu objects, %.0f objects/s, %s",
                     label_.c_str(), static_cast<unsigned long long>(sink_.pages()),
                     static_cast<unsigned long long>(objects), rate,
                     formatDuration(elapsed).c_str());
        std::fflush(stderr);
      } else {
        logger_.info("progress", {{"pages", sink_.pages()},
                                  {"objects", objects},
                                  {"objects_per_second", rate},
                                  {"elapsed_seconds", elapsed}});
      }
    }
  }

  const StoreSink& sink_;
  bool terminal_;
  log::Logger logger_;
  std::string label_;
  Clock::time_point started_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::jthread thread_;
};

std::string hostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) {
    return "localhost";
  }
  return buf;
}

int exitCodeForStore(const absl::Status& status) {
  if (absl::IsAborted(status)) {
    return kExitConflict;
  }
  if (absl::IsInvalidArgument(status) || absl::IsResourceExhausted(status)) {
    return kExitConnector;  // The connector sent something PostgreSQL cannot hold.
  }
  return kExitDatabase;
}

struct Outcome {
  int code = kExitOk;
  std::string error;
};

class Pipeline {
 public:
  Pipeline(const SyncPlan& plan, const RunFlags& flags)
      : plan_(plan),
        flags_(flags),
        terminal_(stderrIsTerminal()),
        logger_(log::Logger("tributary", commandSink())
                    .with({{"namespace", plan.ns}, {"sync_job", plan.name}})) {}

  int run();

 private:
  Outcome execute();
  void say(const std::string& line) const {
    if (terminal_) {
      std::cerr << line << '\n';
    } else {
      logger_.info(line);
    }
  }
  int printFailure(const Outcome& outcome);
  void printSummary();

  const SyncPlan& plan_;
  const RunFlags& flags_;
  bool terminal_;
  log::Logger logger_;
  StopOnSignal signals_;

  Database database_;
  std::optional<installer::Installation> installation_;
  std::optional<ph::SyncResult> sync_;
  std::optional<store::RunSummary> summary_;
  std::int64_t run_id_ = 0;
  double seconds_ = 0;
};

Outcome Pipeline::execute() {
  for (const std::string& note : plan_.notes) {
    logger_.warn(note);
  }
  // 1. The database (fail fast, before a long install).
  auto db = resolveDatabase(flags_.database_url, LocalStart::Always);
  if (!db.ok()) {
    return {kExitDatabase, std::string(db.status().message())};
  }
  database_ = *db;
  store::StoreOptions store_options;
  store_options.dsn = database_.dsn;
  const auto db_timeout = std::chrono::milliseconds(
      static_cast<std::int64_t>(flags_.database_timeout_s.value_or(15.0) * 1000));
  store_options.reconnect_deadline = db_timeout;
  store_options.connect_timeout =
      std::min<std::chrono::milliseconds>(db_timeout, std::chrono::seconds(5));
  store_options.logger = logger_.named("store");
  auto store = store::Store::open(store_options);
  if (!store.ok()) {
    return {kExitDatabase,
            cat("cannot use the database ", database_.display, ": ", store.status().message())};
  }

  // 2. The connector.
  installer::Options install_options;
  install_options.cache_dir = flags_.cache_dir;
  install_options.logger = logger_.named("installer");
  install_options.secrets = std::make_shared<installer::DirectorySecretResolver>(flags_.secret_dir);
  auto installer = installer::Installer::create(install_options);
  if (!installer.ok()) {
    return {kExitInstall, cat("cannot use the connector cache ", flags_.cache_dir.string(), ": ",
                              installer.status().message())};
  }
  say(cat("installing connector ", plan_.connector.name, " (",
          installer::sourceName(plan_.connector.source), " ",
          installer::redactUri(plan_.connector.uri), ")"));
  auto installed = flags_.update ? (*installer)->update(plan_.connector, signals_.token())
                                 : (*installer)->install(plan_.connector, signals_.token());
  if (!installed.ok()) {
    if (signals_.interrupted()) {
      return {kExitInterrupted, "interrupted while installing the connector"};
    }
    return {kExitInstall, cat("cannot install connector ", plan_.connector.name, ": ",
                              installed.status().message())};
  }
  installation_ = *installed;

  // 3. The lock and the run (fenced: a newer run of the same SyncJob stops this one's writes).
  const std::string source = cat(plan_.ns, "/", plan_.name);
  auto hwm = (*store)->fencingHighWaterMark(plan_.ns, plan_.name);
  if (!hwm.ok()) {
    return {kExitDatabase,
            cat("cannot read the fencing state of ", source, ": ", hwm.status().message())};
  }
  auto lock = locks::InProcessLock::create();
  locks::AcquireOptions acquire;
  acquire.min_fencing_token = *hwm;
  auto lease = lock->acquire(source, acquire);
  if (!lease.ok()) {
    return {kExitConflict, cat("cannot lock ", source, ": ", lease.status().message())};
  }
  store::RunSpec run_spec;
  run_spec.ns = plan_.ns;
  run_spec.name = plan_.name;
  run_spec.connector = plan_.connector.name;
  run_spec.holder = cat("tributary-cli@", hostName(), "/", ::getpid());
  run_spec.fencing_token = (*lease)->fencingToken();
  run_spec.lease_id = (*lease)->token();
  const locks::Lease* held = lease->get();
  run_spec.lease_check = [held] { return held->check(); };
  run_spec.deletion_policy = plan_.deletion_policy;
  run_spec.deletion_guard = plan_.deletion_guard;
  auto run = (*store)->beginRun(run_spec);
  if (!run.ok()) {
    if (absl::IsAborted(run.status())) {
      return {kExitConflict, cat("another run of ", source, " holds it (", run.status().message(),
                                 "); wait for it to finish")};
    }
    return {kExitDatabase, cat("cannot start a run of ", source, ": ", run.status().message())};
  }
  run_id_ = (*run)->id();
  auto fail = [&](int code, const std::string& error) -> Outcome {
    auto finished = (*run)->finish(store::FinishRequest::failed(error));
    if (!finished.ok()) {
      logger_.warn("could not record the failed run", {{"error", finished.status().message()}});
    }
    return {code, error};
  };

  // 4. The connector process and its Sync.
  ph::Options host_options;
  host_options.handshake = plan_.handshake;
  host_options.logger = logger_.named("plugin-host");
  if (flags_.start_timeout_s) {
    host_options.start_timeout =
        std::chrono::milliseconds(static_cast<std::int64_t>(*flags_.start_timeout_s * 1000));
  }
  // The process's environment beyond the installed spec's: credentials and --env never reach
  // install commands or the install hash, and are never logged (names of dropped host
  // variables are, once).
  ph::LaunchSpec launch = installation_->launchSpec();
  std::unique_ptr<RunDirectory> run_dir;
  if (!plan_.files.empty()) {
    auto dir = RunDirectory::create(plan_.files);
    if (!dir.ok()) {
      return fail(kExitConnector, cat("cannot start connector ", plan_.connector.name, ": ",
                                      dir.status().message()));
    }
    run_dir = *std::move(dir);
  }
  for (const auto& [name, value] : plan_.secret_env) {
    launch.env[name] = value;
  }
  if (run_dir) {
    for (const auto& [name, path] : run_dir->env()) {
      launch.env[name] = path;
    }
  }
  for (const auto& [name, value] : plan_.env_overrides) {
    launch.env[name] = value;
  }
  say(cat("starting connector ", plan_.connector.name, " (version ", installation_->version, ")"));
  auto client = ph::PluginClient::start(launch, host_options);
  if (!client.ok()) {
    return fail(kExitConnector, cat("cannot start connector ", plan_.connector.name, ": ",
                                    client.status().message()));
  }
  StoreSink sink(**run);
  const auto timeout =
      flags_.timeout_s
          ? std::chrono::milliseconds(static_cast<std::int64_t>(*flags_.timeout_s * 1000))
      : plan_.timeout ? std::chrono::duration_cast<std::chrono::milliseconds>(*plan_.timeout)
                      : std::chrono::milliseconds(std::chrono::hours(24));
  const auto started = Clock::now();
  absl::StatusOr<ph::SyncResult> result;
  {
    Progress progress(sink, terminal_, logger_, cat("syncing ", source));
    result = (*client)->sync(plan_.options, sink, timeout, signals_.token());
    progress.finish();
  }
  seconds_ = std::chrono::duration<double>(Clock::now() - started).count();
  (*client)->kill();
  if (!result.ok()) {
    if (signals_.interrupted()) {
      return fail(kExitInterrupted, cat("interrupted after ", sink.pages(), " pages"));
    }
    const absl::Status store_error = sink.storeError();
    const int code = store_error.ok() ? kExitConnector : exitCodeForStore(store_error);
    return fail(code, cat("sync of ", source, " failed: ", result.status().message()));
  }
  sync_ = *result;

  // 5. Success: the deletion policy, the run's record.
  auto summary = (*run)->finish(store::FinishRequest::succeeded(result->metadata));
  if (!summary.ok()) {
    return {exitCodeForStore(summary.status()),
            cat("the sync of ", source,
                " finished but could not be recorded: ", summary.status().message())};
  }
  summary_ = *summary;
  static_cast<void>((*lease)->release());
  return {};
}

int Pipeline::printFailure(const Outcome& outcome) {
  std::string detail;
  if (run_id_ > 0) {
    detail = cat("run ", run_id_,
                 " is recorded as failed; nothing was deleted, and pages committed before the "
                 "failure are kept");
  }
  if (flags_.json) {
    nlohmann::json out = {{"ok", false},
                          {"exit_code", outcome.code},
                          {"namespace", plan_.ns},
                          {"sync_job", plan_.name},
                          {"connector", plan_.connector.name},
                          {"error", outcome.error}};
    if (run_id_ > 0) {
      out["run_id"] = run_id_;
    }
    if (!database_.display.empty()) {
      out["database"] = database_.display;
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  }
  std::cerr << "tributary: " << outcome.error << '\n';
  if (!detail.empty()) {
    std::cerr << "tributary: " << detail << '\n';
  }
  return outcome.code;
}

void Pipeline::printSummary() {
  const store::RunCounters& c = summary_->counters;
  const double rate = seconds_ > 0 ? static_cast<double>(sync_->objects) / seconds_ : 0;
  if (flags_.json) {
    nlohmann::json metadata_json = nlohmann::json::parse(sync_->metadata, nullptr, false);
    nlohmann::json out = {
        {"ok", true},
        {"namespace", plan_.ns},
        {"sync_job", plan_.name},
        {"connector", plan_.connector.name},
        {"connector_version", installation_->version},
        {"run_id", summary_->run_id},
        {"deletion_policy", std::string(store::deletionPolicyName(plan_.deletion_policy))},
        {"deletion_applied", summary_->deletion_applied},
        {"deletion_guarded", summary_->deletion_guarded},
        {"objects_guarded", summary_->guarded_objects},
        {"pages", c.pages},
        {"bytes", sync_->bytes},
        {"cleans", c.cleans},
        {"objects_received", c.objects_received},
        {"objects_upserted", c.upserted()},
        {"objects_inserted", c.inserted},
        {"objects_updated", c.updated},
        {"objects_unchanged", c.unchanged},
        {"objects_revived", c.revived},
        {"objects_duplicate", c.duplicates},
        {"objects_missing", c.missing},
        {"objects_marked", c.marked},
        {"objects_deleted", c.deleted},
        {"duration_seconds", seconds_},
        {"objects_per_second", rate},
        {"connector_metadata", sync_->metadata},
        {"database", database_.display}};
    if (!metadata_json.is_discarded()) {
      out["connector_metadata_json"] = metadata_json;
    }
    if (!summary_->note.empty()) {
      out["note"] = summary_->note;
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    return;
  }
  std::string deletion;
  switch (plan_.deletion_policy) {
    case store::DeletionPolicy::Keep:
      deletion = cat(c.missing, " newly missing, kept (deletionPolicy Keep)");
      break;
    case store::DeletionPolicy::Mark:
      deletion = cat(c.marked, " soft-deleted (deletionPolicy Mark)");
      break;
    case store::DeletionPolicy::Delete:
      deletion = cat(c.deleted, " deleted (deletionPolicy Delete)");
      break;
  }
  if (!summary_->deletion_applied) {
    deletion += cat(" — not applied", summary_->note.empty() ? "" : ": " + summary_->note);
  }
  if (summary_->deletion_guarded) {
    deletion += " (run again with --confirm-deletion to apply it)";
  }
  std::printf("synced %s/%s with connector %s (run %lld)\n", plan_.ns.c_str(), plan_.name.c_str(),
              plan_.connector.name.c_str(), static_cast<long long>(summary_->run_id));
  std::printf("  pages      %lld (%s)\n", static_cast<long long>(c.pages),
              cat(sync_->bytes, " bytes").c_str());
  std::printf(
      "  objects    %lld received: %lld upserted (%lld new, %lld changed), %lld unchanged\n",
      static_cast<long long>(c.objects_received), static_cast<long long>(c.upserted()),
      static_cast<long long>(c.inserted), static_cast<long long>(c.updated),
      static_cast<long long>(c.unchanged));
  std::printf("  removed    %s\n", deletion.c_str());
  std::printf("  duration   %s (%.0f objects/s)\n", formatDuration(seconds_).c_str(), rate);
  std::printf("  connector  %s version %s, metadata %s\n", plan_.connector.name.c_str(),
              installation_->version.c_str(),
              sync_->metadata.empty() ? "(none)" : sync_->metadata.c_str());
  std::printf("  database   %s%s\n", database_.display.c_str(),
              database_.local ? " (local; `tributary db url`)" : "");
  std::fflush(stdout);
}

int Pipeline::run() {
  const Outcome outcome = execute();
  if (outcome.code != kExitOk) {
    return printFailure(outcome);
  }
  printSummary();
  return kExitOk;
}

}  // namespace

int executeSync(const SyncPlan& plan, const RunFlags& flags) {
  Pipeline pipeline(plan, flags);
  return pipeline.run();
}

}  // namespace tributary::cli
