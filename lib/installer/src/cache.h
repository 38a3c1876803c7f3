#pragma once

// The on-disk cache of installed versions (see README.md "Cache layout"):
//
//   <cache>/locks/<name>.lock                 flock: one install/update/GC of <name> at a time
//   <cache>/staging/<name>/<random>/          work in progress, same shape as a version
//   <cache>/connectors/<name>/<hash>-<rev>/   immutable once renamed into place:
//       root/            the connector (working directory of its command)
//       manifest.json    what was installed, written before the rename
//       selected         last time install/update chose this version (ns), rewritten atomically
//       in-use.lock      shared flock per lease; GC needs an exclusive one to delete
//   <cache>/trash/<random>/                   being deleted (rename first, then remove)

#include "tributary/installer/installer.h"

#include "absl/status/statusor.h"
#include "util.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tributary::installer {

class VersionLease {
 public:
  VersionLease(internal::FileLock lock, std::filesystem::path dir)
      : lock_(std::move(lock)), dir_(std::move(dir)) {}
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }

 private:
  internal::FileLock lock_;
  std::filesystem::path dir_;
};

namespace internal {

struct VersionRecord {  // NOLINT(bugprone-exception-escape): plain data
  VersionInfo info;
  nlohmann::json manifest;
};

class Cache {
 public:
  /// `root` must be absolute and canonical.
  explicit Cache(std::filesystem::path root) : root_(std::move(root)) {}

  absl::Status init() const;

  [[nodiscard]] const std::filesystem::path& root() const { return root_; }
  [[nodiscard]] std::filesystem::path connectorDir(const std::string& name) const {
    return root_ / "connectors" / name;
  }
  [[nodiscard]] std::filesystem::path versionDir(const std::string& name,
                                                 const std::string& version) const {
    return connectorDir(name) / version;
  }
  [[nodiscard]] std::filesystem::path trashDir() const { return root_ / "trash"; }

  /// The per-name lock.
  absl::StatusOr<FileLock> lockName(const std::string& name, Deadline deadline,
                                    const std::stop_token& stop) const;
  absl::StatusOr<std::optional<FileLock>> tryLockName(const std::string& name) const;

  /// Creates `staging/<name>/<random>/root/`; returns the staging directory.
  absl::StatusOr<std::filesystem::path> createStaging(const std::string& name) const;
  /// Removes every staging directory of `name` (the caller holds the name lock, so they are
  /// leftovers of crashed installs). Returns how many.
  int cleanStaging(const std::string& name) const;
  /// Names with a staging directory.
  [[nodiscard]] std::vector<std::string> stagingNames() const;
  /// Deletes whatever is in trash/.
  void sweepTrash() const;

  /// Installed versions of `name`, most recently selected first. Versions whose manifest
  /// cannot be read are returned with an empty manifest.
  [[nodiscard]] std::vector<VersionRecord> versions(const std::string& name) const;
  [[nodiscard]] std::vector<std::string> names() const;

  /// Writes manifest.json, selected and in-use.lock into a staging directory.
  absl::Status writeMetadata(const std::filesystem::path& staging,
                             const nlohmann::json& manifest) const;
  /// Renames a staging directory to its version directory (never replacing one). With
  /// `durable`, everything is fsynced first and the parent after.
  absl::Status publish(const std::filesystem::path& staging, const std::filesystem::path& target,
                       bool durable) const;
  absl::Status select(const std::filesystem::path& version_dir) const;

  absl::StatusOr<std::shared_ptr<const VersionLease>> lease(
      const std::filesystem::path& version_dir) const;
  /// Whether any lease is held; when not, returns the exclusive lock that proves it (keep it
  /// while deleting).
  absl::StatusOr<std::optional<FileLock>> lockUnused(
      const std::filesystem::path& version_dir) const;
  absl::Status removeVersion(const std::filesystem::path& version_dir) const;

 private:
  std::filesystem::path root_;
};

}  // namespace internal
}  // namespace tributary::installer
