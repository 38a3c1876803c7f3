#pragma once

#include "tributary/common/log.h"
#include "tributary/plugin_host/handshake.h"
#include "tributary/sandbox/sandbox.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "connector.pb.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

/// The host side of HashiCorp go-plugin in gRPC mode: launches a connector process, speaks the
/// handshake, broker, stdio and controller protocols, and runs `proto.Connector/Sync` while
/// serving `proto.CallbackHandler` to the connector through the broker.
namespace tributary::plugin_host {

/// How to start a connector: c1's rule, `/bin/sh -c <command>` in the connector's directory.
struct LaunchSpec {
  std::string command;
  std::filesystem::path working_dir;
  /// The connector's own environment; wins over inherited variables, loses to go-plugin's.
  std::map<std::string, std::string> env;
  /// Names of host variables passed through (a trailing `*` matches a prefix). The rest of the
  /// host's environment (credentials, tokens) never reaches the connector.
  std::vector<std::string> inherited_env = defaultInheritedEnv();
  /// Confines the process (lib/sandbox). The host adds read-write access to its private
  /// directory (TMPDIR, the go-plugin sockets) and, with a user, hands that directory and the
  /// callback sockets to that user. Unset: the process runs unconfined.
  std::optional<sandbox::Policy> sandbox;

