// `tributary connector import c1.json`: a c1 connector JSON as a Connector manifest.
#include "tributary/common/strings.h"
#include "tributary/installer/spec.h"

#include "commands.h"
#include "common.h"
#include "manifest.h"

#include <iostream>

namespace tributary::cli {

namespace {
constexpr const char* kUsage = R"USAGE(usage: tributary connector import FILE [--namespace NS]

Prints the Connector manifest (YAML, for `kubectl apply -f -` or `tributary run -f`) equivalent
to a c1 connector JSON file: one object, or c1's connectors.json array (one document each).
`-` reads stdin.
)USAGE";
}  // namespace

int connectorImportCommand(const std::vector<std::string>& argv) {
  FlagSpec spec;
  spec.with_value = {"--namespace"};
  spec.boolean = {"-h", "--help"};
  auto args = parseArgs(argv, spec);
  if (args.ok() && args->has("--help")) {
    std::cout << kUsage;
    return kExitOk;
  }
  if (!args.ok() || args->positionals.size() != 1) {
    return usageError(args.ok() ? std::string("connector import takes one file")
                                : std::string(args.status().message()),
                      kUsage);
  }
  const std::string& file = args->positionals[0];
  auto text = readFile(file == "-" ? "/dev/stdin" : file);
  if (!text.ok()) {
    return report({kExitInvalid, std::string(text.status().message())});
  }
  auto specs = installer::parseConnectorListJson(*text);
  if (!specs.ok()) {
    return report({kExitInvalid, strings::cat(file, ": ", specs.status().message())});
  }
  const std::string ns = args->get("--namespace").value_or("");
  bool first = true;
  for (const auto& connector : *specs) {
    if (!first) {
      std::cout << "---\n";
    }
    first = false;
    if (kubeName(connector.name) != connector.name) {
      std::cout << "# c1 name `" << connector.name
                << "` is not a valid Kubernetes name; renamed. SyncJobs refer to the new name.\n";
    }
    std::cout << connectorManifestYaml(connector, ns);
  }
  return kExitOk;
}

}  // namespace tributary::cli
