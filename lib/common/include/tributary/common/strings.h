#pragma once

#include "absl/strings/string_view.h"

#include <charconv>
#include <concepts>
#include <string>
#include <string_view>
#include <vector>

// Small string helpers. Debian 12's abseil keeps its own absl::string_view (not an alias of
// std::string_view), which makes absl::StrCat/StrSplit awkward with std types; these accept both.
namespace tributary::strings {

namespace internal {
inline void append(std::string& out, std::string_view s) { out.append(s); }
inline void append(std::string& out, const char* s) { out.append(s); }
inline void append(std::string& out, const std::string& s) { out.append(s); }
inline void append(std::string& out, absl::string_view s) { out.append(s.data(), s.size()); }
inline void append(std::string& out, char c) { out.push_back(c); }
inline void append(std::string& out, bool b) { out.append(b ? "true" : "false"); }
template <std::integral T>
void append(std::string& out, T value) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  out.append(buf, end);
}
inline void append(std::string& out, double value) { out.append(std::to_string(value)); }
}  // namespace internal

/// Concatenates strings, string views (std and absl), characters and numbers.
template <typename... Args>
std::string cat(const Args&... args) {
  std::string out;
  (internal::append(out, args), ...);
  return out;
}

/// Joins items (anything `cat` accepts) with `sep`.
template <typename Range>
std::string join(const Range& items, std::string_view sep) {
  std::string out;
  bool first = true;
  for (const auto& item : items) {
    if (!first) {
      out.append(sep);
    }
    first = false;
    internal::append(out, item);
  }
  return out;
}

/// Splits on every `sep` (empty fields kept, like Go's strings.Split).
std::vector<std::string_view> split(std::string_view text, char sep);

/// Removes ASCII whitespace at both ends.
std::string_view trim(std::string_view text);

/// ASCII lower case.
std::string toLower(std::string_view text);

/// The text for an errno value (thread-safe, unlike strerror).
std::string errnoMessage(int err);

}  // namespace tributary::strings
