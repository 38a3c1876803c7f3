#include "tributary/common/strings.h"
#include "tributary/mtls/mtls.h"
#include "tributary/plugin_host/child_process.h"
#include "tributary/plugin_host/plugin_host.h"

#include "broker.h"
#include "callback_server.h"
#include "connector.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "output_pump.h"
#include "plugin/grpc_controller.grpc.pb.h"
#include "plugin/grpc_stdio.grpc.pb.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <signal.h>
#include <stdlib.h>
#include <system_error>
#include <thread>
#include <unistd.h>

extern char** environ;  // NOLINT: POSIX

namespace tributary::plugin_host {
namespace {

constexpr auto kHealthTimeout = std::chrono::seconds(5);
constexpr auto kShutdownCallTimeout = std::chrono::seconds(1);
constexpr auto kCrashCheckWait = std::chrono::milliseconds(300);
constexpr auto kPumpDrainGrace = std::chrono::milliseconds(500);
constexpr std::size_t kMaxTempBaseLength = 60;  // Keeps socket paths under 108 bytes.

absl::Status fromGrpc(const grpc::Status& status) {
  return {static_cast<absl::StatusCode>(status.error_code()), status.error_message()};
}

std::string stderrSuffix(const std::vector<std::string>& tail) {
  if (tail.empty()) {
    return "; the connector wrote nothing to stderr";
  }
  const std::size_t from = tail.size() > 5 ? tail.size() - 5 : 0;
  const std::vector<std::string> last(tail.begin() + static_cast<std::ptrdiff_t>(from), tail.end());
  return strings::cat("; last stderr lines: ", strings::join(last, " | "));
}

// What ended a process that crashed: the dump's cause, where, and the warnings before it. Else
// the last stderr lines.
std::string crashSuffix(const OutputPump& pump) {
  const auto crash = pump.crash();
  if (!crash) {
    return stderrSuffix(pump.stderrTail());
  }
  std::string out = strings::cat("; it crashed: ", crash->cause);
  if (!crash->location.empty()) {
    out += strings::cat(", at ", crash->location);
  }
  if (!crash->warnings_before.empty()) {
    out +=
        strings::cat("; last warnings before it: ", strings::join(crash->warnings_before, " | "));
  }
  return out;
}

// What the kernel cannot enforce does not change between connectors: say it once per process.
void logWarningOnce(const log::Logger& logger, const std::string& warning) {
  static std::once_flag once;
  std::call_once(once, [&] { logger.warn("connector sandbox degraded", {{"reason", warning}}); });
}

bool nameAllowed(std::string_view name, const std::vector<std::string>& allowed) {
  for (const std::string_view pattern : allowed) {
    const bool prefix = pattern.ends_with('*');
    if (prefix ? name.starts_with(pattern.substr(0, pattern.size() - 1)) : name == pattern) {
      return true;
    }
  }
  return false;
}

// `sh -c` forks a command instead of replacing itself, and a forked child loses
// PR_SET_PDEATHSIG: the connector would outlive a crashed host. A single simple command (c1's
// `./s3/s3`, `python x.py`) is therefore run as `exec <command>`; anything else (lists, pipes,
// redirections, assignments, keywords and builtins) is left to the shell as written.
std::string shellCommand(const std::string& command) {
  const std::string_view trimmed = strings::trim(command);
  if (trimmed.empty() || trimmed.find_first_of(";&|()<>{}`\n") != std::string_view::npos) {
    return command;
  }
  const std::string_view first = trimmed.substr(0, trimmed.find_first_of(" \t"));
  for (const std::string_view keyword :
       {"if",    "for",      "while",   "until", "case",  "select",   "function", "time",
        "!",     "[[",       "[",       "exec",  "cd",    "export",   "set",      ".",
        "exit",  "return",   "source",  "eval",  "trap",  "ulimit",   "umask",    "wait",
        "read",  "shift",    "unset",   "alias", "test",  "true",     "false",    ":",
        "break", "continue", "command", "type",  "local", "readonly", "kill",     "pwd"}) {
    if (first == keyword) {
      return command;
    }
  }
  if (first.find('=') != std::string_view::npos) {
    return command;
  }
  return strings::cat("exec ", trimmed);
}

absl::StatusOr<std::filesystem::path> makePrivateDir() {
  std::string base = "/tmp";
  if (const char* tmp = std::getenv("TMPDIR");
      tmp != nullptr && *tmp == '/' && std::strlen(tmp) < kMaxTempBaseLength) {
    base = tmp;
  }
  std::string templ = strings::cat(base, "/tributary-XXXXXX");
  if (::mkdtemp(templ.data()) == nullptr) {
    return absl::FailedPreconditionError(strings::cat("cannot create a private directory under ",
                                                      base, ": ", strings::errnoMessage(errno)));
  }
  return std::filesystem::path(templ);
}

class PluginClientImpl final : public PluginClient {
 public:
  PluginClientImpl(Options options, std::string command)
      : options_(std::move(options)), command_(std::move(command)) {}
  ~PluginClientImpl() override { kill(); }
  PluginClientImpl(const PluginClientImpl&) = delete;
  PluginClientImpl& operator=(const PluginClientImpl&) = delete;
  PluginClientImpl(PluginClientImpl&&) = delete;
  PluginClientImpl& operator=(PluginClientImpl&&) = delete;

