#pragma once

// Remote git operations run in a helper process, `tributary-git-helper`, killed at the deadline
// or on cancellation.
//
// libgit2 1.5 has no socket timeouts (GIT_OPT_SET_SERVER_TIMEOUT and
// GIT_OPT_SET_SERVER_CONNECT_TIMEOUT arrived in 1.7) and calls our callbacks only while data
// flows, so a server that accepts the connection and then sends nothing blocks a fetch in
// recv() for as long as TCP keeps the connection. A custom stream could bound git:// and
// http(s)://, but not ssh://, where libssh2 reads the socket itself; killing a process bounds
// every transport, DNS lookups and TLS/SSH handshakes included, and leaves no thread stuck in
// libgit2. The request (credentials included) goes to the helper's stdin, never its argv or
// environment; the answer comes back on its stdout as JSON.

#include "absl/status/statusor.h"
#include "vcs.h"

#include <chrono>
#include <filesystem>
#include <stop_token>

namespace tributary::installer::internal {

/// The helper program: `configured` if set, else $TRIBUTARY_GIT_HELPER, else
/// `tributary-git-helper` next to the running executable, else the one built with this
/// library. FailedPrecondition naming the places looked at if none is executable.
absl::StatusOr<std::filesystem::path> findGitHelper(const std::filesystem::path& configured);

/// resolveRemote / fetchAndCheckout in the helper. After `timeout`: DeadlineExceeded "timed out
/// after 2.0s fetching <redacted url>"; on `stop`: Cancelled. The helper is dead (and reaped)
/// when these return, so nothing writes into `workdir` any more.
absl::StatusOr<VcsRevision> resolveRemoteIsolated(const std::filesystem::path& helper,
                                                  const VcsSpec& spec,
                                                  std::chrono::milliseconds timeout,
                                                  const std::stop_token& stop);
absl::StatusOr<VcsRevision> fetchAndCheckoutIsolated(const std::filesystem::path& helper,
                                                     const VcsSpec& spec,
                                                     const std::filesystem::path& workdir,
                                                     std::chrono::milliseconds timeout,
                                                     const std::stop_token& stop);

/// main() of tributary-git-helper: one request on stdin, one answer on stdout.
int gitHelperMain();

}  // namespace tributary::installer::internal
