#pragma once

#include "tributary/sdk/connector.h"

#include <string>

namespace tributary::connectors::git {

/// Sync options (README.md documents each one).
struct Options {
  std::string repository;  ///< Absolute path, or a URL (cloned into a temporary directory).
  std::string ref = "HEAD";
  std::string path;  ///< Only entries under this directory (or this one file); "" = all.
  std::size_t page_size = 1000;
  bool skip_non_utf8 = false;
  bool commit_per_object = false;
};

absl::StatusOr<Options> parseOptions(const std::string& text);

/// True for what the connector clones rather than opens in place: anything with a scheme
/// (file://, https://, ssh://, git://) and scp-like "user@host:path".
bool isUrl(const std::string& repository);

/// The repository as a URL for object uris: file:// for paths, the URL without any password.
std::string repositoryUrl(const std::string& repository);

class GitConnector final : public sdk::Connector {
 public:
  absl::StatusOr<std::string> sync(const std::string& options, sdk::Callback& callback) override;
};

}  // namespace tributary::connectors::git
