// A separate process for the concurrency and crash tests:
//   installer_test_helper <cache_dir> <connector.json> [install|update]
// prints {"root": ..., "version": ..., "installed_now": ...} on success (exit 0), the error on
// stderr otherwise (exit 1).
#include "tributary/installer/installer.h"

#include <nlohmann/json.hpp>

#include <iostream>

int main(int argc, char** argv) {
  using namespace tributary::installer;  // NOLINT(google-build-using-namespace)
  if (argc < 3) {
    std::cerr << "usage: installer_test_helper CACHE_DIR SPEC.json [install|update]\n";
    return 2;
  }
  auto spec = loadConnectorFile(argv[2]);
  if (!spec.ok()) {
    std::cerr << spec.status() << "\n";
    return 1;
  }
  Options options;
  options.cache_dir = argv[1];
  options.durable = false;
  options.logger = tributary::log::Logger(
      "installer", tributary::log::makeJsonLineSink(2, tributary::log::Level::Warn));
  auto installer = Installer::create(std::move(options));
  if (!installer.ok()) {
    std::cerr << installer.status() << "\n";
    return 1;
  }
  const bool update = argc > 3 && std::string(argv[3]) == "update";
  auto inst = update ? (*installer)->update(*spec) : (*installer)->install(*spec);
  if (!inst.ok()) {
    std::cerr << inst.status() << "\n";
    return 1;
  }
  std::cout << nlohmann::json{{"root", inst->root.string()},
                              {"version", inst->version},
                              {"installed_now", inst->installed_now}}
                   .dump()
            << std::endl;
  return 0;
}
