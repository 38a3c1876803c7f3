#pragma once

// Versioned schema migrations, embedded in the binary (generated migrations_embedded.cc from
// lib/store/migrations/NNNN_name.sql by embed_migrations.cmake).

#include "absl/status/status.h"
#include "pg.h"

#include <string>
#include <string_view>
#include <vector>

namespace tributary::store::internal {

struct Migration {
  int version;
  const char* name;
  const char* sql;  ///< Template: {{schema}} stands for the quoted schema name.
};

/// All migrations, ascending, versions 1..N without gaps.
const std::vector<Migration>& migrations();

/// The SQL of `migration` for `schema` (quoted).
std::string renderMigration(const Migration& migration, std::string_view quoted_schema);

/**
 * Brings `schema` to `target_version` (0 = latest) in one transaction under a transaction-level
 * advisory lock keyed by the schema name, so concurrent callers serialise and all but the first
 * find nothing to do. Verifies the checksums of already applied migrations and refuses
 * (FAILED_PRECONDITION) a database whose version is newer than this binary knows.
 */
absl::Status applyMigrations(PgConnection& conn, std::string_view schema, int target_version);

/// The recorded version (0 when the schema or its version table does not exist).
absl::StatusOr<int> recordedVersion(PgConnection& conn, std::string_view schema);

}  // namespace tributary::store::internal