  absl::Status launch(const LaunchSpec& spec);

  absl::StatusOr<SyncResult> sync(const std::string& options, PageSink& sink,
                                  std::chrono::milliseconds timeout, std::stop_token stop) override;
  absl::Status ping() override;
  ExitInfo kill() override;
  [[nodiscard]] int pid() const override { return process_ ? process_->pid() : -1; }
  [[nodiscard]] const HandshakeInfo& handshake() const override { return handshake_; }
  [[nodiscard]] Observations observations() const override;

 private:
  std::vector<std::string> buildEnv(const LaunchSpec& spec) const;
  absl::Status connect();
  void startStdioDrain();
  absl::Status describeFailure(absl::Status status, std::string_view during);

  Options options_;
  std::string command_;
  log::Logger logger_{options_.logger};
  std::filesystem::path private_dir_;
  std::optional<sandbox::User> sandbox_user_;  // Owns private_dir_ and the callback sockets.
  std::optional<mtls::Certificate> host_cert_;
  std::unique_ptr<ChildProcess> process_;
  std::unique_ptr<OutputPump> pump_;
  HandshakeInfo handshake_;
  std::shared_ptr<grpc::ServerCredentials> callback_credentials_;
  // A call keeps its channel's connection open until its context is destroyed: kill() destroys
  // this one once the stream has ended.
  std::unique_ptr<grpc::ClientContext> stdio_context_ = std::make_unique<grpc::ClientContext>();
  std::thread stdio_reader_;

  std::mutex kill_mu_;  // Serialises kill().
  mutable std::mutex mu_;
  // Set by start(), released by kill() (callers take copies under mu_).
  std::shared_ptr<grpc::Channel> channel_;      // Guarded by mu_.
  std::shared_ptr<HostBroker> broker_;          // Guarded by mu_.
  grpc::ClientContext* active_sync_ = nullptr;  // Guarded by mu_.
  bool killed_ = false;                         // Guarded by mu_.
  std::optional<ExitInfo> exit_;                // Guarded by mu_.
  Observations observed_;                       // Guarded by mu_ (stdout count: see getter).
};

std::vector<std::string> PluginClientImpl::buildEnv(const LaunchSpec& spec) const {
  noteDroppedCredentials(spec, options_.logger);  // once per process
  std::map<std::string, std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view kv(*entry);
    const auto eq = kv.find('=');
    if (eq != std::string_view::npos && nameAllowed(kv.substr(0, eq), spec.inherited_env)) {
      env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
    }
  }
  if (!env.contains("PATH")) {
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin";
  }
  // Temporary files (and, for go-plugin < v1.5, the plugin's socket) land in our private
  // directory, which is removed with the process: no leaked socket file on any path.
  env["TMPDIR"] = private_dir_.string();
  for (const auto& [key, value] : spec.env) {
    env[key] = value;
  }
  // go-plugin's variables win over everything, as in Go hosts.
  env[options_.handshake.cookie_key] = options_.handshake.cookie_value;
  env["PLUGIN_MIN_PORT"] = "10000";
  env["PLUGIN_MAX_PORT"] = "25000";
  env["PLUGIN_PROTOCOL_VERSIONS"] = strings::join(options_.handshake.protocol_versions, ",");
  env["PLUGIN_UNIX_SOCKET_DIR"] = private_dir_.string();
  if (host_cert_) {
    env["PLUGIN_CLIENT_CERT"] = host_cert_->cert_pem;
  }
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [key, value] : env) {
    out.push_back(strings::cat(key, "=", value));
  }
  return out;
}

