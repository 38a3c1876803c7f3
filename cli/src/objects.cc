// `tributary objects`: what a sync stored, through the store's read views (lib/store/README.md).
#include "tributary/common/strings.h"

#include "commands.h"
#include "common.h"
#include "libpq-fe.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <iostream>
#include <memory>

namespace tributary::cli {
namespace {

using strings::cat;

constexpr const char* kUsage = R"USAGE(usage: tributary objects [NAMESPACE/]SYNCJOB [options]

Lists the objects a SyncJob stored (the store's read views; no SQL needed).

  --state S         live (default: not deleted), present, missing, deleted, or all
  --prefix P        only remote_ids starting with P
  --limit N         at most N objects (default 50; 0 = all)
  --json            one JSON object per line (all columns, metadata included)
  --database-url U  PostgreSQL (default: $DATABASE_URL, else the local database)
  --schema S        the store's schema (default tributary)

Without a namespace, the SyncJob name must be unique across namespaces.
Exit status: 0 ok, 2 usage, 3 unknown SyncJob, 4 database.
)USAGE";

struct PgDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
  void operator()(PGresult* r) const { PQclear(r); }
};
using Conn = std::unique_ptr<PGconn, PgDeleter>;
using Result = std::unique_ptr<PGresult, PgDeleter>;

Result query(PGconn* conn, const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) {
    values.push_back(p.c_str());
  }
  return Result(PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr,
                             values.data(), nullptr, nullptr, 0));
}

std::string quoteIdent(PGconn* conn, const std::string& name) {
  char* quoted = PQescapeIdentifier(conn, name.c_str(), name.size());
  std::string out = quoted != nullptr ? quoted : "\"\"";
  PQfreemem(quoted);
  return out;
}

std::string clip(std::string_view text, std::size_t width) {
  if (text.size() <= width) {
    return std::string(text);
  }
  return cat(text.substr(0, width - 1), "…");
}

}  // namespace

