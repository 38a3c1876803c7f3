#pragma once
// What connectors under test may read beyond the connector sandbox's system paths.

#include <filesystem>
#include <string>

namespace tributary::harness {

/// The paths a Python connector run by `python` (a venv's interpreter) reads when the machine's
/// Python is not under /usr (pyenv on ours): the venv and the installation it was made from
/// (pyvenv.cfg's `home`), joined by ':' for --sandbox-read-only.
std::string pythonReadOnlyPaths(const std::filesystem::path& python);

}  // namespace tributary::harness
