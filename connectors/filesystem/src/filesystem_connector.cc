#include "filesystem_connector.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"
#include "tributary/connectors/options.h"
#include "tributary/connectors/pager.h"
#include "tributary/connectors/text.h"

#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <unistd.h>
#include <utility>

namespace tributary::connectors::filesystem {
namespace {

constexpr const char* kName = "filesystem";
constexpr std::size_t kMaxExamples = 10;

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  [[nodiscard]] int get() const { return fd_; }
  [[nodiscard]] bool valid() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

 private:
  int fd_ = -1;
};

bool isPermissionError(int err) { return err == EACCES || err == EPERM; }

std::string modeString(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777U));
  return buf;
}

std::string typeName(mode_t mode) {
  if (S_ISREG(mode)) {
    return "file";
  }
  if (S_ISDIR(mode)) {
    return "dir";
  }
  if (S_ISLNK(mode)) {
    return "symlink";
  }
  if (S_ISFIFO(mode)) {
    return "fifo";
  }
  if (S_ISSOCK(mode)) {
    return "socket";
  }
  if (S_ISBLK(mode)) {
    return "block_device";
  }
  if (S_ISCHR(mode)) {
    return "char_device";
  }
  return "unknown";
}

// Names in a directory, sorted bytewise (a stable order across runs). Returns an errno on failure.
int readNames(int dir_fd, std::vector<std::string>& names) {
  const int dup_fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) {
    return errno;
  }
  DIR* dir = ::fdopendir(dup_fd);
  if (dir == nullptr) {
    const int err = errno;
    ::close(dup_fd);
    return err;
  }
  names.clear();
  int err = 0;
  while (true) {
    errno = 0;
    const struct dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      err = errno;
      break;
    }
    const std::string_view name(entry->d_name);
    if (name != "." && name != "..") {
      names.emplace_back(name);
    }
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return err;
}

// Returns an errno (0 on success); `target` gets the link's text.
int readLinkAt(int dir_fd, const std::string& name, std::string& target) {
  std::string buf(256, '\0');
  while (true) {
    const ssize_t n = ::readlinkat(dir_fd, name.c_str(), buf.data(), buf.size());
    if (n < 0) {
      return errno;
    }
    if (static_cast<std::size_t>(n) < buf.size()) {
      buf.resize(static_cast<std::size_t>(n));
      target = std::move(buf);
      return 0;
    }
    buf.resize(buf.size() * 2);
  }
}

struct EvpCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

// SHA-256 of a regular file, hex. Returns an errno (0 on success; ENOENT also when the entry is
// no longer a regular file).
int sha256At(int dir_fd, const std::string& name, bool follow, std::string& hex) {
  const int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | (follow ? 0 : O_NOFOLLOW);
  UniqueFd fd(::openat(dir_fd, name.c_str(), flags));
  if (!fd.valid()) {
    return errno == ELOOP ? ENOENT : errno;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return errno;
  }
  if (!S_ISREG(st.st_mode)) {
    return ENOENT;
  }
  std::unique_ptr<EVP_MD_CTX, EvpCtxDeleter> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return ENOMEM;
  }
  std::vector<unsigned char> buf(256U << 10U);
  while (true) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errno;
    }
    if (n == 0) {
      break;
    }
    if (EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(n)) != 1) {
      return EIO;
    }
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &length) != 1) {
    return EIO;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  hex.clear();
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4U]);
    hex.push_back(kHex[digest[i] & 0x0FU]);
  }
  return 0;
}

struct Frame {
  UniqueFd fd;
  std::string rel;  // "" for the root.
  int depth = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  std::vector<std::string> names;
  std::size_t next = 0;
};

class Walker {
 public:
  Walker(const Options& options, Pager& pager) : options_(options), pager_(pager) {}

  absl::Status run();
  [[nodiscard]] nlohmann::json summary() const;

