#include "tributary/sync/sync.h"

#include "tributary/common/redact.h"
#include "tributary/common/strings.h"

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <unistd.h>

namespace tributary::sync {
namespace {

namespace ph = tributary::plugin_host;
using strings::cat;
using Clock = std::chrono::steady_clock;

// Words of the errors the sandbox causes (EACCES, EPERM, EFBIG, EAGAIN on fork/clone).
bool refusedBySandbox(const absl::Status& status) {
  const std::string lower =
      strings::toLower(std::string_view(status.message().data(), status.message().size()));
  for (const char* words : {"permission denied", "operation not permitted", "file too large",
                            "resource temporarily unavailable"}) {
    if (lower.find(words) != std::string::npos) {
      return true;
    }
  }
  return false;
}

/// Pages → store::Run, one committed transaction per page, counted for the observer.
class StoreSink : public ph::PageSink {
 public:
  StoreSink(store::Run& run, Observer& observer) : run_(run), observer_(observer) {}

  absl::Status onPage(const proto::SyncResponse& page) override {
    const auto started = Clock::now();
    absl::Status written = run_.writePage(page);
    const double write_seconds = std::chrono::duration<double>(Clock::now() - started).count();
    if (!written.ok()) {
      remember(written);
      return written;
    }
    const std::uint64_t pages = pages_.fetch_add(1) + 1;
    const std::uint64_t objects =
        objects_.fetch_add(static_cast<std::uint64_t>(page.response_size())) +
        static_cast<std::uint64_t>(page.response_size());
    observer_.onPage(pages, objects);
    observer_.onCounters(run_.counters(), write_seconds);
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
  /// The first store error a page or Clean met (OK if none): tells a store failure from a
  /// connector's own.
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
  Observer& observer_;
  std::atomic<std::uint64_t> pages_{0};
  std::atomic<std::uint64_t> objects_{0};
  mutable std::mutex mu_;
  absl::Status store_error_;  // Guarded by mu_.
};

Failure failure(FailureReason reason, bool retriable, std::string message) {
  return {reason, retriable, std::move(message)};
}

// A store error met while writing: fenced, bad data, or the database.
Failure storeFailure(const absl::Status& status, std::string message) {
  if (absl::IsAborted(status)) {
    return failure(FailureReason::Fenced, true, std::move(message));
  }
  if (absl::IsInvalidArgument(status) || absl::IsResourceExhausted(status)) {
    return failure(FailureReason::InvalidData, false, std::move(message));
  }
  return failure(FailureReason::StoreUnavailable, true, std::move(message));
}

class Pipeline {
 public:
  Pipeline(const RunPlan& plan, Services& services, std::stop_token stop, Observer& observer)
      : plan_(plan),
        secrets_(secretsOf(plan)),
        services_{services.store, services.installer, services.lock,
                  services.logger.redacting(secrets_)},
        stop_(std::move(stop)),
        observer_(observer),
        source_(cat(plan.ns, "/", plan.name)) {}

  Outcome run() {
    run_failure_ = execute();
    if (run_failure_) {
      outcome_.failure = std::move(run_failure_);
      outcome_.failure->message = secrets_->apply(outcome_.failure->message);
    }
    return std::move(outcome_);
  }

 private:
  std::optional<Failure> execute();
  // Records the begun run as failed (nothing deleted) and returns the failure.
  std::optional<Failure> fail(store::Run& run, Failure f) {
    f.message = secrets_->apply(f.message);
    auto finished = run.finish(store::FinishRequest::failed(f.message));
    if (!finished.ok()) {
      services_.logger.warn("could not record the failed run",
                            {{"error", finished.status().message()}});
    }
    return f;
  }

  // Everything the run was handed from Secrets.
  static std::shared_ptr<const log::Redactor> secretsOf(const RunPlan& plan) {
    auto secrets = std::make_shared<log::Redactor>();
    if (plan.options_are_secret) {
      secrets->add(plan.options);
    }
    for (const auto& [name, value] : plan.secret_env) {
      secrets->add(value);
    }
    for (const RunFile& file : plan.files) {
      secrets->add(file.content);
    }
    return secrets;
  }

