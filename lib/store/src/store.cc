#include "tributary/store/store.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

#include "migrations.h"
#include "pg.h"
#include "run_impl.h"
#include "session.h"

#include <optional>
#include <variant>

namespace tributary::store {

std::string_view deletionPolicyName(DeletionPolicy policy) {
  switch (policy) {
    case DeletionPolicy::Keep:
      return "Keep";
    case DeletionPolicy::Mark:
      return "Mark";
    case DeletionPolicy::Delete:
      return "Delete";
  }
  return "Mark";
}

absl::StatusOr<DeletionPolicy> parseDeletionPolicy(std::string_view text) {
  const std::string lower = strings::toLower(text);
  if (lower == "keep") {
    return DeletionPolicy::Keep;
  }
  if (lower == "mark") {
    return DeletionPolicy::Mark;
  }
  if (lower == "delete") {
    return DeletionPolicy::Delete;
  }
  return absl::InvalidArgumentError(
      strings::cat("unknown deletion policy \"", text, "\" (expected Keep, Mark or Delete)"));
}

namespace internal {
namespace {

absl::Status validateOptions(const StoreOptions& options) {
  if (options.dsn.empty()) {
    return absl::InvalidArgumentError("store: empty database DSN");
  }
  if (options.schema.empty() || options.schema.size() > 40) {
    return absl::InvalidArgumentError("store: schema name must have 1 to 40 characters");
  }
  return absl::OkStatus();
}

class StoreImpl final : public Store {
 public:
  explicit StoreImpl(StoreOptions options)
      : options_(std::move(options)), qs_(PgConnection::quoteIdentifier(options_.schema)) {}

  absl::StatusOr<int> schemaVersion() override {
    Session session(options_, "tributary-store", "");
    TRIBUTARY_ASSIGN_OR_RETURN(PgConnection * conn,
                               session.connection(session.deadlineFromNow(), "schema version"));
    return recordedVersion(*conn, options_.schema);
  }

  absl::StatusOr<RunPtr> beginRun(const RunSpec& spec) override;
  absl::StatusOr<std::int64_t> fencingHighWaterMark(std::string_view ns,
                                                    std::string_view name) override;
  absl::Status deleteSource(std::string_view ns, std::string_view name) override;
  [[nodiscard]] const StoreOptions& options() const override { return options_; }

 private:
  // BEGIN; body; COMMIT with reconnects until the deadline. The body must be safe to re-run.
  template <typename Body>
  absl::Status transact(Session& session, std::string_view what, Body body);

