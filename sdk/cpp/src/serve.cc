// serve(): the plugin side of go-plugin's start-up and shutdown (go-plugin §1.3, §2, §8.2, §10.4,
// checklist §16.2).
#include "tributary/mtls/mtls.h"
#include "tributary/sdk/connector.h"

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "broker.h"
#include "hclog.h"
#include "plugin_env.h"
#include "services.h"

#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <poll.h>
#include <signal.h>
#include <thread>
#include <unistd.h>

namespace tributary::sdk {
namespace {

// After Shutdown, in-flight calls get this long to finish before they are cancelled.
constexpr auto kShutdownGrace = std::chrono::milliseconds(250);
// If a sync handler still has not returned this long after Shutdown, the process exits anyway
// (as a Go plugin does: its Serve returns and main exits under running goroutines).
constexpr auto kShutdownHardLimit = std::chrono::milliseconds(1000);
// How often serve() checks whether the host process is still there.
constexpr auto kHostWatchInterval = std::chrono::milliseconds(250);

const char* envOrNull(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v;
}

void ignoreInterrupt(int /*signo*/) {}

// go-plugin plugins ignore SIGINT (a terminal's Ctrl-C reaches the whole process group; the host
// decides when its plugins stop). A no-op handler, unlike SIG_IGN, is not inherited across exec.
void ignoreSigint() {
  struct sigaction action {};
  action.sa_handler = &ignoreInterrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
}

// The socket path, for the SIGTERM handler (a plain buffer: only async-signal-safe reads).
char g_socket_path[sizeof(sockaddr_un{}.sun_path)] = {};

void unlinkSocketAndDie(int signo) {
  if (g_socket_path[0] != '\0') {
    ::unlink(g_socket_path);
  }
  ::signal(signo, SIG_DFL);
  ::raise(signo);  // Delivered when this handler returns: the default action ends the process.
}

// SIGTERM's default action would leave the socket file behind; remove it first. Only when the
// program has not installed a SIGTERM handler of its own.
void unlinkSocketOnSigterm(const std::string& path) {
  if (path.size() >= sizeof(g_socket_path)) {
    return;
  }
  struct sigaction current {};
  if (sigaction(SIGTERM, nullptr, &current) != 0 || current.sa_handler != SIG_DFL) {
    return;
  }
  std::memcpy(g_socket_path, path.c_str(), path.size() + 1);
  struct sigaction action {};
  action.sa_handler = &unlinkSocketAndDie;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
}

void writeStderr(std::string_view text) { (void)internal::writeAll(2, text); }

LogLevel logLevelFromEnv(LogLevel fallback) {
  const char* env = std::getenv("TRIBUTARY_LOG_LEVEL");
  if (env == nullptr) {
    return fallback;
  }
  const std::string_view v(env);
  if (v == "trace") {
    return LogLevel::Trace;
  }
  if (v == "debug") {
    return LogLevel::Debug;
  }
  if (v == "info") {
    return LogLevel::Info;
  }
  if (v == "warn") {
    return LogLevel::Warn;
  }
  if (v == "error") {
    return LogLevel::Error;
  }
  return fallback;
}

// Notices that the host died without calling Shutdown (go-plugin plugins die of SIGPIPE then).
// Two signs: our parent changed (we were re-parented), or the read end of our stderr pipe, held by
// the host, was closed (POLLERR on the write end; also works through a `sh -c` wrapper).
class HostWatch {
 public:
  explicit HostWatch(pid_t parent) : parent_(parent) {
    struct stat st {};
    stderr_is_pipe_ = ::fstat(2, &st) == 0 && S_ISFIFO(st.st_mode);
  }

  [[nodiscard]] bool hostGone() const {
    if (parent_ != 1 && ::getppid() != parent_) {
      return true;
    }
    if (stderr_is_pipe_) {
      struct pollfd pfd {};
      pfd.fd = 2;
      pfd.events = 0;  // POLLERR and POLLHUP are always reported.
      if (::poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLERR | POLLHUP)) != 0) {
        return true;
      }
    }
    return false;
  }

