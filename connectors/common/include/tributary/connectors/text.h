#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <string_view>

namespace tributary::connectors {

/// Strict UTF-8 (what protobuf and Go hosts accept): no overlong forms, no surrogates, nothing
/// above U+10FFFF.
bool isValidUtf8(std::string_view text);

/// Decodes strict UTF-8 into code points; nullopt if invalid.
std::optional<std::u32string> decodeUtf8(std::string_view text);

/// `text` with invalid bytes shown as \xHH and control characters escaped (\n, \t, \x01), for
/// error messages and logs: always valid UTF-8, always one line.
std::string printable(std::string_view text);

/// Percent-encodes every byte except RFC 3986 unreserved characters and '/'.
std::string percentEncodePath(std::string_view path);

/// Percent-encodes every byte except unreserved characters (for a fragment or a query value,
/// '/' is kept too).
std::string percentEncodeComponent(std::string_view text);

/// `file://` URL of an absolute path: "file:///tmp/a%20b".
std::string fileUrl(std::string_view absolute_path);

/// RFC 3339 UTC timestamp with nanoseconds: "2026-01-02T03:04:05.123456789Z".
std::string rfc3339Nanos(const struct timespec& ts);

}  // namespace tributary::connectors
