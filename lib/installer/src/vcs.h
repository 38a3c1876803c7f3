#pragma once

// VCS sources with libgit2: resolve a ref on the remote, fetch it and check it out (detached),
// with credentials from a secret, a deadline and cancellation.
//
// libgit2 1.5 (Debian 12) has no shallow clone (added in 1.7): we fetch only the one ref that is
// needed (a branch or tag), or every branch and tag when the ref is a commit id.

#include "tributary/installer/secrets.h"

#include "absl/status/statusor.h"
#include "util.h"

#include <filesystem>
#include <stop_token>
#include <string>

namespace tributary::installer::internal {

struct VcsSpec {
  std::string url;
  std::string ref;  ///< Branch, tag, refs/..., full commit id, or empty for the remote's HEAD.
  const Credentials* credentials = nullptr;
  Deadline deadline = Deadline::none();
};

struct VcsRevision {
  std::string commit;        ///< 40 hex digits.
  std::string resolved_ref;  ///< "refs/heads/main", "refs/tags/v1"; empty for a commit id.
};

/// Asks the remote which commit `ref` is, without fetching (git ls-remote). For a commit id
/// the id itself is returned (its existence is checked when fetching).
absl::StatusOr<VcsRevision> resolveRemote(const VcsSpec& spec, const std::stop_token& stop = {});

/// Fetches `ref` into the repository at `workdir` (created if it has no `.git`) and checks it
/// out with a detached HEAD. Untracked files already in `workdir` are kept (incremental builds).
absl::StatusOr<VcsRevision> fetchAndCheckout(const VcsSpec& spec,
                                             const std::filesystem::path& workdir,
                                             const std::stop_token& stop = {});

/// The commit HEAD points at in the repository at `workdir`.
absl::StatusOr<std::string> headCommit(const std::filesystem::path& workdir);

}  // namespace tributary::installer::internal