 private:
  absl::StatusOr<std::optional<Frame>> visit(const Frame& parent, const std::string& name);
  // An entry we are not allowed to read: the Sync error (default), or counted and reported.
  absl::Status permissionProblem(int err, std::string_view what, const std::string& rel);
  absl::Status ioError(int err, std::string_view what, const std::string& rel) const;
  [[nodiscard]] std::string absolute(const std::string& rel) const;
  void noteSkip(std::string_view reason, const std::string& rel);

  const Options& options_;
  Pager& pager_;
  std::vector<Frame> stack_;
  std::uint64_t files_ = 0;
  std::uint64_t dirs_ = 0;
  std::uint64_t symlinks_ = 0;
  std::uint64_t other_ = 0;
  std::uint64_t bytes_ = 0;
  std::uint64_t excluded_ = 0;
  std::uint64_t vanished_ = 0;
  std::uint64_t permission_denied_ = 0;
  std::uint64_t non_utf8_ = 0;
  std::vector<std::string> examples_;
};

std::string Walker::absolute(const std::string& rel) const {
  if (rel.empty()) {
    return options_.root;
  }
  return options_.root == "/" ? strings::cat("/", rel) : strings::cat(options_.root, "/", rel);
}

void Walker::noteSkip(std::string_view reason, const std::string& rel) {
  const std::string text = strings::cat(printable(rel), ": ", reason);
  if (examples_.size() < kMaxExamples) {
    examples_.push_back(text);
    sdk::log(sdk::LogLevel::Warn, "skipped an entry", {{"entry", text}});
  }
}

absl::Status Walker::ioError(int err, std::string_view what, const std::string& rel) const {
  return absl::UnavailableError(strings::cat(kName, ": ", what, " \"", printable(absolute(rel)),
                                             "\" failed: ", strings::errnoMessage(err),
                                             "; the listing is incomplete, so the sync fails"));
}

