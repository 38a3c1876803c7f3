#include "tributary/sync/run_files.h"

#include "tributary/common/strings.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <string_view>
#include <unistd.h>

namespace tributary::sync {
namespace {

using strings::cat;

absl::Status writeAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return absl::InternalError(strings::errnoMessage(errno));
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return absl::OkStatus();
}

// Another user cannot reach $XDG_RUNTIME_DIR (0700): a run for one skips it.
std::filesystem::path runtimeBase(bool for_another_user) {
  for (const char* var : {"XDG_RUNTIME_DIR", "TMPDIR"}) {
    if (for_another_user && std::string_view(var) == "XDG_RUNTIME_DIR") {
      continue;
    }
    const char* dir = std::getenv(var);  // NOLINT(concurrency-mt-unsafe): read only
    if (dir != nullptr && *dir == '/' && ::access(dir, W_OK | X_OK) == 0) {
      return dir;
    }
  }
  return "/tmp";
}

// Makes `user` the owner of `dir` and everything in it (the modes stay 0700/0600).
absl::Status handTo(const std::filesystem::path& dir, const sandbox::User& user) {
  std::error_code error;
  auto chown = [&user](const std::filesystem::path& path) -> absl::Status {
    if (::lchown(path.c_str(), user.uid, user.gid) != 0) {
      return absl::InternalError(cat("cannot hand ", path.string(), " to ", user.describe(), ": ",
                                     strings::errnoMessage(errno)));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = chown(dir); !s.ok()) {
    return s;
  }
  for (std::filesystem::recursive_directory_iterator it(dir, error), end; !error && it != end;
       it.increment(error)) {
    if (absl::Status s = chown(it->path()); !s.ok()) {
      return s;
    }
  }
  if (error) {
    return absl::InternalError(cat("cannot list ", dir.string(), ": ", error.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RunDirectory>> RunDirectory::create(
    const std::vector<RunFile>& files, const std::optional<sandbox::User>& owner) {
  std::string tmpl = (runtimeBase(owner.has_value()) / "tributary-run-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {  // mkdtemp creates it 0700.
    return absl::InternalError(cat("cannot create a private directory for the connector's files (",
                                   tmpl, "): ", strings::errnoMessage(errno)));
  }
  auto dir = std::unique_ptr<RunDirectory>(new RunDirectory(tmpl));
  for (const RunFile& file : files) {
    const std::filesystem::path target = dir->path_ / file.path;
    std::filesystem::path sub;
    for (const auto& part : std::filesystem::path(file.path).parent_path()) {
      sub /= part;
      const std::filesystem::path d = dir->path_ / sub;
      if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) {
        return absl::InternalError(
            cat("cannot create ", d.string(), ": ", strings::errnoMessage(errno)));
      }
    }
    const int fd =
        ::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      return absl::InternalError(
          cat("cannot create ", target.string(), ": ", strings::errnoMessage(errno)));
    }
    absl::Status written = writeAll(fd, file.content);
    if (::fchmod(fd, 0600) != 0 && written.ok()) {
      written = absl::InternalError(strings::errnoMessage(errno));
    }
    if (::close(fd) != 0 && written.ok()) {
      written = absl::InternalError(strings::errnoMessage(errno));
    }
    if (!written.ok()) {
      return absl::InternalError(cat("cannot write ", target.string(), ": ", written.message()));
    }
    if (!file.env.empty()) {
      dir->env_[file.env] = target.string();
    }
  }
  if (owner) {
    if (absl::Status handed = handTo(dir->path_, *owner); !handed.ok()) {
      return handed;
    }
  }
  return dir;
}

RunDirectory::~RunDirectory() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace tributary::sync
