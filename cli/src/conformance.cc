// `tributary connector test`: the conformance kit. Runs a connector twice through the plugin
// host (a normal Sync, then one where every Upsert fails) and checks what a go-plugin c1
// connector must do.
#include "tributary/common/strings.h"
#include "tributary/installer/installer.h"
#include "tributary/plugin_host/plugin_host.h"
#include "tributary/sync/sync.h"

#include "commands.h"
#include "common.h"
#include "manifest.h"
#include "signals.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <mutex>

namespace tributary::cli {
namespace {

namespace ph = tributary::plugin_host;
using strings::cat;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    R"(usage: tributary connector test [DIR | MANIFESTS.yaml | CONNECTOR.json] [options]

The conformance kit for connector authors (any language): starts the connector through Tributary's
go-plugin host, runs Sync, then runs it again failing every Upsert, and checks

  handshake       the first stdout line is a valid go-plugin handshake (core 1, app version,
                  unix|tcp, address, grpc, optional base64 certificate)
  health          grpc.health.v1 Health/Check("plugin") answers SERVING
  sync            Sync(options) returns OK
  broker_callback the connector dials the callback server offered over the go-plugin broker
  pages           at least one page of objects arrives
  objects         every object has a non-empty remote_id; strings are valid UTF-8 without NUL
  stdout_silence  nothing is written to stdout after the handshake line
  shutdown        the process exits within the grace period after GRPCController/Shutdown
  failing_upsert  when an Upsert fails, Sync does not report success

The connector: a directory (with --command, or a connector.json inside, run in place), a file of
Connector manifests (installed like `tributary run` does; --connector NAME picks one), a c1
connector JSON (installed), or just --command (in the current directory).

  --command CMD        how to start it (run with /bin/sh -c in the directory)
  --options JSON       the Sync options (default: a SyncJob's options in the manifests, else {})
  --connector NAME     with manifests: which Connector
  --env NAME=VALUE     extra environment for the connector (repeatable)
  --automtls           run with go-plugin AutoMTLS
  --timeout S          Sync deadline (default 60)
  --start-timeout S    handshake deadline (default 30)
  --cache-dir DIR      connector cache for installs
  --json               the report as one JSON object

Exit status: 0 every check passed, 1 a check failed, 2 usage, 3 invalid input, 5 install failed.
)";

enum class Verdict { Pass, Fail, Skip };

struct Check {
  std::string name;
  Verdict verdict = Verdict::Skip;
  std::string detail;
};

class Report {
 public:
  Report() {
    for (const char* name : {"handshake", "health", "sync", "broker_callback", "pages", "objects",
                             "stdout_silence", "shutdown", "failing_upsert"}) {
      checks_.push_back({name, Verdict::Skip, ""});
    }
  }
  void set(const std::string& name, Verdict verdict, std::string detail) {
    for (auto& c : checks_) {
      if (c.name == name) {
        c.verdict = verdict;
        c.detail = std::move(detail);
      }
    }
  }
  void pass(const std::string& name, std::string detail) {
    set(name, Verdict::Pass, std::move(detail));
  }
  void fail(const std::string& name, std::string detail) {
    set(name, Verdict::Fail, std::move(detail));
  }
  void skipRest(const std::string& why) {
    for (auto& c : checks_) {
      if (c.verdict == Verdict::Skip && c.detail.empty()) {
        c.detail = why;
      }
    }
  }
  [[nodiscard]] bool passed() const {
    return std::all_of(checks_.begin(), checks_.end(),
                       [](const Check& c) { return c.verdict == Verdict::Pass; });
  }
  [[nodiscard]] const std::vector<Check>& checks() const { return checks_; }

