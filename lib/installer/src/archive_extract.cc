#include "archive_extract.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

#include "util.h"

#include <sys/stat.h>

#include <archive.h>
#include <archive_entry.h>
#include <memory>
#include <string>

namespace tributary::installer::internal {
namespace {

namespace fs = std::filesystem;

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

struct ReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
struct WriteDeleter {
  void operator()(struct archive* a) const { archive_write_free(a); }
};

std::string archiveMessage(struct archive* a) {
  const char* msg = archive_error_string(a);
  return msg != nullptr ? msg : "unknown libarchive error";
}

// Normalizes an archive member name to a relative path inside the tree, or fails.
absl::StatusOr<fs::path> safeRelative(std::string_view name, std::string_view what) {
  if (name.empty()) {
    return absl::InvalidArgumentError(strings::cat("archive ", what, " has an empty name"));
  }
  if (name.front() == '/') {
    return absl::InvalidArgumentError(
        strings::cat("archive ", what, " '", name, "' has an absolute path"));
  }
  fs::path rel;
  for (const auto& part : fs::path(std::string(name))) {
    const std::string p = part.string();
    if (p.empty() || p == ".") {
      continue;
    }
    if (p == "..") {
      return absl::InvalidArgumentError(strings::cat(
          "archive ", what, " '", name, "' contains '..' (would escape the connector directory)"));
    }
    rel /= part;
  }
  return rel;
}

// Physical check after extraction: every symlink, followed through any chain of symlinks,
// stays inside `dest` (the per-entry lexical check cannot see chains such as `a -> b/..` where
// `b` is itself a link to a shallower directory).
absl::Status verifySymlinksInside(const fs::path& dest, std::string_view file) {
  std::error_code ec;
  const fs::path root = fs::canonical(dest, ec);
  if (ec) {
    return errorCodeStatus(ec, strings::cat("cannot resolve ", dest.string()));
  }
  for (auto it = fs::recursive_directory_iterator(dest, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_symlink(ec)) {
      continue;
    }
    const fs::path resolved = fs::weakly_canonical(it->path(), ec);
    if (ec || !isWithin(root, resolved)) {
      std::error_code ignored;
      return absl::InvalidArgumentError(strings::cat(
          "archive ", file, ": symlink '", fs::relative(it->path(), dest, ignored).string(),
          "' -> '", fs::read_symlink(it->path(), ignored).string(),
          "' points outside the connector directory"));
    }
  }
  if (ec) {
    return errorCodeStatus(ec, strings::cat("cannot walk ", dest.string()));
  }
  return absl::OkStatus();
}

}  // namespace

ArchiveKind archiveKindOf(std::string_view file_name) {
  const std::string lower = strings::toLower(file_name);
  if (endsWith(lower, ".tar.gz") || endsWith(lower, ".tgz")) {
    return ArchiveKind::TarGz;
  }
  if (endsWith(lower, ".tar.xz") || endsWith(lower, ".txz")) {
    return ArchiveKind::TarXz;
  }
  if (endsWith(lower, ".tar")) {
    return ArchiveKind::Tar;
  }
  if (endsWith(lower, ".zip")) {
    return ArchiveKind::Zip;
  }
  return ArchiveKind::None;
}

absl::StatusOr<ExtractStats> extractArchive(const fs::path& archive_path, ArchiveKind kind,
                                            const fs::path& dest, const ExtractLimits& limits,
                                            const std::stop_token& stop) {
  std::unique_ptr<struct archive, ReadDeleter> in(archive_read_new());
  std::unique_ptr<struct archive, WriteDeleter> out(archive_write_disk_new());
  if (!in || !out) {
    return absl::ResourceExhaustedError("cannot allocate libarchive handles");
  }
  switch (kind) {
    case ArchiveKind::TarGz:
      archive_read_support_filter_gzip(in.get());
      archive_read_support_format_tar(in.get());
      break;
    case ArchiveKind::TarXz:
      archive_read_support_filter_xz(in.get());
      archive_read_support_format_tar(in.get());
      break;
    case ArchiveKind::Tar:
      archive_read_support_format_tar(in.get());
      break;
    case ArchiveKind::Zip:
      archive_read_support_format_zip(in.get());
      break;
    case ArchiveKind::None:
      return absl::InvalidArgumentError("not an archive");
  }
  // Our own checks below come first; libarchive's secure flags are a second line of defence
  // (no writing through symlinks, no '..'). Absolute paths are ours (we never chdir: the
  // process is multi-threaded), so NOABSOLUTEPATHS cannot be used.
  archive_write_disk_set_options(out.get(), ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                                ARCHIVE_EXTRACT_SECURE_NODOTDOT);
  if (archive_read_open_filename(in.get(), archive_path.c_str(), 1U << 16U) != ARCHIVE_OK) {
    return absl::InvalidArgumentError(strings::cat(
        "cannot open archive ", archive_path.filename().string(), ": ", archiveMessage(in.get())));
  }
  ExtractStats stats;
  const std::string file = archive_path.filename().string();
  while (true) {
    if (stop.stop_requested()) {
      return absl::CancelledError("cancelled while unpacking");
    }
    struct archive_entry* entry = nullptr;
    const int rc = archive_read_next_header(in.get(), &entry);
    if (rc == ARCHIVE_EOF) {
      break;
    }
    if (rc < ARCHIVE_WARN) {
      return absl::InvalidArgumentError(
          strings::cat("corrupt archive ", file, ": ", archiveMessage(in.get())));
    }
    if (++stats.entries > limits.max_entries) {
      return absl::ResourceExhaustedError(strings::cat("archive ", file, " has more than ",
                                                       limits.max_entries, " entries (limit)"));
    }
    const char* raw_name = archive_entry_pathname(entry);
    if (raw_name == nullptr) {
      return absl::InvalidArgumentError(
          strings::cat("archive ", file, " has an entry without a usable name"));
    }
    TRIBUTARY_ASSIGN_OR_RETURN(const fs::path rel, safeRelative(raw_name, "entry"));
    if (rel.empty()) {
      continue;  // "./" itself
    }
    const fs::path target = dest / rel;
    const mode_t type = archive_entry_filetype(entry);
    const char* hardlink = archive_entry_hardlink(entry);
    if (hardlink != nullptr) {
      auto link_rel = safeRelative(hardlink, strings::cat("hard link '", raw_name, "' target"));
      if (!link_rel.ok()) {
        return link_rel.status();
      }
      archive_entry_set_hardlink(entry, (dest / *link_rel).c_str());
    } else if (type == AE_IFLNK) {
      const char* link = archive_entry_symlink(entry);
      const std::string_view link_target = link != nullptr ? link : "";
      if (link_target.empty()) {
        return absl::InvalidArgumentError(
            strings::cat("archive symlink '", raw_name, "' has no target"));
      }
      if (link_target.front() == '/') {
        return absl::InvalidArgumentError(strings::cat("archive symlink '", raw_name, "' -> '",
                                                       link_target,
                                                       "' points outside the connector directory"));
      }
      const fs::path resolved =
          (target.parent_path() / std::string(link_target)).lexically_normal();
      if (!isWithin(dest, resolved)) {
        return absl::InvalidArgumentError(strings::cat("archive symlink '", raw_name, "' -> '",
                                                       link_target,
                                                       "' points outside the connector directory"));
      }
    } else if (type != AE_IFREG && type != AE_IFDIR) {
      return absl::InvalidArgumentError(
          strings::cat("archive entry '", raw_name, "' is a device, FIFO or socket (not allowed)"));
    }
    if (type == AE_IFREG && archive_entry_size_is_set(entry) != 0) {
      const auto declared = archive_entry_size(entry);
      if (declared > 0 && stats.bytes + static_cast<std::uint64_t>(declared) > limits.max_bytes) {
        return absl::ResourceExhaustedError(
            strings::cat("archive ", file, " unpacks to more than ", limits.max_bytes,
                         " bytes (limit; entry '", raw_name, "' alone declares ", declared, ")"));
      }
    }
    archive_entry_set_pathname(entry, target.c_str());
    // Keep the permission bits the archive gives, minus set-uid/set-gid/sticky, and always
    // let the owner read and write (and enter directories).
    mode_t perm = archive_entry_perm(entry) & 0777U;
    perm |= S_IRUSR | S_IWUSR;
    if (type == AE_IFDIR) {
      perm |= S_IXUSR;
    }
    archive_entry_set_perm(entry, perm);
    if (archive_write_header(out.get(), entry) < ARCHIVE_WARN) {
      return absl::InvalidArgumentError(strings::cat("cannot extract '", raw_name, "' from ", file,
                                                     ": ", archiveMessage(out.get())));
    }
    if (type == AE_IFREG) {
      const void* block = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      while (true) {
        const int r = archive_read_data_block(in.get(), &block, &size, &offset);
        if (r == ARCHIVE_EOF) {
          break;
        }
        if (r < ARCHIVE_WARN) {
          return absl::InvalidArgumentError(strings::cat(
              "corrupt archive ", file, " at '", raw_name, "': ", archiveMessage(in.get())));
        }
        stats.bytes += size;
        if (stats.bytes > limits.max_bytes) {
          return absl::ResourceExhaustedError(
              strings::cat("archive ", file, " unpacks to more than ", limits.max_bytes,
                           " bytes (limit; possible archive bomb)"));
        }
        if (archive_write_data_block(out.get(), block, size, offset) < ARCHIVE_WARN) {
          return absl::InternalError(
              strings::cat("cannot write '", raw_name, "': ", archiveMessage(out.get())));
        }
        if (stop.stop_requested()) {
          return absl::CancelledError("cancelled while unpacking");
        }
      }
    }
    if (archive_write_finish_entry(out.get()) < ARCHIVE_WARN) {
      return absl::InternalError(
          strings::cat("cannot finish '", raw_name, "': ", archiveMessage(out.get())));
    }
  }
  if (archive_write_close(out.get()) < ARCHIVE_WARN) {
    return absl::InternalError(
        strings::cat("cannot finish unpacking ", file, ": ", archiveMessage(out.get())));
  }
  TRIBUTARY_RETURN_IF_ERROR(verifySymlinksInside(dest, file));
  return stats;
}

}  // namespace tributary::installer::internal
