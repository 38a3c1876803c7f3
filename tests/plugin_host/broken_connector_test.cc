// Broken connectors: each gives a clear error, and no process, socket or file is left behind.
#include "tributary/common/strings.h"
#include "tributary/plugin_host/plugin_host.h"
#include "tributary/testing/probes.h"

#include "test_support.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <signal.h>
#include <sstream>

namespace tributary::plugin_host::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class BrokenConnector : public ::testing::Test {
 protected:
  void TearDown() override {
    // Every path must reap the connector and remove the host's private directory.
    EXPECT_TRUE(tributary::harness::childProcesses().empty())
        << tributary::harness::describeChildProcesses();
    EXPECT_TRUE(tmp_.leftovers().empty()) << tmp_.leftovers().front();
  }

  absl::StatusOr<std::unique_ptr<PluginClient>> start(const ConnectorProgram& program,
                                                      const std::string& mode) {
    return PluginClient::start(launchSpec(program, mode), options_);
  }

  ScopedTmpDir tmp_;
  std::shared_ptr<CapturingLogSink> logs_ = std::make_shared<CapturingLogSink>();
  Options options_ = testOptions(logs_);
};

std::string message(const absl::Status& status) { return std::string(status.message()); }

TEST_F(BrokenConnector, ExitsBeforeHandshake) {
  for (const auto& program : {goConnector("v1_8"), cppConnector(), pythonConnector()}) {
    auto client = start(program, "exit_before_handshake");
    ASSERT_FALSE(client.ok()) << program.name;
    EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable) << client.status();
    EXPECT_THAT(message(client.status()), HasSubstr("exited with status 3 before the handshake"));
    EXPECT_THAT(message(client.status()), HasSubstr("exiting before handshake"));
  }
}

TEST_F(BrokenConnector, PrintsTextBeforeHandshake) {
  auto client = start(goConnector("v1_6"), "text_before_handshake");
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      message(client.status()),
      HasSubstr("unrecognized handshake line from connector: \"hello from the connector\""));
}

TEST_F(BrokenConnector, WrongCookie) {
  options_.handshake.cookie_key = "OTHER_PLUGIN";
  options_.handshake.cookie_value = "bye";
  for (const auto& program : {goConnector("v1_6"), cppConnector(), pythonConnector()}) {
    auto client = start(program, "");
    ASSERT_FALSE(client.ok()) << program.name;
    // Go's plugin.Serve prints this to stderr and exits 1; our SDKs do the same.
    EXPECT_THAT(message(client.status()), HasSubstr("exited with status 1"));
    EXPECT_THAT(message(client.status()), HasSubstr("This binary is a plugin"));
  }
}

TEST_F(BrokenConnector, NeverPrintsHandshake) {
  options_.start_timeout = std::chrono::milliseconds(800);
  const auto started = std::chrono::steady_clock::now();
  auto client = start(goConnector("v1_8"), "never_handshake");
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(message(client.status()), HasSubstr("printed no handshake within 800 ms"));
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
}

TEST_F(BrokenConnector, CommandNotFound) {
  LaunchSpec spec;
  spec.command = "/nonexistent/connector --serve";
  auto client = PluginClient::start(spec, options_);
  ASSERT_FALSE(client.ok());
  EXPECT_THAT(message(client.status()), HasSubstr("exited with status 127 before the handshake"));
  EXPECT_THAT(message(client.status()), HasSubstr("/nonexistent/connector"));
}

TEST_F(BrokenConnector, MissingWorkingDirectory) {
  LaunchSpec spec = launchSpec(cppConnector());
  spec.working_dir = "/nonexistent/dir";
  auto client = PluginClient::start(spec, options_);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(message(client.status()),
              HasSubstr("cannot enter the connector directory /nonexistent/dir"));
}

TEST_F(BrokenConnector, CrashesMidSync) {
  for (const auto& program : {goConnector("v1_6"), cppConnector(), pythonConnector()}) {
    auto client = start(program, "crash_mid_sync");
    ASSERT_TRUE(client.ok()) << client.status();
    RecordingSink sink;
    auto result = (*client)->sync(R"({"pages":5,"page_size":10})", sink, std::chrono::seconds(30));
    ASSERT_FALSE(result.ok()) << program.name;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
    EXPECT_THAT(message(result.status()),
                HasSubstr("exited with status 2 during Sync after 1 pages"));
    EXPECT_EQ(sink.pages(), 1);
    const ExitInfo exit = (*client)->kill();
    EXPECT_EQ(exit.exit_code, 2);
  }
}

