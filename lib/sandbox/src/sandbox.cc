#include "tributary/sandbox/sandbox.h"

#include "tributary/common/strings.h"

#include <linux/landlock.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fcntl.h>
#include <pwd.h>
#include <string>
#include <unistd.h>
#include <utility>

namespace tributary::sandbox {
namespace {

using strings::cat;

// Debian 12's kernel headers (6.1) stop at Landlock ABI 2; the kernels we run on offer 7. The
// values below are the kernel's UAPI and never change.
constexpr std::uint64_t kAccessTruncate = 1ULL << 14U;    // ABI 3
constexpr std::uint64_t kAccessIoctlDev = 1ULL << 15U;    // ABI 5
constexpr std::uint64_t kScopeAbstractUnix = 1ULL << 0U;  // ABI 6
constexpr std::uint64_t kScopeSignal = 1ULL << 1U;        // ABI 6

// landlock_ruleset_attr as of ABI 6 (the kernel accepts a shorter size for older ABIs).
struct RulesetAttr {
  std::uint64_t handled_access_fs = 0;
  std::uint64_t handled_access_net = 0;
  std::uint64_t scoped = 0;
};

constexpr std::uint64_t kReadAccess =
    LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
// Rights that make sense on a file (not a directory); the kernel refuses the others there.
constexpr std::uint64_t kFileAccess = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                                      LANDLOCK_ACCESS_FS_READ_FILE | kAccessTruncate |
                                      kAccessIoctlDev;

std::uint64_t handledAccess(int abi) {
  std::uint64_t access = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1U) - 1U;  // ABI 1: bits 0..12
  if (abi >= 2) {
    access |= LANDLOCK_ACCESS_FS_REFER;
  }
  if (abi >= 3) {
    access |= kAccessTruncate;
  }
  if (abi >= 5) {
    access |= kAccessIoctlDev;
  }
  return access;
}

long landlockCreateRuleset(const RulesetAttr* attr, std::size_t size, std::uint32_t flags) {
  return ::syscall(SYS_landlock_create_ruleset, attr, size, flags);
}

std::string limitName(int resource) {
  switch (resource) {
    case RLIMIT_NOFILE:
      return "files";
    case RLIMIT_NPROC:
      return "processes";
    case RLIMIT_AS:
      return "address-space";
    case RLIMIT_FSIZE:
      return "file-size";
    case RLIMIT_CORE:
      return "core";
    default:
      return cat("rlimit-", resource);
  }
}

}  // namespace

absl::StatusOr<User> User::parse(const std::string& text) {
  auto number = [](std::string_view s) -> std::optional<std::uint32_t> {
    std::uint32_t value = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
      return std::nullopt;
    }
    return value;
  };
  const std::string_view view(text);
  const auto colon = view.find(':');
  const std::string_view uid_part = view.substr(0, colon);
  User user;
  if (auto uid = number(uid_part)) {
    user.uid = *uid;
    user.gid = *uid;
  } else {
    // getpwnam_r: the CLI and the agent parse flags before they start threads, but be safe.
    struct passwd entry {};
    struct passwd* found = nullptr;
    std::vector<char> buffer(16384);
    const std::string name(uid_part);
    if (::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
        found == nullptr) {
      return absl::InvalidArgumentError(
          cat("connector user ", name, " is neither a uid nor a user of this system"));
    }
    user.uid = found->pw_uid;
    user.gid = found->pw_gid;
  }
  if (colon != std::string_view::npos) {
    auto gid = number(view.substr(colon + 1));
    if (!gid) {
      return absl::InvalidArgumentError(
          cat("connector user ", text, ": the group after ':' must be a number"));
    }
    user.gid = *gid;
  }
  if (user.uid == 0) {
    return absl::InvalidArgumentError(
        "connector user 0 is root: pick an unprivileged uid (e.g. 65534)");
  }
  return user;
}

std::string User::describe() const { return cat("uid ", uid, ", gid ", gid); }