 private:
  std::vector<Check> checks_;
};

bool validUtf8WithoutNul(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) {
      return false;
    }
    std::size_t len = 0;
    if (c < 0x80) {
      len = 1;
    } else if ((c >> 5U) == 0x6 && c >= 0xC2) {
      len = 2;
    } else if ((c >> 4U) == 0xE) {
      len = 3;
    } else if ((c >> 3U) == 0x1E && c <= 0xF4) {
      len = 4;
    } else {
      return false;
    }
    if (i + len > s.size()) {
      return false;
    }
    for (std::size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0U) != 0x80U) {
        return false;
      }
    }
    i += len;
  }
  return true;
}

/// Accepts every page and checks its objects.
class CheckingSink : public ph::PageSink {
 public:
  absl::Status onPage(const proto::SyncResponse& page) override {
    const std::lock_guard lock(mu_);
    ++pages_;
    for (const auto& o : page.response()) {
      ++objects_;
      if (!problem_.empty()) {
        continue;
      }
      if (o.remote_id().empty()) {
        problem_ = cat("object #", objects_, " of page ", pages_, " has an empty remote_id");
      }
      for (const auto& [field, value] :
           {std::pair<const char*, const std::string*>{"remote_id", &o.remote_id()},
            {"resource_name", &o.resource_name()},
            {"uri", &o.uri()},
            {"metadata", &o.metadata()}}) {
        if (problem_.empty() && !validUtf8WithoutNul(*value)) {
          problem_ = cat("object #", objects_, " (remote_id \"", clipped(o.remote_id()),
                         "\"): field ", field,
                         " is not valid UTF-8 or contains a NUL byte (PostgreSQL text cannot "
                         "hold it)");
        }
      }
    }
    return absl::OkStatus();
  }
  absl::Status onClean() override { return absl::OkStatus(); }

  std::uint64_t pages_ = 0;
  std::uint64_t objects_ = 0;
  std::string problem_;

 private:
  static std::string clipped(const std::string& s) { return s.size() > 40 ? s.substr(0, 40) : s; }
  std::mutex mu_;
};

/// Refuses every Upsert, the way a store that lost its database would.
class FailingSink : public ph::PageSink {
 public:
  absl::Status onPage(const proto::SyncResponse& /*page*/) override {
    return absl::UnavailableError(
        "conformance test: this Upsert fails on purpose; the connector must stop or return an "
        "error, not report success");
  }
  absl::Status onClean() override { return absl::OkStatus(); }
};

struct Target {
  std::string description;
  ph::LaunchSpec launch;
  ph::HandshakeConfig handshake;
  std::string options = "{}";
  std::optional<installer::Installation> installation;  // Keeps the version's lease.
};

