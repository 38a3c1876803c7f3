#include "util.h"

#include "tributary/common/strings.h"

#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <thread>
#include <unistd.h>

namespace tributary::installer::internal {

absl::Status errnoStatus(int err, std::string_view what) {
  std::string message = strings::cat(what, ": ", strings::errnoMessage(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case EEXIST:
    case ENOTEMPTY:
      return absl::AlreadyExistsError(message);
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return absl::ResourceExhaustedError(message);
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
      return absl::InvalidArgumentError(message);
    case EINTR:
    case EAGAIN:
    case EIO:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status errorCodeStatus(const std::error_code& ec, std::string_view what) {
  if (ec.category() == std::generic_category() || ec.category() == std::system_category()) {
    return errnoStatus(ec.value(), what);
  }
  return absl::InternalError(strings::cat(what, ": ", ec.message()));
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256::update(const void* data, std::size_t size) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size);
}

std::string Sha256::hexDigest() {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md.data(), &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(static_cast<std::size_t>(len) * 2U);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4U]);
    out.push_back(kHex[md[i] & 0xfU]);
  }
  return out;
}

std::string sha256Hex(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.hexDigest();
}

absl::StatusOr<std::string> sha256File(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return errnoStatus(errno, strings::cat("cannot open ", path.string()));
  }
  Sha256 h;
  std::vector<char> buf(1U << 16U);
  while (true) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      const int err = errno;
      ::close(fd);
      return errnoStatus(err, strings::cat("cannot read ", path.string()));
    }
    if (n == 0) {
      break;
    }
    h.update(buf.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  return h.hexDigest();
}

std::string randomHex(std::size_t bytes) {
  std::vector<unsigned char> buf(bytes);
  std::size_t got = 0;
  while (got < bytes) {
    const ssize_t n = ::getrandom(buf.data() + got, bytes - got, 0);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (errno != EINTR) {
      // Never expected on Linux ≥ 3.17; fall back to something unique enough for temp names.
      const auto seed = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()) ^
                        static_cast<std::uint64_t>(::getpid());
      for (std::size_t i = got; i < bytes; ++i) {
        buf[i] = static_cast<unsigned char>(seed >> ((i % 8U) * 8U));
      }
      break;
    }
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : buf) {
    out.push_back(kHex[c >> 4U]);
    out.push_back(kHex[c & 0xfU]);
  }
  return out;
}

bool isHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

bool isWithin(const fs::path& root, const fs::path& path) {
  const fs::path r = root.lexically_normal();
  const fs::path p = path.lexically_normal();
  auto rit = r.begin();
  auto pit = p.begin();
  for (; rit != r.end(); ++rit, ++pit) {
    if (rit->empty() && std::next(rit) == r.end()) {
      break;  // trailing separator of the root
    }
    if (pit == p.end() || *rit != *pit) {
      return false;
    }
  }
  return true;
}

namespace {

void makeWritable(const fs::path& path) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(
           path, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) {
      ::chmod(it->path().c_str(), 0700);
    }
  }
  ::chmod(path.c_str(), 0700);
}

}  // namespace

absl::Status removeTree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (!ec || ec == std::errc::no_such_file_or_directory) {
    return absl::OkStatus();
  }
  makeWritable(path);
  ec.clear();
  fs::remove_all(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return errorCodeStatus(ec, strings::cat("cannot remove ", path.string()));
  }
  return absl::OkStatus();
}

absl::Status discardTree(const fs::path& path, const fs::path& trash_dir) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(path, ec))) {
    return absl::OkStatus();
  }
  fs::create_directories(trash_dir, ec);
  const fs::path target = trash_dir / randomHex(8);
  if (::rename(path.c_str(), target.c_str()) != 0) {
    // Not movable (another filesystem?): remove in place.
    return removeTree(path);
  }
  return removeTree(target);
}

absl::Status fsyncPath(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return errnoStatus(errno, strings::cat("cannot open ", path.string(), " for fsync"));
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return errnoStatus(err, strings::cat("cannot fsync ", path.string()));
  }
  return absl::OkStatus();
}

