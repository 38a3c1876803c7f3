#pragma once

// Client-side page preparation: validation (what PostgreSQL text cannot hold), "last wins"
// de-duplication, the JSON check deciding whether metadata also goes into the jsonb column, and
// the wire encodings (binary arrays for unnest, binary COPY rows).

#include "absl/status/statusor.h"
#include "connector.pb.h"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::store::internal {

struct PreparedPage {
  /// De-duplicated objects in page order (each remote_id at the position of its last copy).
  std::vector<const proto::DataObject*> objects;
  /// Per object: metadata is JSON PostgreSQL's jsonb will accept.
  std::vector<bool> json_ok;
  std::size_t received = 0;
  std::size_t duplicates = 0;
  std::size_t bytes = 0;  ///< Sum of the string field sizes.
};

/// Validates and de-duplicates. INVALID_ARGUMENT (naming the object and field) for an empty or
/// over-long remote_id, a NUL byte, or invalid UTF-8 in any field.
absl::StatusOr<PreparedPage> preparePage(const proto::SyncResponse& page,
                                         std::size_t max_remote_id_bytes);

/// True if `text` is JSON that PostgreSQL's jsonb input accepts: RFC 8259 (no comments), no
/// \u0000 escape, numbers within numeric's range. Must never throw.
bool jsonbCompatible(std::string_view text);

/// Valid UTF-8 without NUL bytes; on failure `offset` is the first bad byte.
bool validText(std::string_view text, std::size_t* offset, bool* nul);

/// The five arrays of the unnest statement, in PostgreSQL's binary array format.
struct ArrayParams {
  std::string remote_ids;
  std::string resource_names;
  std::string uris;
  std::string metadata;
  std::string json_ok;
};
ArrayParams encodeArrays(const PreparedPage& page);

/// Binary COPY data for (remote_id, resource_name, uri, metadata, json_ok).
std::string encodeCopy(const PreparedPage& page);

}  // namespace tributary::store::internal
