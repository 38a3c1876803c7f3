#pragma once

// Safe archive extraction (libarchive): .tar.gz/.tgz, .tar.xz/.txz, .tar and .zip.

#include "absl/status/statusor.h"

#include <cstdint>
#include <filesystem>
#include <stop_token>
#include <string_view>

namespace tributary::installer::internal {

enum class ArchiveKind { None, Tar, TarGz, TarXz, Zip };

/// From the file name (case-insensitive suffix); None for anything else.
ArchiveKind archiveKindOf(std::string_view file_name);

struct ExtractLimits {
  std::uint64_t max_bytes = 4ULL << 30U;  ///< Sum of unpacked file sizes.
  std::uint64_t max_entries = 200000;
};

struct ExtractStats {
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;
};

/// Extracts `archive` into the existing directory `dest` (absolute, canonical). Rejected, with
/// InvalidArgument naming the entry: absolute paths, `..` components, symlinks whose target is
/// absolute or leaves `dest`, hard links to outside, devices/FIFOs/sockets. Over a limit:
/// ResourceExhausted. Permissions are kept except set-uid/set-gid/sticky bits; ownership is the
/// installer's. On error `dest` may hold a partial tree: the caller discards it.
absl::StatusOr<ExtractStats> extractArchive(const std::filesystem::path& archive, ArchiveKind kind,
                                            const std::filesystem::path& dest,
                                            const ExtractLimits& limits,
                                            const std::stop_token& stop = {});

}  // namespace tributary::installer::internal
