#pragma once

#include "tributary/plugin_host/plugin_host.h"
#include "tributary/testing/temp_dir.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

/// Running a connector through the real plugin host (lib/plugin_host) in tests.
namespace tributary::connectors::testing {

struct Object {
  std::string remote_id;
  std::string resource_name;
  std::string uri;
  std::string metadata_text;
  nlohmann::json metadata;  ///< Parsed metadata (null if it is not JSON).
};

/// Collects every page; can refuse pages from a given page on, as a failing store would.
class CollectingSink : public plugin_host::PageSink {
 public:
  absl::Status onPage(const proto::SyncResponse& page) override;
  absl::Status onClean() override;
  void failFromPage(int page, absl::Status error);

  [[nodiscard]] std::vector<Object> objects() const;
  [[nodiscard]] int pages() const;
  [[nodiscard]] std::vector<std::size_t> pageSizes() const;

 private:
  mutable std::mutex mu_;
  std::vector<Object> objects_;
  std::vector<std::size_t> page_sizes_;
  int fail_from_ = -1;
  absl::Status fail_with_;
};

struct SyncRun {
  absl::StatusOr<plugin_host::SyncResult> result = absl::UnknownError("not run");
  std::vector<Object> objects;
  int pages = 0;
  std::vector<std::size_t> page_sizes;
  plugin_host::ExitInfo exit;

  [[nodiscard]] nlohmann::json endSync() const;  ///< Parsed EndSync metadata.
  [[nodiscard]] std::vector<std::string> remoteIds() const;
  [[nodiscard]] std::map<std::string, Object> byId() const;
};

struct RunOptions {
  std::map<std::string, std::string> env;
  std::filesystem::path working_dir;
  /// Refuse pages from this page on (0 = the first page) with `fail_with`.
  int fail_from_page = -1;
  absl::Status fail_with = absl::UnavailableError("database is down");
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
};

/// Starts `command` (as the host would: /bin/sh -c), runs one Sync with `options`, shuts the
/// connector down. A failure to start shows up in `result`.
SyncRun runConnector(const std::string& command, const std::string& options,
                     const RunOptions& run_options = {});

/// Runs one Sync per options string, all on one connector process (fast for option checks).
std::vector<SyncRun> runConnectorSyncs(const std::string& command,
                                       const std::vector<std::string>& options);

using TempDir = harness::TempDir;

/// Writes `content` to `path`, creating parent directories.
void writeFile(const std::filesystem::path& path, const std::string& content);

/// JSON-quotes a string (for building options).
std::string quote(const std::string& text);

}  // namespace tributary::connectors::testing