absl::StatusOr<Target> resolveTarget(const ParsedArgs& args, Failure& failure) {
  Target target;
  const std::optional<std::string> command = args.get("--command");
  std::optional<installer::ConnectorSpec> to_install;
  if (args.positionals.empty()) {
    if (!command) {
      failure = {kExitUsage, "give a connector (directory, manifest or c1 JSON) or --command"};
      return absl::InvalidArgumentError("usage");
    }
    target.launch.command = *command;
    target.description = cat("command `", *command, "`");
  } else {
    const std::filesystem::path path = args.positionals[0];
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      target.launch.working_dir = std::filesystem::absolute(path);
      if (command) {
        target.launch.command = *command;
      } else if (std::filesystem::exists(path / "connector.json", ec)) {
        auto spec = installer::loadConnectorFile((path / "connector.json").string());
        if (!spec.ok()) {
          failure = {kExitInvalid,
                     cat((path / "connector.json").string(), ": ", spec.status().message())};
          return spec.status();
        }
        target.launch.command = spec->command;
        target.launch.env = spec->env;
      } else {
        failure = {kExitUsage,
                   cat(path.string(), " is a directory without connector.json; give --command")};
        return absl::InvalidArgumentError("usage");
      }
      target.description = cat(path.string(), " (command `", target.launch.command, "`)");
    } else if (path.extension() == ".json") {
      auto spec = installer::loadConnectorFile(path.string());
      if (!spec.ok()) {
        failure = {kExitInvalid, cat(path.string(), ": ", spec.status().message())};
        return spec.status();
      }
      to_install = *spec;
    } else {
      auto manifests = loadManifests({path.string()}, "default");
      if (!manifests.ok()) {
        failure = {kExitInvalid, std::string(manifests.status().message())};
        return manifests.status();
      }
      const ConnectorManifest* chosen = nullptr;
      const std::optional<std::string> wanted = args.get("--connector");
      for (const auto& c : manifests->connectors) {
        if (!wanted || c.name == *wanted) {
          if (chosen != nullptr) {
            failure = {kExitUsage, cat(path.string(),
                                       " holds several Connectors; pick one with "
                                       "--connector NAME")};
            return absl::InvalidArgumentError("usage");
          }
          chosen = &c;
        }
      }
      if (chosen == nullptr) {
        failure = {kExitInvalid, cat(path.string(), ": no Connector",
                                     wanted ? cat(" named `", *wanted, "`") : std::string())};
        return absl::InvalidArgumentError("not found");
      }
      to_install = chosen->spec;
      target.handshake = sync::hostHandshake(chosen->handshake);
      for (const auto& job : manifests->syncjobs) {
        if (job.ns == chosen->ns && job.connector_ref == chosen->name && job.options_json) {
          target.options = *job.options_json;
          break;
        }
      }
    }
  }
  if (to_install) {
    installer::Options options;
    options.cache_dir = args.has("--cache-dir") ? std::filesystem::path(*args.get("--cache-dir"))
                                                : cacheDir() / "connectors";
    options.logger = log::Logger("installer", commandSink());
    auto installer = installer::Installer::create(options);
    if (!installer.ok()) {
      failure = {kExitInstall, std::string(installer.status().message())};
      return installer.status();
    }
    auto installed = (*installer)->install(*to_install);
    if (!installed.ok()) {
      failure = {kExitInstall, cat("cannot install connector ", to_install->name, ": ",
                                   installed.status().message())};
      return installed.status();
    }
    target.installation = *installed;
    target.launch = sync::launchSpec(*installed);
    if (command) {
      target.launch.command = *command;
    }
    target.description =
        cat(to_install->name, " (", installer::sourceName(to_install->source), " ",
            installer::redactUri(to_install->uri), ", command `", target.launch.command, "`)");
  }
  for (const std::string& kv : args.all("--env")) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      failure = {kExitUsage, cat("--env takes NAME=VALUE, got `", kv, "`")};
      return absl::InvalidArgumentError("usage");
    }
    target.launch.env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (auto options = args.get("--options")) {
    target.options = *options;
  }
  return target;
}

std::string describeHandshake(const ph::HandshakeInfo& h) {
  return cat("core protocol ", h.core_version, ", app protocol ", h.app_version, ", ", h.network,
             " ", h.network == "unix" ? "socket" : "address", ", ", h.protocol, ", ",
             h.server_cert_der.empty() ? "no TLS" : "AutoMTLS certificate");
}

