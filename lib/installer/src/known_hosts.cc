#include "known_hosts.h"

#include "tributary/common/strings.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <vector>

namespace tributary::installer::internal {
namespace {

constexpr std::string_view kB64 =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64(std::string_view data, bool pad) {
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    const auto n = (static_cast<std::uint32_t>(static_cast<unsigned char>(data[i])) << 16U) |
                   (static_cast<std::uint32_t>(static_cast<unsigned char>(data[i + 1])) << 8U) |
                   static_cast<unsigned char>(data[i + 2]);
    out += kB64[(n >> 18U) & 63U];
    out += kB64[(n >> 12U) & 63U];
    out += kB64[(n >> 6U) & 63U];
    out += kB64[n & 63U];
  }
  if (i + 1 == data.size()) {
    const auto n = static_cast<std::uint32_t>(static_cast<unsigned char>(data[i])) << 16U;
    out += kB64[(n >> 18U) & 63U];
    out += kB64[(n >> 12U) & 63U];
    if (pad) {
      out += "==";
    }
  } else if (i + 2 == data.size()) {
    const auto n = (static_cast<std::uint32_t>(static_cast<unsigned char>(data[i])) << 16U) |
                   (static_cast<std::uint32_t>(static_cast<unsigned char>(data[i + 1])) << 8U);
    out += kB64[(n >> 18U) & 63U];
    out += kB64[(n >> 12U) & 63U];
    out += kB64[(n >> 6U) & 63U];
    if (pad) {
      out += "=";
    }
  }
  return out;
}

std::optional<std::string> unbase64(std::string_view text) {
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  bool padding = false;
  for (const char c : text) {
    if (c == '=') {
      padding = true;
      continue;
    }
    const auto pos = kB64.find(c);
    if (pos == std::string_view::npos || padding) {
      return std::nullopt;
    }
    acc = (acc << 6U) | static_cast<std::uint32_t>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> static_cast<unsigned>(bits)) & 0xFFU);
    }
  }
  return out;
}

// OpenSSH's match_pattern: `*` and `?` wildcards, whole string.
bool wildcardMatch(std::string_view s, std::string_view p) {
  std::size_t si = 0;
  std::size_t pi = 0;
  std::size_t star = std::string_view::npos;
  std::size_t mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == s[si])) {
      ++si;
      ++pi;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') {
    ++pi;
  }
  return pi == p.size();
}

bool hashedMatch(std::string_view entry, std::string_view name) {
  // |1|base64(salt)|base64(HMAC-SHA1(salt, name))
  const std::string_view rest = entry.substr(3);
  const auto bar = rest.find('|');
  if (bar == std::string_view::npos) {
    return false;
  }
  const auto salt = unbase64(rest.substr(0, bar));
  const auto hash = unbase64(rest.substr(bar + 1));
  if (!salt || !hash || hash->size() != 20) {
    return false;
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (HMAC(EVP_sha1(), salt->data(), static_cast<int>(salt->size()),
           reinterpret_cast<const unsigned char*>(name.data()), name.size(), md.data(),
           &len) == nullptr ||
      len != hash->size()) {
    return false;
  }
  return CRYPTO_memcmp(md.data(), hash->data(), len) == 0;
}

// OpenSSH's match_hostname over a comma list: a negated match wins, else any positive one.
bool hostsMatch(std::string_view field, std::string_view name) {
  if (field.rfind("|1|", 0) == 0) {
    return hashedMatch(field, name);
  }
  bool positive = false;
  for (const auto pattern_raw : strings::split(field, ',')) {
    std::string_view pattern = pattern_raw;
    const bool negated = !pattern.empty() && pattern.front() == '!';
    if (negated) {
      pattern.remove_prefix(1);
    }
    if (pattern.empty()) {
      continue;
    }
    if (wildcardMatch(name, strings::toLower(pattern))) {
      if (negated) {
        return false;
      }
      positive = true;
    }
  }
  return positive;
}

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) {
      ++i;
    }
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') {
      ++i;
    }
    if (i > start) {
      out.push_back(line.substr(start, i - start));
    }
  }
  return out;
}

struct Entry {
  std::string type;
  std::string blob;
  bool revoked = false;
};

}  // namespace

std::string sha256Raw(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr);
  return {reinterpret_cast<const char*>(md.data()), len};
}

