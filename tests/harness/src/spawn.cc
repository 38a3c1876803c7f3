#include "tributary/testing/spawn.h"

#include "process.h"

#include <unistd.h>

extern char** environ;

namespace tributary::harness {

absl::StatusOr<pid_t> spawnLogged(const std::vector<std::string>& argv,
                                  const std::string& log_path) {
  internal::SpawnOptions options;
  options.argv = argv;
  for (char** e = environ; *e != nullptr; ++e) {
    options.env.emplace_back(*e);
  }
  options.log_path = log_path;
  return internal::spawn(options);
}

}  // namespace tributary::harness
