#pragma once
// A private scratch directory for one test.

#include <filesystem>
#include <string>
#include <string_view>

namespace tributary::harness {

/// A fresh directory under $TMPDIR (or /tmp), mode 0711, canonical path. The destructor gives back
/// any permission a test took away (unreadable directories, read-only trees like Go's module cache)
/// and removes everything.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "tributary-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  /// Writes `content` to path()/name, creating parent directories; returns the full path.
  std::string write(std::string_view name, std::string_view content) const;

 private:
  std::filesystem::path path_;
};

}  // namespace tributary::harness
