#pragma once

// Connector and SyncJob manifests (the YAML a user would `kubectl apply`), read and validated
// for local runs, and the c1 connector JSON → Connector manifest conversion.

#include "tributary/installer/spec.h"
#include "tributary/plugin_host/handshake.h"
#include "tributary/store/store.h"

#include "absl/status/statusor.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tributary::cli {

/// A key of a Secret in the object's namespace (optionsFrom and spec.env[].valueFrom).
struct SecretKeyRef {
  std::string name;
  std::string key;
  bool optional = false;  ///< spec.env only: a missing Secret or key leaves the variable unset.
};

/// `spec.env[]` with `valueFrom.secretKeyRef`: the variable's value is a key of a Secret. Plain
/// `value` entries (and the older map form) are in ConnectorSpec::env instead.
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

/// `spec.files[].items[]`: one key of the Secret, written to `path` (relative to the run's
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

struct ConnectorManifest {
  std::string origin;  ///< "file.yaml: document 2 (Connector default/files)"
  std::string ns;
  std::string name;
  installer::ConnectorSpec spec;  ///< spec.name = metadata.name; spec.env = plain values only.
  plugin_host::HandshakeConfig handshake;
  /// Credentials from Secrets, for the connector process only: never part of the install (not
  /// in spec, specHash or install commands), never logged.
  std::vector<SecretEnvVar> secret_env;
  std::vector<EnvFromSecret> env_from;
  std::vector<SecretFiles> files;
};

struct SyncJobManifest {
  std::string origin;
  std::string ns;
  std::string name;
  std::string connector_ref;
  std::optional<std::string> options_json;  ///< spec.options as compact JSON.
  std::optional<SecretKeyRef> options_from;
  store::DeletionPolicy deletion_policy = store::DeletionPolicy::Mark;
  store::DeletionGuard deletion_guard;  ///< spec.deletionGuard (never confirmed by a manifest).
  std::optional<std::int64_t> active_deadline_seconds;
  std::optional<std::string> schedule;  ///< Informational: a local run runs once.
  bool suspend = false;
};

/// A `v1` Secret in the same files (stringData / data), usable by optionsFrom.
struct SecretManifest {
  std::string ns;
  std::string name;
  std::map<std::string, std::string> data;
};

struct Manifests {
  std::vector<ConnectorManifest> connectors;
  std::vector<SyncJobManifest> syncjobs;
  std::vector<SecretManifest> secrets;

  [[nodiscard]] const ConnectorManifest* connector(const std::string& ns,
                                                   const std::string& name) const;
};

/// Reads every document of every file. `default_namespace` applies to objects without
/// metadata.namespace. All problems are reported at once, one per line, each as
/// `<file>: document <n> (<kind> <ns>/<name>): <field path>: <what is wrong>`.
absl::StatusOr<Manifests> loadManifests(const std::vector<std::string>& files,
                                        const std::string& default_namespace);

/// Parses manifests from text (`source` names it in errors).
absl::StatusOr<Manifests> parseManifests(const std::string& text, const std::string& source,
                                         const std::string& default_namespace);

/// The Connector manifest (YAML) equivalent to a c1 connector spec.
std::string connectorManifestYaml(const installer::ConnectorSpec& spec, const std::string& ns);

/// A Kubernetes object name from a c1 name: lower case, invalid characters replaced by '-'.
std::string kubeName(std::string_view name);

}  // namespace tributary::cli
