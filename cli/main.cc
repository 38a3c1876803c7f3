// tributary: the command-line entry point. Each command lives in cli/src (commands.h).
#include "tributary/common/strings.h"
#include "tributary/sandbox/sandbox.h"

#include "commands.h"
#include "common.h"
#include "signals.h"

#include <csignal>
#include <iostream>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage =
    R"(usage: tributary COMMAND [options]    (tributary COMMAND --help for details)

  run                 run a sync on this machine: Connector/SyncJob manifests or a c1 connector
                      JSON → the connector → PostgreSQL (a private local one unless
                      --database-url / DATABASE_URL)
  objects SYNCJOB     list what a sync stored
  db url|start|status|stop
                      the private local PostgreSQL
  connector run       run a connector once and print its pages (nothing stored)
  connector test      conformance checks for a connector (any language)
  connector import    print the Connector manifest of a c1 connector JSON
  status              check the operator installed in a cluster (CRDs, agents, controller)

Exit status: 0 ok, 1 connector failed, 2 usage, 3 invalid input, 4 database, 5 install,
6 fenced by another run, 130 interrupted (cli/README.md).
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace tributary::cli;  // NOLINT(google-build-using-namespace)
  // Connectors run with our uid, and we hold database and connector credentials: a process of
  // the same uid must not read our memory or environment (lib/sandbox).
  tributary::sandbox::protectThisProcess();
  // A connector that closes its end of a socket must not kill the host.
  std::signal(SIGPIPE, SIG_IGN);
  // SIGINT/SIGTERM go to the commands' signal threads (blocked before any thread starts).
  blockStopSignals();
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  const std::string& command = args[0];
  if (command == "run") {
    return runCommand(rest);
  }
  if (command == "objects") {
    return objectsCommand(rest);
  }
  if (command == "status") {
    return statusCommand(rest);
  }
  if (command == "db") {
    return dbCommand(rest);
  }
  if (command == "connector" && !rest.empty()) {
    const std::vector<std::string> sub(rest.begin() + 1, rest.end());
    if (rest[0] == "run") {
      return connectorRunCommand(sub);
    }
    if (rest[0] == "test") {
      return connectorTestCommand(sub);
    }
    if (rest[0] == "import") {
      return connectorImportCommand(sub);
    }
  }
  std::cerr << "tributary: unknown command `" << tributary::strings::join(args, " ") << "`\n\n"
            << kUsage;
  return kExitUsage;
}
