// The page writer. See README.md ("Writing pages") for the statement and why it looks like this.

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

#include "page_encoding.h"
#include "pg.h"
#include "run_impl.h"
#include "session.h"

#include <optional>
#include <thread>

namespace tributary::store::internal {
namespace {

// Counter columns of the runs table, in the order readCounters() expects.
constexpr std::string_view kCounterColumns =
    "pages, objects_received, objects_inserted, objects_updated, objects_unchanged, "
    "objects_revived, objects_duplicate, objects_missing, objects_marked, objects_deleted, cleans";
constexpr int kCounterCount = 11;
constexpr int kMaxTransactionRetries = 5;

RunCounters readCounters(const PgResult& result, int row, int first) {
  RunCounters c;
  std::int64_t* fields[] = {&c.pages,     &c.objects_received, &c.inserted,   &c.updated,
                            &c.unchanged, &c.revived,          &c.duplicates, &c.missing,
                            &c.marked,    &c.deleted,          &c.cleans};
  for (int i = 0; i < kCounterCount; ++i) {
    *fields[i] = result.int64(row, first + i);
  }
  return c;
}

// Parameters shared by both write methods: $1 source, $2 token, $3 lease, $4 run, $5 page seq,
// $6 listing, $7 objects received, $8 duplicates; unnest adds $9..$13 (the five arrays).
// Two shapes of the same write (README.md, "Writing pages", has the measurements):
//  - classify first: one primary-key probe per object decides new / changed / unchanged, then
//    only new and changed objects are upserted and unchanged ones go to the seen-set. Best when
//    most objects already exist (re-syncs).
//  - insert first: INSERT … ON CONFLICT DO NOTHING takes every new object at the cost of a plain
//    insert (a conflict takes no lock and writes no WAL), and only the objects that conflicted
//    are classified. Best when most objects are new (initial loads).
std::string pageSql(std::string_view qs, std::int64_t listing, bool safe_json, bool from_copy,
                    bool insert_first) {
  const std::string input =
      from_copy ? "SELECT remote_id, resource_name, uri, metadata, json_ok "
                  "FROM pg_temp.tributary_page"
                : "SELECT * FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], "
                  "$13::bool[]) AS i(remote_id, resource_name, uri, metadata, json_ok)";
  auto json = [&](std::string_view alias) {
    return safe_json ? strings::cat(qs, ".try_jsonb(", alias, ".metadata)")
                     : strings::cat(alias, ".metadata::jsonb");
  };
  const std::string columns =
      "(source_id, remote_id, resource_name, uri, metadata, metadata_json, first_seen, "
      "first_run, last_changed, last_changed_run, seen_at, seen_run, listing_id)";
  std::string ins;
  if (insert_first) {
    ins = strings::cat(
        "ins AS (\n"
        "  INSERT INTO ",
        qs, ".objects AS o ", columns,
        "\n"
        "  SELECT $1, i.remote_id, i.resource_name, i.uri, i.metadata,\n"
        "         CASE WHEN i.json_ok THEN ",
        json("i"),
        " END,\n"
        "         now(), $4, now(), $4, now(), $4, $6\n"
        "  FROM input i WHERE (SELECT ok FROM fence)\n"
        "  ON CONFLICT (source_id, remote_id) DO NOTHING\n"
        "  RETURNING remote_id),\n"
        // Materialised so the anti-join runs before (not after) the classification probes. When
        // every object was inserted (the usual initial-load page) the one-time filter skips the
        // second pass over the input and the anti-join's hash table, about 12% of such a page.
        "rest AS MATERIALIZED (\n"
        "  SELECT i.* FROM input i\n"
        "  WHERE (SELECT count(*) FROM ins) < $7::bigint - $8::bigint\n"
        "    AND NOT EXISTS (SELECT 1 FROM ins WHERE ins.remote_id = i.remote_id)),\n");
  }
  return strings::cat(
      "WITH fence AS MATERIALIZED (SELECT ", qs, ".check_fence($1, $2, $3, $4, $5) AS ok),\n",
      // Inlined where used: materialising the wide rows would cost a copy of every page.
      "input AS NOT MATERIALIZED (", input, "),\n", ins,
      // Classify each object against the stored row. LATERAL + LIMIT 1 keeps one primary-key
      // probe per object (seq scans are disabled for the session, see sessionSetupSql()).
      "cls AS MATERIALIZED (\n"
      "  SELECT i.remote_id, i.resource_name, i.uri, i.metadata, i.json_ok,\n"
      "         o.found IS NOT NULL AS found,\n"
      "         coalesce(o.missing, false) AS was_missing,\n"
      "         coalesce(o.same, false) AS same,\n"
      "         coalesce(o.this_listing, false) AS this_listing\n"
      "  FROM ",
      insert_first ? "rest" : "input",
      " i\n"
      "  LEFT JOIN LATERAL (\n"
      "    SELECT true AS found,\n"
      "           (o.missing_since IS NOT NULL OR o.deleted_at IS NOT NULL) AS missing,\n"
      "           (o.missing_since IS NULL AND o.deleted_at IS NULL\n"
      "            AND o.resource_name = i.resource_name AND o.uri = i.uri\n"
      "            AND o.metadata = i.metadata) AS same,\n"
      "           o.listing_id = $6 AS this_listing\n"
      "    FROM ",
      qs,
      ".objects o WHERE o.source_id = $1 AND o.remote_id = i.remote_id\n"
      "    LIMIT 1) o ON true\n"
      // The fence runs before anything is read or written.
      "  WHERE (SELECT ok FROM fence)),\n",
      // Only new, changed or returning objects are written.
      "up AS (\n"
      "  INSERT INTO ",
      qs, ".objects AS o ", columns,
      "\n"
      "  SELECT $1, c.remote_id, c.resource_name, c.uri, c.metadata,\n"
      "         CASE WHEN c.json_ok THEN ",
      json("c"),
      " END,\n"
      "         now(), $4, now(), $4, now(), $4, $6\n"
      "  FROM cls c WHERE NOT c.same\n"
      "  ON CONFLICT (source_id, remote_id) DO UPDATE SET\n"
      "    resource_name = EXCLUDED.resource_name, uri = EXCLUDED.uri,\n"
      "    metadata = EXCLUDED.metadata, metadata_json = EXCLUDED.metadata_json,\n"
      "    last_changed = EXCLUDED.last_changed, last_changed_run = EXCLUDED.last_changed_run,\n"
      "    seen_at = EXCLUDED.seen_at, seen_run = EXCLUDED.seen_run,\n"
      "    listing_id = EXCLUDED.listing_id,\n"
      "    missing_since = NULL, missing_run = NULL, deleted_at = NULL\n"
      "  RETURNING 1),\n",
      // Unchanged objects only go to the listing's UNLOGGED seen-set (no WAL).
      "seen AS (\n"
      "  INSERT INTO ",
      qs, ".", seenTable(listing),
      " (remote_id)\n"
      "  SELECT c.remote_id FROM cls c WHERE c.same AND NOT c.this_listing\n"
      "  RETURNING 1),\n",
      "counts AS (\n"
      "  SELECT count(*) FILTER (WHERE NOT found)",
      insert_first ? " + (SELECT count(*) FROM ins)" : "", " AS inserted,\n",
      "         count(*) FILTER (WHERE found AND NOT same) AS updated,\n"
      "         count(*) FILTER (WHERE was_missing) AS revived,\n"
      "         count(*) FILTER (WHERE same) AS unchanged\n"
      "  FROM cls),\n",
      "run AS (\n"
      "  UPDATE ",
      qs,
      ".runs r SET pages = $5,\n"
      "    objects_received = r.objects_received + $7,\n"
      "    objects_duplicate = r.objects_duplicate + $8,\n"
      "    objects_inserted = r.objects_inserted + c.inserted,\n"
      "    objects_updated = r.objects_updated + c.updated,\n"
      "    objects_revived = r.objects_revived + c.revived,\n"
      "    objects_unchanged = r.objects_unchanged + c.unchanged,\n"
      "    seen_count = r.seen_count + (SELECT count(*) FROM seen)\n"
      "  FROM counts c WHERE r.id = $4\n"
      "  RETURNING ",
      kCounterColumns, ")\n", "SELECT (SELECT count(*) FROM up) AS written, run.* FROM run");
}

// Outcome of a transaction body: a database error (classified by the caller), or a final status.
struct TxResult {
  std::optional<PgError> pg;
  absl::Status status;
  static TxResult ok() { return {}; }
  static TxResult fail(PgError error) { return {std::move(error), absl::OkStatus()}; }
  static TxResult fail(absl::Status status) { return {std::nullopt, std::move(status)}; }
};

class RunImpl final : public Run {
 public:
  RunImpl(std::string qs, RunSpec spec, RunState state, std::unique_ptr<Session> session)
      : qs_(std::move(qs)),
        spec_(std::move(spec)),
        state_(state),
        session_(std::move(session)),
        options_(session_->options()),
        logger_(options_.logger.with(
            {{"run", state.run_id}, {"source", strings::cat(spec_.ns, "/", spec_.name)}})) {}

