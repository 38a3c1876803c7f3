// `tributary connector run`: runs one connector through the plugin host and prints the pages it
// sends (nothing is stored).
#include "tributary/plugin_host/plugin_host.h"

#include "commands.h"
#include "common.h"
#include "signals.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace tributary::cli {
namespace {

namespace ph = tributary::plugin_host;

constexpr const char* kUsage = R"(usage: tributary connector run --command CMD [options]

Runs a go-plugin connector (c1 protocol) once and prints the pages it sends.

options:
  --command CMD      shell command that starts the connector (run with /bin/sh -c)
  --dir DIR          working directory for the command (default: current directory)
  --options TEXT     the Sync options string passed to the connector (default: {})
  --env NAME=VALUE   extra environment for the connector (repeatable)
  --automtls         use go-plugin AutoMTLS between host and connector
  --timeout SECONDS  Sync deadline (default: 3600)
  --json             print pages and the summary as JSON lines
  --quiet            print only the summary

exit status: 0 success, 1 the connector or sync failed, 2 usage error, 130 interrupted
)";

struct Args {
  ph::LaunchSpec spec;
  std::string options = "{}";
  bool auto_mtls = false;
  bool json = false;
  bool quiet = false;
  int timeout_seconds = 3600;
};

std::optional<Args> parseArgs(const std::vector<std::string>& argv, std::string& error) {
  Args args;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& flag = argv[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= argv.size()) {
        error = flag + " needs a value";
        return std::nullopt;
      }
      return argv[++i];
    };
    if (flag == "--command" || flag == "--dir" || flag == "--options" || flag == "--env" ||
        flag == "--timeout") {
      auto v = value();
      if (!v) {
        return std::nullopt;
      }
      if (flag == "--command") {
        args.spec.command = *v;
      } else if (flag == "--dir") {
        args.spec.working_dir = *v;
      } else if (flag == "--options") {
        args.options = *v;
      } else if (flag == "--env") {
        const auto eq = v->find('=');
        if (eq == std::string::npos || eq == 0) {
          error = "--env takes NAME=VALUE, got `" + *v + "`";
          return std::nullopt;
        }
        args.spec.env[v->substr(0, eq)] = v->substr(eq + 1);
      } else {
        try {
          args.timeout_seconds = std::stoi(*v);
        } catch (const std::exception&) {
          args.timeout_seconds = 0;
        }
        if (args.timeout_seconds <= 0) {
          error = "--timeout takes a positive number of seconds, got `" + *v + "`";
          return std::nullopt;
        }
      }
    } else if (flag == "--automtls") {
      args.auto_mtls = true;
    } else if (flag == "--json") {
      args.json = true;
    } else if (flag == "--quiet") {
      args.quiet = true;
    } else {
      error = "unknown option `" + flag + "`";
      return std::nullopt;
    }
  }
  if (args.spec.command.empty()) {
    error = "--command is required";
    return std::nullopt;
  }
  return args;
}

/// Prints each page as it arrives: the page is "stored" once it is on stdout.
class PrintingSink : public ph::PageSink {
 public:
  PrintingSink(bool json, bool quiet) : json_(json), quiet_(quiet) {}

  // A page counts as stored once it is on stdout, so a failed write refuses the page.
  absl::Status onPage(const proto::SyncResponse& page) override {
    absl::Status printed = print(page);
    if (printed.ok() && !std::cout.flush()) {
      printed = absl::UnavailableError("cannot write to stdout");
    }
    return printed;
  }

  absl::Status print(const proto::SyncResponse& page) {
    ++pages_;
    if (quiet_) {
      return absl::OkStatus();
    }
    if (json_) {
      nlohmann::json objects = nlohmann::json::array();
      for (const auto& o : page.response()) {
        objects.push_back({{"remote_id", o.remote_id()},
                           {"resource_name", o.resource_name()},
                           {"uri", o.uri()},
                           {"metadata", o.metadata()}});
      }
      std::cout << nlohmann::json{{"page", pages_}, {"objects", objects}}.dump(
                       -1, ' ', false, nlohmann::json::error_handler_t::replace)
                << '\n';
      return absl::OkStatus();
    }
    std::cout << "page " << pages_ << ": " << page.response_size() << " objects\n";
    for (const auto& o : page.response()) {
      std::cout << "  " << o.remote_id() << "  " << o.resource_name() << "  " << o.uri() << '\n';
    }
    return absl::OkStatus();
  }

  absl::Status onClean() override {
    if (!quiet_ && !json_) {
      std::cout << "clean\n";
    }
    return absl::OkStatus();
  }

 private:
  bool json_;
  bool quiet_;
  int pages_ = 0;
};

int runConnector(const Args& args) {
  StopOnSignal signals;
  ph::Options options;
  options.auto_mtls = args.auto_mtls;
  auto client = ph::PluginClient::start(args.spec, options);
  if (!client.ok()) {
    std::cerr << "tributary: cannot start the connector: " << client.status().message() << '\n';
    return 1;
  }
  PrintingSink sink(args.json, args.quiet);
  const auto started = std::chrono::steady_clock::now();
  auto result = (*client)->sync(args.options, sink, std::chrono::seconds(args.timeout_seconds),
                                signals.token());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  (*client)->kill();
  if (!result.ok()) {
    std::cerr << "tributary: sync failed: " << result.status().message() << '\n';
    return signals.interrupted() ? 130 : 1;
  }
  const double rate = seconds > 0 ? static_cast<double>(result->objects) / seconds : 0.0;
  if (args.json) {
    std::cout << nlohmann::json{{"summary",
                                 {{"pages", result->pages},
                                  {"objects", result->objects},
                                  {"bytes", result->bytes},
                                  {"seconds", seconds},
                                  {"objects_per_second", rate},
                                  {"metadata", result->metadata}}}}
                     .dump()
              << '\n';
  } else {
    std::printf("synced %llu objects in %llu pages (%llu bytes) in %.3f s, %.0f objects/s\n",
                static_cast<unsigned long long>(result->objects),
                static_cast<unsigned long long>(result->pages),
                static_cast<unsigned long long>(result->bytes), seconds, rate);
    std::printf("connector metadata: %s\n", result->metadata.c_str());
  }
  return 0;
}

}  // namespace

int connectorRunCommand(const std::vector<std::string>& argv) {
  if (!argv.empty() && (argv[0] == "-h" || argv[0] == "--help")) {
    std::cout << kUsage;
    return 0;
  }
  std::string error;
  const auto args = parseArgs(argv, error);
  if (!args) {
    return usageError(error, kUsage);
  }
  return runConnector(*args);
}

}  // namespace tributary::cli
