#pragma once

// One sync of one source, the same for the CLI and the agent:
//
//   install the connector → lock the source (fencing token) → begin a store run → start the
//   connector (go-plugin) → Sync, every page one committed transaction → finish (deletion policy
//   and guard on success; failed and nothing deleted otherwise) → release the lock.
//
// The caller resolves the run (connector spec, options, credentials, policies) and owns the
// store, the installer and the lock; this library decides nothing about where they come from.
//
//   sync::Services services{*store, *installer, *lock, logger};
//   sync::Outcome outcome = sync::runSync(plan, services, stop_token, observer);
//   if (!outcome.succeeded()) report(outcome.failure->reason, outcome.failure->retriable, ...);

#include "tributary/api/resources.h"
#include "tributary/common/log.h"
#include "tributary/installer/installer.h"
#include "tributary/installer/spec.h"
#include "tributary/locks/lock.h"
#include "tributary/plugin_host/handshake.h"
#include "tributary/plugin_host/plugin_host.h"
#include "tributary/sandbox/sandbox.h"
#include "tributary/store/store.h"
#include "tributary/sync/run_files.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::sync {

/// A resolved run: everything the pipeline needs to know, nothing it must look up.
struct RunPlan {
  std::string ns;    ///< SyncJob namespace: with name, the source's identity (lock and store).
  std::string name;  ///< SyncJob name.
  installer::ConnectorSpec connector;
  plugin_host::HandshakeConfig handshake;
  std::string options;  ///< May hold credentials: never printed or logged.
  /// The options came from a Secret: like secret_env and files, they are redacted from every
  /// log record and message of the run (a connector that prints them, its crash dump).
  bool options_are_secret = false;
  /// The connector process's environment beyond connector.env (which install commands see and
  /// the install hash covers), lowest precedence first, applied in this order: credentials
  /// (secret_env), the files' variables, then overrides. Never logged, never part of the install.
  std::map<std::string, std::string> secret_env;
  /// Written 0600 into a private directory for the run, removed after it.
  std::vector<RunFile> files;
  std::map<std::string, std::string> env_overrides;
  store::DeletionPolicy deletion_policy = store::DeletionPolicy::Mark;
  store::DeletionGuard deletion_guard;
  int attempt = 1;
  std::string holder;   ///< Who runs it, for the run's record ("agent-node-1").
  bool update = false;  ///< Fetch the newest version of the connector first.
  std::chrono::milliseconds sync_timeout{std::chrono::hours(24)};
  std::optional<std::chrono::milliseconds> start_timeout;  ///< Default: the host's.
  /// Lock lease options (TTL, wait); min_fencing_token is set from the store's high-water mark.
  locks::AcquireOptions lock_options;
  /// The connector process's sandbox (lib/sandbox): system paths, limits, user. The pipeline
  /// adds the installed version (read-only) and the run's files (read-only, handed to the
  /// policy's user); the host adds its private directory. Unset: the connector is unconfined.
  std::optional<sandbox::Policy> sandbox;
};

/// What the pipeline works with; owned by the caller, thread-safe (several runs may share them).
struct Services {
  store::Store& store;
  installer::Installer& installer;
  locks::SourceLock& lock;
  log::Logger logger{"sync"};
};

enum class Stage { Installing, Locking, Starting, Syncing, Finishing };
std::string_view stageName(Stage stage);

/// Progress of one run. The default implementation ignores everything.
class Observer {
 public:
  virtual ~Observer() = default;
  /// A stage begins; `detail` is a line a user can read ("installing connector s3 (VCS …)").
  virtual void onStage(Stage /*stage*/, const std::string& /*detail*/) {}
  /// A page was committed (on the host's page thread, one call at a time): running totals.
  virtual void onPage(std::uint64_t /*pages*/, std::uint64_t /*objects*/) {}
  /// The store run's counters after the same page (upserted, unchanged, … so far) and how long
  /// the page's transaction took.
  virtual void onCounters(const store::RunCounters& /*counters*/, double /*write_seconds*/) {}
  /// The source is locked and the store run begun: the run's fencing token and store id.
  virtual void onLocked(std::int64_t /*fencing_token*/, std::int64_t /*run_id*/) {}
};