  ~RunImpl() override {
    if (!finished_) {
      abandon();
    }
  }

  [[nodiscard]] std::int64_t id() const override { return state_.run_id; }
  [[nodiscard]] RunCounters counters() const override { return counters_; }

  absl::Status writePage(const proto::SyncResponse& page) override;
  absl::Status clean() override;
  absl::StatusOr<RunSummary> finish(const FinishRequest& request) override;

 private:
  absl::Status checkLease(std::string_view what) const;
  PgOutcome executePage(PgConnection& conn, const PreparedPage& prepared, const ArrayParams& arrays,
                        const std::string& copy_data, std::int64_t seq, bool safe_json);
  absl::StatusOr<bool> pageCommitted(PgConnection& conn, std::int64_t seq);
  absl::Status diagnoseFence(PgConnection& conn);
  // The next page's statement shape: insert-first while pages are mostly new objects.
  [[nodiscard]] bool insertFirst() const {
    switch (options_.page_shape) {
      case PageShape::ClassifyFirst:
        return false;
      case PageShape::InsertFirst:
        return true;
      case PageShape::Adaptive:
        break;
    }
    return mostly_new_;
  }
  template <typename Body>
  absl::Status transact(std::string_view what, Body body);
  absl::Status finishOnce(const FinishRequest& request, RunSummary* summary);
  struct DeletionOutcome {
    std::optional<PgError> error;
    std::int64_t affected = 0;       // rows flagged or removed (0 when guarded)
    std::int64_t vanished_live = 0;  // live objects among those the policy selected
    std::int64_t live_before = 0;    // the source's live objects (only computed for the guard)
    bool guarded = false;
    std::string note;
  };
  DeletionOutcome applyDeletionPolicy(PgConnection& conn, const std::string& seen);
  void abandon();
  // $1 source, $2 token, $3 lease, $4 run.
  std::vector<PgParam> fenceParams();

