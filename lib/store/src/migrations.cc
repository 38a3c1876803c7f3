#include "migrations.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

namespace tributary::store::internal {
namespace {

constexpr std::string_view kPlaceholder = "{{schema}}";

// Runs `sql` in the open transaction; on error rolls back and returns the status.
absl::Status run(PgConnection& conn, const std::string& sql, std::string_view what,
                 const std::vector<PgParam>& params = {}) {
  PgOutcome outcome = params.empty() ? conn.exec(sql) : conn.execParams(sql, params);
  if (!outcome.ok()) {
    conn.exec("ROLLBACK");
    return toStatus(outcome.error(), what);
  }
  return absl::OkStatus();
}

}  // namespace

std::string renderMigration(const Migration& migration, std::string_view quoted_schema) {
  std::string sql = migration.sql;
  for (std::size_t pos = sql.find(kPlaceholder); pos != std::string::npos;
       pos = sql.find(kPlaceholder, pos + quoted_schema.size())) {
    sql.replace(pos, kPlaceholder.size(), quoted_schema);
  }
  return sql;
}

absl::StatusOr<int> recordedVersion(PgConnection& conn, std::string_view schema) {
  const std::string table =
      strings::cat(PgConnection::quoteIdentifier(schema), ".schema_migrations");
  const std::string name = strings::cat(schema, ".schema_migrations");
  const std::string quoted_name = strings::cat(PgConnection::quoteIdentifier(schema), ".",
                                               PgConnection::quoteIdentifier("schema_migrations"));
  PgOutcome exists =
      conn.execParams("SELECT to_regclass($1) IS NOT NULL", {PgParam::text(quoted_name)});
  if (!exists.ok()) {
    return toStatus(exists.error(), "reading the schema version");
  }
  if (!exists.result().boolean(0, 0)) {
    return 0;
  }
  PgOutcome version = conn.exec(strings::cat("SELECT coalesce(max(version), 0) FROM ", table));
  if (!version.ok()) {
    return toStatus(version.error(), strings::cat("reading ", name));
  }
  return static_cast<int>(version.result().int64(0, 0));
}

absl::Status applyMigrations(PgConnection& conn, std::string_view schema, int target_version) {
  const std::vector<Migration>& all = migrations();
  const int latest = all.empty() ? 0 : all.back().version;
  if (target_version <= 0 || target_version > latest) {
    target_version = latest;
  }
  const std::string quoted = PgConnection::quoteIdentifier(schema);
  const std::string table = strings::cat(quoted, ".schema_migrations");
  const std::string lock_key = strings::cat("tributary.store.migrate:", schema);

  PgOutcome begin = conn.exec("BEGIN");
  if (!begin.ok()) {
    return toStatus(begin.error(), "starting the migration transaction");
  }
  // Everything below runs under the lock, so CREATE SCHEMA / CREATE TABLE IF NOT EXISTS and the
  // version check never race with another process doing the same.
  TRIBUTARY_RETURN_IF_ERROR(run(conn, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                                "taking the migration lock", {PgParam::text(lock_key)}));
  TRIBUTARY_RETURN_IF_ERROR(
      run(conn, strings::cat("CREATE SCHEMA IF NOT EXISTS ", quoted), "creating the schema"));
  TRIBUTARY_RETURN_IF_ERROR(run(conn,
                                strings::cat("CREATE TABLE IF NOT EXISTS ", table,
                                             " (version integer PRIMARY KEY, name text NOT NULL,"
                                             " checksum text NOT NULL,"
                                             " applied_at timestamptz NOT NULL DEFAULT now())"),
                                "creating the version table"));

  PgOutcome applied =
      conn.exec(strings::cat("SELECT version, checksum FROM ", table, " ORDER BY version"));
  if (!applied.ok()) {
    conn.exec("ROLLBACK");
    return toStatus(applied.error(), "reading applied migrations");
  }
  int current = 0;
  for (int row = 0; row < applied.result().rows(); ++row) {
    const int version = static_cast<int>(applied.result().int64(row, 0));
    current = std::max(current, version);
    if (version > latest) {
      conn.exec("ROLLBACK");
      return absl::FailedPreconditionError(
          strings::cat("database schema ", quoted, " is at version ", version,
                       ", newer than this binary knows (", latest,
                       "); run a newer tributary or use another schema"));
    }
    const Migration& known = all[static_cast<std::size_t>(version - 1)];
    PgOutcome same = conn.execParams("SELECT md5($1) = $2",
                                     {PgParam::text(std::string(known.sql)),
                                      PgParam::text(std::string(applied.result().text(row, 1)))});
    if (!same.ok()) {
      conn.exec("ROLLBACK");
      return toStatus(same.error(), "checking migration checksums");
    }
    if (!same.result().boolean(0, 0)) {
      conn.exec("ROLLBACK");
      return absl::FailedPreconditionError(strings::cat(
          "database schema ", quoted, ": migration ", version, " (", known.name,
          ") was applied from different SQL than this binary carries; refusing to continue"));
    }
  }

  for (const Migration& migration : all) {
    if (migration.version <= current || migration.version > target_version) {
      continue;
    }
    TRIBUTARY_RETURN_IF_ERROR(
        run(conn, renderMigration(migration, quoted),
            strings::cat("applying migration ", migration.version, " (", migration.name, ")")));
    TRIBUTARY_RETURN_IF_ERROR(run(
        conn,
        strings::cat("INSERT INTO ", table, " (version, name, checksum) VALUES ($1, $2, md5($3))"),
        "recording the migration",
        {PgParam::text(std::to_string(migration.version)), PgParam::text(migration.name),
         PgParam::text(std::string(migration.sql))}));
  }
  PgOutcome commit = conn.exec("COMMIT");
  if (!commit.ok()) {
    return toStatus(commit.error(), "committing migrations");
  }
  return absl::OkStatus();
}

}  // namespace tributary::store::internal
