#pragma once

// RFC 3339 timestamps as Kubernetes writes them (metav1.Time and MicroTime).

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace tributary::rfc3339 {

/// UTC with seconds ("2025-01-02T03:04:05Z") and with microseconds (MicroTime).
std::string formatTime(std::chrono::system_clock::time_point t);
std::string formatMicroTime(std::chrono::system_clock::time_point t);
/// Parses both forms (and offsets like +02:00). nullopt if invalid.
std::optional<std::chrono::system_clock::time_point> parseTime(std::string_view text);

}  // namespace tributary::rfc3339
