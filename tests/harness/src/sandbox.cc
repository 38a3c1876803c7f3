#include "tributary/testing/sandbox.h"

#include <fstream>
#include <string>

namespace tributary::harness {

std::string pythonReadOnlyPaths(const std::filesystem::path& python) {
  const std::filesystem::path venv = python.parent_path().parent_path();
  std::string paths = venv.string();
  std::ifstream cfg(venv / "pyvenv.cfg");
  for (std::string line; std::getline(cfg, line);) {
    if (line.starts_with("home = ")) {
      paths += ":" + std::filesystem::path(line.substr(7)).parent_path().string();
    }
  }
  return paths;
}

}  // namespace tributary::harness