absl::Status Walker::permissionProblem(int err, std::string_view what, const std::string& rel) {
  if (options_.on_error == ErrorPolicy::Skip) {
    ++permission_denied_;
    noteSkip(strings::cat(what, ": ", strings::errnoMessage(err)), rel);
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(strings::cat(
      kName, ": cannot ", what, " \"", printable(absolute(rel)), "\": ", strings::errnoMessage(err),
      ". A partial listing would make the store mark everything not listed as deleted, so the "
      "sync fails. Fix the permissions, exclude the path (\"exclude\": [\"/",
      printable(rel),
      "\"]), or set \"on_error\": \"skip\" to list such entries without "
      "their content"));
}

absl::StatusOr<std::optional<Frame>> Walker::visit(const Frame& parent, const std::string& name) {
  const std::string rel = parent.rel.empty() ? name : strings::cat(parent.rel, "/", name);
  const int depth = parent.depth + 1;
  if (!isValidUtf8(name)) {
    if (options_.non_utf8_names == ErrorPolicy::Skip) {
      ++non_utf8_;
      noteSkip("name is not valid UTF-8", rel);
      return std::nullopt;
    }
    return absl::FailedPreconditionError(strings::cat(
        kName, ": the name \"", printable(absolute(rel)),
        "\" is not valid UTF-8 (shown with \\xHH escapes); remote ids must be UTF-8. Rename it, "
        "exclude its directory, or set \"non_utf8_names\": \"skip\" to leave such names out"));
  }

  struct stat lst {};
  if (::fstatat(parent.fd.get(), name.c_str(), &lst, AT_SYMLINK_NOFOLLOW) != 0) {
    const int err = errno;
    if (err == ENOENT) {
      ++vanished_;  // Deleted while we walked: its absence is the truth.
      return std::nullopt;
    }
    if (isPermissionError(err)) {
      TRIBUTARY_RETURN_IF_ERROR(permissionProblem(err, "stat", rel));
      return std::nullopt;
    }
    return ioError(err, "stat", rel);
  }

  const bool is_link = S_ISLNK(lst.st_mode);
  std::optional<std::string> target;
  struct stat st = lst;
  bool broken = false;
  if (is_link) {
    std::string text;
    if (const int err = readLinkAt(parent.fd.get(), name, text); err != 0) {
      if (err == ENOENT || err == EINVAL) {
        ++vanished_;  // Removed or replaced by a non-link since the stat.
        return std::nullopt;
      }
      return ioError(err, "readlink", rel);
    }
    target = std::move(text);
    if (options_.follow_symlinks && ::fstatat(parent.fd.get(), name.c_str(), &st, 0) != 0) {
      const int err = errno;
      if (err == ENOENT || err == ELOOP || err == ENOTDIR) {
        broken = true;
        st = lst;
      } else if (isPermissionError(err)) {
        TRIBUTARY_RETURN_IF_ERROR(permissionProblem(err, "follow the symlink", rel));
        st = lst;
        broken = true;
      } else {
        return ioError(err, "follow the symlink", rel);
      }
    }
  }
  const bool is_dir = S_ISDIR(st.st_mode);

  for (const Glob& glob : options_.exclude) {
    if (glob.matches(rel, is_dir)) {
      ++excluded_;
      return std::nullopt;
    }
  }
  bool emit = options_.include.empty();
  for (const Glob& glob : options_.include) {
    if (!emit && glob.matches(rel, is_dir)) {
      emit = true;
    }
  }

  std::optional<Frame> child;
  bool loop = false;
  bool unreadable = false;
  if (is_dir && (!options_.max_depth || depth < *options_.max_depth)) {
    for (const Frame& frame : stack_) {
      if (frame.dev == st.st_dev && frame.ino == st.st_ino) {
        loop = true;  // Only possible through a followed symlink.
      }
    }
    if (!loop) {
      const int flags =
          O_RDONLY | O_DIRECTORY | O_CLOEXEC | (options_.follow_symlinks ? 0 : O_NOFOLLOW);
      UniqueFd fd(::openat(parent.fd.get(), name.c_str(), flags));
      if (!fd.valid()) {
        const int err = errno;
        if (err == ENOENT || err == ENOTDIR || err == ELOOP) {
          ++vanished_;  // Removed or replaced since the stat.
          return std::nullopt;
        }
        if (!isPermissionError(err)) {
          return ioError(err, "open the directory", rel);
        }
        TRIBUTARY_RETURN_IF_ERROR(permissionProblem(err, "read the directory", rel));
        unreadable = true;
      } else {
        Frame frame{std::move(fd), rel, depth, st.st_dev, st.st_ino, {}, 0};
        if (const int err = readNames(frame.fd.get(), frame.names); err != 0) {
          if (!isPermissionError(err)) {
            return ioError(err, "read the directory", rel);
          }
          TRIBUTARY_RETURN_IF_ERROR(permissionProblem(err, "read the directory", rel));
          unreadable = true;
        } else {
          child = std::move(frame);
        }
      }
    }
  }

  if (!emit) {
    return child;
  }
  nlohmann::json metadata = {
      {"type", typeName(st.st_mode)},
      {"mode", modeString(st.st_mode)},
      {"mtime", rfc3339Nanos(st.st_mtim)},
      {"uid", static_cast<std::uint64_t>(st.st_uid)},
      {"gid", static_cast<std::uint64_t>(st.st_gid)},
  };
  if (S_ISREG(st.st_mode)) {
    metadata["size"] = static_cast<std::uint64_t>(st.st_size);
  }
  if (target) {
    if (isValidUtf8(*target)) {
      metadata["target"] = *target;
    } else {
      metadata["target"] = printable(*target);
      metadata["target_escaped"] = true;
    }
  }
  if (broken) {
    metadata["broken"] = true;
  }
  if (loop) {
    metadata["loop"] = true;
  }
  if (options_.hash == HashMode::Sha256 && S_ISREG(st.st_mode)) {
    std::string hex;
    if (const int err = sha256At(parent.fd.get(), name, options_.follow_symlinks, hex); err != 0) {
      if (err == ENOENT) {
        ++vanished_;
        return child;
      }
      if (!isPermissionError(err)) {
        return ioError(err, "read the file", rel);
      }
      TRIBUTARY_RETURN_IF_ERROR(permissionProblem(err, "read the file", rel));
      unreadable = true;
    } else {
      metadata["sha256"] = hex;
    }
  }
  if (unreadable) {
    metadata["unreadable"] = true;
  }

  if (S_ISREG(st.st_mode)) {
    ++files_;
    bytes_ += static_cast<std::uint64_t>(st.st_size);
  } else if (is_dir) {
    ++dirs_;
  } else if (S_ISLNK(st.st_mode)) {
    ++symlinks_;
  } else {
    ++other_;
  }

  proto::DataObject object;
  object.set_remote_id(rel);
  object.set_resource_name(name);
  object.set_uri(fileUrl(absolute(rel)));
  object.set_metadata(metadata.dump());
  TRIBUTARY_RETURN_IF_ERROR(pager_.add(std::move(object)));
  return child;
}

absl::Status Walker::run() {
  const std::string& root = options_.root;
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(strings::cat(kName, ": root \"", printable(root),
                                              "\" does not exist (it must be an existing "
                                              "directory on the machine that runs the connector)"));
    }
    if (isPermissionError(err)) {
      return absl::PermissionDeniedError(strings::cat(
          kName, ": cannot access root \"", printable(root), "\": ", strings::errnoMessage(err)));
    }
    return absl::UnavailableError(strings::cat(kName, ": cannot stat root \"", printable(root),
                                               "\": ", strings::errnoMessage(err)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        strings::cat(kName, ": root \"", printable(root), "\" is not a directory (it is a ",
                     typeName(st.st_mode), "); \"root\" must name a directory"));
  }
  UniqueFd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  Frame top{std::move(fd), "", 0, st.st_dev, st.st_ino, {}, 0};
  int err = top.fd.valid() ? readNames(top.fd.get(), top.names) : errno;
  if (err != 0) {
    if (isPermissionError(err)) {
      return absl::PermissionDeniedError(strings::cat(
          kName, ": root \"", printable(root), "\" is not readable: ", strings::errnoMessage(err)));
    }
    return absl::UnavailableError(strings::cat(kName, ": cannot read root \"", printable(root),
                                               "\": ", strings::errnoMessage(err)));
  }
  stack_.push_back(std::move(top));
  std::uint64_t visited = 0;
  while (!stack_.empty()) {
    Frame& frame = stack_.back();
    if (frame.next >= frame.names.size()) {
      stack_.pop_back();
      continue;
    }
    const std::string name = std::move(frame.names[frame.next++]);
    if (++visited % 256 == 0) {
      TRIBUTARY_RETURN_IF_ERROR(pager_.checkCancelled());
    }
    // `frame` may dangle after push_back below: visit() gets it before the push.
    TRIBUTARY_ASSIGN_OR_RETURN(std::optional<Frame> child, visit(frame, name));
    if (child) {
      stack_.push_back(*std::move(child));
    }
  }
  return pager_.flush();
}