void runChecks(const Target& target, const ParsedArgs& args, Report& report,
               const std::stop_token& stop) {
  ph::Options options;
  options.handshake = target.handshake;
  options.auto_mtls = args.has("--automtls");
  options.logger = log::Logger("plugin-host", commandSink());
  options.start_timeout = std::chrono::milliseconds(30000);
  std::chrono::milliseconds timeout(60000);
  if (auto s = args.get("--start-timeout")) {
    options.start_timeout = std::chrono::milliseconds(
        static_cast<std::int64_t>(*parseSeconds("--start-timeout", *s) * 1000));
  }
  if (auto s = args.get("--timeout")) {
    timeout =
        std::chrono::milliseconds(static_cast<std::int64_t>(*parseSeconds("--timeout", *s) * 1000));
  }

  // Run 1: a normal Sync.
  auto client = ph::PluginClient::start(target.launch, options);
  if (!client.ok()) {
    report.fail("handshake", std::string(client.status().message()));
    report.skipRest("not run: the connector did not start");
    return;
  }
  report.pass("handshake", describeHandshake((*client)->handshake()));
  {
    const auto health = (*client)->observations().health_at_start;
    const absl::Status now = (*client)->ping();
    if (health && health->ok() && now.ok()) {
      report.pass("health", "Check(\"plugin\") answers SERVING");
    } else {
      const absl::Status& bad = health && !health->ok() ? *health : now;
      report.fail("health", absl::IsUnimplemented(bad)
                                ? std::string("the connector serves no grpc.health.v1 Health "
                                              "service (go-plugin plugins must)")
                                : cat("Health/Check(\"plugin\") failed: ", bad.message()));
    }
  }
  CheckingSink sink;
  auto result = (*client)->sync(target.options, sink, timeout, stop);
  const ph::Observations seen = (*client)->observations();
  if (result.ok()) {
    report.pass("sync", cat("Sync returned OK after ", result->pages, " page(s), ", result->objects,
                            " object(s); metadata ",
                            result->metadata.empty() ? "(empty)" : result->metadata));
  } else {
    report.fail("sync", std::string(result.status().message()));
  }
  if (seen.last_sync_first_refusal) {
    // The sink accepts every page here, so a refusal is the connector's: a method this protocol
    // does not have, a request that does not parse, a page over the size limit.
    report.fail("broker_callback",
                cat("the host refused ", seen.last_sync_refused_calls, " of the connector's ",
                    seen.last_sync_callback_calls,
                    " callback call(s); the first: ", seen.last_sync_first_refusal->method, ": ",
                    seen.last_sync_first_refusal->status.message()));
  } else if (seen.last_sync_callback_calls > 0) {
    report.pass("broker_callback", cat("the connector called the callback server ",
                                       seen.last_sync_callback_calls, " time(s)"));
  } else if (result.ok()) {
    report.fail("broker_callback",
                "Sync returned without calling the callback server offered through the broker "
                "(it must dial the ConnInfo it receives on the broker stream and Upsert its "
                "pages there)");
  } else {
    report.fail("broker_callback", "no callback call before the Sync failed");
  }
  if (sink.pages_ > 0) {
    report.pass("pages", cat(sink.pages_, " page(s), ", sink.objects_, " object(s)"));
  } else {
    report.fail("pages", "no page arrived; pass --options that make the connector return objects");
  }
  if (sink.pages_ == 0) {
    report.set("objects", Verdict::Skip, "no objects to check");
  } else if (sink.problem_.empty()) {
    report.pass("objects", cat("all ", sink.objects_, " object(s) storable"));
  } else {
    report.fail("objects", sink.problem_);
  }
  const auto kill_started = Clock::now();
  const ph::ExitInfo exit = (*client)->kill();
  const double shutdown_s = std::chrono::duration<double>(Clock::now() - kill_started).count();
  const std::uint64_t stdout_bytes = (*client)->observations().stdout_bytes_after_handshake;
  if (stdout_bytes == 0) {
    report.pass("stdout_silence", "nothing on stdout after the handshake");
  } else {
    report.fail("stdout_silence",
                cat(stdout_bytes,
                    " byte(s) written to stdout after the handshake; go-plugin reads only the "
                    "first line, so log to stderr (hclog JSON) instead"));
  }
  if (exit.forced) {
    report.fail("shutdown", cat("still running ", formatDuration(shutdown_s),
                                " after GRPCController/Shutdown; killed with SIGKILL"));
  } else if (exit.exited) {
    report.pass("shutdown", cat("exited ", formatDuration(shutdown_s), " after Shutdown (",
                                exit.describe(), ")"));
  } else {
    report.fail("shutdown", cat("could not be reaped: ", exit.describe()));
  }

  // Run 2: every Upsert fails.
  auto second = ph::PluginClient::start(target.launch, options);
  if (!second.ok()) {
    report.fail("failing_upsert",
                cat("the connector did not start a second time: ", second.status().message()));
    return;
  }
  FailingSink failing;
  auto failed = (*second)->sync(target.options, failing, timeout, stop);
  const ph::Observations after = (*second)->observations();
  (*second)->kill();
  if (after.last_sync_refused_pages == 0) {
    if (!after.last_sync_connector_status) {
      report.fail("failing_upsert", cat("Sync did not complete: ", failed.status().message()));
    } else {
      report.fail("failing_upsert",
                  "the connector sent no page in the second run, so a failing Upsert could not "
                  "be tested");
    }
  } else if (!after.last_sync_connector_status) {
    report.fail("failing_upsert", cat("after a failed Upsert the connector's Sync did not return: ",
                                      failed.status().message()));
  } else if (after.last_sync_connector_status->ok()) {
    report.fail("failing_upsert",
                cat("the connector reported success although ", after.last_sync_refused_pages,
                    " Upsert(s) failed; it must check each Upsert's result and stop or return "
                    "the error"));
  } else {
    report.pass(
        "failing_upsert",
        cat("Sync returned an error after ", after.last_sync_refused_pages, " failed Upsert(s): ",
            std::string(after.last_sync_connector_status->message()).substr(0, 160)));
  }
}

}  // namespace