TEST_F(BrokenConnector, PanicsMidSync) {
  // A Go panic: the message names the panic, the connector's own frame and the warning logged
  // before it, not the last lines of the goroutine dump (runtime, gRPC and go-plugin frames).
  for (const auto& program : {goConnector("v1_6"), goConnector("v1_8")}) {
    auto client = start(program, "panic_mid_sync");
    ASSERT_TRUE(client.ok()) << client.status();
    RecordingSink sink;
    auto result = (*client)->sync(R"({"pages":5,"page_size":10})", sink, std::chrono::seconds(30));
    ASSERT_FALSE(result.ok()) << program.name;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
    const std::string text = message(result.status());
    EXPECT_THAT(text, HasSubstr("exited with status 2 during Sync after 1 pages"));
    EXPECT_THAT(text, HasSubstr("it crashed: panic: test connector: deliberate panic after page 1, "
                                "at tributary.dev/tests/testconnector.panicMidSync ("));
    EXPECT_THAT(text, HasSubstr("testconnector.go:"));  // -trimpath: the module path
    EXPECT_THAT(text, HasSubstr("; last warnings before it: [WARN] testconnector: about to panic: "
                                "pages=1"));
    for (const char* noise : {"goroutine ", "runtime/", "google.golang.org", "+0x", "@level",
                              "still here", "last stderr lines"}) {
      EXPECT_THAT(text, Not(HasSubstr(noise))) << text;
    }
    EXPECT_EQ(sink.pages(), 1);
    EXPECT_EQ((*client)->kill().exit_code, 2);
  }
}

TEST_F(BrokenConnector, PythonTracebackShowsTheException) {
  // An uncaught exception before the handshake, as the interpreter prints it (plain) and as the
  // SDK's hclog excepthook logs it (the traceback inside a JSON field): the message names the
  // exception and the connector's own frame, never the raw dump or raw JSON.
  const std::filesystem::path script = tmp_.path() / "failing_connector.py";
  for (const bool hclog : {false, true}) {
    {
      std::ofstream out(script);
      out << "import logging\n"
          << "from tributary_connector import hclog\n"
          << (hclog ? "hclog.configure()\n" : "pass\n")
          << "log = logging.getLogger('myconnector')\n"
          << "def load_config():\n"
          << "    log.warning('no config file; trying the environment')\n"
          << "    {}['bucket']\n"
          << "def main():\n"
          << "    load_config()\n"
          << "main()\n";
    }
    LaunchSpec spec;
    spec.command = strings::cat(TRIBUTARY_PYTHON, " ", script.string());
    auto client = PluginClient::start(spec, options_);
    ASSERT_FALSE(client.ok());
    const std::string text = message(client.status());
    EXPECT_THAT(text, HasSubstr("exited with status 1 before the handshake")) << text;
    EXPECT_THAT(text, HasSubstr(strings::cat("it crashed: KeyError: 'bucket', at load_config (",
                                             script.string(), ":7)")))
        << text;
    if (hclog) {
      EXPECT_THAT(text, HasSubstr("; last warnings before it: [WARN] myconnector: no config file; "
                                  "trying the environment"))
          << text;
    }
    for (const char* noise : {"Traceback", "File \"", "@level", "last stderr lines"}) {
      EXPECT_THAT(text, Not(HasSubstr(noise))) << text;
    }
  }
  std::filesystem::remove(script);
}

TEST_F(BrokenConnector, HangsInSync) {
  for (const auto& program : {goConnector("v1_8"), cppConnector(), pythonConnector()}) {
    auto client = start(program, "hang_in_sync");
    ASSERT_TRUE(client.ok()) << client.status();
    RecordingSink sink;
    auto result = (*client)->sync("{}", sink, std::chrono::milliseconds(1500));
    ASSERT_FALSE(result.ok()) << program.name;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_THAT(message(result.status()),
                HasSubstr("did not finish within 1500 ms (1 pages received)"));
    const auto killed_at = std::chrono::steady_clock::now();
    (*client)->kill();
    // Shutdown → ≤2 s grace → SIGKILL: never much longer than the grace.
    EXPECT_LT(std::chrono::steady_clock::now() - killed_at, std::chrono::seconds(4));
  }
}

