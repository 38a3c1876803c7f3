#pragma once

// Typed views of the tributary.dev/v1alpha1 resources (Connector, SyncJob, SyncRun) and the
// conventions controller, agents and users share (labels, annotations, the agent Lease). One
// parser for everything that reads them: the CLI (manifests, converted from YAML), the
// controller and the agent (objects from the API server). The CRDs in crds/ are the source of
// truth for defaults; tests/crd_defaults_test.cc checks that the ones below equal them.

#include "tributary/installer/spec.h"
#include "tributary/sandbox/sandbox.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::api {

using Json = nlohmann::json;

// --- conventions -------------------------------------------------------------------------------

inline constexpr std::string_view kRunNowAnnotation = "tributary.dev/run-now";
inline constexpr std::string_view kConfirmDeletionAnnotation = "tributary.dev/confirm-deletion";
inline constexpr std::string_view kNotBeforeAnnotation = "tributary.dev/not-before";
inline constexpr std::string_view kScheduledAnnotation = "tributary.dev/scheduled-timestamp";
inline constexpr std::string_view kSyncJobLabel = "tributary.dev/syncjob";

/// The agent Lease: one coordination.k8s.io/v1 Lease per agent in the agent namespace, named
/// after the agent (what SyncRun.status.agent holds), labelled kAgentLabel=true plus the agent's
/// own labels (what SyncJob.spec.agentSelector matches), annotation kCapacityAnnotation = the
/// number of Bound/Running runs it takes at once (0 while draining). Live while holderIdentity
/// is set and renewTime + leaseDurationSeconds is in the future.
inline constexpr std::string_view kAgentLabel = "tributary.dev/agent";
inline constexpr std::string_view kCapacityAnnotation = "tributary.dev/capacity";
inline constexpr int kDefaultAgentCapacity = 4;

/// An agent Lease as the controller (binding) and `tributary status` read it.
struct AgentLease {
  std::string name;
  bool live = false;
  bool released = false;             ///< holderIdentity cleared: the agent stopped on purpose
  std::string renew_time;            ///< spec.renewTime as written (changes with every renewal)
  std::chrono::seconds duration{0};  ///< spec.leaseDurationSeconds
  std::chrono::system_clock::time_point expires;  ///< renewTime + leaseDurationSeconds
  int capacity = kDefaultAgentCapacity;           ///< kCapacityAnnotation; 0 while draining
};
AgentLease parseAgentLease(const Json& lease, std::chrono::system_clock::time_point now);

/// Defaults the CRDs declare (checked against crds/*.yaml by a test).
namespace defaults {
inline constexpr std::string_view kCookieKey = "BASIC_PLUGIN";
inline constexpr std::string_view kCookieValue = "hello";
inline constexpr int kProtocolVersion = 1;
inline constexpr std::string_view kPluginName = "connector";
inline constexpr bool kSuspend = false;
inline constexpr std::string_view kConcurrencyPolicy = "Forbid";
inline constexpr int kBackoffLimit = 6;
inline constexpr std::string_view kDeletionPolicy = "Mark";
inline constexpr int kMaxDeletePercent = 50;
inline constexpr int kSuccessfulRunsHistoryLimit = 3;
inline constexpr int kFailedRunsHistoryLimit = 1;
inline constexpr std::string_view kTrigger = "Schedule";
// Connector spec.limits.
inline constexpr std::int64_t kOpenFiles = 4096;
inline constexpr std::int64_t kProcesses = 1024;
inline constexpr std::string_view kAddressSpace = "16Gi";
inline constexpr std::string_view kFileSize = "8Gi";
}  // namespace defaults

/// A byte count as the CRDs write it: digits, optionally Ki, Mi, Gi or Ti. Nullopt when it is
/// not one (or overflows).
std::optional<std::uint64_t> parseByteQuantity(std::string_view text);

/// spec.limits with the CRD's defaults.
sandbox::Limits defaultConnectorLimits();

/// An environment variable name: [A-Za-z_][A-Za-z0-9_]*, at most 128 characters.
bool isEnvName(std::string_view name);

// --- problems ----------------------------------------------------------------------------------

/// One thing wrong with an object: the field path ("spec.env[2].valueFrom.secretKeyRef.key")
/// and what is wrong with it ("required field is missing").
struct Problem {
  std::string path;
  std::string message;
};
/// "path: message; path: message".
std::string describe(const std::vector<Problem>& problems);

// --- Connector ---------------------------------------------------------------------------------

/// A key of a Secret in the object's namespace (optionsFrom and spec.env[].valueFrom).
struct SecretKeyRef {
  std::string name;
  std::string key;
  bool optional = false;  ///< spec.env only: a missing Secret or key leaves the variable unset.
};

/// `spec.env[]` with `valueFrom.secretKeyRef`. Plain `value` entries (and the older mapping
/// form) are in ConnectorSpec::env instead.
struct SecretEnvVar {
  std::string name;
  SecretKeyRef ref;
  std::string path;  ///< "spec.env[2].valueFrom.secretKeyRef", for error messages.
};