 private:
  pid_t parent_;
  bool stderr_is_pipe_ = false;
};

struct AutoMtls {
  std::shared_ptr<grpc::ServerCredentials> server_creds;
  internal::BrokerTls broker_tls;
  std::string cert_field;  // Handshake field 6.
};

absl::StatusOr<AutoMtls> setUpAutoMtls(const std::string& host_cert_pem) {
  if (host_cert_pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return absl::InvalidArgumentError("PLUGIN_CLIENT_CERT holds no PEM certificate");
  }
  auto cert = mtls::generateSelfSigned();
  if (!cert.ok()) {
    return cert.status();
  }
  AutoMtls out;
  grpc::SslServerCredentialsOptions opts(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  opts.pem_root_certs = host_cert_pem;
  opts.pem_key_cert_pairs.push_back({cert->key_pem, cert->cert_pem});
  out.server_creds = grpc::SslServerCredentials(opts);
  out.broker_tls = {host_cert_pem, cert->cert_pem, cert->key_pem};
  out.cert_field = mtls::base64RawEncode(cert->cert_der);
  return out;
}

}  // namespace

int serve(Connector& connector, const ServeOptions& options) {
  const pid_t parent = ::getppid();  // Before anything else: the host may die during start-up.
  ignoreSigint();
  internal::configureLog(options.log_name, logLevelFromEnv(options.log_level));

  // 1. Cookie (go-plugin's exact messages and exit status).
  if (options.cookie_key.empty() || options.cookie_value.empty()) {
    writeStderr(internal::kMisconfiguredMessage);
    return 1;
  }
  const char* cookie = envOrNull(options.cookie_key);
  if (cookie == nullptr || options.cookie_value != cookie) {
    writeStderr(internal::kNotAPluginMessage);
    return 1;
  }
  internal::routeLibraryLogs();

  // 2. App protocol version.
  std::vector<std::string> invalid_versions;
  const char* host_versions = envOrNull("PLUGIN_PROTOCOL_VERSIONS");
  const int version = internal::negotiateVersion(
      options.protocol_versions, host_versions != nullptr ? host_versions : "", &invalid_versions);
  for (const auto& v : invalid_versions) {
    log(LogLevel::Warn, "host sent an invalid plugin protocol version", {{"version", v}});
  }
  if (const char* mux = envOrNull("PLUGIN_MULTIPLEX_GRPC"); mux != nullptr && *mux != '\0') {
    log(LogLevel::Warn,
        "the host asked for a multiplexed broker (PLUGIN_MULTIPLEX_GRPC), which this SDK does not "
        "implement; go-plugin hosts will refuse this plugin unless multiplexing is off");
  }

  // 3. AutoMTLS when the host gave us its certificate.
  std::optional<AutoMtls> tls;
  if (const char* host_cert = envOrNull("PLUGIN_CLIENT_CERT");
      host_cert != nullptr && *host_cert != '\0') {
    auto set_up = setUpAutoMtls(host_cert);
    if (!set_up.ok()) {
      log(LogLevel::Error, "AutoMTLS set-up failed", {{"error", set_up.status().ToString()}});
      return 1;
    }
    tls = *std::move(set_up);
  }

  // 4. The listener: a fresh Unix socket path.
  const std::string dir = internal::socketDir();
  auto socket_path = internal::reserveSocketPath(dir);
  if (!socket_path.ok()) {
    log(LogLevel::Error, "cannot choose a socket path",
        {{"error", socket_path.status().ToString()}});
    return 1;
  }
  const std::string path = *socket_path;
  unlinkSocketOnSigterm(path);

  // 5. The server and its services. One gRPC library reference is held for the life of the
  // process and never released: the last release tears gRPC down and joins its poller threads,
  // which can sit for seconds on a timer (~10 s measured), so a plugin told to shut down would be
  // killed by its host (go-plugin waits 2 s) instead of exiting. A Go plugin likewise exits
  // without tearing its gRPC server's goroutines down.
  static const bool kGrpcHeld = [] {
    grpc_init();
    return true;
  }();
  (void)kGrpcHeld;
  internal::ShutdownSignal shutdown;
  auto broker = std::make_shared<internal::Broker>(
      tls.has_value() ? std::optional<internal::BrokerTls>(tls->broker_tls) : std::nullopt,
      options.broker_dial_timeout);
  internal::ConnectorService connector_service(connector, broker);
  internal::BrokerService broker_service(broker);
  internal::ControllerService controller_service(shutdown);
  internal::StdioService stdio_service(shutdown);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + path,
                           tls.has_value() ? tls->server_creds : grpc::InsecureServerCredentials());
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.SetMaxSendMessageSize(-1);
  builder.RegisterService(&connector_service);
  builder.RegisterService(&broker_service);
  builder.RegisterService(&controller_service);
  builder.RegisterService(&stdio_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    log(LogLevel::Error, "cannot start the gRPC server", {{"address", path}});
    ::unlink(path.c_str());
    return 1;
  }
  if (grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService()) {
    health->SetServingStatus("plugin", true);
    health->SetServingStatus("", true);
  }
  if (const char* group = envOrNull("PLUGIN_UNIX_SOCKET_GROUP"); group != nullptr && *group) {
    if (auto status = internal::makeGroupWritable(path, group); !status.ok()) {
      log(LogLevel::Error, "cannot make the plugin socket group-writable",
          {{"error", status.ToString()}});
      server->Shutdown();
      ::unlink(path.c_str());
      return 1;
    }
  }
  log(LogLevel::Debug, "plugin address", {{"address", path}, {"network", "unix"}});

  // 6. The handshake: the first and only bytes on fd 1, in one write. Anything the program had
  // buffered in stdio is flushed first so it cannot follow the line later.
  std::fflush(stdout);
  const std::string line =
      internal::formatHandshake(version, "unix", path, tls.has_value() ? tls->cert_field : "");
  if (auto status = internal::writeAll(1, line); !status.ok()) {
    log(LogLevel::Error, "cannot write the handshake line", {{"error", status.ToString()}});
    server->Shutdown();
    ::unlink(path.c_str());
    return 1;
  }
  // From here on fd 1 is stderr: nothing can reach the host's stdout pipe again.
  if (::dup2(2, 1) < 0) {
    log(LogLevel::Warn, "cannot redirect stdout to stderr", {{"errno", std::to_string(errno)}});
  }

  // 7. Serve until GRPCController.Shutdown, or until the host process is gone.
  const HostWatch host_watch(parent);
  bool host_gone = false;
  while (!shutdown.waitFor(kHostWatchInterval)) {
    if (host_watch.hostGone()) {
      // stderr may be a pipe nobody reads any more: fail writes with EPIPE, do not die of SIGPIPE
      // before the socket is removed.
      ::signal(SIGPIPE, SIG_IGN);
      log(LogLevel::Error, "the host process is gone without a Shutdown; exiting");
      host_gone = true;
      shutdown.request();  // Ends the open StreamStdio calls at once.
      break;
    }
  }
  const int exit_code = host_gone ? 1 : 0;
  broker->close();
  log(LogLevel::Debug, "plugin shutting down");
  absl::Notification stopped;
  std::thread stopper([&server, &stopped] {
    server->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
    server->Wait();
    stopped.Notify();
  });
  if (!stopped.WaitForNotificationWithTimeout(absl::FromChrono(kShutdownHardLimit))) {
    log(LogLevel::Warn, "a sync did not return after shutdown; exiting without waiting for it");
    ::unlink(path.c_str());
    std::fflush(nullptr);
    std::_Exit(exit_code);
  }
  stopper.join();
  server.reset();
  ::unlink(path.c_str());
  return exit_code;
}

}  // namespace tributary::sdk
