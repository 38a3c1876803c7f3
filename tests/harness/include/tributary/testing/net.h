#pragma once
// Loopback networking for tests and benchmarks that talk to servers they started.

#include <absl/status/statusor.h>

#include <string>
#include <string_view>

namespace tributary::harness {

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
absl::StatusOr<int> freeLoopbackPort();

/// `GET http://127.0.0.1:<port><path>` over HTTP/1.1 (the server closes the connection): the body,
/// or "" when nothing answers. `*code` gets the HTTP status (0 without an answer). For probing
/// /healthz, /readyz and /metrics of binaries under test.
std::string httpGetLoopback(int port, std::string_view path, int* code = nullptr);

}  // namespace tributary::harness