  const RunPlan& plan_;
  const std::shared_ptr<const log::Redactor> secrets_;
  Services services_;  // The caller's, with a logger that redacts secrets_.
  std::stop_token stop_;
  Observer& observer_;
  const std::string source_;
  Outcome outcome_;
  std::optional<Failure> run_failure_;
};

std::optional<Failure> Pipeline::execute() {
  // 1. The connector.
  observer_.onStage(Stage::Installing, cat("installing connector ", plan_.connector.name, " (",
                                           installer::sourceName(plan_.connector.source), " ",
                                           installer::redactUri(plan_.connector.uri), ")"));
  auto installed = plan_.update ? services_.installer.update(plan_.connector, stop_)
                                : services_.installer.install(plan_.connector, stop_);
  if (!installed.ok()) {
    if (stop_.stop_requested()) {
      return failure(FailureReason::Cancelled, true, "interrupted while installing the connector");
    }
    // A fetch that failed may work next time; a spec that cannot build will not, but only its
    // owner can tell: the installer's code says which.
    const bool retriable = absl::IsUnavailable(installed.status()) ||
                           absl::IsDeadlineExceeded(installed.status()) ||
                           absl::IsAborted(installed.status());
    return failure(
        FailureReason::InstallFailed, retriable,
        cat("cannot install connector ", plan_.connector.name, ": ", installed.status().message()));
  }
  outcome_.installation = *installed;

  // 2. The lock and the run (fenced: a newer run of the same source stops this one's writes).
  observer_.onStage(Stage::Locking, cat("locking ", source_));
  auto hwm = services_.store.fencingHighWaterMark(plan_.ns, plan_.name);
  if (!hwm.ok()) {
    return failure(FailureReason::StoreUnavailable, true,
                   cat("cannot read the fencing state of ", source_, ": ", hwm.status().message()));
  }
  locks::AcquireOptions acquire = plan_.lock_options;
  acquire.min_fencing_token = *hwm;
  acquire.stop = stop_;
  auto lease = services_.lock.acquire(source_, acquire);
  if (!lease.ok()) {
    if (stop_.stop_requested()) {
      return failure(FailureReason::Cancelled, true, cat("interrupted while locking ", source_));
    }
    return failure(
        absl::IsAborted(lease.status()) ? FailureReason::LockBusy : FailureReason::LockUnavailable,
        true, cat("cannot lock ", source_, ": ", lease.status().message()));
  }
  store::RunSpec run_spec;
  run_spec.ns = plan_.ns;
  run_spec.name = plan_.name;
  run_spec.connector = plan_.connector.name;
  run_spec.holder = plan_.holder;
  run_spec.attempt = plan_.attempt;
  run_spec.fencing_token = (*lease)->fencingToken();
  run_spec.lease_id = (*lease)->token();
  const locks::Lease* held = lease->get();
  run_spec.lease_check = [held] { return held->check(); };
  run_spec.deletion_policy = plan_.deletion_policy;
  run_spec.deletion_guard = plan_.deletion_guard;
  auto begun = services_.store.beginRun(run_spec);
  if (!begun.ok()) {
    if (absl::IsAborted(begun.status())) {
      return failure(FailureReason::LockBusy, true,
                     cat("another run of ", source_, " holds it (", begun.status().message(),
                         "); wait for it to finish"));
    }
    return failure(FailureReason::StoreUnavailable, !absl::IsInvalidArgument(begun.status()),
                   cat("cannot start a run of ", source_, ": ", begun.status().message()));
  }
  store::Run& run = **begun;
  outcome_.run_id = run.id();
  observer_.onLocked(run_spec.fencing_token, run.id());

  // 3. The connector process: its environment beyond the installed spec's. Credentials never
  // reach install commands or the install hash, and are never logged.
  ph::LaunchSpec launch = sync::launchSpec(*outcome_.installation);
  std::unique_ptr<RunDirectory> run_dir;
  const std::optional<sandbox::User> connector_user =
      plan_.sandbox ? plan_.sandbox->user : std::nullopt;
  if (connector_user) {
    // Said before the connector fails on it: what the user cannot reach, and where it is.
    if (absl::Status reachable =
            sandbox::checkReachable(outcome_.installation->root, *connector_user);
        !reachable.ok()) {
      return fail(run, failure(FailureReason::ConnectorFailed, false,
                               cat("cannot start connector ", plan_.connector.name,
                                   ": its installation is out of reach of the connector user: ",
                                   reachable.message(),
                                   "; put the cache where that user can read it (--cache-dir) "
                                   "or choose another --connector-user")));
    }
  }
  if (!plan_.files.empty()) {
    auto dir = RunDirectory::create(plan_.files, connector_user);
    if (!dir.ok()) {
      return fail(run, failure(FailureReason::ConnectorFailed, true,
                               cat("cannot start connector ", plan_.connector.name, ": ",
                                   dir.status().message())));
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
  if (plan_.sandbox) {
    launch.sandbox = *plan_.sandbox;
    launch.sandbox->read_only.push_back(outcome_.installation->root);
    if (run_dir) {
      launch.sandbox->read_only.push_back(run_dir->path());
    }
  }
  ph::Options host_options;
  host_options.handshake = plan_.handshake;
  host_options.logger = services_.logger.named("plugin-host");
  if (plan_.start_timeout) {
    host_options.start_timeout = *plan_.start_timeout;
  }
  observer_.onStage(Stage::Starting, cat("starting connector ", plan_.connector.name, " (version ",
                                         outcome_.installation->version, ")"));
  auto client = ph::PluginClient::start(launch, host_options);
  if (!client.ok()) {
    return fail(run, failure(FailureReason::ConnectorFailed, true,
                             cat("cannot start connector ", plan_.connector.name, ": ",
                                 client.status().message())));
  }

  // 4. Sync: every page one committed transaction, acknowledged after commit.
  StoreSink sink(run, observer_);
  observer_.onStage(Stage::Syncing, cat("syncing ", source_));
  const auto started = Clock::now();
  auto result = (*client)->sync(plan_.options, sink, plan_.sync_timeout, stop_);
  outcome_.sync_seconds = std::chrono::duration<double>(Clock::now() - started).count();
  (*client)->kill();
  if (!result.ok()) {
    if (stop_.stop_requested()) {
      return fail(run, failure(FailureReason::Cancelled, true,
                               cat("interrupted after ", sink.pages(), " pages")));
    }
    std::string message = cat("sync of ", source_, " failed: ", result.status().message());
    if (launch.sandbox && refusedBySandbox(result.status())) {
      message += cat("; the connector runs in the connector sandbox",
                     connector_user ? cat(" as ", connector_user->describe()) : std::string(),
                     ", which refuses files outside the system's paths, its installation and its "
                     "run's files: give what it must read with --sandbox-read-only, or raise "
                     "spec.limits");
    }
    const absl::Status store_error = sink.storeError();
    return fail(run, store_error.ok()
                         ? failure(FailureReason::ConnectorFailed, true, std::move(message))
                         : storeFailure(store_error, std::move(message)));
  }
  outcome_.sync = *result;
  // EndSync metadata lands in the run's record and status: a connector may echo its options.
  if (std::string redacted = secrets_->apply(result->metadata); redacted != result->metadata) {
    auto metadata = nlohmann::json::parse(result->metadata, nullptr, false);
    if (!metadata.is_discarded()) {  // Keep it JSON: redact its strings.
      secrets_->apply(metadata);
      redacted = metadata.dump();
    }
    outcome_.sync->metadata = std::move(redacted);
  }

  // 5. Success: the deletion policy (and guard), the run's record.
  observer_.onStage(Stage::Finishing, cat("finishing the run of ", source_));
  auto summary = run.finish(store::FinishRequest::succeeded(outcome_.sync->metadata));
  if (!summary.ok()) {
    return storeFailure(summary.status(),
                        cat("the sync of ", source_,
                            " finished but could not be recorded: ", summary.status().message()));
  }
  outcome_.summary = *summary;
  static_cast<void>((*lease)->release());
  return std::nullopt;
}

}  // namespace

absl::StatusOr<SandboxSettings> SandboxSettings::fromEnvironment() {
  SandboxSettings settings;
  for (const auto& [flag, variable] : {std::pair{"--sandbox", "TRIBUTARY_SANDBOX"},
                                       {"--connector-user", "TRIBUTARY_CONNECTOR_USER"},
                                       {"--sandbox-read-only", "TRIBUTARY_SANDBOX_READ_ONLY"}}) {
    const char* value = std::getenv(variable);  // NOLINT(concurrency-mt-unsafe): read only
    if (value != nullptr && *value != '\0') {
      if (absl::Status s = settings.set(flag, value); !s.ok()) {
        return absl::InvalidArgumentError(cat(variable, ": ", s.message()));
      }
    }
  }
  return settings;
}

absl::Status SandboxSettings::set(std::string_view flag, const std::string& value) {
  if (flag == "--sandbox") {
    if (value != "on" && value != "off") {
      return absl::InvalidArgumentError(cat("--sandbox must be on or off, got `", value, "`"));
    }
    enabled = value == "on";
  } else if (flag == "--connector-user") {
    keep_root = value == "root" || value == "0";
    if (keep_root) {
      user.reset();
      return absl::OkStatus();
    }
    auto parsed = sandbox::User::parse(value);
    if (!parsed.ok()) {
      return parsed.status();
    }
    user = *parsed;
  } else if (flag == "--sandbox-read-only") {
    for (std::string_view part : strings::split(value, ':')) {
      if (part.empty()) {
        continue;
      }
      if (part.front() != '/') {
        return absl::InvalidArgumentError(
            cat("--sandbox-read-only takes absolute paths, got `", part, "`"));
      }
      read_only.emplace_back(part);
    }
  } else {
    return absl::InvalidArgumentError(cat("not a sandbox flag: ", flag));
  }
  return absl::OkStatus();
}

std::optional<sandbox::User> SandboxSettings::connectorUser() const {
  if (!enabled || user || keep_root || ::geteuid() != 0) {
    return enabled ? user : std::nullopt;
  }
  return kDefaultConnectorUser;
}

std::optional<sandbox::Policy> SandboxSettings::policy(const sandbox::Limits& limits) const {
  if (!enabled) {
    return std::nullopt;
  }
  sandbox::Policy policy = sandbox::Policy::forConnector();
  policy.read_only.insert(policy.read_only.end(), read_only.begin(), read_only.end());
  policy.limits = limits;
  policy.user = connectorUser();
  return policy;
}

std::vector<std::string> SandboxSettings::warnings() const {
  std::vector<std::string> out;
  if (!enabled) {
    out.emplace_back(
        "the connector sandbox is off (--sandbox=off): connectors can read this "
        "process's credentials files and signal it");
    return out;
  }
  if (::geteuid() == 0 && keep_root) {
    out.emplace_back(
        "connectors run as root (--connector-user root): no process limit applies "
        "to them and they may read this process's environment; prefer an "
        "unprivileged --connector-user");
  }
  return out;
}

plugin_host::LaunchSpec launchSpec(const installer::Installation& installation) {
  plugin_host::LaunchSpec spec;
  spec.command = installation.command;
  spec.working_dir = installation.root;
  spec.env = installation.env;
  return spec;
}

plugin_host::HandshakeConfig hostHandshake(const api::Handshake& handshake) {
  plugin_host::HandshakeConfig config;
  config.cookie_key = handshake.cookie_key;
  config.cookie_value = handshake.cookie_value;
  config.protocol_versions = handshake.protocol_versions;
  return config;
}

std::string_view stageName(Stage stage) {
  switch (stage) {
    case Stage::Installing:
      return "Installing";
    case Stage::Locking:
      return "Locking";
    case Stage::Starting:
      return "Starting";
    case Stage::Syncing:
      return "Syncing";
    case Stage::Finishing:
      return "Finishing";
  }
  return "Unknown";
}

std::string_view failureReasonName(FailureReason reason) {
  switch (reason) {
    case FailureReason::InstallFailed:
      return "InstallFailed";
    case FailureReason::LockBusy:
      return "LockBusy";
    case FailureReason::LockUnavailable:
      return "LockUnavailable";
    case FailureReason::Fenced:
      return "Fenced";
    case FailureReason::StoreUnavailable:
      return "StoreUnavailable";
    case FailureReason::InvalidData:
      return "InvalidData";
    case FailureReason::ConnectorFailed:
      return "ConnectorFailed";
    case FailureReason::Cancelled:
      return "Cancelled";
  }
  return "Unknown";
}

Outcome runSync(const RunPlan& plan, Services& services, std::stop_token stop, Observer& observer) {
  return Pipeline(plan, services, std::move(stop), observer).run();
}

}  // namespace tributary::sync
