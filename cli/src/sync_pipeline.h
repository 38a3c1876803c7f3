#pragma once

// One local sync: database → install → lock → run → plugin host → store → summary.

#include "tributary/installer/spec.h"
#include "tributary/plugin_host/handshake.h"
#include "tributary/store/store.h"

#include <chrono>
#include <filesystem>
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
  store::DeletionPolicy deletion_policy = store::DeletionPolicy::Mark;
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