absl::Status PluginClientImpl::launch(const LaunchSpec& spec) {
  auto dir = makePrivateDir();
  if (!dir.ok()) {
    return dir.status();
  }
  private_dir_ = *dir;
  if (options_.auto_mtls) {
    auto cert = mtls::generateSelfSigned();
    if (!cert.ok()) {
      return absl::InternalError(
          strings::cat("cannot generate the AutoMTLS certificate: ", cert.status().message()));
    }
    host_cert_ = *std::move(cert);
  }
  const std::filesystem::path working_dir =
      spec.working_dir.empty() ? std::filesystem::current_path() : spec.working_dir;
  std::optional<sandbox::Prepared> confinement;
  if (spec.sandbox) {
    sandbox::Policy policy = *spec.sandbox;
    policy.read_write.push_back(private_dir_);
    if (policy.user) {
      if (::chown(private_dir_.c_str(), policy.user->uid, policy.user->gid) != 0) {
        return absl::FailedPreconditionError(
            strings::cat("cannot hand the connector's private directory ", private_dir_.string(),
                         " to ", policy.user->describe(), ": ", strings::errnoMessage(errno)));
      }
      sandbox_user_ = policy.user;
    }
    auto prepared = sandbox::Prepared::create(policy);
    if (!prepared.ok()) {
      return prepared.status();
    }
    if (!prepared->warning().empty()) {
      logWarningOnce(logger_, prepared->warning());
    }
    logger_.debug("connector sandbox", {{"sandbox", prepared->describe()}});
    confinement = *std::move(prepared);
  }
  auto child = ChildProcess::spawn({"/bin/sh", "-c", shellCommand(spec.command)}, buildEnv(spec),
                                   working_dir, confinement ? &*confinement : nullptr);
  if (!child.ok()) {
    return child.status();
  }
  process_ = *std::move(child);
  logger_ = logger_.with({{"connector_pid", process_->pid()}});
  pump_ =
      std::make_unique<OutputPump>(process_->releaseStdout(), process_->releaseStderr(),
                                   logger_.named("connector"), options_.max_log_lines_per_second);

  auto line = pump_->waitHandshake(std::chrono::steady_clock::now() + options_.start_timeout);
  if (!line.ok()) {
    if (absl::IsDeadlineExceeded(line.status())) {
      return absl::DeadlineExceededError(strings::cat(
          "connector printed no handshake within ", options_.start_timeout.count(),
          " ms; it must print the go-plugin handshake line on stdout when ready (is it a "
          "go-plugin connector, and is the start timeout long enough?)",
          stderrSuffix(pump_->stderrTail())));
    }
    return describeFailure(line.status(), "before the handshake");
  }
  auto parsed = parseHandshake(*line, options_.handshake.protocol_versions);
  if (!parsed.ok()) {
    return describeFailure(parsed.status(), "at the handshake");
  }
  handshake_ = *std::move(parsed);
  logger_.debug("connector handshake", {{"network", handshake_.network},
                                        {"address", handshake_.address},
                                        {"app_version", handshake_.app_version},
                                        {"tls", !handshake_.server_cert_der.empty()}});
  return connect();
}

