#pragma once

// Local sources: copy a file or a directory tree into a connector directory, and a content
// digest of either (the version identity of a Local connector).

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <filesystem>
#include <stop_token>
#include <string>

namespace tributary::installer::internal {

/// Copies `source` into the existing directory `dest`: a file becomes `dest/<file name>`; a
/// directory's contents become the contents of `dest` (c1's behaviour). Symlinks are recreated
/// as symlinks with the same target and never followed, so nothing outside the tree is read.
/// Permissions are kept minus set-uid/set-gid/sticky. FIFOs, sockets and devices are refused.
absl::Status copyLocal(const std::filesystem::path& source, const std::filesystem::path& dest,
                       const std::stop_token& stop = {});

/// SHA-256 (hex) over the tree's names, types, permission bits, symlink targets and contents,
/// in a fixed order. For a file: its name, permission bits and content. Symlinks not followed.
absl::StatusOr<std::string> treeDigest(const std::filesystem::path& path,
                                       const std::stop_token& stop = {});

}  // namespace tributary::installer::internal