  static std::vector<std::string> defaultInheritedEnv();
};

/// Whether an environment variable's name looks like it holds a credential: AWS_*, GOOGLE_*,
/// GCP_*, AZURE_*, ..., *_TOKEN, *_KEY, *_SECRET*, *_PASSWORD, *_CREDENTIALS, ... (any case;
/// TRIBUTARY_* never: those are the CLI's own).
bool looksLikeCredential(std::string_view name);

/// Names of this process's variables that look like credentials and that `spec` does not pass to
/// the connector (not matched by inherited_env, not set by env). Names only, sorted.
std::vector<std::string> droppedCredentialVariables(const LaunchSpec& spec);

/// Logs droppedCredentialVariables(spec) at info level (names only, never values) with how to
/// pass them instead, once per process: the first call that finds any logs, later calls do
/// nothing. Returns true when it logged. PluginClient::start calls it.
bool noteDroppedCredentials(const LaunchSpec& spec, const log::Logger& logger);

struct Options {
  HandshakeConfig handshake;
  /// From process start to the handshake line (go-plugin's default is one minute).
  std::chrono::milliseconds start_timeout{std::chrono::seconds(60)};
  /// How long the process gets to exit after the Shutdown call before SIGKILL.
  std::chrono::milliseconds shutdown_grace{std::chrono::seconds(2)};
  /// Encrypt and authenticate both directions with throwaway P-521 certificates (go-plugin's
  /// AutoMTLS).
  bool auto_mtls = false;
  /// Largest accepted Upsert page (encoded bytes). A larger page fails that Upsert with
  /// RESOURCE_EXHAUSTED and fails the Sync even if the connector reports success.
  std::size_t max_page_bytes = 64U << 20U;
  /// Call grpc.health.v1 Check("plugin") after connecting; Unimplemented is tolerated.
  bool health_check = true;
  /// Plugin stderr lines logged per second before the rest are counted and suppressed.
  int max_log_lines_per_second = 200;
  log::Logger logger{"plugin-host"};
};

/// Receives the pages of one Sync. Called on the callback server's worker thread (one per Sync),
/// one call at a time and in the order the calls arrived; the server's locks are not held, so a
/// sink may take as long as a database transaction takes. The connector's Upsert is acknowledged
/// only after onPage returns OK, so a sink that commits the page before returning gets end-to-end
/// back-pressure and "acknowledged means stored".
class PageSink {
 public:
  virtual ~PageSink() = default;
  /// A non-OK status fails the connector's Upsert with the same code and message and marks the
  /// Sync failed.
  virtual absl::Status onPage(const proto::SyncResponse& page) = 0;
  /// The connector's Clean callback.
  virtual absl::Status onClean() = 0;
};

/// A call of the connector's that the callback server answered with an error.
struct RefusedCall {
  std::string method;   ///< Full gRPC method name, e.g. "/proto.CallbackHandler/Upsert".
  absl::Status status;  ///< What the connector was answered.
};

struct SyncResult {
  std::string metadata;  ///< EndSync.metadata as the connector returned it.
  std::uint64_t pages = 0;
  std::uint64_t objects = 0;
  std::uint64_t bytes = 0;  ///< Encoded page bytes received.
  std::uint64_t cleans = 0;
};

/// What the host saw of the connector besides results: for diagnostics and the conformance kit
/// (`tributary connector test`). Read it after kill() for final stdout counts.
struct Observations {
  /// grpc.health.v1 Check("plugin") at start; Unimplemented when the connector serves no health
  /// service; unset when Options::health_check is off.
  std::optional<absl::Status> health_at_start;
  /// Bytes the connector wrote to its stdout after the handshake line (discarded by the host; a
  /// go-plugin plugin must never write there).
  std::uint64_t stdout_bytes_after_handshake = 0;
  /// The last Sync: the status the connector itself returned (before the host's verdict, which
  /// also fails the Sync for refused pages); unset before the first Sync or when the call never
  /// completed (timeout, cancellation).
  std::optional<absl::Status> last_sync_connector_status;
  /// The last Sync: Upsert and Clean calls that reached the callback server (accepted or not).
  std::uint64_t last_sync_callback_calls = 0;
  /// The last Sync: pages refused (by the sink, the size limit, or after Sync returned).
  std::uint64_t last_sync_refused_pages = 0;
  /// The last Sync: every refused callback call (pages, Cleans, unknown methods, requests that
  /// do not parse), and the first of them.
  std::uint64_t last_sync_refused_calls = 0;
  std::optional<RefusedCall> last_sync_first_refusal;
};

/// How the connector process ended.
struct ExitInfo {
  bool exited = false;  ///< Reaped.
  int exit_code = -1;   ///< When it exited normally.
  int signal = 0;       ///< When it was killed by a signal.
  bool forced = false;  ///< We had to SIGKILL it.
  std::string describe() const;
};

/// One running connector process. Not copyable. `sync()` may be called repeatedly but not
/// concurrently; `kill()` may be called from any thread, also while a Sync runs (it cancels it).
///
/// Linux note: the child gets PR_SET_PDEATHSIG(SIGKILL), which fires when the *thread* that
/// called start() exits, so call start() from a thread that outlives the connector.
class PluginClient {
 public:
  /// Launches the connector, reads and validates its handshake, connects, opens the broker and
  /// stdio streams and (optionally) health-checks it. On error nothing is left running.
  static absl::StatusOr<std::unique_ptr<PluginClient>> start(const LaunchSpec& spec,
                                                             Options options);

  virtual ~PluginClient() = default;
  PluginClient(const PluginClient&) = delete;
  PluginClient& operator=(const PluginClient&) = delete;

  /// Runs `Sync(options)`, delivering pages to `sink`. Fails on timeout, on `stop` being
  /// requested, on a connector error, on a crash, or when the callback server refused any call
  /// (a page, a Clean, a method it does not have, a request that does not parse), whatever the
  /// connector returned.
  virtual absl::StatusOr<SyncResult> sync(const std::string& options, PageSink& sink,
                                          std::chrono::milliseconds timeout,
                                          std::stop_token stop = {}) = 0;

  /// grpc.health.v1 Check("plugin").
  virtual absl::Status ping() = 0;

  /// Shutdown → wait ≤ shutdown_grace → SIGKILL the process group → reap → remove sockets.
  /// Idempotent; returns how the process ended.
  virtual ExitInfo kill() = 0;

  [[nodiscard]] virtual int pid() const = 0;
  [[nodiscard]] virtual const HandshakeInfo& handshake() const = 0;
  /// Thread-safe snapshot.
  [[nodiscard]] virtual Observations observations() const = 0;

 protected:
  PluginClient() = default;
};

}  // namespace tributary::plugin_host
