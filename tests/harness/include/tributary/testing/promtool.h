#pragma once
// Prometheus exposition checks with the real promtool (Debian's prometheus package).

#include <absl/status/status.h>

#include <string_view>

namespace tributary::harness {

/// Runs `promtool check metrics` on `text`. OK when promtool accepts it; otherwise an error with
/// promtool's output. A missing promtool is an error too (scripts/bootstrap.sh installs it), so
/// a machine without it fails the test instead of skipping the check.
absl::Status promtoolCheckMetrics(std::string_view text);

}  // namespace tributary::harness
