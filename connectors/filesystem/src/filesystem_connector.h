#pragma once

#include "tributary/sdk/connector.h"

#include "glob.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tributary::connectors::filesystem {

enum class HashMode { None, Sha256 };
enum class ErrorPolicy { Fail, Skip };

/// The Sync options (README.md documents each one).
struct Options {
  std::string root;  ///< Absolute, without trailing '/' (except "/" itself).
  std::vector<Glob> include;
  std::vector<Glob> exclude;
  bool follow_symlinks = false;
  HashMode hash = HashMode::None;
  std::size_t page_size = 1000;
  std::optional<int> max_depth;
  ErrorPolicy on_error = ErrorPolicy::Fail;
  ErrorPolicy non_utf8_names = ErrorPolicy::Fail;
};

/// Parses and validates the options string (errors are InvalidArgument, naming the option).
absl::StatusOr<Options> parseOptions(const std::string& text);

class FilesystemConnector final : public sdk::Connector {
 public:
  absl::StatusOr<std::string> sync(const std::string& options, sdk::Callback& callback) override;
};

}  // namespace tributary::connectors::filesystem
