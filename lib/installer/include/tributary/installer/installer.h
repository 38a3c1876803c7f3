#pragma once

#include "tributary/common/log.h"
#include "tributary/installer/secrets.h"
#include "tributary/installer/spec.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

/// Installs connectors (VCS via libgit2, HTTP via cpprestsdk, Local copies) into an on-disk
/// cache of immutable versions, and hands out what the plugin host needs to start them.
/// See lib/installer/README.md for the cache layout and the guarantees.
namespace tributary::installer {

struct Options {
  /// Root of the cache (created if missing). Everything the installer writes lives below it.
  std::filesystem::path cache_dir;

  /// install_command / update_command wall-clock limit; the command's process group is killed.
  std::chrono::milliseconds command_timeout{std::chrono::minutes(15)};
  /// Whole git fetch (and each ls-remote) or HTTP download. Git operations run in the helper
  /// process (`git_helper`), which is killed when this passes, whatever the server does.
  std::chrono::milliseconds fetch_timeout{std::chrono::minutes(10)};
  /// HTTP: give up when no data arrives for this long.
  std::chrono::milliseconds http_idle_timeout{std::chrono::seconds(60)};
  /// Waiting for another install of the same connector (other thread or process).
  std::chrono::milliseconds lock_timeout{std::chrono::minutes(30)};

  std::uint64_t max_download_bytes = 1ULL << 30U;  ///< HTTP body size limit.
  std::uint64_t max_unpacked_bytes = 4ULL << 30U;  ///< Sum of file sizes in an archive.
  std::uint64_t max_archive_entries = 200000;
  int max_redirects = 10;
  /// Bytes of command output kept for error messages (the tail).
  std::size_t output_tail_bytes = 8192;

  /// Versions kept by garbage collection, besides any in use: the `keep_versions` most recently
  /// selected of each connector name, and as many of each spec of that name (Connectors of one
  /// name in different namespaces or sources may have different specs) selected within
  /// `spec_retention`.
  int keep_versions = 2;
  /// A spec (its hash) whose versions were not installed or reused for this long is forgotten:
  /// only the name-wide `keep_versions` protect its versions then.
  std::chrono::milliseconds spec_retention{std::chrono::hours(24 * 30)};

  /// Host variables passed to install commands (a trailing `*` matches a prefix). Nothing else
  /// of the installer's environment reaches them; credentials never do.
  std::vector<std::string> inherited_env = defaultInheritedEnv();
  /// Extra variables for every install command (below the spec's own `env`).
  std::map<std::string, std::string> command_env;

  /// Local sources must lie under one of these directories; empty allows any path. The agent
  /// should set it: a Connector object could otherwise copy any file of the node.
  std::vector<std::filesystem::path> local_roots;

  /// The `tributary-git-helper` program that runs libgit2 for VCS sources. Empty: the
  /// TRIBUTARY_GIT_HELPER environment variable, else `tributary-git-helper` next to the running
  /// executable, else the one built with this library.
  std::filesystem::path git_helper;

  /// Resolves `secret_ref`. Without it a spec with `secret_ref` fails.
  SecretResolverPtr secrets;

  /// fsync the new version before it is renamed into place (survives a power loss).
  bool durable = true;

  log::Logger logger{"installer"};

  static std::vector<std::string> defaultInheritedEnv();
};

/// Keeps one installed version from garbage collection (in this and every other process) while
/// alive: a shared flock on the version's `in-use.lock`. Opaque.
class VersionLease;

/// An installed connector version, ready to start.
struct Installation {
  std::string name;
  /// Directory name of the version: "<spec hash>-<revision>".
  std::string version;
  std::string spec_hash;
  /// VCS: the commit; HTTP: first 16 hex of the file's SHA-256; Local: first 16 hex of the tree
  /// digest (after an update_command: the commit (VCS) or the digest of the resulting tree).
  std::string revision;
  std::string resolved_commit;  ///< VCS: full commit id checked out.
  std::string resolved_ref;     ///< VCS: "refs/heads/main" etc.; empty for a commit id.
  std::string sha256;           ///< HTTP: SHA-256 of the downloaded file.
  /// Absolute connector root: the working directory of the command.
  std::filesystem::path root;
  std::string command;
  std::map<std::string, std::string> env;
  /// False when an installed version was reused.
  bool installed_now = false;
  std::chrono::milliseconds install_duration{0};
  /// Shared by copies; the version is not garbage-collected while any copy lives.
  std::shared_ptr<const VersionLease> lease;
};

struct VersionInfo {
  std::string version;
  std::string spec_hash;
  std::string revision;
  std::filesystem::path root;
  std::int64_t installed_at_ns = 0;
  std::int64_t selected_at_ns = 0;  ///< Last time install/update chose it.
  bool in_use = false;
};

struct GcReport {
  std::vector<std::string> removed;  ///< "<name>/<version>"
  std::vector<std::string> kept_in_use;
  int stale_staging_removed = 0;
};

/// The installer. Thread-safe: any number of threads (and processes sharing `cache_dir`) may
/// call it at once; calls for the same connector name are serialized by a file lock, so a
/// version is installed once however many ask for it.
class Installer {
 public:
  /// Creates the cache directories. The cache path is canonicalized.
  static absl::StatusOr<std::unique_ptr<Installer>> create(Options options);

  virtual ~Installer() = default;
  Installer(const Installer&) = delete;
  Installer& operator=(const Installer&) = delete;

  /// Returns the installed version of this spec (the most recently selected one with the same
  /// spec hash) or installs it. Never contacts the remote when a version is installed: updates
  /// are explicit. Blocks while another install of the same name runs.
  virtual absl::StatusOr<Installation> install(const ConnectorSpec& spec,
                                               std::stop_token stop = {}) = 0;

  /// Moves to the newest upstream version. Without `update_command`: VCS fetches and checks out
  /// the ref's new commit in a copy of the current version, then runs install_command; HTTP
  /// downloads again and Local copies again (a new version only if the content changed). With
  /// `update_command`: it runs in a copy of the current version (c1's rule). The previous
  /// version stays intact for syncs still running it. Installs when nothing is installed yet.
  virtual absl::StatusOr<Installation> update(const ConnectorSpec& spec,
                                              std::stop_token stop = {}) = 0;

  /// Removes, for every connector name, versions beyond the `keep_versions` most recently
  /// selected ones (of the name, and of each spec selected within `spec_retention`) that nobody
  /// holds a lease on, plus leftovers of crashed installs.
  virtual absl::StatusOr<GcReport> collectGarbage() = 0;

  /// Installed versions of `name`, most recently selected first.
  virtual absl::StatusOr<std::vector<VersionInfo>> listVersions(std::string_view name) = 0;

 protected:
  Installer() = default;
};
using InstallerPtr = std::unique_ptr<Installer>;

}  // namespace tributary::installer
