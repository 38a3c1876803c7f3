// store_migrate_helper <dsn> <schema> <start-at-unix-ms>: waits until the given instant, then
// migrates the schema. Used by MigrationTest.ConcurrentMigrationsFromSeveralProcesses to start
// several real processes at the same moment. Exit 0 on success.

#include "tributary/store/store.h"

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s <dsn> <schema> <start-at-unix-ms>\n", argv[0]);
    return 2;
  }
  const std::chrono::system_clock::time_point start{std::chrono::milliseconds(std::stoll(argv[3]))};
  std::this_thread::sleep_until(start);
  tributary::store::StoreOptions options;
  options.dsn = argv[1];
  options.schema = argv[2];
  const absl::Status status = tributary::store::Store::migrate(options);
  if (!status.ok()) {
    std::fprintf(stderr, "migrate failed: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