absl::Status PluginClientImpl::connect() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  callback_credentials_ = grpc::InsecureServerCredentials();
  if (host_cert_) {
    if (handshake_.server_cert_der.empty()) {
      return absl::FailedPreconditionError(
          "AutoMTLS is on but the connector's handshake carries no certificate; the connector "
          "does not support AutoMTLS (disable it for this connector)");
    }
    auto plugin_pem = mtls::derToPem(handshake_.server_cert_der);
    if (!plugin_pem.ok()) {
      return absl::FailedPreconditionError(strings::cat(
          "the connector's AutoMTLS certificate is invalid: ", plugin_pem.status().message()));
    }
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = *plugin_pem;
    tls.pem_private_key = host_cert_->key_pem;
    tls.pem_cert_chain = host_cert_->cert_pem;
    credentials = grpc::SslCredentials(tls);
    args.SetSslTargetNameOverride("localhost");

    grpc::SslServerCredentialsOptions server_tls(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    server_tls.pem_root_certs = *plugin_pem;
    server_tls.pem_key_cert_pairs.push_back({host_cert_->key_pem, host_cert_->cert_pem});
    callback_credentials_ = grpc::SslServerCredentials(server_tls);
  } else if (!handshake_.server_cert_der.empty()) {
    return absl::FailedPreconditionError(
        "the connector started with TLS although AutoMTLS is off; it must not serve TLS unless "
        "PLUGIN_CLIENT_CERT is set");
  }
  channel_ = grpc::CreateCustomChannel(handshake_.grpcTarget(), credentials, args);
  // go-plugin hosts open both streams right away: a plugin may block on stdio otherwise.
  broker_ = std::make_shared<HostBroker>(channel_, logger_);
  startStdioDrain();
  if (options_.health_check) {
    const absl::Status health = ping();
    {
      const std::lock_guard lock(mu_);
      observed_.health_at_start = health;
    }
    if (absl::IsUnimplemented(health)) {
      logger_.debug("connector has no health service; continuing");
    } else if (!health.ok()) {
      return describeFailure(health, "at the health check");
    }
  }
  return absl::OkStatus();
}

void PluginClientImpl::startStdioDrain() {
  stdio_reader_ = std::thread([this, channel = channel_] {
    auto stub = plugin::GRPCStdio::NewStub(channel);
    google::protobuf::Empty request;
    auto reader = stub->StreamStdio(stdio_context_.get(), request);
    plugin::StdioData data;
    std::uint64_t bytes = 0;
    while (reader->Read(&data)) {
      bytes += data.data().size();
    }
    const grpc::Status status = reader->Finish();
    logger_.debug("connector stdio stream ended",
                  {{"bytes", bytes}, {"code", status.error_code()}});
  });
}

absl::Status PluginClientImpl::ping() {
  std::shared_ptr<grpc::Channel> channel;
  {
    const std::lock_guard lock(mu_);
    channel = channel_;
  }
  if (!channel) {
    return absl::FailedPreconditionError("the connector is not running");
  }
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kHealthTimeout);
  context.set_wait_for_ready(true);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("plugin");
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    return fromGrpc(status);
  }
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(
        strings::cat("connector health is ",
                     grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())));
  }
  return absl::OkStatus();
}

// Adds what the process did (exit status, stderr) to an error, so a crash reads as a crash.
absl::Status PluginClientImpl::describeFailure(absl::Status status, std::string_view during) {
  const auto exited = process_ ? process_->waitFor(kCrashCheckWait) : std::nullopt;
  std::string message;
  if (exited) {
    pump_->stop(kPumpDrainGrace);
    message =
        strings::cat("connector process ", exited->describe(), " ", during, ": ", status.message());
    if (status.code() != absl::StatusCode::kFailedPrecondition) {
      status = absl::UnavailableError("");
    }
  } else {
    message = strings::cat("connector failed ", during, ": ", status.message());
  }
  std::string output;
  if (pump_) {
    output = exited ? crashSuffix(*pump_) : stderrSuffix(pump_->stderrTail());
  }
  message += strings::cat(" (command `", command_, "`)", output);
  return {status.code(), message};
}

