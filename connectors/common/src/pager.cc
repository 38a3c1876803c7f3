#include "tributary/connectors/pager.h"

#include <utility>

namespace tributary::connectors {

Pager::Pager(sdk::Callback& callback, std::size_t page_size, std::size_t max_page_bytes)
    : callback_(callback),
      page_size_(page_size == 0 ? 1 : page_size),
      max_page_bytes_(max_page_bytes) {}

absl::Status Pager::checkCancelled() const {
  if (callback_.cancelled()) {
    return absl::CancelledError("the host cancelled the sync");
  }
  return absl::OkStatus();
}

absl::Status Pager::add(proto::DataObject object) {
  const std::size_t bytes = object.ByteSizeLong() + 8;  // + field tag and length prefix.
  if (!buffer_.empty() && buffer_bytes_ + bytes > max_page_bytes_) {
    if (absl::Status status = flush(); !status.ok()) {
      return status;
    }
  }
  buffer_.push_back(std::move(object));
  buffer_bytes_ += bytes;
  if (buffer_.size() >= page_size_) {
    return flush();
  }
  return absl::OkStatus();
}

absl::Status Pager::flush() {
  if (buffer_.empty()) {
    return checkCancelled();
  }
  if (absl::Status status = checkCancelled(); !status.ok()) {
    return status;
  }
  if (absl::Status status = callback_.upsert(buffer_); !status.ok()) {
    return status;  // The host's code and message, with the SDK's page context.
  }
  ++pages_;
  objects_ += buffer_.size();
  buffer_.clear();
  buffer_bytes_ = 0;
  return absl::OkStatus();
}

}  // namespace tributary::connectors
