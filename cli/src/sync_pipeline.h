#pragma once

// One local sync: database → install → lock → run → plugin host → store → summary.

#include "tributary/installer/spec.h"
#include "tributary/plugin_host/handshake.h"
#include "tributary/store/store.h"

#include "credentials.h"

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tributary::cli {

struct SyncPlan {
  std::string ns;    ///< SyncJob namespace: the source's identity in the store, with name.
  std::string name;  ///< SyncJob name.
  installer::ConnectorSpec connector;
  plugin_host::HandshakeConfig handshake;
  std::string options;  ///< May hold credentials: never printed or logged.
  /// The connector process's environment beyond connector.env (which install commands see and
  /// the install hash covers), lowest precedence first; never printed or logged, never part of
  /// the install. From Secrets: spec.envFrom and spec.env valueFrom.
  std::map<std::string, std::string> secret_env;
  /// spec.files: written 0600 into a private directory for the run, removed after it.
  std::vector<RunFile> files;
  /// --env-file, then --env: over everything above.
  std::map<std::string, std::string> env_overrides;
  store::DeletionPolicy deletion_policy = store::DeletionPolicy::Mark;
  store::DeletionGuard deletion_guard;
  std::optional<std::chrono::seconds> timeout;
  std::vector<std::string> notes;  ///< Printed before the run.
};

struct RunFlags {
  bool json = false;
  bool update = false;
  std::optional<std::string> database_url;
  std::optional<double> database_timeout_s;
  std::optional<double> timeout_s;
  std::optional<double> start_timeout_s;
  std::filesystem::path cache_dir;
  std::filesystem::path secret_dir;
};

/// Runs the plan and prints progress and the summary. Returns the exit code.
int executeSync(const SyncPlan& plan, const RunFlags& flags);

}  // namespace tributary::cli
