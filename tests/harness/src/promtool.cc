#include "tributary/testing/promtool.h"

#include "tributary/common/strings.h"
#include "tributary/testing/temp_dir.h"

#include <cstdio>
#include <string>

namespace tributary::harness {

absl::Status promtoolCheckMetrics(std::string_view text) {
  const TempDir dir("tributary-promtool");
  const std::string file = dir.write("metrics.txt", text);
  const std::string cmd = strings::cat(
      "command -v promtool >/dev/null || { echo 'promtool not found on PATH; run "
      "scripts/bootstrap.sh (Debian package prometheus)'; exit 127; }; promtool check "
      "metrics < '",
      file, "' 2>&1");
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    return absl::InternalError("cannot run promtool: popen failed");
  }
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), pipe) != nullptr) {
    out += buf;
  }
  if (::pclose(pipe) != 0) {
    return absl::FailedPreconditionError(strings::cat("promtool check metrics failed: ", out));
  }
  return absl::OkStatus();
}

}  // namespace tributary::harness