absl::StatusOr<SyncResult> PluginClientImpl::sync(const std::string& options, PageSink& sink,
                                                  std::chrono::milliseconds timeout,
                                                  std::stop_token stop) {
  std::shared_ptr<grpc::Channel> channel;
  std::shared_ptr<HostBroker> broker;
  {
    const std::lock_guard lock(mu_);
    channel = channel_;
    broker = broker_;
  }
  if (!channel || !broker) {
    return absl::FailedPreconditionError("the connector is not running");
  }
  // A fresh broker id and callback server per Sync, stopped when Sync returns (§5.3).
  const std::uint32_t id = broker->nextId();
  const auto socket_path = private_dir_ / strings::cat("callback-", id, ".sock");
  auto server = CallbackServer::start(socket_path, callback_credentials_, options_.max_page_bytes,
                                      sink, logger_);
  if (!server.ok()) {
    return server.status();
  }
  if (sandbox_user_ && ::chown(socket_path.c_str(), sandbox_user_->uid, sandbox_user_->gid) != 0) {
    (*server)->close();
    return absl::InternalError(strings::cat("cannot hand the callback socket to ",
                                            sandbox_user_->describe(), ": ",
                                            strings::errnoMessage(errno)));
  }
  if (absl::Status offered = broker->offer(id, "unix", socket_path.string()); !offered.ok()) {
    (*server)->close();
    return describeFailure(offered, "before Sync");
  }

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  {
    const std::lock_guard lock(mu_);
    if (killed_) {
      (*server)->close();
      return absl::CancelledError("the connector was stopped before Sync started");
    }
    active_sync_ = &context;
  }
  std::stop_callback on_stop(stop, [&context] { context.TryCancel(); });
  proto::SyncRequest request;
  request.set_options(options);
  request.set_callback_handler_server(id);
  proto::EndSync response;
  auto stub = proto::Connector::NewStub(channel);
  const grpc::Status status = stub->Sync(&context, request, &response);
  {
    const std::lock_guard lock(mu_);
    active_sync_ = nullptr;
  }
  (*server)->close();
  const CallbackServer::Stats stats = (*server)->stats();
  {
    const std::lock_guard lock(mu_);
    const bool completed = !stop.stop_requested() && !killed_ &&
                           status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED;
    observed_.last_sync_connector_status =
        completed ? std::optional<absl::Status>(fromGrpc(status)) : std::nullopt;
    observed_.last_sync_callback_calls = stats.counts.pages + stats.counts.cleans + stats.refused();
    observed_.last_sync_refused_pages = stats.refused_pages;
    observed_.last_sync_refused_calls = stats.refused();
    observed_.last_sync_first_refusal = stats.first_refusal;
  }

  if (!status.ok()) {
    if (stop.stop_requested()) {
      return absl::CancelledError(
          strings::cat("Sync cancelled after ", stats.counts.pages, " pages"));
    }
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::DeadlineExceededError(strings::cat(
          "connector Sync did not finish within ", timeout.count(), " ms (", stats.counts.pages,
          " pages received); raise the sync timeout or fix the connector",
          stderrSuffix(pump_->stderrTail())));
    }
    if (stats.first_refusal) {
      const RefusedCall& refusal = *stats.first_refusal;
      return absl::Status(
          refusal.status.code(),
          strings::cat("Sync failed after the host refused ", refusal.method, ": ",
                       refusal.status.message(), "; connector said: ", status.error_message()));
    }
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
        status.error_code() == grpc::StatusCode::CANCELLED) {
      return describeFailure(fromGrpc(status),
                             strings::cat("during Sync after ", stats.counts.pages, " pages"));
    }
    return absl::Status(fromGrpc(status).code(),
                        strings::cat("connector Sync failed: ", status.error_message()));
  }
  if (stats.first_refusal) {
    // The connector ignored a refused call (c1's S3 connector ignores Upsert errors; a connector
    // of an older protocol revision gets UNIMPLEMENTED): what it meant to send is not stored, so
    // this is never a success, and no deletion may follow.
    const RefusedCall& refusal = *stats.first_refusal;
    return absl::Status(
        refusal.status.code(),
        strings::cat("connector reported success but the host refused ", stats.refused(),
                     " callback call(s) (", stats.refused_pages, " Upsert, ", stats.refused_cleans,
                     " Clean, ", stats.refused_other, " other); the first: ", refusal.method, ": ",
                     refusal.status.message()));
  }
  SyncResult result = stats.counts;
  result.metadata = response.metadata();
  return result;
}

