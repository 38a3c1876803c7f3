#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "connector.pb.h"

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

/// The C++ connector SDK: write a `Connector`, call `serve()` from `main()`, and the process speaks
/// HashiCorp go-plugin's gRPC protocol (handshake, health, broker, controller, stdio, AutoMTLS) so
/// that any go-plugin host — tributary's agent, c1, or a Go program using go-plugin v1.x — can run
/// it. See sdk/cpp/README.md for a complete example.
///
/// Errors are reported as absl::Status; no exception ever leaves the SDK (an exception thrown by
/// `Connector::sync` is caught and turned into an INTERNAL error for the host).
namespace tributary::sdk {

/// The host's CallbackHandler for one `Connector::sync` call (go-plugin broker service).
///
/// The first call dials the broker id the host sent with the Sync request (waiting up to
/// `ServeOptions::broker_dial_timeout` for the host's ConnInfo). Every call is a unary gRPC call
/// whose result is checked: a page the host did not acknowledge returns a non-OK status carrying
/// the host's gRPC code and message, with the page number and size as context. A page that returned
/// OK is committed on the host side (tributary hosts acknowledge only after commit).
///
/// Thread-safe: pages may be sent from several threads (they are independent unary calls).
/// Lifetime: the reference passed to `sync()` is valid until `sync()` returns; use `share()` to
/// keep it longer. Calls made after `sync()` returned are still sent to the host, which normally
/// has stopped its callback server by then, so they fail.
class Callback {
 public:
  virtual ~Callback() = default;

  /// Sends one page (one CallbackHandler.Upsert call) with these objects.
  virtual absl::Status upsert(const std::vector<proto::DataObject>& objects) = 0;

  /// Sends one page given as a ready SyncResponse.
  virtual absl::Status upsert(const proto::SyncResponse& page) = 0;

  /// Calls CallbackHandler.Clean once (the host's meaning of Clean is documented by the host).
  virtual absl::Status clean() = 0;

  /// True once the host cancelled the Sync call (deadline, host shutdown) or `sync()` returned.
  /// Long-running connectors should poll it between pages and stop early.
  [[nodiscard]] virtual bool cancelled() const = 0;

  /// An owning handle on this callback, valid after `sync()` returned and after `serve()` returned
  /// (calls then fail cleanly). Rarely needed; meant for background work and tests.
  virtual std::shared_ptr<Callback> share() = 0;
};

/// What a connector implements.
class Connector {
 public:
  virtual ~Connector() = default;

  /// Runs one sync. `options` is the host's options string (JSON for c1/tributary connectors).
  /// Send pages through `callback`; return the EndSync metadata (a string, JSON by convention) on
  /// success, or a status whose code and message are reported to the host as the Sync RPC's error.
  ///
  /// Called on a gRPC server thread; if a host makes concurrent Sync calls on one process (c1 and
  /// tributary do not), calls run concurrently.
  virtual absl::StatusOr<std::string> sync(const std::string& options, Callback& callback) = 0;
};

/// Log levels, as hclog names them.
enum class LogLevel { Trace = 0, Debug = 1, Info = 2, Warn = 3, Error = 4 };

/// Extra key/value pairs for a log line (values are written as JSON strings).
using LogFields = std::vector<std::pair<std::string, std::string>>;

/// Writes one hclog-compatible JSON line to stderr, which go-plugin hosts parse and re-log:
/// `{"@level":"info","@message":"...","@module":"<log_name>","@timestamp":"2026-01-02T03:04:05.000000Z",
/// "key":"value"}`. Thread-safe. Invalid UTF-8 is replaced, never thrown on. Before `serve()` the
/// module is "connector" and the minimum level Info; `serve()` applies `ServeOptions`.
void log(LogLevel level, std::string_view message, const LogFields& fields = {});

/// How `serve()` presents itself to the host.
struct ServeOptions {
  /// go-plugin handshake cookie; the host must set this environment variable to this value.
  std::string cookie_key = "BASIC_PLUGIN";
  std::string cookie_value = "hello";
  /// Application protocol versions this connector speaks; the highest one the host also lists in
  /// PLUGIN_PROTOCOL_VERSIONS is chosen (otherwise the lowest, and the host decides).
  std::vector<int> protocol_versions = {1};
  /// Largest request the plugin's gRPC server accepts (Sync requests; grpc's default is 4 MiB).
  int max_receive_message_bytes = 64 * 1024 * 1024;
  /// How long a callback's first call waits for the host's broker ConnInfo (go-plugin: 5 s).
  std::chrono::milliseconds broker_dial_timeout{10000};
  /// `@module` of every log line.
  std::string log_name = "connector";
  /// Lines below this level are not written. The environment variable TRIBUTARY_LOG_LEVEL
  /// (trace|debug|info|warn|error) overrides it.
  LogLevel log_level = LogLevel::Info;
};

/// Serves `connector` as a go-plugin gRPC plugin until the host calls GRPCController.Shutdown, and
/// returns the process exit code: 0 after a Shutdown, 1 when the process was not started by a
/// go-plugin host (wrong cookie; go-plugin's message is printed on stderr) or could not start its
/// server. Call it once, from main(): `return tributary::sdk::serve(my_connector);`.
///
/// Side effects, as go-plugin requires: prints the handshake line as the first and only bytes on
/// fd 1, then points fd 1 at stderr (anything the process writes to stdout later goes to stderr);
/// ignores SIGINT; removes the socket file on SIGTERM (unless the program handles SIGTERM itself);
/// routes gRPC's and protobuf's own log output through `log()`.
int serve(Connector& connector, const ServeOptions& options = {});

}  // namespace tributary::sdk