absl::Status checkReachable(const std::filesystem::path& path, const User& user) {
  // The bits that apply to the user: owner, else group, else other (supplementary groups are
  // dropped by the switch).
  const auto allowed = [&user](const struct stat& st, unsigned want) {
    const unsigned shift = st.st_uid == user.uid ? 6U : st.st_gid == user.gid ? 3U : 0U;
    return ((st.st_mode >> shift) & want) == want;
  };
  std::filesystem::path walked = path.root_path();
  const std::filesystem::path relative = path.relative_path();
  const std::vector<std::filesystem::path> parts(relative.begin(), relative.end());
  for (std::size_t i = 0; i <= parts.size(); ++i) {
    struct stat st {};
    if (::stat(walked.c_str(), &st) != 0) {
      return absl::FailedPreconditionError(
          cat("cannot inspect ", walked.string(), ": ", strings::errnoMessage(errno)));
    }
    const bool last = i == parts.size();
    const unsigned want = !last ? 1U : S_ISDIR(st.st_mode) ? 5U : 4U;  // x, r-x, r
    if (!allowed(st, want)) {
      std::array<char, 8> mode{};
      std::snprintf(mode.data(), mode.size(), "%04o", st.st_mode & 07777U);
      return absl::FailedPreconditionError(
          cat(user.describe(), " cannot ", last ? "read " : "get through ", walked.string(),
              " (mode ", mode.data(), ", owner uid ", st.st_uid, ")"));
    }
    if (!last) {
      walked /= parts[i];
    }
  }
  return absl::OkStatus();
}

Policy Policy::forConnector() {
  Policy policy;
  policy.read_only = {
      "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/proc", "/sys",
      // /etc, but only what resolvers, TLS, locales and user lookups read.
      "/etc/alternatives", "/etc/ca-certificates", "/etc/ssl/certs", "/etc/pki/tls/certs",
      "/etc/gai.conf", "/etc/group", "/etc/host.conf", "/etc/hostname", "/etc/hosts",
      "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
      "/etc/mime.types", "/etc/nsswitch.conf", "/etc/os-release", "/etc/passwd", "/etc/protocols",
      "/etc/resolv.conf", "/etc/services", "/etc/timezone", "/etc/gitconfig", "/etc/python3",
      "/etc/python3.11",
      // Devices every runtime opens.
      "/dev/urandom", "/dev/random"};
  policy.read_write = {"/dev/null", "/dev/zero", "/dev/full"};
  return policy;
}

