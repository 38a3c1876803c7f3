#include "tributary/installer/secrets.h"

#include "tributary/common/strings.h"

#include "util.h"

#include <openssl/crypto.h>

namespace tributary::installer {
namespace {

void wipe(std::string& s) {
  if (!s.empty()) {
    OPENSSL_cleanse(s.data(), s.size());
  }
}

}  // namespace

Credentials::~Credentials() {
  wipe(token);
  wipe(password);
  wipe(ssh_private_key);
  wipe(ssh_passphrase);
}

bool Credentials::empty() const {
  return username.empty() && token.empty() && password.empty() && ssh_private_key.empty();
}

std::vector<std::string> Credentials::secretValues() const {
  std::vector<std::string> out;
  for (const auto* s : {&token, &password, &ssh_private_key, &ssh_passphrase}) {
    if (!s->empty()) {
      out.push_back(*s);
    }
  }
  // A message quoting a piece of the key is caught too: every line of its base64 body.
  for (const auto line : strings::split(ssh_private_key, '\n')) {
    const std::string_view l = strings::trim(line);
    if (l.size() >= 16 && l.find("-----") == std::string_view::npos) {
      out.emplace_back(l);
    }
  }
  return out;
}

absl::StatusOr<Credentials> StaticSecretResolver::resolve(std::string_view ref) {
  const auto it = secrets_.find(ref);
  if (it == secrets_.end()) {
    return absl::NotFoundError(strings::cat("secret '", ref, "' not found"));
  }
  return it->second;
}

absl::StatusOr<Credentials> DirectorySecretResolver::resolve(std::string_view ref) {
  if (ref.empty() || ref == "." || ref == ".." || ref.find('/') != std::string_view::npos) {
    return absl::InvalidArgumentError(strings::cat("invalid secret name '", ref, "'"));
  }
  const std::filesystem::path dir = base_ / std::string(ref);
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(strings::cat("secret '", ref, "' not found under ", base_.string()));
  }
  Credentials creds;
  const std::pair<const char*, std::string*> keys[] = {{"username", &creds.username},
                                                       {"token", &creds.token},
                                                       {"password", &creds.password},
                                                       {"ssh-privatekey", &creds.ssh_private_key},
                                                       {"ssh-publickey", &creds.ssh_public_key},
                                                       {"ssh-passphrase", &creds.ssh_passphrase},
                                                       {"known_hosts", &creds.known_hosts}};
  for (const auto& [key, field] : keys) {
    const auto path = dir / key;
    if (!std::filesystem::exists(path, ec)) {
      continue;
    }
    auto value = internal::readFile(path, 1U << 20U);
    if (!value.ok()) {
      // The message names the file, never its content.
      return absl::Status(value.status().code(),
                          strings::cat("cannot read key '", key, "' of secret '", ref, "'"));
    }
    *field = *std::move(value);
    if (!field->empty() && field->back() == '\n') {
      field->pop_back();
      if (!field->empty() && field->back() == '\r') {
        field->pop_back();
      }
    }
  }
  const auto insecure = dir / "insecure-skip-host-key-verification";
  if (std::filesystem::exists(insecure, ec)) {
    auto value = internal::readFile(insecure, 64);
    if (!value.ok()) {
      return absl::Status(value.status().code(),
                          strings::cat("cannot read key 'insecure-skip-host-key-verification' of "
                                       "secret '",
                                       ref, "'"));
    }
    const std::string flag = strings::toLower(strings::trim(*value));
    if (flag == "true") {
      creds.insecure_skip_host_key_verification = true;
    } else if (flag != "false" && !flag.empty()) {
      return absl::InvalidArgumentError(
          strings::cat("key 'insecure-skip-host-key-verification' of secret '", ref,
                       "' must be \"true\" or \"false\""));
    }
  }
  if (creds.empty() && creds.known_hosts.empty()) {
    return absl::FailedPreconditionError(
        strings::cat("secret '", ref,
                     "' has none of the keys token, username, password, ssh-privatekey, "
                     "known_hosts"));
  }
  return creds;
}

}  // namespace tributary::installer
