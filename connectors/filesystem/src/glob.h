#pragma once

#include "absl/status/statusor.h"

#include <string>
#include <string_view>
#include <vector>

namespace tributary::connectors::filesystem {

/// A gitignore-like glob over '/'-separated paths relative to the root:
///   - `*` any run of characters within one name, `?` one character (a code point, not a byte),
///     `[abc]` `[a-z]` `[!a-z]` a character class, `\x` the character x;
///   - `**` as a whole segment: any number of names (zero included);
///   - a pattern with no '/' (other than a trailing one) matches the name at any depth
///     (`*.log`); a pattern with a '/' is anchored at the root (`src/*.cc`, `/build`);
///   - a trailing '/' matches directories only (`cache/`).
class Glob {
 public:
  static absl::StatusOr<Glob> compile(std::string_view pattern);

  /// `path`: valid UTF-8, relative to the root, '/'-separated, without leading './'.
  [[nodiscard]] bool matches(std::string_view path, bool is_directory) const;
  [[nodiscard]] const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  std::vector<std::u32string> segments_;
  bool anchored_ = false;
  bool directories_only_ = false;
};

}  // namespace tributary::connectors::filesystem