Observations PluginClientImpl::observations() const {
  Observations out;
  {
    const std::lock_guard lock(mu_);
    out = observed_;
  }
  out.stdout_bytes_after_handshake = pump_ ? pump_->discardedStdoutBytes() : 0;
  return out;
}

ExitInfo PluginClientImpl::kill() {
  // Concurrent callers (a stop thread and the destructor) wait for the first one to finish.
  const std::lock_guard kill_lock(kill_mu_);
  std::shared_ptr<grpc::Channel> channel;
  std::shared_ptr<HostBroker> broker;
  {
    const std::lock_guard lock(mu_);
    if (exit_) {
      return *exit_;
    }
    killed_ = true;
    if (active_sync_ != nullptr) {
      active_sync_->TryCancel();
    }
    channel = channel_;
    broker = broker_;
  }
  if (broker) {
    broker->close();
  }
  bool graceful = false;
  if (channel && process_ && !process_->waitFor(std::chrono::milliseconds(0))) {
    auto stub = plugin::GRPCController::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kShutdownCallTimeout);
    plugin::Empty request;
    plugin::Empty response;
    // Go plugins stop their server inside the handler, so UNAVAILABLE is the usual answer.
    (void)stub->Shutdown(&context, request, &response);
    graceful = true;
  }
  stdio_context_->TryCancel();
  if (stdio_reader_.joinable()) {
    stdio_reader_.join();
  }
  // Close the connection, as go-plugin hosts do after Shutdown: a plugin's gRPC server waits for
  // its clients to go before it stops (the C++ and Python SDKs' servers cut them after 250 ms).
  // A Sync still returning keeps its own references until it has.
  stdio_context_.reset();
  {
    const std::lock_guard lock(mu_);
    channel_.reset();
    broker_.reset();
  }
  broker.reset();
  channel.reset();
  ExitInfo info;
  if (process_) {
    auto exited = graceful ? process_->waitFor(options_.shutdown_grace) : std::nullopt;
    if (!exited) {
      exited = process_->waitFor(std::chrono::milliseconds(0));
    }
    if (!exited) {
      logger_.warn("connector did not exit after Shutdown; killing it",
                   {{"grace_ms", options_.shutdown_grace.count()}});
    }
    // Reaping also kills whatever the connector left behind in its process group.
    info = exited ? *exited : process_->killAndReap();
    if (sandbox_user_) {
      if (const int escaped = reapEscapedChildren(sandbox_user_->uid); escaped > 0) {
        logger_.warn("killed processes the connector left outside its process group",
                     {{"processes", escaped}});
      }
    }
  }
  if (pump_) {
    pump_->stop(kPumpDrainGrace);
  }
  if (!private_dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(private_dir_, ignored);
  }
  const std::lock_guard lock(mu_);
  exit_ = info;
  return info;
}

}  // namespace

std::vector<std::string> LaunchSpec::defaultInheritedEnv() {
  return {"PATH",     "HOME",       "USER",          "LOGNAME",      "LANG",       "LANGUAGE",
          "LC_*",     "TZ",         "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY",
          "NO_PROXY", "http_proxy", "https_proxy",   "no_proxy"};
}

absl::StatusOr<std::unique_ptr<PluginClient>> PluginClient::start(const LaunchSpec& spec,
                                                                  Options options) {
  auto client = std::make_unique<PluginClientImpl>(std::move(options), spec.command);
  if (absl::Status status = client->launch(spec); !status.ok()) {
    client->kill();
    return status;
  }
  return client;
}

}  // namespace tributary::plugin_host
