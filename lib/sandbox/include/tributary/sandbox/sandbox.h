#pragma once

// The connector sandbox: what a connector process may touch, applied between fork and exec.
//
//   sandbox::Policy policy = sandbox::Policy::forConnector();
//   policy.read_only.push_back(installation.root);
//   policy.read_write.push_back(private_tmp);
//   auto prepared = sandbox::Prepared::create(policy);   // in the parent: opens, allocates
//   ... fork() ...  prepared->applyInChild();             // in the child: syscalls only
//
// It layers: resource limits (setrlimit), an optional switch to another uid/gid, no_new_privs,
// and a Landlock ruleset (filesystem access, signal and abstract-socket scoping) where the
// kernel has one. See lib/sandbox/README.md for what it does and does not protect against.

#include "absl/status/statusor.h"

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tributary::sandbox {

/// Resource limits (soft = hard). Unset: inherited. A limit above the parent's hard limit is
/// lowered to it (raising needs privileges the sandbox is there to drop). Core dumps are always
/// off: a dump would hold whatever credentials the connector had in memory.
struct Limits {
  std::optional<std::uint64_t> open_files;           ///< RLIMIT_NOFILE
  std::optional<std::uint64_t> processes;            ///< RLIMIT_NPROC: counted per uid!
  std::optional<std::uint64_t> address_space_bytes;  ///< RLIMIT_AS
  std::optional<std::uint64_t> file_size_bytes;      ///< RLIMIT_FSIZE: the largest file written
};

/// A uid and gid to run as (supplementary groups are dropped). Only root can switch.
struct User {
  uid_t uid = 65534;
  gid_t gid = 65534;
  /// "65534", "65534:65534" or a user name from the passwd database (its primary group).
  static absl::StatusOr<User> parse(const std::string& text);
  [[nodiscard]] std::string describe() const;  ///< "uid 65534, gid 65534"
};

/// OK when `user` can reach `path` by the file modes: search on every directory above it, and
/// read (and search, for a directory) on it. Otherwise FailedPrecondition naming the first
/// directory or file in the way, its mode and owner. Root's view decides nothing here: this is
/// the check to make before running a connector as `user`.
absl::Status checkReachable(const std::filesystem::path& path, const User& user);

struct Policy {
  /// Readable and executable with everything below (a missing path is skipped).
  std::vector<std::filesystem::path> read_only;
  /// Also writable: files and directories may be created, written, truncated and removed.
  std::vector<std::filesystem::path> read_write;
  Limits limits;
  std::optional<User> user;

  /// The system paths a program needs (/usr, /bin, /lib*, what /etc's resolvers, TLS and user
  /// lookups read, /proc, /sys, /dev/null, /dev/urandom, …), read-only except the null devices.
  /// Not /tmp, /run, /var, /home or /root: Secrets, tokens and other programs' files live there.
  /// No limits: the Connector's spec.limits (lib/api) sets them.
  static Policy forConnector();
};

/// The Landlock ABI version the kernel offers (0: none, or disabled).
int landlockAbi();

/// A policy ready to apply in a forked child: the ruleset is built and the limits computed in
/// the parent, so the child only makes async-signal-safe system calls. Movable, not copyable.
class Prepared {
 public:
  static absl::StatusOr<Prepared> create(const Policy& policy);
  Prepared(Prepared&& other) noexcept;
  Prepared& operator=(Prepared&& other) noexcept;
  Prepared(const Prepared&) = delete;
  Prepared& operator=(const Prepared&) = delete;
  ~Prepared();

  /// Step 1 in the child, before anything that the uid switch would reset (PR_SET_PDEATHSIG):
  /// limits, then groups, gid and uid. Returns 0 or the errno of the step that failed.
  [[nodiscard]] int applyLimitsAndUser() const noexcept;
  /// Step 2 in the child, right before exec: no_new_privs and the Landlock ruleset. Returns 0
  /// or an errno.
  [[nodiscard]] int applyRestrictions() const noexcept;

  /// Empty, or what the kernel could not enforce ("Landlock is not available: …").
  [[nodiscard]] const std::string& warning() const { return warning_; }
  /// One line for logs: "landlock ABI 7, 9 paths; uid 65534; limits files=4096 …".
  [[nodiscard]] std::string describe() const;

 private:
  Prepared() = default;

  struct Limit {
    int resource = 0;
    std::uint64_t value = 0;
  };
  int ruleset_fd_ = -1;
  int abi_ = 0;
  std::size_t rules_ = 0;
  std::vector<Limit> limits_;
  std::optional<User> user_;
  std::string warning_;
};

/// Makes this process a child subreaper (PR_SET_CHILD_SUBREAPER): what a connector leaves
/// behind outside its process group becomes our child when its parent dies, so the plugin host
/// can kill it (processes of the connector user only). The agent and the CLI call it when
/// connectors run as another user. Returns false (with errno) when the kernel refused.
bool adoptOrphans();

/// Makes this process non-dumpable (PR_SET_DUMPABLE 0): a process of the same uid can no longer
/// read its memory, environment or descriptors through /proc, nor ptrace it. The agent and the
/// CLI call it first thing: they hold the store's and the lock's credentials. Returns false
/// (with errno) when the kernel refused.
bool protectThisProcess();

}  // namespace tributary::sandbox