std::string sshKeyType(std::string_view private_key, std::string_view public_key) {
  if (const auto f = fields(strings::trim(public_key)); !f.empty()) {
    return std::string(f.front());
  }
  if (private_key.find("BEGIN RSA PRIVATE KEY") != std::string_view::npos) {
    return "ssh-rsa";
  }
  if (private_key.find("BEGIN EC PRIVATE KEY") != std::string_view::npos) {
    return "ecdsa";
  }
  if (private_key.find("BEGIN OPENSSH PRIVATE KEY") != std::string_view::npos) {
    // openssh-key-v1: magic, cipher, kdf, kdf options, key count, then the public key blob
    // (unencrypted even when the private part is).
    std::string body;
    for (const auto line : strings::split(private_key, '\n')) {
      const std::string_view l = strings::trim(line);
      if (!l.empty() && l.find("-----") == std::string_view::npos) {
        body.append(l);
      }
    }
    const auto raw = unbase64(body);
    constexpr std::string_view kMagic("openssh-key-v1\0", 15);
    if (!raw || raw->compare(0, kMagic.size(), kMagic) != 0) {
      return "";
    }
    std::string_view rest = std::string_view(*raw).substr(kMagic.size());
    auto skip_string = [&rest]() {
      if (rest.size() < 4) {
        rest = {};
        return;
      }
      const std::uint32_t n =
          (static_cast<std::uint32_t>(static_cast<unsigned char>(rest[0])) << 24U) |
          (static_cast<std::uint32_t>(static_cast<unsigned char>(rest[1])) << 16U) |
          (static_cast<std::uint32_t>(static_cast<unsigned char>(rest[2])) << 8U) |
          static_cast<unsigned char>(rest[3]);
      rest =
          rest.size() < 4 + static_cast<std::size_t>(n) ? std::string_view() : rest.substr(4 + n);
    };
    skip_string();  // cipher
    skip_string();  // kdf
    skip_string();  // kdf options
    if (rest.size() < 4) {
      return "";
    }
    rest.remove_prefix(4);  // number of keys
    if (rest.size() < 4) {
      return "";
    }
    return keyTypeOfBlob(rest.substr(4));
  }
  return "";
}

std::string sshFingerprint(std::string_view sha256_digest) {
  return strings::cat("SHA256:", base64(sha256_digest, /*pad=*/false));
}

std::string keyTypeOfBlob(std::string_view blob) {
  if (blob.size() < 4) {
    return "";
  }
  const std::uint32_t len =
      (static_cast<std::uint32_t>(static_cast<unsigned char>(blob[0])) << 24U) |
      (static_cast<std::uint32_t>(static_cast<unsigned char>(blob[1])) << 16U) |
      (static_cast<std::uint32_t>(static_cast<unsigned char>(blob[2])) << 8U) |
      static_cast<unsigned char>(blob[3]);
  if (len == 0 || len > 64 || blob.size() < 4 + len) {
    return "";
  }
  return std::string(blob.substr(4, len));
}

std::string knownHostsName(std::string_view host, int port) {
  const std::string lower = strings::toLower(host);
  return port == 22 || port <= 0 ? lower : strings::cat("[", lower, "]:", port);
}