TEST_F(BrokenConnector, ReturnsAnError) {
  for (const auto& program : allTestConnectors()) {
    auto client = start(program, "sync_error");
    ASSERT_TRUE(client.ok()) << client.status();
    RecordingSink sink;
    auto result = (*client)->sync("{}", sink, std::chrono::seconds(30));
    ASSERT_FALSE(result.ok()) << program.name;
    EXPECT_THAT(message(result.status()), HasSubstr("connector Sync failed: "));
    EXPECT_THAT(message(result.status()), HasSubstr("upstream said no"));
    EXPECT_EQ(sink.pages(), 0);
    EXPECT_EQ((*client)->kill().exit_code, 0) << program.name;
  }
}

TEST_F(BrokenConnector, SendsAPageOverTheLimit) {
  options_.max_page_bytes = 1U << 20U;
  for (const auto& program : {goConnector("v1_6"), cppConnector(), pythonConnector()}) {
    auto client = start(program, "oversized_page");
    ASSERT_TRUE(client.ok()) << client.status();
    RecordingSink sink;
    // 1.5 MiB: over our limit, under gRPC's hard ceiling.
    auto result = (*client)->sync(R"({"pages":2,"page_size":3,"oversize_bytes":1572864})", sink,
                                  std::chrono::seconds(30));
    ASSERT_FALSE(result.ok()) << program.name;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted) << result.status();
    EXPECT_THAT(message(result.status()), HasSubstr("over the host's page limit of 1048576 bytes"));
    EXPECT_EQ(sink.pages(), 0);
  }
}

TEST_F(BrokenConnector, SendsAPageFarOverTheLimit) {
  // Far over the limit the page still reaches our check (gRPC's own ceiling is 2 GiB), so it is
  // counted and can never be lost silently.
  options_.max_page_bytes = 1U << 20U;
  auto client = start(goConnector("v1_6"), "oversized_page");
  ASSERT_TRUE(client.ok()) << client.status();
  RecordingSink sink;
  auto result = (*client)->sync(R"({"pages":1,"page_size":3,"oversize_bytes":4194304})", sink,
                                std::chrono::seconds(30));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted) << result.status();
  EXPECT_THAT(message(result.status()), HasSubstr("over the host's page limit of 1048576 bytes"));
  EXPECT_EQ(sink.pages(), 0);
}

TEST_F(BrokenConnector, SendsInvalidUtf8) {
  auto client = start(cppConnector(), "invalid_utf8");
  ASSERT_TRUE(client.ok()) << client.status();
  RecordingSink sink;
  auto result = (*client)->sync(R"({"pages":1,"page_size":2})", sink, std::chrono::seconds(30));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_THAT(message(result.status()),
              HasSubstr("the host refused /proto.CallbackHandler/Upsert: the connector's "
                        "/proto.CallbackHandler/Upsert request could not be parsed"));
  EXPECT_EQ(sink.pages(), 0) << "a page with invalid UTF-8 must not reach the sink";
}

// Connectors that ignore every callback error and report success (c1's S3 connector does): each
// refused call must fail the Sync, or a deletion policy would remove what never arrived.
struct IgnoredRefusal {
  ConnectorProgram program;
  std::string mode;
  absl::StatusCode code;
  std::string method;
  std::string explanation;
};

