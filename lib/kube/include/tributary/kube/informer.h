#pragma once

// Informer: list + watch one resource type into a local cache and tell handlers what changed.
//
//   list (pages of 500, resourceVersion "" = a consistent read) → replace the cache, emitting the
//   diff (adds, updates, deletes with final state unknown) → watch from the list's resourceVersion
//   (allowWatchBookmarks, random timeoutSeconds in [min, max], client idle timeout) → on the
//   server's end of stream: watch again from the last resourceVersion seen; on errors: back off
//   (exponential with jitter) and watch again; on 410 Gone (HTTP or ERROR event) or repeated
//   errors: list again.
//
// Exactly-once: the cache is the single source of what handlers were told. A watch event whose
// resourceVersion equals the cached one is dropped; a relist emits only the difference. So every
// change that reaches the cache is delivered once, in order, on one dispatch thread (like
// client-go, the cache may already be newer than the event a handler is handling).

#include "tributary/common/log.h"
#include "tributary/kube/client.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace tributary::kube {

using ObjectPtr = std::shared_ptr<const Json>;

/// One change of the cache.
struct Delta {
  enum class Type { Added, Updated, Deleted };
  Type type = Type::Added;
  std::string key;
  ObjectPtr old_object;  ///< Updated, Deleted
  ObjectPtr object;      ///< Added, Updated; Deleted: the last known state
  /// Deleted only: the deletion was inferred by a relist (the object may have changed between
  /// the last event and its deletion), like client-go's DeletedFinalStateUnknown.
  bool final_state_unknown = false;
};

/// Thread-safe cache keyed by "namespace/name" (see keyOf). Objects are immutable once stored.
class Store {
 public:
  [[nodiscard]] ObjectPtr get(std::string_view key) const;
  [[nodiscard]] std::vector<ObjectPtr> list() const;
  [[nodiscard]] std::vector<std::string> keys() const;
  [[nodiscard]] std::size_t size() const;

  /// Applies a watch event (Added/Modified/Deleted) and returns the delta, or nullopt when it
  /// changes nothing (same resourceVersion as cached, or delete of an unknown key).
  std::optional<Delta> apply(WatchEvent::Type type, Json object);
  /// Replaces the content with a list result; returns the difference (adds and updates in list
  /// order, then deletes with final_state_unknown in key order). With `ns`, only that namespace's
  /// objects are replaced (an informer over several namespaces lists each on its own).
  std::vector<Delta> replace(std::vector<Json> items, std::optional<std::string_view> ns = {});

 private:
  mutable std::mutex mu_;
  std::map<std::string, ObjectPtr, std::less<>> items_;
};

struct EventHandler {
  /// `initial`: part of the first list (before hasSynced()).
  std::function<void(const Json& object, bool initial)> on_add;
  std::function<void(const Json& old_object, const Json& new_object)> on_update;
  std::function<void(const Json& last_known, bool final_state_unknown)> on_delete;
};

/// Removes metadata.managedFields, usually the largest part of an object and of no use to a
/// controller. Safe for objects later sent back with update(): the API server keeps the stored
/// managedFields when a request omits them.
void stripManagedFields(Json& object);

/**
 * Objects this process just wrote, until its informer catches up (client-go's MutationCache).
 * A reconcile that runs before the watch event of its own write arrives would otherwise act on
 * the previous version: repeat the write, conflict, or miss an object it just created.
 *
 * remember() after a write that was based on version `previous_rv` ("" for a create); a write
 * based on the version remembered last extends the chain (a patch then a status update).
 * newest() returns the last written object while the cache holds a version of the chain (or
 * nothing, for a create), else the cache's object, dropping the entry. Entries older than `ttl`
 * are not trusted (a relist may have skipped events). Thread-safe.
 */
class MutationCache {
 public:
  explicit MutationCache(std::chrono::milliseconds ttl = std::chrono::minutes(1)) : ttl_(ttl) {}
  void remember(ObjectPtr written, std::string previous_rv);
  [[nodiscard]] ObjectPtr newest(const std::string& key, ObjectPtr cached);
  /// Drops the entry once the informer delivers a version outside the chain (handlers call this
  /// so that entries of objects that are never read again do not linger); nullptr = deleted.
  void observe(const std::string& key, const Json* cached);
  [[nodiscard]] std::size_t size() const;

 private:
  struct Entry {
    std::vector<std::string> behind;  // resourceVersions older than `written` ("" = absent)
    ObjectPtr written;
    std::chrono::steady_clock::time_point at;
  };
  std::chrono::milliseconds ttl_;
  mutable std::mutex mu_;
  std::map<std::string, Entry, std::less<>> entries_;
  bool behind(const Entry& e, const Json* cached) const;
};

