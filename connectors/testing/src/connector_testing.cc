#include "tributary/connectors/testing.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <stdlib.h>

namespace tributary::connectors::testing {

absl::Status CollectingSink::onPage(const proto::SyncResponse& page) {
  const std::lock_guard lock(mu_);
  if (fail_from_ >= 0 && static_cast<int>(page_sizes_.size()) >= fail_from_) {
    return fail_with_;
  }
  page_sizes_.push_back(static_cast<std::size_t>(page.response_size()));
  for (const auto& object : page.response()) {
    Object out{object.remote_id(), object.resource_name(), object.uri(), object.metadata(), {}};
    out.metadata = nlohmann::json::parse(object.metadata(), nullptr, false);
    if (out.metadata.is_discarded()) {
      out.metadata = nullptr;
    }
    objects_.push_back(std::move(out));
  }
  return absl::OkStatus();
}

absl::Status CollectingSink::onClean() { return absl::OkStatus(); }

void CollectingSink::failFromPage(int page, absl::Status error) {
  const std::lock_guard lock(mu_);
  fail_from_ = page;
  fail_with_ = std::move(error);
}

std::vector<Object> CollectingSink::objects() const {
  const std::lock_guard lock(mu_);
  return objects_;
}

int CollectingSink::pages() const {
  const std::lock_guard lock(mu_);
  return static_cast<int>(page_sizes_.size());
}

std::vector<std::size_t> CollectingSink::pageSizes() const {
  const std::lock_guard lock(mu_);
  return page_sizes_;
}

nlohmann::json SyncRun::endSync() const {
  if (!result.ok()) {
    return nullptr;
  }
  auto json = nlohmann::json::parse(result->metadata, nullptr, false);
  return json.is_discarded() ? nlohmann::json(nullptr) : json;
}

std::vector<std::string> SyncRun::remoteIds() const {
  std::vector<std::string> ids;
  ids.reserve(objects.size());
  for (const auto& o : objects) {
    ids.push_back(o.remote_id);
  }
  return ids;
}

std::map<std::string, Object> SyncRun::byId() const {
  std::map<std::string, Object> out;
  for (const auto& o : objects) {
    out[o.remote_id] = o;
  }
  return out;
}

SyncRun runConnector(const std::string& command, const std::string& options,
                     const RunOptions& run_options) {
  SyncRun run;
  plugin_host::LaunchSpec spec;
  spec.command = command;
  spec.env = run_options.env;
  spec.working_dir = run_options.working_dir;
  plugin_host::Options host_options;
  host_options.start_timeout = std::chrono::seconds(30);
  auto client = plugin_host::PluginClient::start(spec, host_options);
  if (!client.ok()) {
    run.result = client.status();
    return run;
  }
  CollectingSink sink;
  if (run_options.fail_from_page >= 0) {
    sink.failFromPage(run_options.fail_from_page, run_options.fail_with);
  }
  run.result = (*client)->sync(options, sink, run_options.timeout);
  run.objects = sink.objects();
  run.pages = sink.pages();
  run.page_sizes = sink.pageSizes();
  run.exit = (*client)->kill();
  return run;
}

std::vector<SyncRun> runConnectorSyncs(const std::string& command,
                                       const std::vector<std::string>& options) {
  std::vector<SyncRun> runs(options.size());
  plugin_host::LaunchSpec spec;
  spec.command = command;
  plugin_host::Options host_options;
  host_options.start_timeout = std::chrono::seconds(30);
  auto client = plugin_host::PluginClient::start(spec, host_options);
  for (std::size_t i = 0; i < options.size(); ++i) {
    if (!client.ok()) {
      runs[i].result = client.status();
      continue;
    }
    CollectingSink sink;
    runs[i].result = (*client)->sync(options[i], sink, std::chrono::seconds(60));
    runs[i].objects = sink.objects();
    runs[i].pages = sink.pages();
    runs[i].page_sizes = sink.pageSizes();
  }
  if (client.ok()) {
    const plugin_host::ExitInfo exit = (*client)->kill();
    for (auto& run : runs) {
      run.exit = exit;
    }
  }
  return runs;
}

void writeFile(const std::filesystem::path& path, const std::string& content) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  if (!out) {
    ADD_FAILURE() << "cannot write " << path;
  }
}

std::string quote(const std::string& text) { return nlohmann::json(text).dump(); }

}  // namespace tributary::connectors::testing
