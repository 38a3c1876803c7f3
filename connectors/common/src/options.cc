#include "tributary/connectors/options.h"

#include "tributary/common/strings.h"

#include <algorithm>

namespace tributary::connectors {

std::string describeValue(const nlohmann::json& value) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  constexpr std::size_t kMax = 60;
  if (text.size() > kMax) {
    text = strings::cat(text.substr(0, kMax), "…");
  }
  return text;
}

absl::StatusOr<OptionReader> OptionReader::parse(std::string_view connector, std::string_view text,
                                                 const std::vector<std::string>& known) {
  std::string name(connector);
  const auto fail = [&](std::string_view message) {
    return absl::InvalidArgumentError(strings::cat(name, ": invalid options: ", message));
  };
  if (strings::trim(text).empty()) {
    return OptionReader(std::move(name), nlohmann::json::object());
  }
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return fail("not valid JSON; the options must be a JSON object such as {\"key\": \"value\"}");
  }
  if (!json.is_object()) {
    return fail(strings::cat("expected a JSON object, got ", describeValue(json)));
  }
  for (const auto& [key, value] : json.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return fail(strings::cat("unknown option \"", key,
                               "\" (known options: ", strings::join(known, ", "), ")"));
    }
  }
  return OptionReader(std::move(name), std::move(json));
}

bool OptionReader::has(const std::string& key) const {
  return json_.contains(key) && !json_.at(key).is_null();
}

absl::Status OptionReader::error(std::string_view message) const {
  return absl::InvalidArgumentError(strings::cat(connector_, ": invalid options: ", message));
}

absl::Status OptionReader::typeError(const std::string& key, std::string_view expected) const {
  return error(
      strings::cat("\"", key, "\" must be ", expected, ", got ", describeValue(json_.at(key))));
}

absl::StatusOr<std::optional<std::string>> OptionReader::string(const std::string& key) const {
  if (!has(key)) {
    return std::nullopt;
  }
  const auto& value = json_.at(key);
  if (!value.is_string()) {
    return typeError(key, "a string");
  }
  return value.get<std::string>();
}

absl::StatusOr<std::optional<std::string>> OptionReader::choice(
    const std::string& key, const std::vector<std::string>& choices) const {
  auto value = string(key);
  if (!value.ok() || !value->has_value()) {
    return value;
  }
  if (std::find(choices.begin(), choices.end(), **value) == choices.end()) {
    std::vector<std::string> quoted;
    quoted.reserve(choices.size());
    for (const auto& c : choices) {
      quoted.push_back(strings::cat("\"", c, "\""));
    }
    return typeError(key, strings::cat("one of ", strings::join(quoted, ", ")));
  }
  return value;
}

absl::StatusOr<std::optional<bool>> OptionReader::boolean(const std::string& key) const {
  if (!has(key)) {
    return std::nullopt;
  }
  const auto& value = json_.at(key);
  if (!value.is_boolean()) {
    return typeError(key, "true or false");
  }
  return value.get<bool>();
}

absl::StatusOr<std::optional<std::int64_t>> OptionReader::integer(const std::string& key,
                                                                  std::int64_t min,
                                                                  std::int64_t max) const {
  if (!has(key)) {
    return std::nullopt;
  }
  const auto& value = json_.at(key);
  const std::string expected = strings::cat("an integer from ", min, " to ", max);
  if (!value.is_number_integer()) {
    return typeError(key, expected);
  }
  if (value.is_number_unsigned()) {
    const auto v = value.get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(max) || (min > 0 && v < static_cast<std::uint64_t>(min))) {
      return typeError(key, expected);
    }
    return static_cast<std::int64_t>(v);
  }
  const auto v = value.get<std::int64_t>();
  if (v < min || v > max) {
    return typeError(key, expected);
  }
  return v;
}

absl::StatusOr<std::optional<std::vector<std::string>>> OptionReader::stringList(
    const std::string& key) const {
  if (!has(key)) {
    return std::nullopt;
  }
  const auto& value = json_.at(key);
  constexpr std::string_view kExpected = "an array of non-empty strings";
  if (value.is_string()) {
    if (value.get<std::string>().empty()) {
      return typeError(key, kExpected);
    }
    return std::vector<std::string>{value.get<std::string>()};
  }
  if (!value.is_array()) {
    return typeError(key, kExpected);
  }
  std::vector<std::string> out;
  for (const auto& item : value) {
    if (!item.is_string() || item.get<std::string>().empty()) {
      return error(strings::cat("\"", key, "\" must be ", kExpected, ", got the element ",
                                describeValue(item)));
    }
    out.push_back(item.get<std::string>());
  }
  return out;
}

}  // namespace tributary::connectors