absl::Status verifyHostKey(std::string_view known_hosts, std::string_view host, int port,
                           const OfferedHostKey& offered) {
  const std::string name = knownHostsName(host, port);
  const std::string offered_sha = offered.blob.empty() ? offered.sha256 : sha256Raw(offered.blob);
  std::string offered_type = offered.type;
  if (offered_type.empty()) {
    offered_type = keyTypeOfBlob(offered.blob);
  }
  const std::string offered_desc = strings::cat(
      offered_type.empty() ? std::string("host") : offered_type, " key ",
      offered_sha.empty() ? std::string("(no fingerprint)") : sshFingerprint(offered_sha));

  std::vector<Entry> entries;
  for (const auto raw_line : strings::split(known_hosts, '\n')) {
    std::string_view line = strings::trim(raw_line);
    if (line.empty() || line.front() == '#') {
      continue;
    }
    auto f = fields(line);
    bool revoked = false;
    if (!f.empty() && f.front().front() == '@') {
      if (f.front() == "@revoked") {
        revoked = true;
      } else {
        continue;  // @cert-authority: host certificates are not supported.
      }
      f.erase(f.begin());
    }
    if (f.size() < 3 || !hostsMatch(f[0], name)) {
      continue;
    }
    auto blob = unbase64(f[2]);
    if (!blob) {
      continue;
    }
    entries.push_back({std::string(f[1]), *std::move(blob), revoked});
  }

  auto same = [&](const Entry& e) {
    if (!offered.blob.empty()) {
      return e.blob.size() == offered.blob.size() &&
             CRYPTO_memcmp(e.blob.data(), offered.blob.data(), e.blob.size()) == 0;
    }
    return !offered_sha.empty() && sha256Raw(e.blob) == offered_sha;
  };
  for (const auto& e : entries) {
    if (e.revoked && same(e)) {
      return absl::PermissionDeniedError(strings::cat("host key verification failed for ", name,
                                                      ": the server offered ", offered_desc,
                                                      ", which known_hosts marks @revoked"));
    }
  }
  std::vector<std::string> expected;
  for (const auto& e : entries) {
    if (e.revoked) {
      continue;
    }
    if (same(e)) {
      return absl::OkStatus();
    }
    expected.push_back(strings::cat(e.type, " ", sshFingerprint(sha256Raw(e.blob))));
  }
  if (expected.empty()) {
    return absl::FailedPreconditionError(
        strings::cat("host key verification failed: ", name,
                     " is not in the secret's known_hosts (the server "
                     "offered ",
                     offered_desc, "); add the host's key, e.g. the output of `ssh-keyscan",
                     port == 22 || port <= 0 ? std::string() : strings::cat(" -p ", port), " ",
                     host, "` checked against a trusted source"));
  }
  return absl::PermissionDeniedError(
      strings::cat("host key verification failed for ", name, ": the server offered ", offered_desc,
                   ", which does not match known_hosts (expected ", strings::join(expected, " or "),
                   "); the host key changed or someone is intercepting the connection"));
}

bool parseSshUrl(std::string_view url, std::string* host, int* port) {
  std::string_view rest;
  bool scp_like = false;
  if (const auto scheme_end = url.find("://"); scheme_end != std::string_view::npos) {
    const std::string scheme = strings::toLower(url.substr(0, scheme_end));
    if (scheme != "ssh" && scheme != "ssh+git" && scheme != "git+ssh") {
      return false;
    }
    rest = url.substr(scheme_end + 3);
  } else {
    // scp-like `[user@]host:path`: a colon before any slash.
    const auto colon = url.find(':');
    const auto slash = url.find('/');
    if (url.empty() || url.front() == '/' || colon == std::string_view::npos ||
        (slash != std::string_view::npos && slash < colon)) {
      return false;
    }
    rest = url;
    scp_like = true;
  }
  int p = 22;
  std::string_view h;
  if (scp_like) {
    const auto at = rest.find('@');
    if (at != std::string_view::npos && at < rest.find(':')) {
      rest.remove_prefix(at + 1);
    }
    if (!rest.empty() && rest.front() == '[') {
      const auto close = rest.find(']');
      if (close == std::string_view::npos) {
        return false;
      }
      h = rest.substr(1, close - 1);
    } else {
      h = rest.substr(0, rest.find(':'));
    }
  } else {
    std::string_view authority = rest.substr(0, rest.find('/'));
    if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
      authority.remove_prefix(at + 1);
    }
    std::string_view port_text;
    if (!authority.empty() && authority.front() == '[') {
      const auto close = authority.find(']');
      if (close == std::string_view::npos) {
        return false;
      }
      h = authority.substr(1, close - 1);
      authority.remove_prefix(close + 1);
      if (!authority.empty() && authority.front() == ':') {
        port_text = authority.substr(1);
      }
    } else {
      const auto colon = authority.find(':');
      h = authority.substr(0, colon);
      if (colon != std::string_view::npos) {
        port_text = authority.substr(colon + 1);
      }
    }
    if (!port_text.empty()) {
      p = std::atoi(std::string(port_text).c_str());
    }
  }
  if (h.empty() || p <= 0 || p > 65535) {
    return false;
  }
  if (host != nullptr) {
    *host = std::string(h);
  }
  if (port != nullptr) {
    *port = p;
  }
  return true;
}

}  // namespace tributary::installer::internal
