#include "sync_pipeline.h"

#include "tributary/common/strings.h"
#include "tributary/installer/installer.h"
#include "tributary/locks/lock.h"

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

using strings::cat;
using Clock = std::chrono::steady_clock;

/// Pages and objects committed so far.
struct Counts {
  std::atomic<std::uint64_t> pages{0};
  std::atomic<std::uint64_t> objects{0};
};

/// A status line on a terminal (every 200 ms), JSON progress log lines otherwise (every 5 s).
class Progress {
 public:
  Progress(const Counts& counts, bool terminal, log::Logger logger, std::string label)
      : counts_(counts),
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
      const auto objects = counts_.objects.load();
      const double rate = elapsed > 0 ? static_cast<double>(objects) / elapsed : 0;
      if (terminal_) {
        std::fprintf(stderr, "\r\033[2K%s: %llu pages, %llu objects, %.0f objects/s, %s",
                     label_.c_str(), static_cast<unsigned long long>(counts_.pages.load()),
                     static_cast<unsigned long long>(objects), rate,
                     formatDuration(elapsed).c_str());
        std::fflush(stderr);
      } else {
        logger_.info("progress", {{"pages", counts_.pages.load()},
                                  {"objects", objects},
                                  {"objects_per_second", rate},
                                  {"elapsed_seconds", elapsed}});
      }
    }
  }

  const Counts& counts_;
  bool terminal_;
  log::Logger logger_;
  std::string label_;
  Clock::time_point started_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::jthread thread_;
};

/// The pipeline's progress: stage lines for the user, page counts for the progress line.
class ProgressObserver : public sync::Observer {
 public:
  ProgressObserver(bool terminal, log::Logger logger)
      : terminal_(terminal), logger_(std::move(logger)) {}

  ~ProgressObserver() override { stop(); }
  ProgressObserver(const ProgressObserver&) = delete;
  ProgressObserver& operator=(const ProgressObserver&) = delete;

  void onStage(sync::Stage stage, const std::string& detail) override {
    if (stage == sync::Stage::Syncing) {
      progress_.emplace(counts_, terminal_, logger_, detail);
      return;
    }
    stop();
    if (stage == sync::Stage::Finishing && terminal_) {
      return;  // the summary says it; a log keeps the line for when the finish step began
    }
    if (terminal_) {
      std::cerr << detail << '\n';
    } else {
      logger_.info(detail);
    }
  }
  void onPage(std::uint64_t pages, std::uint64_t objects) override {
    counts_.pages.store(pages);
    counts_.objects.store(objects);
  }

  /// Ends the progress line (before anything else is printed).
  void stop() { progress_.reset(); }

 private:
  bool terminal_;
  log::Logger logger_;
  Counts counts_;
  std::optional<Progress> progress_;  // Last: its thread reads counts_.
};

std::string hostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) {
    return "localhost";
  }
  return buf;
}

int exitCodeFor(sync::FailureReason reason) {
  switch (reason) {
    case sync::FailureReason::InstallFailed:
      return kExitInstall;
    case sync::FailureReason::LockBusy:
    case sync::FailureReason::LockUnavailable:
    case sync::FailureReason::Fenced:
      return kExitConflict;
    case sync::FailureReason::StoreUnavailable:
      return kExitDatabase;
    case sync::FailureReason::InvalidData:  // The connector sent something PostgreSQL cannot hold.
    case sync::FailureReason::ConnectorFailed:
      return kExitConnector;
    case sync::FailureReason::Cancelled:
      return kExitInterrupted;
  }
  return kExitConnector;
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
  int printFailure(const Outcome& outcome);
  void printSummary();

  const SyncPlan& plan_;
  const RunFlags& flags_;
  bool terminal_;
  log::Logger logger_;
  StopOnSignal signals_;

  Database database_;
  std::optional<installer::Installation> installation_;
  std::optional<plugin_host::SyncResult> sync_;
  std::optional<store::RunSummary> summary_;
  std::int64_t run_id_ = 0;
  double seconds_ = 0;
};

Outcome Pipeline::execute() {
  for (const std::string& note : plan_.notes) {
    logger_.warn(note);
  }
  for (const std::string& warning : flags_.sandbox.warnings()) {
    logger_.warn(warning);
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

  // 3. The pipeline, with an in-process lock: a second `tributary run` of the same SyncJob
  // claims a newer fencing token in the store, and this run's writes are refused.
  auto lock = locks::InProcessLock::create();
  sync::Services services{**store, **installer, *lock, logger_};
  sync::RunPlan run_plan = plan_;
  run_plan.holder = cat("tributary-cli@", hostName(), "/", ::getpid());
  run_plan.update = flags_.update;
  run_plan.sandbox = flags_.sandbox.policy(plan_.limits);
  run_plan.sync_timeout =
      flags_.timeout_s
          ? std::chrono::milliseconds(static_cast<std::int64_t>(*flags_.timeout_s * 1000))
      : plan_.active_deadline
          ? std::chrono::duration_cast<std::chrono::milliseconds>(*plan_.active_deadline)
          : std::chrono::milliseconds(std::chrono::hours(24));
  if (flags_.start_timeout_s) {
    run_plan.start_timeout =
        std::chrono::milliseconds(static_cast<std::int64_t>(*flags_.start_timeout_s * 1000));
  }
  ProgressObserver observer(terminal_, logger_);
  sync::Outcome outcome = sync::runSync(run_plan, services, signals_.token(), observer);
  observer.stop();
  run_id_ = outcome.run_id;
  seconds_ = outcome.sync_seconds;
  installation_ = outcome.installation;
  sync_ = outcome.sync;
  summary_ = outcome.summary;
  if (outcome.failure) {
    return {exitCodeFor(outcome.failure->reason), outcome.failure->message};
  }
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
