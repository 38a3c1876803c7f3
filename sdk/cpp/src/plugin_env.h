#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

/// The parts of go-plugin's plugin start-up that depend only on the environment (go-plugin
/// §1.3, §2): cookie text, version negotiation, the Unix socket's place and permissions, and the
/// handshake line. Pure functions, so they are unit-tested without starting a server.
namespace tributary::sdk::internal {

/// go-plugin's exact text when the cookie is wrong (stderr, then exit status 1).
inline constexpr std::string_view kNotAPluginMessage =
    "This binary is a plugin. These are not meant to be executed directly.\n"
    "Please execute the program that consumes these plugins, which will\n"
    "load any plugins automatically\n";

/// go-plugin's exact text when the plugin itself configured no cookie.
inline constexpr std::string_view kMisconfiguredMessage =
    "Misconfigured ServeConfig given to serve this plugin: no magic cookie\n"
    "key or value was set. Please notify the plugin author and report\n"
    "this as a bug.\n";

/// The app protocol version go-plugin's `protocolVersion` picks: the highest of `ours` listed in
/// `host_list` (PLUGIN_PROTOCOL_VERSIONS, comma-separated), else the lowest of `ours`. Entries of
/// `host_list` that are not integers are skipped and appended to `invalid` when given.
int negotiateVersion(const std::vector<int>& ours, std::string_view host_list,
                     std::vector<std::string>* invalid = nullptr);

/// Where the plugin's sockets go: PLUGIN_UNIX_SOCKET_DIR, else TMPDIR, else /tmp.
std::string socketDir();

/// A fresh, unused path `<dir>/plugin<random>` for a Unix socket (created and removed again, like
/// Go's os.CreateTemp + Remove). Error if the path would not fit in sockaddr_un.
absl::StatusOr<std::string> reserveSocketPath(const std::string& dir);

/// A group given by name or numeric id (PLUGIN_UNIX_SOCKET_GROUP).
absl::StatusOr<gid_t> resolveGroup(std::string_view group);

/// chgrp `path` to `group` and chmod it 0660 (go-plugin's setGroupWritable).
absl::Status makeGroupWritable(const std::string& path, std::string_view group);

/// `1|<app_version>|<network>|<address>|grpc|<cert_b64>\n` — always six fields (the last may be
/// empty), never the seventh multiplexing field.
std::string formatHandshake(int app_version, std::string_view network, std::string_view address,
                            std::string_view cert_b64);

/// write(2) until everything is written or a non-EINTR error happens.
absl::Status writeAll(int fd, std::string_view bytes);

}  // namespace tributary::sdk::internal
