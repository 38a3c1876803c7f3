#pragma once

// Files a connector gets for one run (a Connector's spec.files: credential files from Secrets),
// in a private directory that lives as long as the run.

#include "tributary/api/credentials.h"
#include "tributary/sandbox/sandbox.h"

#include "absl/status/statusor.h"

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tributary::sync {

/// A file the connector gets for one run (spec.files), as lib/api resolves it.
using RunFile = api::CredentialFile;

/// The run's private directory: 0700, under `$XDG_RUNTIME_DIR` (else `$TMPDIR`, else /tmp), with
/// each file written 0600 (subdirectories 0700). The destructor removes it all.
class RunDirectory {
 public:
  /// With an `owner` (the connector's sandbox user), the directory and its files are that
  /// user's and live under `$TMPDIR` (else /tmp), which another user can reach.
  static absl::StatusOr<std::unique_ptr<RunDirectory>> create(
      const std::vector<RunFile>& files, const std::optional<sandbox::User>& owner = std::nullopt);
  ~RunDirectory();
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  /// `env` → absolute path of its file, for every file with an `env`.
  [[nodiscard]] const std::map<std::string, std::string>& env() const { return env_; }

 private:
  explicit RunDirectory(std::filesystem::path path) : path_(std::move(path)) {}

  std::filesystem::path path_;
  std::map<std::string, std::string> env_;
};

}  // namespace tributary::sync
