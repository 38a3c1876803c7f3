#pragma once

// The store: where connector pages land in PostgreSQL.
//
//   StoreOptions options;
//   options.dsn = "postgresql://…";
//   auto store = Store::open(options);                       // migrates under an advisory lock
//   RunSpec spec;                                             // ns, name, connector, holder, …
//   spec.fencing_token = lease->fencingToken();
//   spec.lease_id = lease->token();
//   spec.lease_check = [&] { return lease->check(); };
//   auto run = (*store)->beginRun(spec);
//   for (each page) TRIBUTARY_RETURN_IF_ERROR((*run)->writePage(page));  // committed on OK
//   auto summary = (*run)->finish(FinishRequest::succeeded(end_sync.metadata()));
//
// Guarantees (README.md has the details and the reasons):
//  - writePage() commits the whole page in one transaction or nothing; OK means committed.
//  - Every write is fenced: a writer whose fencing token is older than the newest one that began
//    a run for the source (or that lost the claim on its token) gets ABORTED and stores nothing.
//  - Upserts are idempotent by (source, remote_id); identical objects are not rewritten.
//  - Deletion policies run only in finish() of a successful run.
//  - Connection loss is retried with backoff up to StoreOptions::reconnect_deadline; a page whose
//    commit outcome was unknown is neither lost nor applied twice.

#include "tributary/common/log.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "connector.pb.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace tributary::store {

/// What finish() does with objects of the source that a successful run did not list.
enum class DeletionPolicy {
  Keep,    ///< Leave them live; flag them missing (missing_since).
  Mark,    ///< Soft delete: set deleted_at (and missing_since). The default.
  Delete,  ///< Remove the rows.
};
std::string_view deletionPolicyName(DeletionPolicy policy);
/// "Keep" / "Mark" / "Delete" (case-insensitive).
absl::StatusOr<DeletionPolicy> parseDeletionPolicy(std::string_view text);

/// How pages are sent to PostgreSQL. UnnestArrays is the measured winner (README.md,
/// "Choosing the write method"); CopyStaging is kept for the benchmark's comparison.
enum class WriteMethod { UnnestArrays, CopyStaging };

/// Which statement shape writes a page (README.md, "Writing pages"). Adaptive is the default
/// and the fastest; the fixed shapes exist for the benchmark's comparison.
enum class PageShape {
  Adaptive,       ///< Insert-first while pages are mostly new objects, classify-first otherwise.
  ClassifyFirst,  ///< One probe per object, then write only new and changed ones.
  InsertFirst,    ///< INSERT … ON CONFLICT DO NOTHING, then classify the rest.
};

struct StoreOptions {
  /// libpq connection string or URI.
  std::string dsn;
  /// Schema holding the store's tables and views; created if missing.
  std::string schema = "tributary";
  /// Per connection attempt.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(5)};
  /// How long an operation keeps reconnecting after the database went away before it fails
  /// with UNAVAILABLE (the run then fails).
  std::chrono::milliseconds reconnect_deadline{std::chrono::seconds(60)};
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{std::chrono::seconds(5)};
  /// Longest accepted remote_id in bytes (it is part of a btree key; PostgreSQL caps index
  /// entries at ~2.7 kB). Longer ones fail the page with INVALID_ARGUMENT.
  std::size_t max_remote_id_bytes = 2048;
  /// synchronous_commit for page transactions. On by default: an acknowledged page survives a
  /// database crash. Off trades that for throughput on slow disks (a re-run repairs the loss).
  bool synchronous_commit = true;
  WriteMethod write_method = WriteMethod::UnnestArrays;
  PageShape page_shape = PageShape::Adaptive;
  log::Logger logger{"store"};
};

/// Counters of one run, as recorded in the runs table.
struct RunCounters {
  std::int64_t pages = 0;
  std::int64_t objects_received = 0;  ///< Objects in pages, duplicates included.
  std::int64_t inserted = 0;          ///< New (source, remote_id).
  std::int64_t updated = 0;           ///< Content changed, or revived.
  std::int64_t unchanged = 0;         ///< Identical to the stored row: not rewritten.
  std::int64_t revived = 0;           ///< Was missing or soft-deleted, listed again.
  std::int64_t duplicates = 0;        ///< Earlier copies of a remote_id repeated in one page.
  std::int64_t missing = 0;           ///< Newly flagged missing by finish() (Keep).
  std::int64_t marked = 0;            ///< Soft-deleted by finish() (Mark).
  std::int64_t deleted = 0;           ///< Removed by finish() (Delete).
  std::int64_t cleans = 0;
  [[nodiscard]] std::int64_t upserted() const { return inserted + updated; }
};

/// Holds back a deletion that would remove too much of a source at once: the run still succeeds
/// but marks and deletes nothing (README.md, "Deletion guard"). An empty or truncated listing
/// from a broken connector then costs one held-back run instead of the source's data.
struct DeletionGuard {
  /// A successful Mark or Delete run that would remove more than this share (percent) of the
  /// source's live objects removes nothing. 100 leaves only the check below.
  int max_delete_percent = 50;
  /// The user confirmed this run's deletions: neither check applies. Otherwise a run that would
  /// remove every live object of the source (it listed none of them) is always held back.
  bool confirmed = false;
};

