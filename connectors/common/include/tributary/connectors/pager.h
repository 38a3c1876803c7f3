#pragma once

#include "tributary/sdk/connector.h"

#include "absl/status/status.h"
#include "connector.pb.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tributary::connectors {

/// Groups objects into pages and sends each page with one Upsert as soon as it is full (by
/// count, or by encoded size so that no page approaches a host's receive limit). Streaming:
/// at most one page is held in memory.
///
/// Every error is final: an Upsert the host refused (its status, with the host's code, is
/// returned as is) or the host's cancellation. The connector must return that error from
/// sync(), never report success after it.
class Pager {
 public:
  /// 2 MiB: half of a Go host's default 4 MiB gRPC receive limit.
  static constexpr std::size_t kDefaultMaxPageBytes = 2U << 20U;

  Pager(sdk::Callback& callback, std::size_t page_size,
        std::size_t max_page_bytes = kDefaultMaxPageBytes);

  /// Adds one object; sends the page when it is full.
  absl::Status add(proto::DataObject object);
  /// Sends what is buffered (no-op when empty). Call once at the end.
  absl::Status flush();
  /// CANCELLED once the host cancelled the Sync.
  [[nodiscard]] absl::Status checkCancelled() const;

  [[nodiscard]] std::uint64_t pages() const { return pages_; }
  [[nodiscard]] std::uint64_t objects() const { return objects_; }

 private:
  sdk::Callback& callback_;
  std::size_t page_size_;
  std::size_t max_page_bytes_;
  std::vector<proto::DataObject> buffer_;
  std::size_t buffer_bytes_ = 0;
  std::uint64_t pages_ = 0;
  std::uint64_t objects_ = 0;
};

}  // namespace tributary::connectors
