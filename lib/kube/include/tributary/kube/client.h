#pragma once

// A generic Kubernetes REST client: any group/version/resource, objects as nlohmann::json.
//
// Errors: Kubernetes `Status` bodies become absl::Status with the verb, resource, namespace/name
// and the server's message (plus field causes for 422). The HTTP code maps to:
//   400 InvalidArgument · 401 Unauthenticated · 403 PermissionDenied · 404 NotFound ·
//   409 AlreadyExists (reason AlreadyExists) or Aborted (resourceVersion conflict: retry) ·
//   410 OutOfRange (Gone/Expired resourceVersion: relist) · 422 InvalidArgument ·
//   429 ResourceExhausted · 500/502/503 Unavailable · 504 DeadlineExceeded.
// The HTTP code and the Status reason travel as a payload: see httpCode() / statusReason().

#include "tributary/common/rfc3339.h"
#include "tributary/kube/config.h"
#include "tributary/kube/transport.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace tributary::kube {

using Json = nlohmann::json;

/// A resource type: where it lives in the REST API.
struct ResourceType {
  std::string group;  ///< "" for core
  std::string version;
  std::string resource;  ///< plural, lower case: "syncjobs"
  std::string kind;      ///< "SyncJob"
  bool namespaced = true;

  /// "tributary.dev/v1alpha1" or "v1".
  [[nodiscard]] std::string apiVersion() const;
  /// "syncjobs.tributary.dev" or "leases.coordination.k8s.io" or "secrets".
  [[nodiscard]] std::string qualifiedName() const;
};

namespace resources {
inline constexpr std::string_view kGroup = "tributary.dev";
inline constexpr std::string_view kVersion = "v1alpha1";
const ResourceType& connector();
const ResourceType& syncJob();
const ResourceType& syncRun();
const ResourceType& lease();       ///< coordination.k8s.io/v1
const ResourceType& event();       ///< core/v1 Event
const ResourceType& secret();      ///< core/v1 Secret
const ResourceType& configMap();   ///< core/v1 ConfigMap
const ResourceType& namespace_();  ///< core/v1 Namespace (cluster-scoped)
}  // namespace resources

// --- errors -----------------------------------------------------------------------------------

/// The HTTP status behind an error from the client; 0 when none (transport error, OK).
int httpCode(const absl::Status& status);
/// The Kubernetes Status reason ("Conflict", "AlreadyExists", "NotFound", "Expired"...).
std::string statusReason(const absl::Status& status);
/// A resourceVersion conflict (409 reason Conflict): re-read and retry.
bool isConflict(const absl::Status& status);
bool isNotFound(const absl::Status& status);
bool isAlreadyExists(const absl::Status& status);
/// 410 Gone / Expired resourceVersion: relist.
bool isGone(const absl::Status& status);

// --- object accessors -------------------------------------------------------------------------

/// metadata.* of an object; "" (or 0) when absent.
std::string nameOf(const Json& object);
std::string namespaceOf(const Json& object);
std::string uidOf(const Json& object);
std::string resourceVersionOf(const Json& object);
std::int64_t generationOf(const Json& object);
/// "namespace/name", or "name" for cluster-scoped objects (client-go's MetaNamespaceKeyFunc).
std::string keyOf(const Json& object);
std::string makeKey(std::string_view ns, std::string_view name);
/// Splits a key made by makeKey.
std::pair<std::string, std::string> splitKey(std::string_view key);

/// RFC 3339 timestamps (lib/common), here because every object carries some.
using rfc3339::formatMicroTime;
using rfc3339::formatTime;
using rfc3339::parseTime;

/**
 * metav1.Condition upsert into `conditions` (a JSON array, created if null): sets status, reason,
 * message, observedGeneration; lastTransitionTime changes only when status changes (like
 * apimachinery's meta.SetStatusCondition). Returns true if anything changed.
 */
bool setCondition(Json& conditions, std::string_view type, std::string_view status,
                  std::string_view reason, std::string_view message,
                  std::int64_t observed_generation,
                  std::chrono::system_clock::time_point now = std::chrono::system_clock::now());
/// The condition of `type` in `conditions`, or nullptr.
const Json* findCondition(const Json& conditions, std::string_view type);

// --- requests ---------------------------------------------------------------------------------

struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  /// Page size; 0 = no limit (listAll() defaults to 500).
  std::int64_t limit = 0;
  std::string continue_token;
  /// "" = most recent (quorum read); "0" = any (watch cache).
  std::string resource_version;
};

struct ListResult {
  std::vector<Json> items;
  std::string resource_version;
  std::string continue_token;
};