TEST_F(BrokenConnector, RefusedCallsTheConnectorIgnoredFailTheSync) {
  const std::string older =
      "the connector called /proto.CallbackHandler/Callback, which this protocol does not have "
      "(proto.CallbackHandler has Upsert and Clean): it was probably built against an older "
      "connector protocol";
  const std::vector<IgnoredRefusal> cases = {
      {goConnector("v1_6"), "legacy_callback_method", absl::StatusCode::kUnimplemented,
       "/proto.CallbackHandler/Callback", older},
      {goConnector("v1_8"), "legacy_callback_method", absl::StatusCode::kUnimplemented,
       "/proto.CallbackHandler/Callback", older},
      {pythonConnector(), "legacy_callback_method", absl::StatusCode::kUnimplemented,
       "/proto.CallbackHandler/Callback", older},
      {goConnector("v1_8"), "unknown_service", absl::StatusCode::kUnimplemented,
       "/proto.Callbacks/Upsert",
       "the connector called /proto.Callbacks/Upsert, a service the callback server does not "
       "serve"},
      {goConnector("v1_6"), "malformed_upsert", absl::StatusCode::kInvalidArgument,
       "/proto.CallbackHandler/Upsert",
       "the connector's /proto.CallbackHandler/Upsert request could not be parsed"},
  };
  for (const IgnoredRefusal& c : cases) {
    SCOPED_TRACE(c.program.name + " " + c.mode);
    auto client = start(c.program, c.mode);
    ASSERT_TRUE(client.ok()) << client.status();
    RecordingSink sink;
    auto result = (*client)->sync(R"({"pages":3,"page_size":4})", sink, std::chrono::seconds(30));
    ASSERT_FALSE(result.ok()) << "a Sync whose callback calls were all refused succeeded";
    EXPECT_EQ(result.status().code(), c.code) << result.status();
    EXPECT_THAT(message(result.status()),
                HasSubstr("connector reported success but the host refused 3 callback call(s)"));
    EXPECT_THAT(message(result.status()), HasSubstr(c.explanation));
    EXPECT_EQ(sink.pages(), 0);
    const Observations seen = (*client)->observations();
    ASSERT_TRUE(seen.last_sync_connector_status.has_value());
    EXPECT_TRUE(seen.last_sync_connector_status->ok()) << "the connector itself reported success";
    EXPECT_EQ(seen.last_sync_refused_calls, 3U);
    EXPECT_EQ(seen.last_sync_callback_calls, 3U);
    ASSERT_TRUE(seen.last_sync_first_refusal.has_value());
    EXPECT_EQ(seen.last_sync_first_refusal->method, c.method);
    EXPECT_EQ((*client)->kill().exit_code, 0);
  }
  // Logged as it happens (the connector saw only an error it ignored).
  EXPECT_TRUE(logs_->contains("callback call refused"));
}

TEST_F(BrokenConnector, FloodsStdoutAndStderr) {
  for (const auto& program : {goConnector("v1_8"), cppConnector(), pythonConnector()}) {
    auto client = start(program, "flood_output");
    ASSERT_TRUE(client.ok()) << client.status();
    RecordingSink sink;
    auto result = (*client)->sync(R"({"pages":3,"page_size":10})", sink, std::chrono::seconds(60));
    ASSERT_TRUE(result.ok()) << program.name << ": " << result.status();
    EXPECT_EQ(result->objects, 30U);
    EXPECT_EQ((*client)->kill().exit_code, 0);
  }
  EXPECT_TRUE(logs_->contains("connector log lines suppressed by rate limit"));
}

TEST_F(BrokenConnector, EmitsMalformedHclog) {
  auto client = start(goConnector("v1_6"), "bad_hclog");
  ASSERT_TRUE(client.ok()) << client.status();
  RecordingSink sink;
  auto result = (*client)->sync(R"({"pages":2,"page_size":2})", sink, std::chrono::seconds(30));
  ASSERT_TRUE(result.ok()) << result.status();
  (*client)->kill();
  EXPECT_TRUE(logs_->contains("123"));        // non-string @message, logged as JSON text
  EXPECT_TRUE(logs_->contains("{not json"));  // kept as a plain line
  EXPECT_TRUE(logs_->contains("valid hclog line"));
  bool warn_with_field = false;
  for (const auto& record : logs_->records()) {
    if (record.message == "valid hclog line") {
      warn_with_field = record.level == log::Level::Warn && record.fields.value("k", "") == "v";
    }
  }
  EXPECT_TRUE(warn_with_field);
}

TEST_F(BrokenConnector, CallsUpsertAfterSyncReturned) {
  for (const auto& program : {goConnector("v1_8"), cppConnector(), pythonConnector()}) {
    auto client = start(program, "upsert_after_return");
    ASSERT_TRUE(client.ok()) << client.status();
    RecordingSink sink;
    auto result = (*client)->sync(R"({"pages":2,"page_size":2})", sink, std::chrono::seconds(30));
    ASSERT_TRUE(result.ok()) << result.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    EXPECT_EQ(sink.pages(), 2) << program.name << ": a page arrived after Sync returned";
    EXPECT_EQ((*client)->kill().exit_code, 0);
  }
}

