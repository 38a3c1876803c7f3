#include "cache.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

#include <algorithm>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

namespace tributary::installer::internal {
namespace {

namespace fs = std::filesystem;

constexpr const char* kManifest = "manifest.json";
constexpr const char* kSelected = "selected";
constexpr const char* kInUse = "in-use.lock";

absl::Status syncTree(const fs::path& dir) {
  // syncfs flushes the whole filesystem once, cheaper than an fsync per file of a Go build.
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return errnoStatus(errno, strings::cat("cannot open ", dir.string()));
  }
  const int rc = ::syncfs(fd);
  const int err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : errnoStatus(err, strings::cat("cannot sync ", dir.string()));
}

std::int64_t readSelected(const fs::path& version_dir) {
  auto text = readFile(version_dir / kSelected, 64);
  if (!text.ok()) {
    return 0;
  }
  try {
    return std::stoll(*text);
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

absl::Status Cache::init() const {
  for (const char* sub : {"locks", "staging", "connectors", "trash"}) {
    std::error_code ec;
    fs::create_directories(root_ / sub, ec);
    if (ec) {
      return errorCodeStatus(
          ec, strings::cat("cannot create cache directory ", (root_ / sub).string()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<FileLock> Cache::lockName(const std::string& name, Deadline deadline,
                                         const std::stop_token& stop) const {
  return FileLock::acquire(root_ / "locks" / strings::cat(name, ".lock"), FileLock::Mode::Exclusive,
                           deadline, stop);
}

absl::StatusOr<std::optional<FileLock>> Cache::tryLockName(const std::string& name) const {
  return FileLock::tryAcquire(root_ / "locks" / strings::cat(name, ".lock"),
                              FileLock::Mode::Exclusive);
}

absl::StatusOr<fs::path> Cache::createStaging(const std::string& name) const {
  const fs::path parent = root_ / "staging" / name;
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) {
    return errorCodeStatus(ec, strings::cat("cannot create ", parent.string()));
  }
  const fs::path dir = parent / randomHex(8);
  fs::create_directory(dir, ec);
  if (!ec) {
    fs::create_directory(dir / "root", ec);
  }
  if (ec) {
    return errorCodeStatus(ec, strings::cat("cannot create staging directory ", dir.string()));
  }
  return dir;
}

int Cache::cleanStaging(const std::string& name) const {
  const fs::path parent = root_ / "staging" / name;
  std::error_code ec;
  int removed = 0;
  std::vector<fs::path> stale;
  for (auto it = fs::directory_iterator(parent, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    stale.push_back(it->path());
  }
  for (const auto& dir : stale) {
    if (discardTree(dir, trashDir()).ok()) {
      ++removed;
    }
  }
  fs::remove(parent, ec);  // Only if empty.
  return removed;
}

std::vector<std::string> Cache::stagingNames() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(root_ / "staging", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    out.push_back(it->path().filename().string());
  }
  return out;
}

void Cache::sweepTrash() const {
  std::error_code ec;
  std::vector<fs::path> entries;
  for (auto it = fs::directory_iterator(trashDir(), ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    entries.push_back(it->path());
  }
  for (const auto& e : entries) {
    (void)removeTree(e);
  }
}

std::vector<std::string> Cache::names() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(root_ / "connectors", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec)) {
      out.push_back(it->path().filename().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<VersionRecord> Cache::versions(const std::string& name) const {
  std::vector<VersionRecord> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(connectorDir(name), ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    if (!it->is_directory(ec)) {
      continue;
    }
    VersionRecord record;
    record.info.version = it->path().filename().string();
    record.info.root = it->path() / "root";
    if (auto text = readFile(it->path() / kManifest); text.ok()) {
      record.manifest = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
      if (record.manifest.is_discarded() || !record.manifest.is_object()) {
        record.manifest = nlohmann::json();
      }
    }
    if (record.manifest.is_object()) {
      record.info.spec_hash = record.manifest.value("spec_hash", "");
      record.info.revision = record.manifest.value("revision", "");
      record.info.installed_at_ns = record.manifest.value("installed_at_ns", std::int64_t{0});
    }
    record.info.selected_at_ns = readSelected(it->path());
    if (auto unused = lockUnused(it->path()); unused.ok()) {
      record.info.in_use = !unused->has_value();
    }
    out.push_back(std::move(record));
  }
  std::sort(out.begin(), out.end(), [](const VersionRecord& a, const VersionRecord& b) {
    if (a.info.selected_at_ns != b.info.selected_at_ns) {
      return a.info.selected_at_ns > b.info.selected_at_ns;
    }
    return a.info.version < b.info.version;
  });
  return out;
}

absl::Status Cache::writeMetadata(const fs::path& staging, const nlohmann::json& manifest) const {
  TRIBUTARY_RETURN_IF_ERROR(writeFileAtomic(staging / kManifest, manifest.dump(2) + "\n"));
  TRIBUTARY_RETURN_IF_ERROR(writeFileAtomic(staging / kSelected, std::to_string(nowNanos())));
  const int fd = ::open((staging / kInUse).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return errnoStatus(errno, strings::cat("cannot create ", (staging / kInUse).string()));
  }
  ::close(fd);
  return absl::OkStatus();
}

absl::Status Cache::publish(const fs::path& staging, const fs::path& target, bool durable) const {
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  if (ec) {
    return errorCodeStatus(ec, strings::cat("cannot create ", target.parent_path().string()));
  }
  if (durable) {
    TRIBUTARY_RETURN_IF_ERROR(syncTree(staging));
  }
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) != 0) {
    return errnoStatus(errno,
                       strings::cat("cannot move ", staging.string(), " to ", target.string()));
  }
  if (durable) {
    (void)fsyncPath(target.parent_path());
  }
  return absl::OkStatus();
}

absl::Status Cache::select(const fs::path& version_dir) const {
  return writeFileAtomic(version_dir / kSelected, std::to_string(nowNanos()));
}

absl::StatusOr<std::shared_ptr<const VersionLease>> Cache::lease(
    const fs::path& version_dir) const {
  TRIBUTARY_ASSIGN_OR_RETURN(FileLock lock,
                             FileLock::acquire(version_dir / kInUse, FileLock::Mode::Shared,
                                               Deadline::after(std::chrono::seconds(30))));
  return std::make_shared<const VersionLease>(std::move(lock), version_dir);
}

absl::StatusOr<std::optional<FileLock>> Cache::lockUnused(const fs::path& version_dir) const {
  // A damaged version without the file gets one: nobody can hold a lease on it.
  return FileLock::tryAcquire(version_dir / kInUse, FileLock::Mode::Exclusive);
}

absl::Status Cache::removeVersion(const fs::path& version_dir) const {
  return discardTree(version_dir, trashDir());
}

}  // namespace tributary::installer::internal
