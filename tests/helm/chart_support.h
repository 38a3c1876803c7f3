#pragma once

// The Helm chart under test (deploy/helm/tributary) and the real tools that read it: helm
// (v3, built from the Go module proxy by scripts/build-kube.sh) and promtool (Debian).

#include "tributary/testing/spawn.h"
#include "tributary/testing/temp_dir.h"

#include <nlohmann/json.hpp>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace tributary::testing {

using Json = nlohmann::json;

inline constexpr const char* kRelease = "rel";
inline constexpr const char* kReleaseNamespace = "tributary-system";

/// Values every render needs when the quickstart is off (a database Secret and a Redis).
std::vector<std::string> requiredValues();
/// `flags` followed by `more` (helm arguments built from parts).
std::vector<std::string> with(std::vector<std::string> flags, const std::vector<std::string>& more);
/// The phases of the SyncRuns in `ns`, space-separated, as the shared API server has them.
std::string syncRunPhases(const std::string& ns);

class Chart {
 public:
  [[nodiscard]] std::string dir() const;
  /// `helm <args...>` with a private HOME (no state outside the test's directory).
  harness::CommandResult helm(const std::vector<std::string>& args,
                              std::chrono::seconds timeout = std::chrono::minutes(2)) const;
  /// `helm template rel <chart> -n tributary-system <flags...>`; every document as JSON. Fails
  /// the test (ADD_FAILURE) and returns {} when helm or the YAML fails.
  std::vector<Json> render(const std::vector<std::string>& flags) const;
  /// The rendered YAML as helm prints it.
  std::string renderYaml(const std::vector<std::string>& flags) const;

 private:
  harness::TempDir home_{"helm-home"};
};

/// The object of `kind` named `name` among `objects`, or nullptr.
const Json* findObject(const std::vector<Json>& objects, const std::string& kind,
                       const std::string& name);
/// Every object of `kind`.
std::vector<const Json*> objectsOf(const std::vector<Json>& objects, const std::string& kind);
/// The pod template spec of a Deployment/DaemonSet/StatefulSet, or the spec of a Pod.
const Json& podSpec(const Json& workload);

/// An absolute path of a tool in $TRIBUTARY_KUBE_BIN_DIR (helm, kubectl) or on PATH (promtool).
std::string tool(const std::string& name);
/// Runs a tool with this process's environment; killed after `timeout`.
harness::CommandResult runTool(const std::vector<std::string>& argv, const std::string& input = "",
                               std::chrono::seconds timeout = std::chrono::minutes(2));

std::string readFile(const std::filesystem::path& path);
/// Polls `pred` every 200 ms until it holds or `timeout` passes; its last answer.
bool waitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout);
/// `<prefix>-<pid>-<n>`: names that do not collide between test processes.
std::string uniqueName(const std::string& prefix);

/// A binary under test started with harness::spawnLogged; SIGTERM (then SIGKILL) to its process
/// group on stop() or destruction.
struct Child {
  pid_t pid = -1;
  std::string log;
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { stop(); }
  /// Starts argv, logging to `log_path`; false (with a test failure) if it cannot.
  bool start(const std::vector<std::string>& argv, const std::string& log_path);
  void stop();
};

}  // namespace tributary::testing
