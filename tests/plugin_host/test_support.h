#pragma once

#include "tributary/common/log.h"
#include "tributary/plugin_host/plugin_host.h"

#include <atomic>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace tributary::plugin_host::testing {

/// A real connector program the tests run.
struct ConnectorProgram {
  std::string name;     ///< Test-name friendly, e.g. "go_v1_6".
  std::string command;  ///< Shell command.
  std::string label;    ///< The `connector` field the contract puts in EndSync metadata.
};

/// The same test connector (tests/connectors/README.md) in every language and go-plugin version.
std::vector<ConnectorProgram> allTestConnectors();
ConnectorProgram goConnector(const std::string& version_dir);  // "v1_4", "v1_6", "v1_8"
ConnectorProgram cppConnector();
ConnectorProgram pythonConnector();

/// Collects pages; can be told to fail from a given page on.
class RecordingSink : public PageSink {
 public:
  absl::Status onPage(const proto::SyncResponse& page) override;
  absl::Status onClean() override;

  void failFromPage(int page, absl::Status error);
  std::vector<std::string> remoteIds() const;
  int pages() const;
  int cleans() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::string> remote_ids_;
  int pages_ = 0;
  int cleans_ = 0;
  int fail_from_ = -1;
  absl::Status fail_with_;
};

/// Keeps every log record for assertions.
class CapturingLogSink : public log::Sink {
 public:
  void write(const log::Record& record) override;
  std::vector<log::Record> records() const;
  bool contains(std::string_view message_part) const;

 private:
  mutable std::mutex mu_;
  std::vector<log::Record> records_;
};

/// Options with a capturing logger and short timeouts suited to tests.
Options testOptions(std::shared_ptr<CapturingLogSink> sink = nullptr);

LaunchSpec launchSpec(const ConnectorProgram& program, const std::string& mode = "");

/// The remote ids the contract's connector sends for `pages` × `page_size`.
std::vector<std::string> expectedIds(int pages, int page_size);

/// Points TMPDIR at a fresh directory for the test's lifetime, so every private directory the
/// host creates can be checked for leftovers.
class ScopedTmpDir {
 public:
  ScopedTmpDir();
  ~ScopedTmpDir();
  ScopedTmpDir(const ScopedTmpDir&) = delete;
  ScopedTmpDir& operator=(const ScopedTmpDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  /// Everything left under the directory (recursive).
  std::vector<std::string> leftovers() const;

 private:
  std::filesystem::path path_;
  std::string previous_;
  bool had_previous_ = false;
};

}  // namespace tributary::plugin_host::testing
