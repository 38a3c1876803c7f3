#pragma once

// Known secret values kept out of text that leaves a run: log records, error messages, status.
//
// A connector is handed credentials (options from a Secret, env and files from Secrets) and may
// print them: in a log line, an error it returns, a panic message. Redactor replaces every
// occurrence of a known value with "[redacted]" before such text is logged or stored.
//
//   auto secrets = std::make_shared<log::Redactor>();
//   secrets->add(options_from_secret);
//   log::Logger safe = logger.redacting(secrets);
//   message = secrets->apply(message);

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::log {

class Redactor {
 public:
  /// Values shorter than this are not redacted: they would erase ordinary words.
  static constexpr std::size_t kMinSecretBytes = 6;
  static constexpr std::string_view kReplacement = "[redacted]";

  /// Adds `secret`, and the parts a program is likely to print on their own: each line of a
  /// multi-line value (a PEM key, a credentials file) and, when it is JSON, every string in it
  /// (options `{"token": "…"}`). Not thread-safe: add everything before sharing.
  void add(std::string_view secret);

  /// `text` with every known value replaced (longest first, so a value that contains another
  /// is replaced whole).
  [[nodiscard]] std::string apply(std::string_view text) const;
  /// Every string in `value` (keys included), in place.
  void apply(nlohmann::json& value) const;

  [[nodiscard]] bool empty() const { return secrets_.empty(); }

 private:
  void addOne(std::string_view value);
  void addJsonStrings(const nlohmann::json& value);

  std::vector<std::string> secrets_;  // Sorted longest first, no duplicates.
};

}  // namespace tributary::log
