#pragma once

// One local sync: the database, the connector cache and an in-process lock around lib/sync's
// pipeline, with a progress line and a summary.

#include "tributary/api/resources.h"
#include "tributary/sandbox/sandbox.h"
#include "tributary/sync/sync.h"

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tributary::cli {

/// A run of `tributary run`: the pipeline's plan and what only the CLI uses.
struct SyncPlan : sync::RunPlan {
  /// The SyncJob's activeDeadlineSeconds: the Sync deadline unless --timeout says otherwise.
  std::optional<std::chrono::seconds> active_deadline;
  std::vector<std::string> notes;  ///< Printed before the run.
  /// The Connector's spec.limits (the CRD's defaults for a c1 connector JSON).
  sandbox::Limits limits = api::defaultConnectorLimits();
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
  sync::SandboxSettings sandbox;
};

/// Runs the plan and prints progress and the summary. Returns the exit code.
int executeSync(const SyncPlan& plan, const RunFlags& flags);

}  // namespace tributary::cli