TEST_F(BrokenConnector, NeverDialsTheCallback) {
  for (const auto& program : {goConnector("v1_4"), cppConnector(), pythonConnector()}) {
    auto client = start(program, "never_dial");
    ASSERT_TRUE(client.ok()) << client.status();
    RecordingSink sink;
    auto result = (*client)->sync("{}", sink, std::chrono::seconds(30));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->pages, 0U);
    EXPECT_EQ((*client)->kill().exit_code, 0);
  }
}

TEST_F(BrokenConnector, ConnectorWithoutTlsWhenAutoMtlsIsOn) {
  // A shell "connector" that prints a plain handshake: AutoMTLS hosts must refuse it.
  options_.auto_mtls = true;
  options_.health_check = false;
  LaunchSpec spec;
  spec.command = "echo '1|1|unix|/nonexistent.sock|grpc|'; sleep 30";
  auto client = PluginClient::start(spec, options_);
  ASSERT_FALSE(client.ok());
  EXPECT_THAT(message(client.status()), HasSubstr("carries no certificate"));
}

TEST_F(BrokenConnector, NetRpcConnectorIsRefused) {
  LaunchSpec spec;
  spec.command = "echo '1|1|unix|/nonexistent.sock|netrpc'; sleep 30";
  auto client = PluginClient::start(spec, options_);
  ASSERT_FALSE(client.ok());
  EXPECT_THAT(message(client.status()), HasSubstr("only grpc is supported"));
}

TEST_F(BrokenConnector, KillWhileSyncRunsCancelsIt) {
  auto client = start(goConnector("v1_8"), "hang_in_sync");
  ASSERT_TRUE(client.ok()) << client.status();
  RecordingSink sink;
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    (*client)->kill();
  });
  const auto started = std::chrono::steady_clock::now();
  auto result = (*client)->sync("{}", sink, std::chrono::seconds(30));
  killer.join();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  EXPECT_TRUE((*client)->kill().exited);
}

TEST_F(BrokenConnector, ConcurrentKillsAreSafe) {
  auto client = start(goConnector("v1_8"), "hang_in_sync");
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::thread> killers;
  std::vector<ExitInfo> exits(4);
  for (std::size_t i = 0; i < exits.size(); ++i) {
    killers.emplace_back([&, i] { exits[i] = (*client)->kill(); });
  }
  for (auto& t : killers) {
    t.join();
  }
  for (const auto& exit : exits) {
    EXPECT_TRUE(exit.exited);
    EXPECT_EQ(exit.exit_code, exits.front().exit_code);
  }
}

// The pid of a direct child of `parent`, or -1.
pid_t childOf(pid_t parent) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) {
      continue;
    }
    // pid (comm) state ppid ...: comm may contain spaces, so parse after the last ')'.
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) {
      return static_cast<pid_t>(std::stoi(entry.path().filename().string()));
    }
  }
  return -1;
}

bool aliveAndNotZombie(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) {
    return false;
  }
  return line.substr(line.rfind(')') + 2, 1) != "Z";
}

TEST_F(BrokenConnector, ConnectorDiesWithAKilledHost) {
  // A host (the tributary CLI) runs a hanging connector and is SIGKILLed: the connector must not
  // survive it (PR_SET_PDEATHSIG reaches it because a simple command is exec'd by the shell).
  const pid_t host = ::fork();
  if (host == 0) {
    ::execl(TRIBUTARY_CLI, TRIBUTARY_CLI, "connector", "run", "--quiet", "--env",
            "TEST_CONNECTOR_MODE=hang_in_sync", "--command", goConnector("v1_8").command.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  pid_t connector = -1;
  ASSERT_TRUE(tributary::harness::eventually([&] { return (connector = childOf(host)) > 0; }));
  ::kill(host, SIGKILL);
  ::waitpid(host, nullptr, 0);
  EXPECT_TRUE(tributary::harness::eventually([&] { return !aliveAndNotZombie(connector); },
                                             std::chrono::seconds(5)))
      << "connector " << connector << " outlived its host";
  // A SIGKILLed host cannot remove its private directory; that is the one thing it leaves.
  for (const auto& entry : std::filesystem::directory_iterator(tmp_.path())) {
    std::filesystem::remove_all(entry.path());
  }
}

}  // namespace
}  // namespace tributary::plugin_host::testing