struct WatchOptions {
  std::string label_selector;
  std::string field_selector;
  std::string resource_version;
  bool allow_bookmarks = true;
  /// Server-side timeoutSeconds (the server ends the stream after it); 0 = server default.
  std::int64_t timeout_seconds = 0;
  /// Client idle timeout: no byte (not even a bookmark) for this long ends the watch with
  /// DeadlineExceeded. Zero: timeout_seconds + 30 s, or 5 min when timeout_seconds is 0.
  std::chrono::milliseconds idle_timeout{0};
};

struct WatchEvent {
  enum class Type { Added, Modified, Deleted, Bookmark, Error };
  Type type = Type::Added;
  Json object;
};
std::string_view watchEventTypeName(WatchEvent::Type type);

enum class PatchType {
  Merge,           ///< application/merge-patch+json (RFC 7386)
  JsonPatch,       ///< application/json-patch+json (RFC 6902)
  StrategicMerge,  ///< built-in types only
  Apply,           ///< server-side apply (application/apply-patch+yaml; JSON is valid YAML)
};

struct PatchOptions {
  /// "status" to patch the status subresource.
  std::string subresource;
  /// Required for Apply; recorded in managedFields otherwise.
  std::string field_manager;
  /// Apply only: take ownership of conflicting fields.
  bool force = false;
};

struct DeleteOptions {
  /// Preconditions: delete only this exact object/version (409 Conflict otherwise).
  std::string uid;
  std::string resource_version;
  /// "Background", "Foreground", "Orphan"; "" = server default.
  std::string propagation_policy;
  std::optional<std::int64_t> grace_period_seconds;
};

struct ClientOptions {
  /// The transport; nullptr = makeCppRestTransport(config).
  std::shared_ptr<Transport> transport;
  /// Called after every request with (verb, code) — e.g. for rest_client_requests_total. code is
  /// "<error>" when the transport failed.
  std::function<void(std::string_view method, std::string_view code)> on_request;
};

/// Thread-safe. Share one per process (std::shared_ptr).
class Client {
 public:
  static absl::StatusOr<std::shared_ptr<Client>> create(Config config, ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  [[nodiscard]] const Config& config() const { return config_; }
  [[nodiscard]] const std::string& defaultNamespace() const { return config_.default_namespace; }
  [[nodiscard]] Transport& transport() { return *transport_; }

  /// The REST path of a collection or an object; ns ignored for cluster-scoped types.
  static std::string path(const ResourceType& type, std::string_view ns, std::string_view name = {},
                          std::string_view subresource = {});

  absl::StatusOr<Json> get(const ResourceType& type, std::string_view ns, std::string_view name);
  /// One page.
  absl::StatusOr<ListResult> list(const ResourceType& type, std::string_view ns,
                                  const ListOptions& options = {});
  /// All pages (options.limit, default 500, per request). A 410 on a continue token restarts the
  /// list from the beginning once.
  absl::StatusOr<ListResult> listAll(const ResourceType& type, std::string_view ns,
                                     ListOptions options = {});
  /// Namespace from `ns`, else metadata.namespace, else the default namespace. apiVersion and kind
  /// are filled in when missing.
  absl::StatusOr<Json> create(const ResourceType& type, std::string_view ns, Json object);
  /// PUT; metadata.resourceVersion (if set) is the optimistic-concurrency precondition: a stale
  /// one gives Aborted (isConflict).
  absl::StatusOr<Json> update(const ResourceType& type, Json object);
  /// PUT .../status (status subresource; spec changes are ignored by the server).
  absl::StatusOr<Json> updateStatus(const ResourceType& type, Json object);
  absl::StatusOr<Json> patch(const ResourceType& type, std::string_view ns, std::string_view name,
                             PatchType patch_type, const Json& patch,
                             const PatchOptions& options = {});
  /// DELETE. NotFound is an error (callers that do not care check isNotFound).
  absl::Status remove(const ResourceType& type, std::string_view ns, std::string_view name,
                      const DeleteOptions& options = {});

  /**
   * A watch stream, blocking until it ends. `handler` gets each event in order; returning false
   * ends the watch (OK). An ERROR event is delivered to the handler like the others (object is a
   * Status). Returns OK when the server ended the stream (timeout_seconds) or the handler stopped
   * it; OutOfRange (isGone) for HTTP 410; DeadlineExceeded when idle; Cancelled on `stop`.
   */
  absl::Status watch(const ResourceType& type, std::string_view ns, const WatchOptions& options,
                     const std::function<bool(WatchEvent&&)>& handler, std::stop_token stop = {});

  /// A request with authentication added; the response's HTTP status is not interpreted.
  absl::StatusOr<HttpResponse> raw(HttpRequest request, std::stop_token stop = {});

  /// A request with authentication and error mapping (non-2xx → Status error naming `verb`, the
  /// type, ns/name); the parsed JSON body on success. For requests the methods above do not
  /// cover, or with a custom HttpRequest::timeout.
  absl::StatusOr<Json> send(std::string_view verb, const ResourceType& type, std::string_view ns,
                            std::string_view name, HttpRequest request, std::stop_token stop = {});

 private:
  Client(Config config, ClientOptions options);
  absl::Status addAuth(HttpRequest& request, bool force_reload);
  void report(std::string_view method, std::string_view code) const;

  Config config_;
  std::shared_ptr<Transport> transport_;
  std::function<void(std::string_view, std::string_view)> on_request_;

  std::mutex token_mu_;
  std::string cached_token_;
  std::chrono::steady_clock::time_point token_read_at_{};
};

/**
 * client-go's retry.RetryOnConflict with its DefaultRetry: calls `fn` (which must re-read the
 * object, apply its change and write it) again while it fails with a resourceVersion conflict,
 * up to `attempts` times, sleeping ~10 ms (±10 %) between tries. Returns the last status.
 */
absl::Status retryOnConflict(const std::function<absl::Status()>& fn, int attempts = 5);

// --- helpers for specific resources ------------------------------------------------------------

/// Reads one key of a Secret (base64-decoded `data[key]`). NotFound names the secret or the key
/// (and lists the keys that do exist — names only, never values).
absl::StatusOr<std::string> readSecretKey(Client& client, std::string_view ns,
                                          std::string_view name, std::string_view key);

/// Every key of a Secret, base64-decoded. NotFound when the Secret does not exist.
absl::StatusOr<std::map<std::string, std::string>> readSecretData(Client& client,
                                                                  std::string_view ns,
                                                                  std::string_view name);

/// An object reference for Event.involvedObject / ownerReferences from a full object.
Json objectReference(const Json& object);

/// A controller owner reference (controller: true, blockOwnerDeletion: true) to `owner`.
Json controllerOwnerReference(const Json& owner);

/**
 * Records core/v1 Events like client-go's EventRecorder (simplified): the first occurrence
 * creates an Event (involvedObject, reason, message, type Normal|Warning, source.component,
 * count 1, first/lastTimestamp); a repeat of the same (object uid, type, reason, message) within
 * 10 minutes patches count and lastTimestamp of that Event instead. Never logs secrets.
 * Thread-safe.
 *
 * record() writes at once and returns the outcome. post() is what reconcilers use: like
 * client-go's broadcaster it hands the event to one background writer and returns immediately,
 * so events never add API round trips to a reconcile; when more than `max_queued` events wait
 * (the API server is slow or away), new ones are dropped and counted.
 */
class EventRecorder {
 public:
  EventRecorder(std::shared_ptr<Client> client, std::string component,
                std::string host = std::string(), std::size_t max_queued = 1000);
  /// Stops the background writer; events still queued are dropped (call flush() first to wait).
  ~EventRecorder();
  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;

