#pragma once

// Connector and SyncJob manifests (the YAML a user would `kubectl apply`), read and validated
// for local runs, and the c1 connector JSON → Connector manifest conversion.

#include "tributary/api/resources.h"
#include "tributary/installer/spec.h"
#include "tributary/plugin_host/handshake.h"
#include "tributary/store/store.h"

#include "absl/status/statusor.h"

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::cli {

/// A Connector manifest, parsed and checked by lib/api; `origin` names the file and document
/// ("file.yaml: document 2 (Connector default/files)").
using ConnectorManifest = api::Connector;
/// A SyncJob manifest (lib/api's view; a local run uses its options, policies and deadline).
using SyncJobManifest = api::SyncJob;

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

/// Every non-empty document of a YAML stream as JSON, plain scalars typed by the YAML 1.2 core
/// schema (what `kubectl` does), quoted ones strings. Errors name `source`, line and column.
absl::StatusOr<std::vector<nlohmann::json>> yamlDocumentsToJson(const std::string& text,
                                                                const std::string& source);

/// The Connector manifest (YAML) equivalent to a c1 connector spec.
std::string connectorManifestYaml(const installer::ConnectorSpec& spec, const std::string& ns);

/// A Kubernetes object name from a c1 name: lower case, invalid characters replaced by '-'.
std::string kubeName(std::string_view name);

}  // namespace tributary::cli