/// Exponential backoff with full jitter: the n-th delay is uniform in [d/2, d] where
/// d = min(initial * factor^n, max).
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, double factor = 2.0,
          std::uint64_t seed = std::random_device{}());
  std::chrono::milliseconds next();
  void reset() { attempt_ = 0; }
  [[nodiscard]] int attempts() const { return attempt_; }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  double factor_;
  int attempt_ = 0;
  std::mt19937_64 rng_;
};

/// A `--namespace` flag's value: namespaces separated by commas ("" = all namespaces: an empty
/// list). Each must be a DNS-1123 label; the error names the bad one.
absl::StatusOr<std::vector<std::string>> parseNamespaceList(std::string_view comma_separated);

struct InformerOptions {
  ResourceType type;
  /// Namespaces to watch, each with its own list and watch into the one cache; empty or {""} =
  /// all namespaces (one cluster-wide list and watch).
  std::vector<std::string> namespaces;
  std::string label_selector;
  std::string field_selector;
  std::int64_t page_size = 500;
  /// timeoutSeconds of each watch: random in [min, max] (client-go: 5–10 min).
  std::chrono::seconds min_watch_timeout{300};
  std::chrono::seconds max_watch_timeout{600};
  /// No byte (events or bookmarks, which the server sends about once a minute) for this long →
  /// drop the connection and watch again from the last resourceVersion.
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(150)};
  /// Reconnect backoff (kube-rs default 0.8 s → 30 s).
  std::chrono::milliseconds backoff_initial{800};
  std::chrono::milliseconds backoff_max{std::chrono::seconds(30)};
  /// Relist after this many consecutive failed watches (besides 410, which relists at once).
  int relist_after_failures = 5;
  /// Periodic on_update(obj, obj) for every cached object; 0 = never (controller-runtime: 10 h).
  std::chrono::milliseconds resync_period{0};
  /// Applied to every listed or watched object before it is cached (client-go's SetTransform),
  /// e.g. stripManagedFields: what a controller never reads need not stay in memory.
  std::function<void(Json&)> transform;
  std::optional<log::Logger> logger;
};

/// Counters for tests and metrics.
struct InformerStats {
  std::uint64_t lists = 0;         ///< completed lists
  std::uint64_t relists_gone = 0;  ///< lists caused by 410
  std::uint64_t watches = 0;       ///< watch requests started
  std::uint64_t watch_errors = 0;  ///< watches that ended with an error (incl. idle)
  std::uint64_t idle_timeouts = 0;
  std::uint64_t events = 0;  ///< deltas delivered to handlers
  std::uint64_t bookmarks = 0;
  /// The cache follows the server: the last list succeeded or the watch delivered an event or a
  /// bookmark, and no list or watch has failed since (false while the server is unreachable).
  bool in_sync = false;
};

class Informer {
 public:
  Informer(std::shared_ptr<Client> client, InformerOptions options);
  ~Informer();
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  /// Handlers must be added before start(). They run on the dispatch thread, one call at a time.
  void addEventHandler(EventHandler handler);
  /// Starts the reflector and dispatch threads. Once.
  void start();
  /// Stops both threads (pending notifications are dropped) and waits for them. Idempotent.
  void stop();

  /// True once the first list was delivered to the handlers.
  [[nodiscard]] bool hasSynced() const { return synced_.load(); }
  /// Waits for hasSynced(); false on timeout or stop.
  bool waitForSync(std::chrono::milliseconds timeout) const;

  [[nodiscard]] const Store& store() const { return store_; }
  [[nodiscard]] InformerStats stats() const;
  [[nodiscard]] const InformerOptions& options() const { return options_; }

 private:
  struct Notification {
    Delta delta;
    bool initial = false;
    bool synced_marker = false;
  };
  /// One namespace's list and watch (or the whole cluster's).
  struct Reflector {
    std::string ns;       // "" = all namespaces
    std::string last_rv;  // guarded by mu_
    bool listed_once = false;
    std::mt19937_64 rng{std::random_device{}()};
    std::jthread thread;
  };
  void reflectorLoop(const std::stop_token& stop, Reflector& r);
  absl::Status listAndReplace(const std::stop_token& stop, Reflector& r);
  void dispatchLoop(const std::stop_token& stop);
  void push(std::vector<Notification> batch);
  bool sleepFor(std::chrono::milliseconds d, const std::stop_token& stop);

  std::shared_ptr<Client> client_;
  InformerOptions options_;
  log::Logger log_;
  Store store_;
  std::vector<EventHandler> handlers_;

  mutable std::mutex mu_;  // guards the reflectors' last_rv, stats_, queue_, listed_, synced cv
  mutable std::condition_variable_any cv_;
  InformerStats stats_;
  std::deque<Notification> queue_;
  std::atomic<bool> synced_{false};
  std::size_t listed_ = 0;  // reflectors that completed their first list

  std::deque<Reflector> reflectors_;  // a deque: threads hold references to their element
  std::jthread dispatcher_;
  std::atomic<bool> started_{false};
};

}  // namespace tributary::kube
