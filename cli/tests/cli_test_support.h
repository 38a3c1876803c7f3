#pragma once

// Runs the real `tributary` binary for the end-to-end CLI tests.

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace tributary::cli_test {

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
  double seconds = 0;
  [[nodiscard]] std::string all() const { return out + "\n--- stderr ---\n" + err; }
};

/// Runs `binary args...` with the environment changes (empty value = unset), stdin from
/// /dev/null, and waits up to `timeout` (then SIGKILL; exit_code -1).
Result run(const std::string& binary, const std::vector<std::string>& args,
           const std::map<std::string, std::string>& env = {},
           std::chrono::seconds timeout = std::chrono::seconds(120));

/// A fresh database `<prefix><test name>` on the harness's PostgreSQL, for the running test: its
/// DSN. Fails the test (and returns "") when the server cannot be had.
std::string databaseForTest(const std::string& prefix);

/// A fresh directory under the test temp dir (mode 0755, so a `postgres` server user can
/// traverse it when the tests run as root); removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }
  /// Writes `text` to path()/name and returns the full path.
  std::string write(const std::string& name, const std::string& text) const;

 private:
  std::string path_;
};

}  // namespace tributary::cli_test
