#include "test_support.h"

#include "tributary/common/strings.h"

#include <algorithm>
#include <stdlib.h>

namespace tributary::plugin_host::testing {

ConnectorProgram goConnector(const std::string& version_dir) {
  const std::string version = version_dir == "v1_4"   ? "v1.4"
                              : version_dir == "v1_6" ? "v1.6.3"
                                                      : "v1.8.0";
  return {strings::cat("go_", version_dir),
          strings::cat(TRIBUTARY_GO_BIN_DIR, "/connector-go-", version_dir),
          strings::cat("go-", version)};
}

ConnectorProgram cppConnector() { return {"cpp", TRIBUTARY_CPP_CONNECTOR, "cpp"}; }

ConnectorProgram pythonConnector() {
  return {"python", strings::cat(TRIBUTARY_PYTHON, " ", TRIBUTARY_PYTHON_CONNECTOR), "python"};
}

std::vector<ConnectorProgram> allTestConnectors() {
  return {goConnector("v1_4"), goConnector("v1_6"), goConnector("v1_8"), cppConnector(),
          pythonConnector()};
}

absl::Status RecordingSink::onPage(const proto::SyncResponse& page) {
  const std::lock_guard lock(mu_);
  if (fail_from_ >= 0 && pages_ >= fail_from_) {
    return fail_with_;
  }
  ++pages_;
  for (const auto& object : page.response()) {
    remote_ids_.push_back(object.remote_id());
  }
  return absl::OkStatus();
}

absl::Status RecordingSink::onClean() {
  const std::lock_guard lock(mu_);
  ++cleans_;
  return absl::OkStatus();
}

void RecordingSink::failFromPage(int page, absl::Status error) {
  const std::lock_guard lock(mu_);
  fail_from_ = page;
  fail_with_ = std::move(error);
}

std::vector<std::string> RecordingSink::remoteIds() const {
  const std::lock_guard lock(mu_);
  return remote_ids_;
}

int RecordingSink::pages() const {
  const std::lock_guard lock(mu_);
  return pages_;
}

int RecordingSink::cleans() const {
  const std::lock_guard lock(mu_);
  return cleans_;
}

void CapturingLogSink::write(const log::Record& record) {
  const std::lock_guard lock(mu_);
  records_.push_back(record);
}

std::vector<log::Record> CapturingLogSink::records() const {
  const std::lock_guard lock(mu_);
  return records_;
}

bool CapturingLogSink::contains(std::string_view message_part) const {
  const std::lock_guard lock(mu_);
  return std::any_of(records_.begin(), records_.end(), [&](const log::Record& r) {
    return r.message.find(message_part) != std::string::npos;
  });
}

Options testOptions(std::shared_ptr<CapturingLogSink> sink) {
  Options options;
  options.start_timeout = std::chrono::seconds(20);
  if (sink) {
    options.logger = log::Logger("plugin-host", std::move(sink));
  }
  return options;
}

LaunchSpec launchSpec(const ConnectorProgram& program, const std::string& mode) {
  LaunchSpec spec;
  spec.command = program.command;
  if (!mode.empty()) {
    spec.env["TEST_CONNECTOR_MODE"] = mode;
  }
  return spec;
}

std::vector<std::string> expectedIds(int pages, int page_size) {
  std::vector<std::string> ids;
  for (int p = 0; p < pages; ++p) {
    for (int i = 0; i < page_size; ++i) {
      ids.push_back(strings::cat("obj-", p, "-", i));
    }
  }
  return ids;
}

ScopedTmpDir::ScopedTmpDir() {
  std::string templ = (std::filesystem::temp_directory_path() / "tribtest-XXXXXX").string();
  path_ = ::mkdtemp(templ.data());
  if (const char* prev = std::getenv("TMPDIR"); prev != nullptr) {
    previous_ = prev;
    had_previous_ = true;
  }
  ::setenv("TMPDIR", path_.c_str(), 1);
}

ScopedTmpDir::~ScopedTmpDir() {
  if (had_previous_) {
    ::setenv("TMPDIR", previous_.c_str(), 1);
  } else {
    ::unsetenv("TMPDIR");
  }
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::vector<std::string> ScopedTmpDir::leftovers() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(path_, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    out.push_back(it->path().string());
  }
  return out;
}

}  // namespace tributary::plugin_host::testing
