#pragma once

#include "tributary/store/store.h"

#include "session.h"

#include <cstdint>
#include <memory>
#include <string>

namespace tributary::store::internal {

/// What beginRun() committed and the Run needs.
struct RunState {
  std::int64_t source_id = 0;
  std::int64_t run_id = 0;
  std::int64_t listing_id = 0;
  /// The source had no objects when the run began (the first page is then written insert-first).
  bool source_was_empty = false;
};

/// Creates the page writer for a run that beginRun() committed, taking over its session.
RunPtr makeRun(const StoreOptions& options, std::string quoted_schema, RunSpec spec, RunState state,
               std::unique_ptr<Session> session);

/// Name of the UNLOGGED seen-set table of a listing (unquoted; a safe identifier).
std::string seenTable(std::int64_t listing_id);

/// Session setup shared by all store connections.
std::string sessionSetupSql(const StoreOptions& options);

}  // namespace tributary::store::internal