  std::string qs_;
  RunSpec spec_;
  RunState state_;
  std::unique_ptr<Session> session_;
  const StoreOptions& options_;
  log::Logger logger_;
  RunCounters counters_;
  // Starts true when the source had no objects; then follows the last page.
  bool mostly_new_ = state_.source_was_empty;
  bool finished_ = false;
  RunSummary summary_;
  // Text forms of the fixed parameters, kept alive for PgParam.
  std::string source_text_ = std::to_string(state_.source_id);
  std::string token_text_ = std::to_string(spec_.fencing_token);
  std::string run_text_ = std::to_string(state_.run_id);
};

absl::Status RunImpl::checkLease(std::string_view what) const {
  if (!spec_.lease_check) {
    return absl::OkStatus();
  }
  absl::Status status = spec_.lease_check();
  if (status.ok()) {
    return status;
  }
  return absl::AbortedError(
      strings::cat("lock lease check failed before ", what, ": ", status.message()));
}

std::vector<PgParam> RunImpl::fenceParams() {
  return {PgParam::text(source_text_), PgParam::text(token_text_), PgParam::text(spec_.lease_id),
          PgParam::text(run_text_)};
}

PgOutcome RunImpl::executePage(PgConnection& conn, const PreparedPage& prepared,
                               const ArrayParams& arrays, const std::string& copy_data,
                               std::int64_t seq, bool safe_json) {
  const bool copy = options_.write_method == WriteMethod::CopyStaging;
  const bool insert_first = insertFirst();
  const std::string name = strings::cat(copy ? "copy_" : "page_", safe_json ? "safe_" : "",
                                        insert_first ? "ins_" : "", state_.listing_id);
  if (!conn.prepared(name)) {
    if (copy) {  // the statement refers to the session's staging table: create it first
      PgOutcome table = conn.exec(
          "CREATE TEMP TABLE IF NOT EXISTS tributary_page (remote_id text COLLATE \"C\", "
          "resource_name text, uri text, metadata text, json_ok boolean) ON COMMIT DELETE ROWS");
      if (!table.ok()) {
        return table;
      }
    }
    std::vector<Oid> types = {20, 20, kTextOid, 20, 20, 20, 20, 20};
    if (!copy) {
      types.insert(types.end(),
                   {kTextArrayOid, kTextArrayOid, kTextArrayOid, kTextArrayOid, kBoolArrayOid});
    }
    PgOutcome prepared_stmt =
        conn.prepare(name, pageSql(qs_, state_.listing_id, safe_json, copy, insert_first), types);
    if (!prepared_stmt.ok()) {
      return prepared_stmt;
    }
  }
  const std::string seq_text = std::to_string(seq);
  const std::string listing_text = std::to_string(state_.listing_id);
  const std::string received_text = std::to_string(prepared.received);
  const std::string duplicates_text = std::to_string(prepared.duplicates);
  std::vector<PgParam> params = fenceParams();
  params.push_back(PgParam::text(seq_text));
  params.push_back(PgParam::text(listing_text));
  params.push_back(PgParam::text(received_text));
  params.push_back(PgParam::text(duplicates_text));
  if (!copy) {
    params.push_back(PgParam::binary(arrays.remote_ids, kTextArrayOid));
    params.push_back(PgParam::binary(arrays.resource_names, kTextArrayOid));
    params.push_back(PgParam::binary(arrays.uris, kTextArrayOid));
    params.push_back(PgParam::binary(arrays.metadata, kTextArrayOid));
    params.push_back(PgParam::binary(arrays.json_ok, kBoolArrayOid));
    return conn.execPrepared(name, params);
  }
  // COPY → session temp table → the same statement, in one explicit transaction.
  PgOutcome step = conn.exec("BEGIN");
  if (step.ok()) {
    step = conn.copyIn("COPY pg_temp.tributary_page FROM STDIN (FORMAT binary)", copy_data);
  }
  if (step.ok()) {
    step = conn.execPrepared(name, params);
  }
  if (step.ok()) {
    PgOutcome commit = conn.exec("COMMIT");
    if (!commit.ok()) {
      return commit;
    }
    return step;
  }
  if (conn.healthy()) {
    conn.exec("ROLLBACK");
  }
  return step;
}

absl::StatusOr<bool> RunImpl::pageCommitted(PgConnection& conn, std::int64_t seq) {
  PgOutcome row = conn.execParams(
      strings::cat("SELECT ", kCounterColumns, " FROM ", qs_, ".runs WHERE id = $1"),
      {PgParam::text(run_text_)});
  if (!row.ok()) {
    return toStatus(row.error(), "reading run counters");
  }
  if (row.result().rows() != 1) {
    return absl::InternalError(strings::cat("run ", state_.run_id, " vanished"));
  }
  counters_ = readCounters(row.result(), 0, 0);
  return counters_.pages >= seq;
}

absl::Status RunImpl::diagnoseFence(PgConnection& conn) {
  std::vector<PgParam> params = fenceParams();
  params.push_back(PgParam::text("0"));
  PgOutcome check =
      conn.execParams(strings::cat("SELECT ", qs_, ".check_fence($1, $2, $3, $4, $5)"), params);
  if (check.ok()) {
    return absl::OkStatus();
  }
  return toStatus(check.error(), strings::cat("run ", state_.run_id));
}

absl::Status RunImpl::writePage(const proto::SyncResponse& page) {
  if (finished_) {
    return absl::FailedPreconditionError(
        strings::cat("run ", state_.run_id, " is finished; no more pages"));
  }
  const std::int64_t seq = counters_.pages + 1;
  absl::StatusOr<PreparedPage> prepared = preparePage(page, options_.max_remote_id_bytes);
  if (!prepared.ok()) {
    return absl::InvalidArgumentError(
        strings::cat("page ", seq, " of run ", state_.run_id,
                     " refused, nothing stored: ", prepared.status().message()));
  }
  ArrayParams arrays;
  std::string copy_data;
  if (options_.write_method == WriteMethod::CopyStaging) {
    copy_data = encodeCopy(*prepared);
  } else {
    arrays = encodeArrays(*prepared);
  }
  const std::string what = strings::cat("page ", seq, " of run ", state_.run_id);
  bool safe_json = false;
  std::optional<Clock::time_point> deadline;
  int transaction_retries = 0;
  while (true) {
    TRIBUTARY_RETURN_IF_ERROR(checkLease(what));
    absl::StatusOr<PgConnection*> conn =
        session_->connection(deadline.value_or(session_->deadlineFromNow()), what);
    if (!conn.ok()) {
      return conn.status();
    }
    if (session_->takeReconnected()) {
      // The connection died under an earlier attempt: it may have committed.
      absl::StatusOr<bool> committed = pageCommitted(**conn, seq);
      if (!committed.ok()) {
        if (absl::IsUnavailable(committed.status())) {
          session_->reset();
          continue;
        }
        return committed.status();
      }
      if (*committed) {
        logger_.info("page committed before the connection was lost", {{"page", seq}});
        return absl::OkStatus();
      }
    }
    PgOutcome outcome = executePage(**conn, *prepared, arrays, copy_data, seq, safe_json);
    if (outcome.ok()) {
      if (outcome.result().rows() != 1) {
        return absl::InternalError(strings::cat(what, ": run row not updated"));
      }
      const std::int64_t inserted_before = counters_.inserted;
      counters_ = readCounters(outcome.result(), 0, 1);
      if (!prepared->objects.empty()) {
        mostly_new_ = 2 * (counters_.inserted - inserted_before) >
                      static_cast<std::int64_t>(prepared->objects.size());
      }
      return absl::OkStatus();
    }
    const PgError& error = outcome.error();
    if (error.sqlstate == "TR003") {  // committed by an attempt whose answer we lost
      TRIBUTARY_RETURN_IF_ERROR(pageCommitted(**conn, seq).status());
      return absl::OkStatus();
    }
    if (error.retryableConnection()) {
      if (!deadline) {
        deadline = session_->deadlineFromNow();
      }
      logger_.warn("lost the database connection while writing a page; retrying",
                   {{"page", seq}, {"error", error.describe()}});
      session_->reset();
      continue;
    }
    if (error.retryableTransaction() && ++transaction_retries < kMaxTransactionRetries) {
      continue;
    }
    if (!error.dataException() && !error.sqlstate.empty() && error.sqlstate != "TR001") {
      // E.g. the seen-set table was dropped because a newer run superseded this one: report
      // the real reason if the fence explains the failure.
      if (absl::Status fence = diagnoseFence(**conn); !fence.ok()) {
        return fence;
      }
    }
    if (!safe_json && error.dataException()) {
      // Some metadata passed the client-side JSON check but not jsonb's input: redo the page
      // with the slow, never-failing conversion.
      logger_.info("page hit a data exception; retrying with the safe JSON conversion",
                   {{"page", seq}, {"error", error.describe()}});
      safe_json = true;
      continue;
    }
    return toStatus(error, what);
  }
}

template <typename Body>
absl::Status RunImpl::transact(std::string_view what, Body body) {
  std::optional<Clock::time_point> deadline;
  int transaction_retries = 0;
  while (true) {
    absl::StatusOr<PgConnection*> conn_or =
        session_->connection(deadline.value_or(session_->deadlineFromNow()), what);
    if (!conn_or.ok()) {
      return conn_or.status();
    }
    PgConnection& conn = **conn_or;
    session_->takeReconnected();
    std::optional<PgError> error;
    PgOutcome begin = conn.exec("BEGIN");
    if (!begin.ok()) {
      error = begin.error();
    } else {
      TxResult result = body(conn);
      if (result.pg) {
        error = std::move(result.pg);
      } else if (!result.status.ok()) {
        if (conn.healthy()) {
          conn.exec("ROLLBACK");
        }
        return result.status;
      } else {
        PgOutcome commit = conn.exec("COMMIT");
        if (commit.ok()) {
          return absl::OkStatus();
        }
        error = commit.error();
      }
    }
    if (conn.healthy()) {
      conn.exec("ROLLBACK");
    }
    if (error->retryableConnection()) {
      if (!deadline) {
        deadline = session_->deadlineFromNow();
      }
      logger_.warn("lost the database connection; retrying",
                   {{"what", std::string(what)}, {"error", error->describe()}});
      session_->reset();
      continue;
    }
    if (error->retryableTransaction() && ++transaction_retries < kMaxTransactionRetries) {
      continue;
    }
    return toStatus(*error, what);
  }
}

absl::Status RunImpl::clean() {
  if (finished_) {
    return absl::FailedPreconditionError(
        strings::cat("run ", state_.run_id, " is finished; Clean refused"));
  }
  TRIBUTARY_RETURN_IF_ERROR(checkLease("Clean"));
  std::int64_t new_listing = 0;
  absl::Status status = transact("Clean", [&](PgConnection& conn) -> TxResult {
    std::vector<PgParam> fence = fenceParams();
    fence.push_back(PgParam::text("0"));
    PgOutcome check =
        conn.execParams(strings::cat("SELECT ", qs_, ".check_fence($1, $2, $3, $4, $5)"), fence);
    if (!check.ok()) {
      return TxResult::fail(check.error());
    }
    PgOutcome current = conn.execParams(
        strings::cat("SELECT listing_id FROM ", qs_, ".runs WHERE id = $1 FOR UPDATE"),
        {PgParam::text(run_text_)});
    if (!current.ok()) {
      return TxResult::fail(current.error());
    }
    const std::int64_t db_listing = current.result().int64(0, 0);
    if (db_listing != state_.listing_id) {  // an earlier attempt committed; adopt it
      new_listing = db_listing;
      return TxResult::ok();
    }
    PgOutcome next = conn.exec(strings::cat("SELECT nextval('", qs_, ".listing_seq')"));
    if (!next.ok()) {
      return TxResult::fail(next.error());
    }
    new_listing = next.result().int64(0, 0);
    PgOutcome swap = conn.exec(
        strings::cat("CREATE UNLOGGED TABLE ", qs_, ".", seenTable(new_listing),
                     " (remote_id text COLLATE \"C\" NOT NULL) WITH (autovacuum_enabled = off); ",
                     "DROP TABLE IF EXISTS ", qs_, ".", seenTable(state_.listing_id)));
    if (!swap.ok()) {
      return TxResult::fail(swap.error());
    }
    PgOutcome update = conn.execParams(
        strings::cat("UPDATE ", qs_,
                     ".runs SET listing_id = $2, seen_count = 0, cleans = cleans + 1 "
                     "WHERE id = $1 RETURNING ",
                     kCounterColumns),
        {PgParam::text(run_text_), PgParam::text(std::to_string(new_listing))});
    if (!update.ok()) {
      return TxResult::fail(update.error());
    }
    counters_ = readCounters(update.result(), 0, 0);
    return TxResult::ok();
  });
  if (!status.ok()) {
    return status;
  }
  logger_.info("Clean: listing restarted",
               {{"old_listing", state_.listing_id}, {"new_listing", new_listing}});
  state_.listing_id = new_listing;
  return absl::OkStatus();
}

// Inside finish()'s transaction, once the seen-set is known to be intact.
RunImpl::DeletionOutcome RunImpl::applyDeletionPolicy(PgConnection& conn, const std::string& seen) {
  DeletionOutcome out;
  const std::string not_listed =
      strings::cat("o.source_id = $1 AND o.listing_id <> $3 AND NOT EXISTS (SELECT 1 FROM ", seen,
                   " s WHERE s.remote_id = o.remote_id)");
  const std::string frozen = strings::cat(
      "seen_at = CASE WHEN o.missing_since IS NULL THEN GREATEST(o.seen_at, (SELECT listed_at "
      "FROM ",
      qs_,
      ".sources WHERE id = $1)) ELSE o.seen_at END, "
      "seen_run = CASE WHEN o.missing_since IS NULL THEN GREATEST(o.seen_run, (SELECT listed_run "
      "FROM ",
      qs_, ".sources WHERE id = $1)) ELSE o.seen_run END");
  std::string policy_sql;
  std::string_view removed = "";  // what the policy does to a live object, for the note
  switch (spec_.deletion_policy) {
    case DeletionPolicy::Keep:
      policy_sql = strings::cat("UPDATE ", qs_, ".objects o SET missing_since = now(), ",
                                "missing_run = $2, ", frozen, " WHERE o.missing_since IS NULL AND ",
                                not_listed, " RETURNING false AS was_live");
      break;
    case DeletionPolicy::Mark:
      policy_sql = strings::cat("UPDATE ", qs_, ".objects o SET deleted_at = now(), ",
                                "missing_since = coalesce(o.missing_since, now()), ",
                                "missing_run = coalesce(o.missing_run, $2), ", frozen,
                                " WHERE o.deleted_at IS NULL AND ", not_listed,
                                " RETURNING true AS was_live");
      removed = "soft-deleted";
      break;
    case DeletionPolicy::Delete:
      // RETURNING sees the row as it was: soft-deleted rows leaving are not live objects.
      policy_sql = strings::cat("DELETE FROM ", qs_, ".objects o WHERE ", not_listed,
                                " RETURNING o.deleted_at IS NULL AS was_live");
      removed = "deleted";
      break;
  }
  const bool guard = !removed.empty() && !spec_.deletion_guard.confirmed;
  // A hash (or merge) anti-join over the source's rows and the seen-set, planned with the real
  // parameter values. Nested loops are off: right after a large load the objects' statistics can
  // still describe the table before it, and a nested-loop anti-join over the unindexed seen-set
  // is quadratic (200 000 × 200 000); without them the cost is linear whatever the statistics say.
  PgOutcome prepare = conn.exec(strings::cat(
      "SET LOCAL work_mem = '256MB'; SET LOCAL enable_seqscan = on; SET LOCAL enable_nestloop = "
      "off; SET LOCAL plan_cache_mode = force_custom_plan; ANALYZE ",
      seen, guard ? "; SAVEPOINT deletion_guard" : ""));
  if (!prepare.ok()) {
    out.error = prepare.error();
    return out;
  }
  PgOutcome policy =
      conn.execParams(strings::cat("WITH gone AS (", policy_sql,
                                   ") SELECT count(*), count(*) FILTER (WHERE was_live) FROM gone"),
                      {PgParam::int64(state_.source_id), PgParam::int64(state_.run_id),
                       PgParam::int64(state_.listing_id)});
  if (!policy.ok()) {
    out.error = policy.error();
    return out;
  }
  out.affected = policy.result().int64(0, 0);
  out.vanished_live = policy.result().int64(0, 1);
  if (!guard || out.vanished_live == 0) {
    return out;
  }
  PgOutcome remaining =
      conn.execParams(strings::cat("SELECT count(*) FROM ", qs_,
                                   ".objects WHERE source_id = $1 AND deleted_at IS NULL"),
                      {PgParam::int64(state_.source_id)});
  if (!remaining.ok()) {
    out.error = remaining.error();
    return out;
  }
  out.live_before = remaining.result().int64(0, 0) + out.vanished_live;
  const int max_percent = spec_.deletion_guard.max_delete_percent;
  const bool everything = out.vanished_live == out.live_before;
  if (!everything &&
      out.vanished_live * 100 <= static_cast<std::int64_t>(max_percent) * out.live_before) {
    return out;
  }
  if (PgOutcome rollback = conn.exec("ROLLBACK TO SAVEPOINT deletion_guard"); !rollback.ok()) {
    out.error = rollback.error();
    return out;
  }
  out.guarded = true;
  out.affected = 0;
  const std::int64_t tenths = out.vanished_live * 1000 / out.live_before;
  out.note = strings::cat(
      "deletion guard: this run would have ", removed, " ", out.vanished_live, " of the source's ",
      out.live_before, " live objects (", tenths / 10, ".", tenths % 10, " %), ",
      everything ? "every one of them, listing none"
                 : strings::cat("more than the allowed ", max_percent, " %"),
      "; nothing was ", removed,
      ". If they really vanished upstream, confirm the deletion for the next run; otherwise the "
      "connector's listing is incomplete and should fail instead");
  logger_.warn("deletion held back by the deletion guard", {{"would_remove", out.vanished_live},
                                                            {"live_objects", out.live_before},
                                                            {"max_delete_percent", max_percent}});
  return out;
}

absl::Status RunImpl::finishOnce(const FinishRequest& request, RunSummary* summary) {
  summary->run_id = state_.run_id;
  return transact("finishing the run", [&](PgConnection& conn) -> TxResult {
    PgOutcome row = conn.execParams(
        strings::cat("SELECT outcome, deletion_applied, coalesce(note, ''), seen_count, ",
                     kCounterColumns, " FROM ", qs_, ".runs WHERE id = $1 FOR UPDATE"),
        {PgParam::text(run_text_)});
    if (!row.ok()) {
      return TxResult::fail(row.error());
    }
    if (row.result().rows() != 1) {
      return TxResult::fail(absl::InternalError(strings::cat("run ", state_.run_id, " vanished")));
    }
    const std::string outcome(row.result().text(0, 0));
    if (outcome != "running") {  // finished by an attempt whose answer we lost
      summary->deletion_applied = row.result().boolean(0, 1);
      summary->note = std::string(row.result().text(0, 2));
      summary->counters = readCounters(row.result(), 0, 4);
      if (request.success && outcome == "abandoned") {
        return TxResult::fail(absl::AbortedError(strings::cat(
            "fenced: run ", state_.run_id, " was superseded by a newer run of the source")));
      }
      if (request.success && outcome != "succeeded") {
        return TxResult::fail(absl::FailedPreconditionError(
            strings::cat("run ", state_.run_id, " was already recorded as ", outcome)));
      }
      return TxResult::ok();
    }
    const std::int64_t seen_count = row.result().int64(0, 3);
    const std::string seen = strings::cat(qs_, ".", seenTable(state_.listing_id));
    std::int64_t affected = 0;
    bool applied = false;
    bool guarded = false;
    std::string note;
    if (request.success) {
      std::vector<PgParam> fence = fenceParams();
      fence.push_back(PgParam::text("0"));
      PgOutcome check =
          conn.execParams(strings::cat("SELECT ", qs_, ".check_fence($1, $2, $3, $4, $5)"), fence);
      if (!check.ok()) {
        return TxResult::fail(check.error());
      }
      if (absl::Status lease = checkLease("finishing the run"); !lease.ok()) {
        return TxResult::fail(lease);
      }
      PgOutcome count = conn.exec(strings::cat("SELECT count(*) FROM ", seen));
      if (!count.ok()) {
        return TxResult::fail(count.error());
      }
      const std::int64_t present = count.result().int64(0, 0);
      if (present != seen_count) {
        note = strings::cat(
            "deletion policy not applied: the run's seen-set holds ", present, " of ", seen_count,
            " entries (it is UNLOGGED and was lost in a database crash or failover during the "
            "run); nothing was marked or deleted, the next successful run applies the policy");
        logger_.warn("seen-set lost; deletion skipped",
                     {{"present", present}, {"expected", seen_count}});
      } else {
        const DeletionOutcome deletion = applyDeletionPolicy(conn, seen);
        if (deletion.error) {
          return TxResult::fail(*deletion.error);
        }
        affected = deletion.affected;
        guarded = deletion.guarded;
        if (guarded) {
          summary->guarded_objects = deletion.vanished_live;
          summary->live_objects = deletion.live_before;
          note = deletion.note;
        } else {
          // Every object not flagged now was listed by this run: the source's complete listing.
          PgOutcome listed = conn.execParams(
              strings::cat("UPDATE ", qs_, ".sources SET listed_run = $2, listed_at = (SELECT ",
                           "started_at FROM ", qs_, ".runs WHERE id = $2) WHERE id = $1"),
              {PgParam::text(source_text_), PgParam::text(run_text_)});
          if (!listed.ok()) {
            return TxResult::fail(listed.error());
          }
          applied = true;
        }
      }
    }
    const char* counter = spec_.deletion_policy == DeletionPolicy::Keep   ? "objects_missing"
                          : spec_.deletion_policy == DeletionPolicy::Mark ? "objects_marked"
                                                                          : "objects_deleted";
    // clock_timestamp(), not now(): now() is when this transaction began, and the duration a user
    // reads must include the deletion policy's statement above.
    PgOutcome update = conn.execParams(
        strings::cat("UPDATE ", qs_, ".runs SET outcome = $2, finished_at = clock_timestamp(), ",
                     "connector_metadata = $3, error = nullif($4, ''), note = nullif($5, ''), ",
                     "deletion_applied = $6, ", counter, " = $7, deletion_guarded = $8, ",
                     "objects_guarded = $9 WHERE id = $1 RETURNING ", kCounterColumns),
        {PgParam::text(run_text_), PgParam::text(request.success ? "succeeded" : "failed"),
         PgParam::text(request.connector_metadata), PgParam::text(request.error),
         PgParam::text(note), PgParam::text(applied ? "true" : "false"),
         PgParam::text(std::to_string(affected)), PgParam::text(guarded ? "true" : "false"),
         PgParam::text(std::to_string(summary->guarded_objects))});
    if (!update.ok()) {
      return TxResult::fail(update.error());
    }
    PgOutcome drop = conn.exec(strings::cat("DROP TABLE IF EXISTS ", seen));
    if (!drop.ok()) {
      return TxResult::fail(drop.error());
    }
    summary->counters = readCounters(update.result(), 0, 0);
    summary->deletion_applied = applied;
    summary->deletion_guarded = guarded;
    summary->note = note;
    return TxResult::ok();
  });
}

absl::StatusOr<RunSummary> RunImpl::finish(const FinishRequest& request) {
  if (finished_) {
    return summary_;
  }
  RunSummary summary;
  absl::Status status = finishOnce(request, &summary);
  if (absl::IsAborted(status) && request.success) {
    // Fenced or lease lost at the end: record the run failed, delete nothing.
    FinishRequest failed;
    failed.connector_metadata = request.connector_metadata;
    failed.error = std::string(status.message());
    RunSummary ignored;
    if (absl::Status recorded = finishOnce(failed, &ignored); !recorded.ok()) {
      logger_.warn("could not record the fenced run as failed",
                   {{"error", std::string(recorded.message())}});
    }
    finished_ = true;
    return status;
  }
  if (!status.ok()) {
    return status;
  }
  finished_ = true;
  counters_ = summary.counters;
  summary_ = summary;
  logger_.info("run finished", {{"success", request.success},
                                {"pages", summary.counters.pages},
                                {"inserted", summary.counters.inserted},
                                {"updated", summary.counters.updated},
                                {"unchanged", summary.counters.unchanged},
                                {"deletion_applied", summary.deletion_applied}});
  return summary;
}

void RunImpl::abandon() {
  // Best effort, one attempt, no reconnect: a destructor must not block for the deadline. If it
  // fails, the next beginRun() of the source marks this run abandoned.
  PgConnection* conn = session_->raw();
  if (conn == nullptr || !conn->healthy()) {
    return;
  }
  conn->exec(strings::cat(
      "BEGIN; UPDATE ", qs_, ".runs SET outcome = 'failed', finished_at = now(), error = ",
      "'run ended without finish (writer destroyed)' WHERE id = ", state_.run_id,
      " AND outcome = 'running'; DROP TABLE IF EXISTS ", qs_, ".", seenTable(state_.listing_id),
      "; COMMIT"));
}

}  // namespace

std::string seenTable(std::int64_t listing_id) { return strings::cat("seen_", listing_id); }

std::string sessionSetupSql(const StoreOptions& options) {
  // Generic plans: custom plans would re-plan every page with its arrays as constants (tens of
  // ms for 10 000 objects). A generic plan is made once, possibly while the source's objects
  // are few or unanalysed, so seq scans are disabled for the session: the per-object lookup must
  // stay a primary-key probe however the table grows (a seq scan there is O(n) per object).
  // finish() re-enables them for its anti-join. work_mem keeps a page's classified rows in
  // memory. No JIT: a big page's cost estimate would trigger a compile that costs more than it
  // saves.
  return strings::cat("SET synchronous_commit = ", options.synchronous_commit ? "on" : "off",
                      "; SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; "
                      "SET work_mem = '64MB'; SET jit = off");
}

RunPtr makeRun(const StoreOptions& /*options*/, std::string quoted_schema, RunSpec spec,
               RunState state, std::unique_ptr<Session> session) {
  return std::make_unique<RunImpl>(std::move(quoted_schema), std::move(spec), state,
                                   std::move(session));
}

}  // namespace tributary::store::internal
