#pragma once

#include "absl/status/statusor.h"

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>

/// Credentials for fetching connectors, looked up by the spec's `secret_ref`.
namespace tributary::installer {

/// What a secret may hold. Every field is optional. Never logged, never put in an error message,
/// never passed to install commands. Values are wiped from memory when the object is destroyed.
struct Credentials {
  /// HTTP(S) git remotes: username for the token/password (default "x-access-token", which
  /// GitHub, Gitea and Bitbucket accept; GitLab wants "oauth2"). SSH: the login (default from the
  /// URL, else "git").
  std::string username;
  /// A token (HTTP(S) git: password of basic auth; HTTP downloads: `Authorization: Bearer`).
  std::string token;
  /// HTTP(S) git / downloads: basic-auth password (used when `token` is empty).
  std::string password;
  /// SSH remotes: private key in PEM/OpenSSH format, optional public key and passphrase.
  std::string ssh_private_key;
  std::string ssh_public_key;
  std::string ssh_passphrase;
  /// SSH remotes: the server's host keys in OpenSSH known_hosts format (`ssh-keyscan` output,
  /// plain or hashed). Required for ssh remotes unless `insecure_skip_host_key_verification`.
  std::string known_hosts;
  /// SSH remotes: accept any host key (logged as a warning on every fetch). For test servers
  /// only: anyone on the network path can impersonate the server.
  bool insecure_skip_host_key_verification = false;

  Credentials() = default;
  Credentials(const Credentials&) = default;
  Credentials(Credentials&&) noexcept = default;
  Credentials& operator=(const Credentials&) = default;
  Credentials& operator=(Credentials&&) noexcept = default;
  ~Credentials();

  /// True when there is nothing to authenticate with (known_hosts alone is not a credential).
  [[nodiscard]] bool empty() const;
  /// Secret values (token, password, key, passphrase) to scrub from any text we show.
  [[nodiscard]] std::vector<std::string> secretValues() const;
};

/// Resolves a `secret_ref` to credentials. Implementations must be thread-safe.
class SecretResolver {
 public:
  virtual ~SecretResolver() = default;
  /// NotFound when there is no such secret.
  virtual absl::StatusOr<Credentials> resolve(std::string_view ref) = 0;
};
using SecretResolverPtr = std::shared_ptr<SecretResolver>;

/// Fixed secrets (tests, the CLI).
class StaticSecretResolver : public SecretResolver {
 public:
  explicit StaticSecretResolver(std::map<std::string, Credentials, std::less<>> secrets)
      : secrets_(std::move(secrets)) {}
  absl::StatusOr<Credentials> resolve(std::string_view ref) override;

 private:
  std::map<std::string, Credentials, std::less<>> secrets_;
};

/// Secrets mounted as directories, the way Kubernetes mounts a Secret volume:
/// `<base>/<ref>/<key>` with keys `token`, `username`, `password` (kubernetes.io/basic-auth),
/// `ssh-privatekey` (kubernetes.io/ssh-auth), `ssh-publickey`, `ssh-passphrase`, `known_hosts`
/// (Flux's name) and `insecure-skip-host-key-verification` (`true` to accept any SSH host key).
/// One trailing newline is stripped from each value. `ref` must be a plain name (no `/`, not
/// `..`).
class DirectorySecretResolver : public SecretResolver {
 public:
  explicit DirectorySecretResolver(std::filesystem::path base) : base_(std::move(base)) {}
  absl::StatusOr<Credentials> resolve(std::string_view ref) override;

 private:
  std::filesystem::path base_;
};

}  // namespace tributary::installer