absl::Status writeFileAtomic(const fs::path& path, std::string_view content) {
  const fs::path tmp =
      path.parent_path() / strings::cat(".", path.filename().string(), ".", randomHex(6), ".tmp");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return errnoStatus(errno, strings::cat("cannot create ", tmp.string()));
  }
  std::size_t off = 0;
  while (off < content.size()) {
    const ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return errnoStatus(err, strings::cat("cannot write ", tmp.string()));
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return errnoStatus(err, strings::cat("cannot write ", tmp.string()));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return errnoStatus(err, strings::cat("cannot rename ", tmp.string(), " to ", path.string()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> readFile(const fs::path& path, std::size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return errnoStatus(errno, strings::cat("cannot open ", path.string()));
  }
  std::string out;
  std::array<char, 8192> buf{};
  while (true) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      const int err = errno;
      ::close(fd);
      return errnoStatus(err, strings::cat("cannot read ", path.string()));
    }
    if (n == 0) {
      break;
    }
    out.append(buf.data(), static_cast<std::size_t>(n));
    if (out.size() > max_bytes) {
      ::close(fd);
      return absl::ResourceExhaustedError(
          strings::cat(path.string(), " is larger than ", max_bytes, " bytes"));
    }
  }
  ::close(fd);
  return out;
}

std::chrono::milliseconds Deadline::remaining() const {
  if (at_ == Clock::time_point::max()) {
    return std::chrono::milliseconds::max();
  }
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(at_ - Clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

FileLock& FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

FileLock::~FileLock() {
  if (fd_ >= 0) {
    ::close(fd_);  // Releases the flock.
  }
}

absl::StatusOr<std::optional<FileLock>> FileLock::tryAcquire(const fs::path& path, Mode mode) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    return errnoStatus(errno, strings::cat("cannot open lock file ", path.string()));
  }
  const int op = (mode == Mode::Exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB;
  while (true) {
    if (::flock(fd, op) == 0) {
      return std::optional<FileLock>(FileLock(fd));
    }
    if (errno == EINTR) {
      continue;
    }
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return std::optional<FileLock>();
    }
    return errnoStatus(err, strings::cat("cannot lock ", path.string()));
  }
}

absl::StatusOr<FileLock> FileLock::acquire(const fs::path& path, Mode mode, Deadline deadline,
                                           const std::stop_token& stop) {
  auto sleep = std::chrono::milliseconds(5);
  while (true) {
    auto attempt = tryAcquire(path, mode);
    if (!attempt.ok()) {
      return attempt.status();
    }
    if (attempt->has_value()) {
      return std::move(**attempt);
    }
    if (stop.stop_requested()) {
      return absl::CancelledError(strings::cat("cancelled while waiting for lock ", path.string()));
    }
    if (deadline.expired()) {
      return absl::DeadlineExceededError(
          strings::cat("timed out waiting for lock ", path.string(),
                       " (another install of this connector is running)"));
    }
    std::this_thread::sleep_for(std::min(sleep, deadline.remaining()));
    sleep = std::min(sleep * 2, std::chrono::milliseconds(100));
  }
}

Redactor::Redactor(std::vector<std::string> secrets) {
  for (auto& s : secrets) {
    add(std::move(s));
  }
}

void Redactor::add(std::string secret) {
  if (secret.size() >= 3) {  // Shorter values would mangle ordinary text.
    secrets_.push_back(std::move(secret));
    // Longest first so a secret containing another one is replaced whole.
    std::sort(secrets_.begin(), secrets_.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  }
}

std::string Redactor::apply(std::string_view text) const {
  std::string out(text);
  for (const auto& secret : secrets_) {
    std::size_t pos = 0;
    while ((pos = out.find(secret, pos)) != std::string::npos) {
      out.replace(pos, secret.size(), "***");
      pos += 3;
    }
  }
  return out;
}

absl::Status Redactor::apply(const absl::Status& status) const {
  if (status.ok() || secrets_.empty()) {
    return status;
  }
  const auto message = status.message();
  return {status.code(), apply(std::string_view(message.data(), message.size()))};
}

void TailBuffer::append(std::string_view data) {
  data_.append(data);
  if (data_.size() > capacity_) {
    const std::size_t excess = data_.size() - capacity_;
    data_.erase(0, excess);
    dropped_ += excess;
  }
}

std::string TailBuffer::text() const { return data_; }

std::int64_t nowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace tributary::installer::internal