int connectorTestCommand(const std::vector<std::string>& argv) {
  FlagSpec spec;
  spec.with_value = {"--command",       "--options", "--connector", "--env",
                     "--start-timeout", "--timeout", "--cache-dir"};
  spec.repeatable = {"--env"};
  spec.boolean = {"--json", "--automtls", "-h", "--help"};
  auto args = parseArgs(argv, spec);
  if (args.ok() && args->has("--help")) {
    std::cout << kUsage;
    return kExitOk;
  }
  auto usage = [](const std::string& error) { return usageError(error, kUsage); };
  if (!args.ok()) {
    return usage(std::string(args.status().message()));
  }
  if (args->positionals.size() > 1) {
    return usage("connector test takes one connector");
  }
  for (const char* flag : {"--start-timeout", "--timeout"}) {
    if (auto s = args->get(flag); s && !parseSeconds(flag, *s).ok()) {
      return usage(std::string(parseSeconds(flag, *s).status().message()));
    }
  }
  StopOnSignal signals;
  Failure failure;
  auto target = resolveTarget(*args, failure);
  if (!target.ok()) {
    return failure.code == kExitUsage ? usage(failure.message) : report(failure);
  }
  Report result;
  runChecks(*target, *args, result, signals.token());
  if (signals.interrupted()) {
    return report({kExitInterrupted, "interrupted"});
  }
  const auto& checks = result.checks();
  const auto passed = std::count_if(checks.begin(), checks.end(),
                                    [](const Check& c) { return c.verdict == Verdict::Pass; });
  if (args->has("--json")) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& c : checks) {
      list.push_back({{"name", c.name},
                      {"result", c.verdict == Verdict::Pass   ? "pass"
                                 : c.verdict == Verdict::Fail ? "fail"
                                                              : "skip"},
                      {"detail", c.detail}});
    }
    std::cout << nlohmann::json{{"connector", target->description},
                                {"ok", result.passed()},
                                {"passed", passed},
                                {"total", checks.size()},
                                {"checks", list}}
                     .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              << '\n';
  } else {
    std::cout << "connector test: " << target->description << '\n';
    for (const auto& c : checks) {
      const char* tag = c.verdict == Verdict::Pass   ? "PASS"
                        : c.verdict == Verdict::Fail ? "FAIL"
                                                     : "SKIP";
      std::printf("  %s  %-16s %s\n", tag, c.name.c_str(), c.detail.c_str());
    }
    std::printf("%lld of %zu checks passed%s\n", static_cast<long long>(passed), checks.size(),
                result.passed() ? "" : " — the connector does not conform");
    std::fflush(stdout);
  }
  return result.passed() ? kExitOk : kExitConnector;
}

}  // namespace tributary::cli
