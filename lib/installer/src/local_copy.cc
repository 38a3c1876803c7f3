#include "local_copy.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

#include "util.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <fcntl.h>
#include <unistd.h>
#include <vector>

namespace tributary::installer::internal {
namespace {

namespace fs = std::filesystem;

constexpr mode_t kPermMask = 0777;

struct Entry {
  fs::path rel;
  mode_t mode = 0;  // from lstat
};

// Lists a tree (lstat only, no symlink followed), sorted by relative path.
absl::StatusOr<std::vector<Entry>> listTree(const fs::path& root, const std::stop_token& stop) {
  std::vector<Entry> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (stop.stop_requested()) {
      return absl::CancelledError("cancelled while reading the local source");
    }
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) {
      return errnoStatus(errno, strings::cat("cannot stat ", it->path().string()));
    }
    out.push_back({it->path().lexically_relative(root), st.st_mode});
  }
  if (ec) {
    return errorCodeStatus(ec, strings::cat("cannot read directory ", root.string()));
  }
  std::sort(out.begin(), out.end(),
            [](const Entry& a, const Entry& b) { return a.rel.native() < b.rel.native(); });
  return out;
}

absl::Status copyFileContents(const fs::path& from, const fs::path& to, mode_t mode,
                              const std::stop_token& stop) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (in < 0) {
    return errnoStatus(errno, strings::cat("cannot open ", from.string()));
  }
  const int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                         (mode & kPermMask) | S_IRUSR | S_IWUSR);
  if (out < 0) {
    const int err = errno;
    ::close(in);
    return errnoStatus(err, strings::cat("cannot create ", to.string()));
  }
  std::array<char, 1U << 16U> buf{};
  absl::Status status;
  while (status.ok()) {
    const ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      status = errnoStatus(errno, strings::cat("cannot read ", from.string()));
      break;
    }
    if (n == 0) {
      break;
    }
    std::size_t off = 0;
    while (off < static_cast<std::size_t>(n)) {
      const ssize_t w = ::write(out, buf.data() + off, static_cast<std::size_t>(n) - off);
      if (w < 0) {
        if (errno == EINTR) {
          continue;
        }
        status = errnoStatus(errno, strings::cat("cannot write ", to.string()));
        break;
      }
      off += static_cast<std::size_t>(w);
    }
    if (stop.stop_requested()) {
      status = absl::CancelledError("cancelled while copying the local source");
    }
  }
  // The umask applied at creation: set the exact bits.
  if (status.ok() && ::fchmod(out, (mode & kPermMask) | S_IRUSR | S_IWUSR) != 0) {
    status = errnoStatus(errno, strings::cat("cannot chmod ", to.string()));
  }
  ::close(in);
  if (::close(out) != 0 && status.ok()) {
    status = errnoStatus(errno, strings::cat("cannot write ", to.string()));
  }
  return status;
}

absl::Status copyEntry(const fs::path& from, const fs::path& to, mode_t mode,
                       const std::stop_token& stop) {
  if (S_ISDIR(mode)) {
    if (::mkdir(to.c_str(), (mode & kPermMask) | S_IRWXU) != 0) {
      return errnoStatus(errno, strings::cat("cannot create directory ", to.string()));
    }
    ::chmod(to.c_str(), (mode & kPermMask) | S_IRWXU);
    return absl::OkStatus();
  }
  if (S_ISLNK(mode)) {
    std::error_code ec;
    const fs::path target = fs::read_symlink(from, ec);
    if (ec) {
      return errorCodeStatus(ec, strings::cat("cannot read symlink ", from.string()));
    }
    if (::symlink(target.c_str(), to.c_str()) != 0) {
      return errnoStatus(errno, strings::cat("cannot create symlink ", to.string()));
    }
    return absl::OkStatus();
  }
  if (S_ISREG(mode)) {
    return copyFileContents(from, to, mode, stop);
  }
  return absl::InvalidArgumentError(strings::cat("local source entry ", from.string(),
                                                 " is a FIFO, socket or device (not copied)"));
}

}  // namespace

absl::Status copyLocal(const fs::path& source, const fs::path& dest, const std::stop_token& stop) {
  struct stat st {};
  if (::stat(source.c_str(), &st) != 0) {
    return errnoStatus(errno, strings::cat("local source ", source.string()));
  }
  if (S_ISREG(st.st_mode)) {
    return copyFileContents(source, dest / source.filename(), st.st_mode, stop);
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        strings::cat("local source ", source.string(), " is neither a file nor a directory"));
  }
  TRIBUTARY_ASSIGN_OR_RETURN(const std::vector<Entry> entries, listTree(source, stop));
  for (const auto& entry : entries) {
    if (stop.stop_requested()) {
      return absl::CancelledError("cancelled while copying the local source");
    }
    TRIBUTARY_RETURN_IF_ERROR(copyEntry(source / entry.rel, dest / entry.rel, entry.mode, stop));
  }
  // Directory permissions last: a read-only directory must not stop its own copy.
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (S_ISDIR(it->mode)) {
      ::chmod((dest / it->rel).c_str(), (it->mode & kPermMask) | S_IRWXU);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> treeDigest(const fs::path& path, const std::stop_token& stop) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return errnoStatus(errno, strings::cat("local source ", path.string()));
  }
  Sha256 digest;
  auto add_file = [&](const fs::path& file, const std::string& name, mode_t mode) -> absl::Status {
    TRIBUTARY_ASSIGN_OR_RETURN(const std::string content, sha256File(file));
    // Modes as the copy has them (owner can always read and write), so a source and its
    // copy have the same digest.
    digest.update(strings::cat("file ", name, " ", (mode & kPermMask) | S_IRUSR | S_IWUSR, " ",
                               content, "\n"));
    return absl::OkStatus();
  };
  if (S_ISREG(st.st_mode)) {
    TRIBUTARY_RETURN_IF_ERROR(add_file(path, path.filename().string(), st.st_mode));
    return digest.hexDigest();
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        strings::cat("local source ", path.string(), " is neither a file nor a directory"));
  }
  TRIBUTARY_ASSIGN_OR_RETURN(const std::vector<Entry> entries, listTree(path, stop));
  for (const auto& entry : entries) {
    const std::string name = entry.rel.string();
    if (S_ISDIR(entry.mode)) {
      digest.update(strings::cat("dir ", name, " ", (entry.mode & kPermMask) | S_IRWXU, "\n"));
    } else if (S_ISLNK(entry.mode)) {
      std::error_code ec;
      const fs::path target = fs::read_symlink(path / entry.rel, ec);
      if (ec) {
        return errorCodeStatus(ec,
                               strings::cat("cannot read symlink ", (path / entry.rel).string()));
      }
      digest.update(strings::cat("link ", name, " ", target.string(), "\n"));
    } else if (S_ISREG(entry.mode)) {
      TRIBUTARY_RETURN_IF_ERROR(add_file(path / entry.rel, name, entry.mode));
    } else {
      return absl::InvalidArgumentError(strings::cat(
          "local source entry ", (path / entry.rel).string(), " is a FIFO, socket or device"));
    }
  }
  return digest.hexDigest();
}

}  // namespace tributary::installer::internal