int objectsCommand(const std::vector<std::string>& argv) {
  FlagSpec spec;
  spec.with_value = {"--state", "--prefix", "--limit", "--database-url", "--schema"};
  spec.boolean = {"--json", "-h", "--help"};
  auto args = parseArgs(argv, spec);
  if (args.ok() && args->has("--help")) {
    std::cout << kUsage;
    return kExitOk;
  }
  if (!args.ok() || args->positionals.size() != 1) {
    return usageError(args.ok() ? std::string("objects takes one SyncJob ([NAMESPACE/]NAME)")
                                : std::string(args.status().message()),
                      kUsage);
  }
  const std::string state = args->get("--state").value_or("live");
  if (state != "live" && state != "present" && state != "missing" && state != "deleted" &&
      state != "all") {
    std::cerr << "tributary: --state must be live, present, missing, deleted or all, got `" << state
              << "`\n";
    return kExitUsage;
  }
  long long limit = 50;  // NOLINT(google-runtime-int)
  if (auto text = args->get("--limit")) {
    try {
      std::size_t used = 0;
      limit = std::stoll(*text, &used);
      if (used != text->size() || limit < 0) {
        throw std::invalid_argument("limit");
      }
    } catch (const std::exception&) {
      std::cerr << "tributary: --limit takes a number >= 0, got `" << *text << "`\n";
      return kExitUsage;
    }
  }
  const bool json = args->has("--json");
  std::string ns;
  std::string name = args->positionals[0];
  if (const auto slash = name.find('/'); slash != std::string::npos) {
    ns = name.substr(0, slash);
    name = name.substr(slash + 1);
  }

  auto db = resolveDatabase(args->get("--database-url"), LocalStart::IfInitialized);
  if (!db.ok()) {
    return report({absl::IsNotFound(db.status()) ? kExitInvalid : kExitDatabase,
                   std::string(db.status().message())});
  }
  const std::string conninfo = db->dsn;
  const char* keys[] = {"dbname", "connect_timeout", nullptr};
  const char* values[] = {conninfo.c_str(), "10", nullptr};
  Conn conn(PQconnectdbParams(keys, values, 1));
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return report({kExitDatabase, cat("cannot connect to ", db->display, ": ",
                                      strings::trim(PQerrorMessage(conn.get())))});
  }
  const std::string schema = quoteIdent(conn.get(), args->get("--schema").value_or("tributary"));

  // Which SyncJob?
  {
    std::string sql = cat("SELECT namespace FROM ", schema, ".sync_jobs WHERE sync_job = $1");
    std::vector<std::string> params = {name};
    if (!ns.empty()) {
      sql += " AND namespace = $2";
      params.push_back(ns);
    }
    Result found = query(conn.get(), sql, params);
    if (PQresultStatus(found.get()) != PGRES_TUPLES_OK) {
      return report({kExitDatabase, cat("cannot read ", schema, ".sync_jobs on ", db->display, ": ",
                                        strings::trim(PQresultErrorMessage(found.get())),
                                        " (has anything been synced into this database?)")});
    }
    if (PQntuples(found.get()) == 0) {
      Result all = query(conn.get(),
                         cat("SELECT namespace || '/' || sync_job FROM ", schema,
                             ".sync_jobs ORDER BY 1 LIMIT 20"),
                         {});
      std::vector<std::string> names;
      for (int i = 0; i < PQntuples(all.get()); ++i) {
        names.emplace_back(PQgetvalue(all.get(), i, 0));
      }
      return report(
          {kExitInvalid, cat("no SyncJob `", args->positionals[0], "` in ", db->display,
                             names.empty() ? std::string(" (nothing synced yet)")
                                           : cat(" (known: ", strings::join(names, ", "), ")"))});
    }
    if (PQntuples(found.get()) > 1) {
      std::vector<std::string> names;
      for (int i = 0; i < PQntuples(found.get()); ++i) {
        names.push_back(cat(PQgetvalue(found.get(), i, 0), "/", name));
      }
      return report({kExitInvalid, cat("SyncJob `", name, "` exists in several namespaces: ",
                                       strings::join(names, ", "), "; write NAMESPACE/NAME")});
    }
    ns = PQgetvalue(found.get(), 0, 0);
  }

  std::string where = "namespace = $1 AND sync_job = $2";
  std::vector<std::string> params = {ns, name};
  std::string view = "object_versions";
  if (state == "live") {
    view = "live_objects";
  } else if (state != "all") {
    params.push_back(state);
    where += cat(" AND state = $", params.size());
  }
  if (auto prefix = args->get("--prefix")) {
    params.push_back(*prefix);
    where += cat(" AND starts_with(remote_id, $", params.size(), ")");
  }
  const std::string ts = R"(to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))";
  auto time = [&](const char* column) {
    std::string out = ts;
    out.replace(out.find("%s"), 2, column);
    return cat(out, " AS ", column);
  };
  const std::string sql =
      cat("SELECT remote_id, resource_name, uri, metadata, state, ", time("first_seen"), ", ",
          time("last_seen"), ", ", time("last_changed"), ", ", time("missing_since"), ", ",
          time("deleted_at"), ", count(*) OVER () AS total FROM ", schema, ".", view, " WHERE ",
          where, " ORDER BY remote_id COLLATE \"C\"", limit > 0 ? cat(" LIMIT ", limit) : "");
  Result rows = query(conn.get(), sql, params);
  if (PQresultStatus(rows.get()) != PGRES_TUPLES_OK) {
    return report({kExitDatabase,
                   cat("cannot list objects: ", strings::trim(PQresultErrorMessage(rows.get())))});
  }
  const int n = PQntuples(rows.get());
  auto value = [&](int row, int col) -> std::string {
    return PQgetisnull(rows.get(), row, col) != 0 ? "" : PQgetvalue(rows.get(), row, col);
  };
  if (json) {
    for (int i = 0; i < n; ++i) {
      nlohmann::json out = {{"namespace", ns},          {"sync_job", name},
                            {"remote_id", value(i, 0)}, {"resource_name", value(i, 1)},
                            {"uri", value(i, 2)},       {"metadata", value(i, 3)},
                            {"state", value(i, 4)}};
      const char* times[] = {"first_seen", "last_seen", "last_changed", "missing_since",
                             "deleted_at"};
      for (int t = 0; t < 5; ++t) {
        out[times[t]] = PQgetisnull(rows.get(), i, 5 + t) != 0 ? nlohmann::json(nullptr)
                                                               : nlohmann::json(value(i, 5 + t));
      }
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    }
    return kExitOk;
  }
  if (n == 0) {
    std::cout << "no " << (state == "all" ? "" : state + " ") << "objects in " << ns << "/" << name
              << '\n';
    return kExitOk;
  }
  std::size_t id_width = 9;
  std::size_t name_width = 13;
  for (int i = 0; i < n; ++i) {
    id_width = std::max(id_width, std::min<std::size_t>(value(i, 0).size(), 48));
    name_width = std::max(name_width, std::min<std::size_t>(value(i, 1).size(), 32));
  }
  auto pad = [](std::string text, std::size_t width) {
    text = clip(text, width);
    // Pad by code points, roughly: count UTF-8 continuation bytes out.
    std::size_t shown = 0;
    for (const char c : text) {
      shown += (static_cast<unsigned char>(c) & 0xC0U) != 0x80U ? 1 : 0;
    }
    return text + std::string(width > shown ? width - shown : 0, ' ');
  };
  // When the objects went away: DELETED_AT once any shown object is soft-deleted, else
  // MISSING_SINCE once any is missing (deletionPolicy Keep). Empty for the others.
  bool any_deleted = false;
  bool any_missing = false;
  for (int i = 0; i < n; ++i) {
    any_deleted = any_deleted || !value(i, 9).empty();
    any_missing = any_missing || !value(i, 8).empty();
  }
  const int gone_column = any_deleted ? 9 : any_missing ? 8 : -1;
  std::cout << pad("REMOTE_ID", id_width) << "  " << pad("STATE", 7) << "  "
            << pad("RESOURCE_NAME", name_width) << "  " << pad("LAST_CHANGED", 20) << "  "
            << (gone_column < 0 ? ""
                                : pad(gone_column == 9 ? "DELETED_AT" : "MISSING_SINCE", 20) + "  ")
            << "URI\n";
  for (int i = 0; i < n; ++i) {
    std::cout << pad(value(i, 0), id_width) << "  " << pad(value(i, 4), 7) << "  "
              << pad(value(i, 1), name_width) << "  " << pad(value(i, 7), 20) << "  "
              << (gone_column < 0 ? "" : pad(value(i, gone_column), 20) + "  ")
              << clip(value(i, 2), 60) << '\n';
  }
  const long long total = std::stoll(value(0, 10));  // NOLINT(google-runtime-int)
  std::cout << (total > n ? cat("showing ", n, " of ", total) : cat(total)) << " "
            << (state == "all" ? "" : state + " ") << "object" << (total == 1 ? "" : "s") << " of "
            << ns << "/" << name << (total > n ? " (--limit N, 0 for all)" : "") << '\n';
  return kExitOk;
}

}  // namespace tributary::cli