/// Everything a run needs to know about its caller.
struct RunSpec {
  std::string ns;         ///< SyncJob namespace.
  std::string name;       ///< SyncJob name.
  std::string connector;  ///< Connector name (informational).
  std::string holder;     ///< Who runs it: agent or host name (informational).
  /// The lock's fencing token. Must be greater than the source's high-water mark, or equal to it
  /// with the same lease_id (the same lease beginning another run).
  std::int64_t fencing_token = 0;
  /// Unique id of the lease (the lock's random token): two leases never share a claim.
  std::string lease_id;
  int attempt = 1;
  DeletionPolicy deletion_policy = DeletionPolicy::Mark;
  DeletionGuard deletion_guard;
  /// Optional; called inside every write transaction just before COMMIT. A non-OK status rolls
  /// the write back and is returned (e.g. the lease is lost or about to expire).
  std::function<absl::Status()> lease_check;
};

/// What the caller knows at the end of a run.
struct FinishRequest {
  /// True only if the connector's Sync returned OK and every page was committed.
  bool success = false;
  std::string connector_metadata;  ///< EndSync.metadata, stored verbatim.
  std::string error;               ///< Why it failed (when !success).

  static FinishRequest succeeded(std::string connector_metadata = "") {
    FinishRequest request;
    request.success = true;
    request.connector_metadata = std::move(connector_metadata);
    return request;
  }
  static FinishRequest failed(std::string error, std::string connector_metadata = "") {
    FinishRequest request;
    request.error = std::move(error);
    request.connector_metadata = std::move(connector_metadata);
    return request;
  }
};

struct RunSummary {
  std::int64_t run_id = 0;
  RunCounters counters;
  /// The deletion policy ran (successful run with an intact seen-set, not held back).
  bool deletion_applied = false;
  /// The deletion guard held the deletion back; `note` says why and how to confirm.
  bool deletion_guarded = false;
  /// Live objects the held-back deletion would have marked or deleted, and the source's live
  /// objects before it (both 0 unless deletion_guarded).
  std::int64_t guarded_objects = 0;
  std::int64_t live_objects = 0;
  /// Why it did not, or other remarks; empty when nothing to say.
  std::string note;
};

/**
 * One run of a source: the page writer. Created by Store::beginRun(), owns its own database
 * connection. Not thread-safe: call from one thread at a time (the plugin host delivers pages
 * one at a time). Wrap it as a plugin_host::PageSink with onPage → writePage, onClean → clean.
 *
 * Destroying a Run that was not finished records it as failed (best effort).
 */
class Run {
 public:
  virtual ~Run() = default;
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  [[nodiscard]] virtual std::int64_t id() const = 0;

  /**
   * Writes one page in one transaction: fence check, upsert, run counters, commit.
   * @return OK once committed. ABORTED if fenced or lease_check failed (nothing stored);
   *   INVALID_ARGUMENT for objects PostgreSQL cannot store (NUL byte, invalid UTF-8, empty or
   *   over-long remote_id; nothing stored); UNAVAILABLE if the database stayed away past
   *   reconnect_deadline; FAILED_PRECONDITION after finish().
   */
  virtual absl::Status writePage(const proto::SyncResponse& page) = 0;

  /**
   * The connector's Clean callback: "start the listing over". Objects sent before it stay
   * stored but no longer count as listed by this run; only objects sent after the last Clean
   * protect their siblings from the deletion policy. Deletes nothing by itself. Fenced like a
   * page.
   */
  virtual absl::Status clean() = 0;

  /**
   * Ends the run. On success: applies the deletion policy to objects not listed since the last
   * Clean (only if the seen-set survived and the deletion guard lets it; see RunSummary) and
   * records the outcome. On
   * failure: records the error; nothing is marked or deleted. Idempotent.
   * @return the summary; ABORTED if fenced (the run is then recorded failed).
   */
  virtual absl::StatusOr<RunSummary> finish(const FinishRequest& request) = 0;

  /// Counters as committed so far.
  [[nodiscard]] virtual RunCounters counters() const = 0;

 protected:
  Run() = default;
};
using RunPtr = std::unique_ptr<Run>;

/**
 * Entry point. open() connects and applies pending migrations under an advisory lock, so any
 * number of processes may start at once. Thread-safe: beginRun() may be called concurrently
 * (each Run has its own connection).
 */
class Store {
 public:
  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  /// Connects (retrying up to reconnect_deadline) and migrates. FAILED_PRECONDITION if the
  /// database holds a newer schema version than this binary knows.
  static absl::StatusOr<std::unique_ptr<Store>> open(StoreOptions options);

  /// Only the migrations (what open() does first). `target_version` 0 means the latest; a lower
  /// one stops there (tests of upgrades).
  static absl::Status migrate(const StoreOptions& options, int target_version = 0);

  /// The newest schema version this binary knows.
  static int latestSchemaVersion();

  /// The version recorded in the database.
  virtual absl::StatusOr<int> schemaVersion() = 0;

  /**
   * Registers the source if new, claims the fencing token (refusing an older or already-claimed
   * one with ABORTED), marks older unfinished runs of the source abandoned, and starts a run.
   */
  virtual absl::StatusOr<RunPtr> beginRun(const RunSpec& spec) = 0;

  /// The source's fencing high-water mark (0 for an unknown source). Pass it to the lock as the
  /// minimum fencing token so tokens keep increasing after the lock service lost its state.
  virtual absl::StatusOr<std::int64_t> fencingHighWaterMark(std::string_view ns,
                                                            std::string_view name) = 0;

  /// Removes a source with its objects and runs. Refused (ABORTED) while a run is active.
  virtual absl::Status deleteSource(std::string_view ns, std::string_view name) = 0;

  [[nodiscard]] virtual const StoreOptions& options() const = 0;

 protected:
  Store() = default;
};
using StorePtr = std::unique_ptr<Store>;

}  // namespace tributary::store
