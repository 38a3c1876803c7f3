#pragma once

// A Connector's credentials for one run: spec.env valueFrom, spec.envFrom and spec.files
// resolved from Secrets. Where Secrets come from is the caller's (SecretSource): the API server
// for the agent, local manifests, directories and variables for the CLI. Values resolved here
// are never printed or logged.

#include "tributary/api/resources.h"

#include "absl/status/statusor.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tributary::api {

/// Where Secrets are read from. Implementations are thread-safe.
class SecretSource {
 public:
  virtual ~SecretSource() = default;
  /// One key; nullopt when the Secret or the key does not exist. Errors: the source failed.
  [[nodiscard]] virtual absl::StatusOr<std::optional<std::string>> key(
      const std::string& ns, const std::string& name, const std::string& key) const = 0;
  /// Every key of a Secret; nullopt when it does not exist.
  [[nodiscard]] virtual absl::StatusOr<std::optional<std::map<std::string, std::string>>> all(
      const std::string& ns, const std::string& name) const = 0;
  /// Where a missing key was looked for, appended to the error ("(looked in: …)"), or "".
  [[nodiscard]] virtual std::string placesForKey(const std::string& /*ns*/,
                                                 const std::string& /*name*/,
                                                 const std::string& /*key*/) const {
    return {};
  }
  /// The same for a whole Secret.
  [[nodiscard]] virtual std::string placesForSecret(const std::string& /*ns*/,
                                                    const std::string& /*name*/) const {
    return {};
  }
};

/// A file the connector gets for one run (spec.files): `path` is relative to the run's private
/// directory; `env` (optional) gets its absolute path.
struct CredentialFile {
  std::string path;
  std::string content;  ///< Secret: never printed or logged.
  std::string env;
};

struct Credentials {
  /// spec.envFrom (in order; later entries win), then spec.env valueFrom (which wins over
  /// envFrom, as in a Pod). Variables spec.env sets with a plain value are left out of envFrom.
  std::map<std::string, std::string> env;
  std::vector<CredentialFile> files;
  std::vector<std::string> notes;  ///< Warnings (names only), e.g. keys skipped by envFrom.
};

/// Resolves the connector's Secret references. A missing Secret or key that is not `optional`
/// is an InvalidArgument naming the Connector, the field path and placesFor…().
absl::StatusOr<Credentials> resolveCredentials(const Connector& connector,
                                               const SecretSource& secrets);

/// spec.optionsFrom of a SyncJob: the options text from its Secret key. A missing Secret or key
/// is an InvalidArgument naming the SyncJob and the reference.
absl::StatusOr<std::string> resolveOptions(const SyncJob& job, const SecretSource& secrets);

}  // namespace tributary::api