nlohmann::json Walker::summary() const {
  return {
      {"root", printable(options_.root)},
      {"pages", pager_.pages()},
      {"objects", pager_.objects()},
      {"files", files_},
      {"directories", dirs_},
      {"symlinks", symlinks_},
      {"other", other_},
      {"bytes", bytes_},
      {"excluded", excluded_},
      {"skipped",
       {{"permission_denied", permission_denied_},
        {"non_utf8_names", non_utf8_},
        {"vanished", vanished_}}},
      {"skipped_examples", examples_},
  };
}

}  // namespace

absl::StatusOr<Options> parseOptions(const std::string& text) {
  TRIBUTARY_ASSIGN_OR_RETURN(
      const OptionReader reader,
      OptionReader::parse(kName, text,
                          {"root", "include", "exclude", "follow_symlinks", "hash", "page_size",
                           "max_depth", "on_error", "non_utf8_names"}));
  Options options;
  TRIBUTARY_ASSIGN_OR_RETURN(const auto root, reader.string("root"));
  if (!root || root->empty()) {
    return reader.error(
        "\"root\" is required: the absolute path of the directory to list, e.g. "
        "{\"root\": \"/srv/data\"}");
  }
  if (root->front() != '/') {
    return reader.error(strings::cat("\"root\" must be an absolute path, got \"", printable(*root),
                                     "\" (the connector runs in its own directory, so a relative "
                                     "path would be ambiguous)"));
  }
  if (root->find('\0') != std::string::npos) {
    return reader.error("\"root\" contains a NUL character");
  }
  options.root = *root;
  while (options.root.size() > 1 && options.root.back() == '/') {
    options.root.pop_back();
  }
  for (const auto& [key, target] :
       {std::pair{"include", &options.include}, std::pair{"exclude", &options.exclude}}) {
    TRIBUTARY_ASSIGN_OR_RETURN(const auto patterns, reader.stringList(key));
    for (const std::string& pattern : patterns.value_or(std::vector<std::string>{})) {
      auto glob = Glob::compile(pattern);
      if (!glob.ok()) {
        return reader.error(strings::cat("\"", key, "\": ", glob.status().message()));
      }
      target->push_back(*std::move(glob));
    }
  }
  TRIBUTARY_ASSIGN_OR_RETURN(const auto follow, reader.boolean("follow_symlinks"));
  options.follow_symlinks = follow.value_or(false);
  TRIBUTARY_ASSIGN_OR_RETURN(const auto hash, reader.choice("hash", {"none", "sha256"}));
  options.hash = hash.value_or("none") == "sha256" ? HashMode::Sha256 : HashMode::None;
  TRIBUTARY_ASSIGN_OR_RETURN(const auto page_size, reader.integer("page_size", 1, 100000));
  options.page_size = static_cast<std::size_t>(page_size.value_or(1000));
  TRIBUTARY_ASSIGN_OR_RETURN(const auto max_depth, reader.integer("max_depth", 1, 4096));
  if (max_depth) {
    options.max_depth = static_cast<int>(*max_depth);
  }
  TRIBUTARY_ASSIGN_OR_RETURN(const auto on_error, reader.choice("on_error", {"fail", "skip"}));
  options.on_error = on_error.value_or("fail") == "skip" ? ErrorPolicy::Skip : ErrorPolicy::Fail;
  TRIBUTARY_ASSIGN_OR_RETURN(const auto non_utf8,
                             reader.choice("non_utf8_names", {"fail", "skip"}));
  options.non_utf8_names =
      non_utf8.value_or("fail") == "skip" ? ErrorPolicy::Skip : ErrorPolicy::Fail;
  return options;
}

absl::StatusOr<std::string> FilesystemConnector::sync(const std::string& text,
                                                      sdk::Callback& callback) {
  TRIBUTARY_ASSIGN_OR_RETURN(const Options options, parseOptions(text));
  const auto started = std::chrono::steady_clock::now();
  sdk::log(sdk::LogLevel::Info, "listing", {{"root", printable(options.root)}});
  Pager pager(callback, options.page_size);
  Walker walker(options, pager);
  if (absl::Status status = walker.run(); !status.ok()) {
    sdk::log(sdk::LogLevel::Error, "listing failed",
             {{"root", printable(options.root)},
              {"error", std::string(status.message())},
              {"pages_sent", std::to_string(pager.pages())}});
    return status;
  }
  nlohmann::json summary = walker.summary();
  summary["duration_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - started)
                               .count();
  sdk::log(sdk::LogLevel::Info, "listed",
           {{"root", printable(options.root)},
            {"objects", std::to_string(pager.objects())},
            {"pages", std::to_string(pager.pages())}});
  return summary.dump();
}

}  // namespace tributary::connectors::filesystem
