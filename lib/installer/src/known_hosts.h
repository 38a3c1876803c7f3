#pragma once

// SSH host-key verification against an OpenSSH known_hosts text (the `known_hosts` key of a
// connector's secret, Flux's convention).
//
// Supported: plain host patterns (`host`, `[host]:port`, comma lists, `*`/`?` wildcards, `!`
// negation), hashed entries (`|1|salt|hmac`, HMAC-SHA1 as written by `ssh-keygen -H`), key types
// ssh-ed25519, ecdsa-sha2-nistp256/384/521 and ssh-rsa, and `@revoked` lines. `@cert-authority`
// lines are ignored (libgit2 1.5 does not expose host certificates).

#include "absl/status/status.h"

#include <string>
#include <string_view>

namespace tributary::installer::internal {

/// The key a server offered.
struct OfferedHostKey {
  std::string type;    ///< "ssh-ed25519", ...; empty if unknown.
  std::string blob;    ///< The key in SSH wire format; empty if libgit2 did not give it.
  std::string sha256;  ///< SHA-256 of the blob (32 raw bytes); used when `blob` is empty.
};

/// OpenSSH's fingerprint of a SHA-256 digest: "SHA256:" + unpadded base64.
std::string sshFingerprint(std::string_view sha256_digest);

/// SHA-256 of `data` (32 raw bytes).
std::string sha256Raw(std::string_view data);

/// "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", ... for a private key (PEM or OpenSSH
/// format) and/or its public key line; "" if unknown or encrypted in a way that hides it.
std::string sshKeyType(std::string_view private_key, std::string_view public_key);

/// The key type named inside an SSH wire-format key blob ("ssh-ed25519", ...), or "".
std::string keyTypeOfBlob(std::string_view blob);

/// The name OpenSSH looks up for a host and port: `host` for port 22, else `[host]:port`.
std::string knownHostsName(std::string_view host, int port);

/// OK when `known_hosts` holds the offered key for host:port (and it is not @revoked).
/// Otherwise a clear error naming the host and the offered key's fingerprint:
/// FailedPrecondition when the host has no entry, PermissionDenied on a mismatch or a
/// revoked key.
absl::Status verifyHostKey(std::string_view known_hosts, std::string_view host, int port,
                           const OfferedHostKey& offered);

/// The port of an ssh URL (`ssh://`, `ssh+git://`, `git+ssh://`, or scp-like `user@host:path`,
/// which is always 22), and its host. False if `url` is not an ssh URL.
bool parseSshUrl(std::string_view url, std::string* host, int* port);

}  // namespace tributary::installer::internal
