#pragma once

// Shared helpers of the lib/kube tests: temporary directories and files.

#include <filesystem>
#include <string>
#include <string_view>

namespace tributary::kube::testing {

/// A fresh directory under $TMPDIR, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  /// Writes `content` to path()/name (creating parent directories); returns the full path.
  std::string write(std::string_view name, std::string_view content) const;

 private:
  std::filesystem::path path_;
};

}  // namespace tributary::kube::testing
