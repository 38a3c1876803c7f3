#pragma once

// How a local run gives a connector its credentials: the Connector's spec.env valueFrom,
// spec.envFrom and spec.files resolved from local Secrets, `--env` / `--env-file`, and the run's
// private directory for files. Values resolved here are never printed or logged.

#include "tributary/api/credentials.h"
#include "tributary/sync/run_files.h"

#include "absl/status/statusor.h"
#include "manifest.h"

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tributary::cli {

using sync::RunFile;

/// `TRIBUTARY_SECRET_<SECRET>_<KEY>`: upper case, every other character → `_`.
std::string secretVariable(const std::string& secret, const std::string& key);

/// Where a local run finds Secrets, in order: a v1 Secret of the given manifest files
/// (`stringData`/`data`), the file `<dir>/<name>/<key>` (a mounted Secret's layout), the variable
/// `TRIBUTARY_SECRET_<NAME>_<KEY>`.
class LocalSecrets : public api::SecretSource {
 public:
  LocalSecrets(const Manifests& manifests, std::filesystem::path dir)
      : manifests_(manifests), dir_(std::move(dir)) {}

  /// One key; nullopt when none of the three places has it. Errors: an unreadable file.
  [[nodiscard]] absl::StatusOr<std::optional<std::string>> key(
      const std::string& ns, const std::string& name, const std::string& key) const override;

  /// Every key of a Secret, from the first place that has the Secret: the manifest, the
  /// directory `<dir>/<name>` (regular files; names starting with `.` skipped, as a mounted
  /// Secret's `..data`), or the variables `TRIBUTARY_SECRET_<NAME>_<KEY>` (the key is the rest of
  /// the variable's name). nullopt when none has it.
  [[nodiscard]] absl::StatusOr<std::optional<std::map<std::string, std::string>>> all(
      const std::string& ns, const std::string& name) const override;

  /// "(looked in: …)" for a missing key, naming the three places.
  [[nodiscard]] std::string placesForKey(const std::string& ns, const std::string& name,
                                         const std::string& key) const override;
  /// The same for a whole Secret.
  [[nodiscard]] std::string placesForSecret(const std::string& ns,
                                            const std::string& name) const override;

 private:
  const SecretManifest* manifest(const std::string& ns, const std::string& name) const;

  const Manifests& manifests_;
  std::filesystem::path dir_;
};

/// docker's env-file format: one `NAME=VALUE` per line (the value verbatim up to the end of the
/// line: no quotes or escapes are processed), `NAME` alone takes the variable from this
/// process's environment (skipped when unset), blank lines and lines starting with `#` are
/// ignored, leading whitespace is ignored. Errors name `source:line`.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> parseEnvFile(
    std::string_view text, const std::string& source);

/// One `--env` value: `NAME=VALUE`, or `NAME` (its value in this process's environment; an error
/// when unset, so a typo does not pass silently).
absl::StatusOr<std::pair<std::string, std::string>> parseEnvFlag(std::string_view text);

}  // namespace tributary::cli