  absl::Status normal(const Json& object, std::string_view reason, std::string_view message) {
    return record(object, "Normal", reason, message);
  }
  absl::Status warning(const Json& object, std::string_view reason, std::string_view message) {
    return record(object, "Warning", reason, message);
  }
  absl::Status record(const Json& object, std::string_view type, std::string_view reason,
                      std::string_view message);

  /// Queues the event for the background writer; false when it was dropped (queue full).
  /// Write failures are passed to `on_error` (set before the first post()).
  bool post(const Json& object, std::string_view type, std::string_view reason,
            std::string_view message);
  void setErrorHandler(std::function<void(std::string_view reason, const absl::Status&)> on_error);
  /// Waits until every posted event was written (or failed); false on timeout.
  bool flush(std::chrono::milliseconds timeout);
  /// Events dropped because the queue was full.
  [[nodiscard]] std::uint64_t dropped() const { return dropped_.load(); }

 private:
  struct Seen {
    std::string ns;
    std::string name;
    std::int64_t count = 0;
    std::chrono::steady_clock::time_point last;
  };
  struct Posted {
    Json reference;  // objectReference(object)
    std::string type;
    std::string reason;
    std::string message;
  };
  absl::Status write(const Json& reference, std::string_view type, std::string_view reason,
                     std::string_view message);
  void writerLoop(const std::stop_token& stop);

  std::shared_ptr<Client> client_;
  std::string component_;
  std::string host_;
  std::size_t max_queued_;
  std::mutex mu_;  // guards seen_, last_prune_, posted_, writing_, on_error_
  std::map<std::string, Seen> seen_;
  std::chrono::steady_clock::time_point last_prune_;
  std::vector<Posted> posted_;
  bool writing_ = false;
  std::function<void(std::string_view, const absl::Status&)> on_error_;
  std::condition_variable_any posted_cv_;
  std::condition_variable_any idle_cv_;
  std::atomic<std::uint64_t> sequence_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::jthread writer_;  // last: stopped and joined before the members it uses go away
};

}  // namespace tributary::kube