/// `spec.envFrom[]`: every key of a Secret as a variable, named `<prefix><key>`.
struct EnvFromSecret {
  std::string secret;
  bool optional = false;
  std::string prefix;
  std::string path;  ///< "spec.envFrom[0].secretRef"
};

/// `spec.files[].items[]`: one key of the Secret written to `path` (relative to the run's
/// private directory); `env`, when set, is the variable that gets the file's absolute path.
struct SecretFileItem {
  std::string key;
  std::string path;
  std::string env;
};

/// `spec.files[]`: keys of a Secret as files (mode 0600) for the duration of a run.
struct SecretFiles {
  std::string secret;
  bool optional = false;
  std::vector<SecretFileItem> items;
  std::string path;  ///< "spec.files[0]"
};

/// spec.handshake, with the CRD's defaults (c1's handshake).
struct Handshake {
  std::string cookie_key{defaults::kCookieKey};
  std::string cookie_value{defaults::kCookieValue};
  std::vector<int> protocol_versions{defaults::kProtocolVersion};
  std::string plugin_name{defaults::kPluginName};
};

struct Connector {
  /// Names the object in messages: "Connector ns/name" (parse sets it); the CLI puts the file and
  /// document there instead.
  std::string origin;
  std::string ns;
  std::string name;
  std::int64_t generation = 0;
  installer::ConnectorSpec spec;  ///< spec.name = metadata.name; spec.env = plain values only.
  Handshake handshake;
  /// Credentials from Secrets, for the connector process only: never part of the install (not
  /// in spec, specHash or install commands), never logged.
  std::vector<SecretEnvVar> secret_env;
  std::vector<EnvFromSecret> env_from;
  std::vector<SecretFiles> files;
  /// spec.limits, defaults filled in. Not part of the install or its hash.
  sandbox::Limits limits = defaultConnectorLimits();

  /// The one spec hash (installer::specHash): what an agent installs; Connector.status.specHash.
  [[nodiscard]] std::string specHash() const;
};

/// Reads a Connector object (metadata + spec; status ignored). Every problem is appended to
/// `problems` (all of them, not just the first); the result is usable only when none was added.
Connector parseConnector(const Json& object, std::vector<Problem>& problems);

// --- SyncJob -----------------------------------------------------------------------------------

struct SyncJob {
  std::string origin;  ///< "SyncJob ns/name", as Connector::origin.
  std::string ns;
  std::string name;
  std::string uid;
  std::int64_t generation = 0;
  std::string connector_ref;
  std::optional<std::string> options_json;  ///< spec.options as compact JSON.
  std::optional<SecretKeyRef> options_from;
  std::optional<std::string> schedule;
  std::optional<std::string> time_zone;
  bool suspend = defaults::kSuspend;
  std::string concurrency_policy{defaults::kConcurrencyPolicy};
  std::optional<std::int64_t> starting_deadline_seconds;
  int backoff_limit = defaults::kBackoffLimit;
  std::optional<std::int64_t> active_deadline_seconds;
  std::string deletion_policy{defaults::kDeletionPolicy};  ///< Keep, Mark or Delete.
  int max_delete_percent = defaults::kMaxDeletePercent;
  std::optional<Json> agent_selector;
  int successful_runs_history_limit = defaults::kSuccessfulRunsHistoryLimit;
  int failed_runs_history_limit = defaults::kFailedRunsHistoryLimit;
};

SyncJob parseSyncJob(const Json& object, std::vector<Problem>& problems);

// --- SyncRun -----------------------------------------------------------------------------------

/// What an agent needs from a SyncRun (spec and the status fields of the agent protocol).
struct SyncRun {
  std::string ns;
  std::string name;
  std::string uid;
  std::string job;                          ///< spec.syncJobRef.name
  std::string connector;                    ///< spec.connectorRef.name
  std::int64_t connector_generation = 0;    ///< spec.connectorRef.generation; 0 = not recorded.
  std::string trigger{defaults::kTrigger};  ///< Schedule, Once or Manual.
  std::optional<std::int64_t> active_deadline_seconds;
  std::string deletion_policy{defaults::kDeletionPolicy};
  int max_delete_percent = defaults::kMaxDeletePercent;
  bool deletion_confirmed = false;
  std::string phase = "Pending";  ///< status.phase (absent = Pending)
  std::string agent;              ///< status.agent
  int attempt = 1;                ///< status.attempt (at least 1)
  /// Condition Failed=True on a Bound/Running run: the attempt's failure was reported and the
  /// controller has not yet retried it.
  bool attempt_failed = false;

  [[nodiscard]] bool finished() const { return phase == "Succeeded" || phase == "Failed"; }
};

SyncRun parseSyncRun(const Json& object);

}  // namespace tributary::api
