#pragma once

// Private helpers of lib/kube.

#include "absl/status/statusor.h"

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace tributary::kube::internal {

/// Parses one YAML document (kubeconfig) into JSON. Plain scalars true/false become booleans,
/// null/~/empty become null, everything else is a string (numbers too: kubeconfig has none that
/// matter). Aliases are resolved. Errors carry the line and column.
absl::StatusOr<nlohmann::json> parseYaml(std::string_view text);

/// Standard base64 (padding optional, whitespace ignored). Error on invalid input.
absl::StatusOr<std::string> base64Decode(std::string_view in);
std::string base64Encode(std::string_view in);

/// Reads a whole file; NotFound / PermissionDenied etc. name the path.
absl::StatusOr<std::string> readFile(const std::string& path);

/// Percent-encodes a query component (RFC 3986 unreserved kept).
std::string urlEncode(std::string_view in);

}  // namespace tributary::kube::internal
