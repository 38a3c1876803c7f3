// Measures the C++ plugin host alone (no database): runs a connector's Sync `--repeat` times, one
// connector process each (as c1 does), counting pages in a sink that stores nothing. Prints one
// JSON line with the same fields as tests/gohost, so bench/host_throughput.py can compare them.
#include "tributary/plugin_host/plugin_host.h"

#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include <csignal>
#include <cstdint>
#include <iostream>
#include <string>

namespace {

namespace ph = tributary::plugin_host;

class CountingSink : public ph::PageSink {
 public:
  absl::Status onPage(const proto::SyncResponse& /*page*/) override { return absl::OkStatus(); }
  absl::Status onClean() override { return absl::OkStatus(); }
};

std::int64_t maxRssKb() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::int64_t>(usage.ru_maxrss);
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  ph::LaunchSpec spec;
  std::string options = "{}";
  int repeat = 1;
  bool auto_mtls = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--automtls") {
      auto_mtls = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::cerr << "bench_host: " << flag << " needs a value\n";
      return 2;
    }
    const std::string value = argv[++i];
    if (flag == "--cmd") {
      spec.command = value;
    } else if (flag == "--dir") {
      spec.working_dir = value;
    } else if (flag == "--options") {
      options = value;
    } else if (flag == "--repeat") {
      repeat = std::stoi(value);
    } else {
      std::cerr << "bench_host: unknown flag " << flag << "\n";
      return 2;
    }
  }
  ph::Options host_options;
  host_options.auto_mtls = auto_mtls;
  host_options.logger = tributary::log::Logger(
      "plugin-host", tributary::log::makeJsonLineSink(2, tributary::log::Level::Warn));
  ph::SyncResult total;
  std::string metadata;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < repeat; ++i) {
    auto client = ph::PluginClient::start(spec, host_options);
    if (!client.ok()) {
      std::cerr << "bench_host: " << client.status().message() << "\n";
      return 1;
    }
    CountingSink sink;
    auto result = (*client)->sync(options, sink, std::chrono::minutes(30));
    (*client)->kill();
    if (!result.ok()) {
      std::cerr << "bench_host: " << result.status().message() << "\n";
      return 1;
    }
    total.pages += result->pages;
    total.objects += result->objects;
    total.bytes += result->bytes;
    metadata = result->metadata;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cout << nlohmann::json{{"pages", total.pages},
                              {"objects", total.objects},
                              {"bytes", total.bytes},
                              {"metadata", metadata},
                              {"seconds", seconds},
                              {"objects_per_second", static_cast<double>(total.objects) / seconds},
                              {"max_rss_kb", maxRssKb()},
                              {"host", "tributary-cpp"}}
                   .dump()
            << "\n";
  return 0;
}
