#pragma once

#include <string>
#include <vector>

// One function per `tributary` command; each returns the process exit code (common.h).
namespace tributary::cli {

int connectorRunCommand(const std::vector<std::string>& args);
int connectorTestCommand(const std::vector<std::string>& args);
int connectorImportCommand(const std::vector<std::string>& args);
int runCommand(const std::vector<std::string>& args);
int dbCommand(const std::vector<std::string>& args);
int objectsCommand(const std::vector<std::string>& args);
int statusCommand(const std::vector<std::string>& args);

}  // namespace tributary::cli
