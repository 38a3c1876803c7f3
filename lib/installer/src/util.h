#pragma once

// Small helpers shared by the installer's parts: errno → Status, hashing, random names, path
// containment, robust tree removal, a cross-process file lock, a deadline and a redactor.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::installer::internal {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

/// Maps an errno to a canonical code, with "<what>: <strerror>" as the message.
absl::Status errnoStatus(int err, std::string_view what);
absl::Status errorCodeStatus(const std::error_code& ec, std::string_view what);

/// Incremental SHA-256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, std::size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  /// Lower-case hex; the object cannot be updated afterwards.
  std::string hexDigest();

 private:
  void* ctx_;  // EVP_MD_CTX*, kept opaque so OpenSSL stays out of this header.
};

std::string sha256Hex(std::string_view data);
absl::StatusOr<std::string> sha256File(const fs::path& path);

/// `bytes` random bytes as hex (getrandom).
std::string randomHex(std::size_t bytes);

bool isHex(std::string_view s);

/// True if `path`, normalized lexically, is `root` or below it. Both must be absolute.
bool isWithin(const fs::path& root, const fs::path& path);

/// Removes a tree, making read-only directories writable first if needed (Go's module cache
/// is read-only). NotFound is success.
absl::Status removeTree(const fs::path& path);

/// Renames `path` to a fresh name under `trash_dir` and removes it; if removal fails the trash
/// entry stays for a later sweep.
absl::Status discardTree(const fs::path& path, const fs::path& trash_dir);

absl::Status fsyncPath(const fs::path& path);

/// Writes `content` to `path` atomically (temp file in the same directory + fsync + rename).
absl::Status writeFileAtomic(const fs::path& path, std::string_view content);
absl::StatusOr<std::string> readFile(const fs::path& path, std::size_t max_bytes = 1U << 20U);

/// A time limit; `none()` never expires.
class Deadline {
 public:
  static Deadline after(std::chrono::milliseconds d) { return Deadline(Clock::now() + d); }
  static Deadline none() { return Deadline(Clock::time_point::max()); }
  [[nodiscard]] bool expired() const { return Clock::now() >= at_; }
  [[nodiscard]] std::chrono::milliseconds remaining() const;
  [[nodiscard]] Clock::time_point at() const { return at_; }
  /// The earlier of the two.
  [[nodiscard]] Deadline min(Deadline other) const { return other.at_ < at_ ? other : *this; }

 private:
  explicit Deadline(Clock::time_point at) : at_(at) {}
  Clock::time_point at_;
};

/// An flock(2) on a file: exclusive or shared, released when destroyed (or by the kernel when
/// the process dies). Separate FileLock objects conflict even within one process.
class FileLock {
 public:
  enum class Mode { Exclusive, Shared };
  /// Waits (polling) until locked, the deadline passes (DeadlineExceeded) or `stop` is
  /// requested (Cancelled). The file is created if missing.
  static absl::StatusOr<FileLock> acquire(const fs::path& path, Mode mode, Deadline deadline,
                                          const std::stop_token& stop = {});
  /// One non-blocking attempt: nullopt if someone else holds a conflicting lock.
  static absl::StatusOr<std::optional<FileLock>> tryAcquire(const fs::path& path, Mode mode);

  FileLock(FileLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileLock& operator=(FileLock&& other) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

/// Replaces secret values (and URL user-info) in text shown in logs and errors.
class Redactor {
 public:
  Redactor() = default;
  explicit Redactor(std::vector<std::string> secrets);
  void add(std::string secret);
  [[nodiscard]] std::string apply(std::string_view text) const;
  [[nodiscard]] absl::Status apply(const absl::Status& status) const;

 private:
  std::vector<std::string> secrets_;
};

/// The last `capacity` bytes written, plus how many were dropped.
class TailBuffer {
 public:
  explicit TailBuffer(std::size_t capacity) : capacity_(capacity) {}
  void append(std::string_view data);
  [[nodiscard]] std::string text() const;
  [[nodiscard]] std::uint64_t dropped() const { return dropped_; }

 private:
  std::size_t capacity_;
  std::string data_;
  std::uint64_t dropped_ = 0;
};

/// Nanoseconds since the epoch (system clock), for manifests.
std::int64_t nowNanos();

}  // namespace tributary::installer::internal