int landlockAbi() {
  const long abi = landlockCreateRuleset(nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

absl::StatusOr<Prepared> Prepared::create(const Policy& policy) {
  Prepared prepared;
  prepared.user_ = policy.user;
  const auto add = [&prepared](int resource, std::optional<std::uint64_t> value) {
    if (!value) {
      return;
    }
    struct rlimit current {};
    if (::getrlimit(resource, &current) == 0 && current.rlim_max != RLIM_INFINITY &&
        *value > current.rlim_max) {
      value = current.rlim_max;
    }
    prepared.limits_.push_back({resource, *value});
  };
  add(RLIMIT_CORE, 0);
  add(RLIMIT_NOFILE, policy.limits.open_files);
  add(RLIMIT_NPROC, policy.limits.processes);
  add(RLIMIT_AS, policy.limits.address_space_bytes);
  add(RLIMIT_FSIZE, policy.limits.file_size_bytes);

  prepared.abi_ = landlockAbi();
  if (prepared.abi_ == 0) {
    const int err = errno;
    prepared.warning_ = cat("Landlock is not available (", strings::errnoMessage(err),
                            "): connectors run without filesystem isolation; use a kernel with "
                            "Landlock enabled (5.13+, lsm=landlock)");
    return prepared;
  }
  RulesetAttr attr;
  attr.handled_access_fs = handledAccess(prepared.abi_);
  std::size_t attr_size = sizeof(std::uint64_t);
  if (prepared.abi_ >= 6) {
    attr.scoped = kScopeAbstractUnix | kScopeSignal;
    attr_size = sizeof(RulesetAttr);
  } else {
    prepared.warning_ = cat("Landlock ABI ", prepared.abi_,
                            " cannot scope signals and abstract unix sockets (ABI 6, Linux "
                            "6.12): a connector may signal processes of its uid");
  }
  const long fd = landlockCreateRuleset(&attr, attr_size, 0);
  if (fd < 0) {
    return absl::InternalError(
        cat("cannot create a Landlock ruleset: ", strings::errnoMessage(errno)));
  }
  prepared.ruleset_fd_ = static_cast<int>(fd);

  const auto rule = [&prepared, &attr](const std::filesystem::path& path,
                                       std::uint64_t access) -> absl::Status {
    const int path_fd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
    if (path_fd < 0) {
      return errno == ENOENT
                 ? absl::OkStatus()
                 : absl::InternalError(cat("cannot open ", path.string(),
                                           " for the sandbox: ", strings::errnoMessage(errno)));
    }
    struct stat st {};
    if (::fstat(path_fd, &st) == 0 && !S_ISDIR(st.st_mode)) {
      access &= kFileAccess;
    }
    struct landlock_path_beneath_attr beneath {};
    beneath.allowed_access = access & attr.handled_access_fs;
    beneath.parent_fd = path_fd;
    const long added = ::syscall(SYS_landlock_add_rule, prepared.ruleset_fd_,
                                 LANDLOCK_RULE_PATH_BENEATH, &beneath, 0);
    const int err = errno;
    ::close(path_fd);
    if (added != 0) {
      return absl::InternalError(
          cat("cannot add ", path.string(), " to the sandbox: ", strings::errnoMessage(err)));
    }
    ++prepared.rules_;
    return absl::OkStatus();
  };
  for (const auto& path : policy.read_only) {
    if (absl::Status s = rule(path, kReadAccess); !s.ok()) {
      return s;
    }
  }
  for (const auto& path : policy.read_write) {
    const std::uint64_t all =
        attr.handled_access_fs & ~(LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_BLOCK);
    if (absl::Status s = rule(path, all); !s.ok()) {
      return s;
    }
  }
  return prepared;
}

Prepared::Prepared(Prepared&& other) noexcept
    : ruleset_fd_(std::exchange(other.ruleset_fd_, -1)),
      abi_(other.abi_),
      rules_(other.rules_),
      limits_(std::move(other.limits_)),
      user_(other.user_),
      warning_(std::move(other.warning_)) {}

Prepared& Prepared::operator=(Prepared&& other) noexcept {
  if (this != &other) {
    if (ruleset_fd_ >= 0) {
      ::close(ruleset_fd_);
    }
    ruleset_fd_ = std::exchange(other.ruleset_fd_, -1);
    abi_ = other.abi_;
    rules_ = other.rules_;
    limits_ = std::move(other.limits_);
    user_ = other.user_;
    warning_ = std::move(other.warning_);
  }
  return *this;
}

Prepared::~Prepared() {
  if (ruleset_fd_ >= 0) {
    ::close(ruleset_fd_);
  }
}

// Raw system calls only: this runs in a child forked from a multi-threaded process, and the
// glibc wrappers of setuid/setgroups broadcast to threads the child does not have.
int Prepared::applyLimitsAndUser() const noexcept {
  for (const Limit& limit : limits_) {
    const struct rlimit value { limit.value, limit.value };
    if (::syscall(SYS_setrlimit, limit.resource, &value) != 0) {
      return errno;
    }
  }
  if (user_) {
    if (::syscall(SYS_setgroups, 0, nullptr) != 0 ||
        ::syscall(SYS_setresgid, user_->gid, user_->gid, user_->gid) != 0 ||
        ::syscall(SYS_setresuid, user_->uid, user_->uid, user_->uid) != 0) {
      return errno;
    }
  }
  return 0;
}

int Prepared::applyRestrictions() const noexcept {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return errno;
  }
  if (ruleset_fd_ >= 0 && ::syscall(SYS_landlock_restrict_self, ruleset_fd_, 0U) != 0) {
    return errno;
  }
  return 0;
}

std::string Prepared::describe() const {
  std::string out =
      abi_ > 0 ? cat("landlock ABI ", abi_, ", ", rules_, " paths") : std::string("no landlock");
  if (user_) {
    out += cat("; ", user_->describe());
  }
  out += "; limits";
  for (const Limit& limit : limits_) {
    out += cat(" ", limitName(limit.resource), "=", limit.value);
  }
  return out;
}

bool adoptOrphans() { return ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0; }

bool protectThisProcess() { return ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0; }

}  // namespace tributary::sandbox
