#pragma once

#include "absl/status/statusor.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

/// Reading a connector's Sync options (a JSON object) with errors a user can act on: every
/// message names the option, says what was expected and what was given, and unknown keys are
/// refused (a typo must not silently fall back to a default).
namespace tributary::connectors {

class OptionReader {
 public:
  /// Parses `text` (empty or blank means `{}`) and refuses keys not in `known`. `connector`
  /// prefixes every message ("filesystem: invalid options: ...").
  static absl::StatusOr<OptionReader> parse(std::string_view connector, std::string_view text,
                                            const std::vector<std::string>& known);

  [[nodiscard]] bool has(const std::string& key) const;

  absl::StatusOr<std::optional<std::string>> string(const std::string& key) const;
  /// A string that must be one of `choices`.
  absl::StatusOr<std::optional<std::string>> choice(const std::string& key,
                                                    const std::vector<std::string>& choices) const;
  absl::StatusOr<std::optional<bool>> boolean(const std::string& key) const;
  absl::StatusOr<std::optional<std::int64_t>> integer(const std::string& key, std::int64_t min,
                                                      std::int64_t max) const;
  /// An array of non-empty strings (a single string is accepted as a one-element list).
  absl::StatusOr<std::optional<std::vector<std::string>>> stringList(const std::string& key) const;

  /// "<connector>: invalid options: <message>" as InvalidArgument.
  [[nodiscard]] absl::Status error(std::string_view message) const;

 private:
  OptionReader(std::string connector, nlohmann::json json)
      : connector_(std::move(connector)), json_(std::move(json)) {}
  absl::Status typeError(const std::string& key, std::string_view expected) const;

  std::string connector_;
  nlohmann::json json_;
};

/// A JSON value as short text for messages (at most ~60 characters).
std::string describeValue(const nlohmann::json& value);

}  // namespace tributary::connectors