/// Why a run failed, for the caller's exit codes, SyncRun reasons and metrics.
enum class FailureReason {
  InstallFailed,     ///< The connector could not be fetched, built or unpacked.
  LockBusy,          ///< Another run holds the source.
  LockUnavailable,   ///< The lock service could not be reached.
  Fenced,            ///< A newer run of the source took over while this one ran.
  StoreUnavailable,  ///< PostgreSQL unreachable or a store operation failed.
  InvalidData,       ///< The connector sent something PostgreSQL cannot hold (or too large).
  ConnectorFailed,   ///< Start, handshake, Sync error, crash, timeout, refused callback calls.
  Cancelled,         ///< The stop token was triggered.
};
std::string_view failureReasonName(FailureReason reason);  ///< "InstallFailed", …

struct Failure {
  FailureReason reason = FailureReason::ConnectorFailed;
  /// Could the same run succeed if tried again (a database or lock that comes back, a crash)?
  /// False where the input itself is wrong (data PostgreSQL cannot hold, a spec that cannot
  /// install).
  bool retriable = true;
  /// What happened, which object, what to do; the run's secrets are redacted from it.
  std::string message;
};

struct Outcome {
  std::optional<Failure> failure;  ///< Unset: the run succeeded.
  std::int64_t run_id = 0;         ///< The store's run, once begun (0 before).
  std::optional<installer::Installation> installation;
  std::optional<plugin_host::SyncResult> sync;  ///< Set on success.
  std::optional<store::RunSummary> summary;     ///< Set on success.
  double sync_seconds = 0;                      ///< From Sync's start to its end.
  [[nodiscard]] bool succeeded() const { return !failure.has_value(); }
};

/// How to start an installed version: `/bin/sh -c <command>` in its root with its env (c1's rule).
plugin_host::LaunchSpec launchSpec(const installer::Installation& installation);

/// The host's handshake settings for a Connector's spec.handshake.
plugin_host::HandshakeConfig hostHandshake(const api::Handshake& handshake);

/// Who connectors run as when this process is root and nothing else is said: nobody.
inline constexpr sandbox::User kDefaultConnectorUser{.uid = 65534, .gid = 65534};

/// How the CLI and the agent confine connectors: their --sandbox, --connector-user and
/// --sandbox-read-only flags (and TRIBUTARY_* variables).
struct SandboxSettings {
  bool enabled = true;
  /// Who connectors run as. Unset: this process's user, except that root runs them as
  /// kDefaultConnectorUser unless keep_root (`--connector-user root`) says otherwise.
  std::optional<sandbox::User> user;
  bool keep_root = false;
  /// Read-only paths beyond the system's (an interpreter under /opt or a home directory).
  std::vector<std::filesystem::path> read_only;

  /// The settings TRIBUTARY_SANDBOX (on|off), TRIBUTARY_CONNECTOR_USER and
  /// TRIBUTARY_SANDBOX_READ_ONLY give; flags read later (set) override them.
  static absl::StatusOr<SandboxSettings> fromEnvironment();
  /// Reads one flag or variable value: "--sandbox" on|off, "--connector-user" root or a user for
  /// sandbox::User::parse, "--sandbox-read-only" a path list separated by ':'. InvalidArgument
  /// for anything else.
  absl::Status set(std::string_view flag, const std::string& value);
  /// Who connectors run as under these settings; unset: this process's user (or no sandbox).
  [[nodiscard]] std::optional<sandbox::User> connectorUser() const;
  /// The policy of one run: the system paths, these settings and the Connector's limits; unset
  /// when the sandbox is off.
  [[nodiscard]] std::optional<sandbox::Policy> policy(const sandbox::Limits& limits) const;
  /// Warnings for the start-up log: sandbox off, connectors kept as root. (What the kernel
  /// cannot enforce, the plugin host logs once, from the ruleset it built.)
  [[nodiscard]] std::vector<std::string> warnings() const;
};

/// Runs the plan to its end. Never throws; every failure is an Outcome with its reason. On any
/// failure after the store run began, the run is recorded failed and nothing is deleted.
Outcome runSync(const RunPlan& plan, Services& services, std::stop_token stop, Observer& observer);

}  // namespace tributary::sync