  StoreOptions options_;
  std::string qs_;
};

template <typename Body>
absl::Status StoreImpl::transact(Session& session, std::string_view what, Body body) {
  std::optional<Clock::time_point> deadline;
  while (true) {
    TRIBUTARY_ASSIGN_OR_RETURN(
        PgConnection * conn,
        session.connection(deadline.value_or(session.deadlineFromNow()), what));
    std::optional<PgError> error;
    absl::Status final_status;
    PgOutcome begin = conn->exec("BEGIN");
    if (!begin.ok()) {
      error = begin.error();
    } else {
      std::variant<absl::Status, PgError> result = body(*conn);
      if (std::holds_alternative<PgError>(result)) {
        error = std::get<PgError>(std::move(result));
      } else if (!std::get<absl::Status>(result).ok()) {
        final_status = std::get<absl::Status>(std::move(result));
      } else {
        PgOutcome commit = conn->exec("COMMIT");
        if (commit.ok()) {
          return absl::OkStatus();
        }
        error = commit.error();
      }
    }
    if (conn->healthy()) {
      conn->exec("ROLLBACK");
    }
    if (!final_status.ok()) {
      return final_status;
    }
    if (error->retryableConnection() || error->retryableTransaction()) {
      if (!deadline) {
        deadline = session.deadlineFromNow();
      }
      session.reset();
      continue;
    }
    return toStatus(*error, what);
  }
}

absl::StatusOr<RunPtr> StoreImpl::beginRun(const RunSpec& spec) {
  if (spec.ns.empty() || spec.name.empty()) {
    return absl::InvalidArgumentError("beginRun: namespace and name are required");
  }
  if (spec.lease_id.empty() || spec.fencing_token <= 0) {
    return absl::InvalidArgumentError(
        "beginRun: a lease (positive fencing token and lease id) is required");
  }
  if (spec.deletion_guard.max_delete_percent < 0 || spec.deletion_guard.max_delete_percent > 100) {
    return absl::InvalidArgumentError(
        strings::cat("beginRun: deletion guard maxDeletePercent must be between 0 and 100, got ",
                     spec.deletion_guard.max_delete_percent));
  }
  auto session =
      std::make_unique<Session>(options_, "tributary-store-run", sessionSetupSql(options_));
  const std::string what = strings::cat("beginning a run of ", spec.ns, "/", spec.name);
  const std::string token = std::to_string(spec.fencing_token);
  RunState state;
  absl::Status status =
      transact(*session, what, [&](PgConnection& conn) -> std::variant<absl::Status, PgError> {
        PgOutcome insert = conn.execParams(
            strings::cat("INSERT INTO ", qs_, ".sources (namespace, name, connector) ",
                         "VALUES ($1, $2, $3) ON CONFLICT (namespace, name) DO NOTHING"),
            {PgParam::text(spec.ns), PgParam::text(spec.name), PgParam::text(spec.connector)});
        if (!insert.ok()) {
          return insert.error();
        }
        PgOutcome source =
            conn.execParams(strings::cat("SELECT id, fence_token, fence_lease FROM ", qs_,
                                         ".sources WHERE namespace = $1 AND name = $2 FOR UPDATE"),
                            {PgParam::text(spec.ns), PgParam::text(spec.name)});
        if (!source.ok()) {
          return source.error();
        }
        state.source_id = source.result().int64(0, 0);
        const std::int64_t hwm = source.result().int64(0, 1);
        const std::string_view lease(source.result().text(0, 2));
        if (spec.fencing_token < hwm) {
          return absl::AbortedError(
              strings::cat("fenced: fencing token ", spec.fencing_token, " is older than ", hwm,
                           ", the newest that began a run of ", spec.ns, "/", spec.name));
        }
        if (spec.fencing_token == hwm && lease != spec.lease_id) {
          return absl::AbortedError(strings::cat(
              "fenced: fencing token ", spec.fencing_token, " of ", spec.ns, "/", spec.name,
              " was already claimed by another lease (the lock service lost its state?); "
              "acquire the lock again with a minimum token above it"));
        }
        const std::string source_text = std::to_string(state.source_id);
        PgOutcome claim = conn.execParams(
            strings::cat("UPDATE ", qs_, ".sources SET fence_token = $2, fence_lease = $3, ",
                         "connector = CASE WHEN $4 = '' THEN connector ELSE $4 END WHERE id = $1"),
            {PgParam::text(source_text), PgParam::text(token), PgParam::text(spec.lease_id),
             PgParam::text(spec.connector)});
        if (!claim.ok()) {
          return claim.error();
        }
        // Older unfinished runs of this source can never write again: close them.
        PgOutcome abandoned = conn.execParams(
            strings::cat("UPDATE ", qs_, ".runs SET outcome = 'abandoned', finished_at = now(), ",
                         "error = 'superseded by a newer run (fencing token ' || $2 || ')' ",
                         "WHERE source_id = $1 AND outcome = 'running' RETURNING listing_id"),
            {PgParam::text(source_text), PgParam::text(token)});
        if (!abandoned.ok()) {
          return abandoned.error();
        }
        std::string drops;
        for (int row = 0; row < abandoned.result().rows(); ++row) {
          drops += strings::cat("DROP TABLE IF EXISTS ", qs_, ".",
                                seenTable(abandoned.result().int64(row, 0)), ";");
        }
        if (!drops.empty()) {
          if (PgOutcome drop = conn.exec(drops); !drop.ok()) {
            return drop.error();
          }
        }
        PgOutcome empty = conn.execParams(strings::cat("SELECT NOT EXISTS (SELECT 1 FROM ", qs_,
                                                       ".objects WHERE source_id = $1)"),
                                          {PgParam::text(source_text)});
        if (!empty.ok()) {
          return empty.error();
        }
        state.source_was_empty = empty.result().boolean(0, 0);
        PgOutcome listing = conn.exec(strings::cat("SELECT nextval('", qs_, ".listing_seq')"));
        if (!listing.ok()) {
          return listing.error();
        }
        state.listing_id = listing.result().int64(0, 0);
        PgOutcome run = conn.execParams(
            strings::cat("INSERT INTO ", qs_, ".runs (source_id, holder, fence_token, ",
                         "fence_lease, attempt, deletion_policy, listing_id, ",
                         "max_delete_percent, deletion_confirmed) ",
                         "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id"),
            {PgParam::text(source_text), PgParam::text(spec.holder), PgParam::text(token),
             PgParam::text(spec.lease_id), PgParam::text(std::to_string(spec.attempt)),
             PgParam::text(std::string(deletionPolicyName(spec.deletion_policy))),
             PgParam::text(std::to_string(state.listing_id)),
             PgParam::text(std::to_string(spec.deletion_guard.max_delete_percent)),
             PgParam::text(spec.deletion_guard.confirmed ? "true" : "false")});
        if (!run.ok()) {
          return run.error();
        }
        state.run_id = run.result().int64(0, 0);
        PgOutcome seen = conn.exec(strings::cat(
            "CREATE UNLOGGED TABLE ", qs_, ".", seenTable(state.listing_id),
            " (remote_id text COLLATE \"C\" NOT NULL) WITH (autovacuum_enabled = off)"));
        if (!seen.ok()) {
          return seen.error();
        }
        return absl::OkStatus();
      });
  if (!status.ok()) {
    return status;
  }
  options_.logger.info("run started",
                       {{"run", state.run_id},
                        {"source", strings::cat(spec.ns, "/", spec.name)},
                        {"fencing_token", spec.fencing_token},
                        {"policy", std::string(deletionPolicyName(spec.deletion_policy))}});
  return makeRun(options_, qs_, spec, state, std::move(session));
}

absl::StatusOr<std::int64_t> StoreImpl::fencingHighWaterMark(std::string_view ns,
                                                             std::string_view name) {
  Session session(options_, "tributary-store", "");
  const std::string what = strings::cat("reading the fencing token of ", ns, "/", name);
  std::optional<Clock::time_point> deadline;
  while (true) {
    TRIBUTARY_ASSIGN_OR_RETURN(
        PgConnection * conn,
        session.connection(deadline.value_or(session.deadlineFromNow()), what));
    PgOutcome row =
        conn->execParams(strings::cat("SELECT fence_token FROM ", qs_,
                                      ".sources WHERE namespace = $1 AND name = $2"),
                         {PgParam::text(std::string(ns)), PgParam::text(std::string(name))});
    if (row.ok()) {
      return row.result().rows() == 0 ? 0 : row.result().int64(0, 0);
    }
    if (!row.error().retryableConnection()) {
      return toStatus(row.error(), what);
    }
    if (!deadline) {
      deadline = session.deadlineFromNow();
    }
    session.reset();
  }
}

absl::Status StoreImpl::deleteSource(std::string_view ns, std::string_view name) {
  Session session(options_, "tributary-store", "");
  const std::string ns_text(ns);
  const std::string name_text(name);
  return transact(
      session, strings::cat("deleting source ", ns, "/", name),
      [&](PgConnection& conn) -> std::variant<absl::Status, PgError> {
        PgOutcome source =
            conn.execParams(strings::cat("SELECT id FROM ", qs_,
                                         ".sources WHERE namespace = $1 AND name = $2 FOR UPDATE"),
                            {PgParam::text(ns_text), PgParam::text(name_text)});
        if (!source.ok()) {
          return source.error();
        }
        if (source.result().rows() == 0) {
          return absl::NotFoundError(strings::cat("no source ", ns, "/", name));
        }
        const std::string id(source.result().text(0, 0));
        PgOutcome running =
            conn.execParams(strings::cat("SELECT count(*) FROM ", qs_,
                                         ".runs WHERE source_id = $1 AND outcome = 'running'"),
                            {PgParam::text(id)});
        if (!running.ok()) {
          return running.error();
        }
        if (running.result().int64(0, 0) > 0) {
          return absl::AbortedError(
              strings::cat("source ", ns, "/", name, " has a running run; finish it first"));
        }
        PgOutcome removed =
            conn.execParams(strings::cat("DELETE FROM ", qs_, ".objects WHERE source_id = $1"),
                            {PgParam::text(id)});
        if (!removed.ok()) {
          return removed.error();
        }
        PgOutcome removed_source = conn.execParams(
            strings::cat("DELETE FROM ", qs_, ".sources WHERE id = $1"), {PgParam::text(id)});
        if (!removed_source.ok()) {
          return removed_source.error();
        }
        return absl::OkStatus();
      });
}

}  // namespace
}  // namespace internal

absl::Status Store::migrate(const StoreOptions& options, int target_version) {
  TRIBUTARY_RETURN_IF_ERROR(internal::validateOptions(options));
  internal::Session session(options, "tributary-store-migrate", "");
  TRIBUTARY_ASSIGN_OR_RETURN(
      internal::PgConnection * conn,
      session.connection(session.deadlineFromNow(), "connecting to migrate the store"));
  return internal::applyMigrations(*conn, options.schema, target_version);
}

int Store::latestSchemaVersion() {
  const auto& all = internal::migrations();
  return all.empty() ? 0 : all.back().version;
}

absl::StatusOr<std::unique_ptr<Store>> Store::open(StoreOptions options) {
  TRIBUTARY_RETURN_IF_ERROR(migrate(options));
  return std::unique_ptr<Store>(new internal::StoreImpl(std::move(options)));
}

}  // namespace tributary::store
