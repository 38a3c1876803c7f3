#include "credentials.h"

#include "tributary/common/strings.h"

#include "common.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <unistd.h>

extern char** environ;  // NOLINT: POSIX

namespace tributary::cli {

using api::isEnvName;
using strings::cat;

std::string secretVariable(const std::string& secret, const std::string& key) {
  std::string out = "TRIBUTARY_SECRET_";
  for (const char c : secret + "_" + key) {
    out.push_back(std::isalnum(static_cast<unsigned char>(c)) != 0
                      ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
                      : '_');
  }
  return out;
}

const SecretManifest* LocalSecrets::manifest(const std::string& ns, const std::string& name) const {
  for (const auto& secret : manifests_.secrets) {
    if (secret.ns == ns && secret.name == name) {
      return &secret;
    }
  }
  return nullptr;
}

absl::StatusOr<std::optional<std::string>> LocalSecrets::key(const std::string& ns,
                                                             const std::string& name,
                                                             const std::string& key) const {
  if (const SecretManifest* secret = manifest(ns, name); secret != nullptr) {
    if (const auto it = secret->data.find(key); it != secret->data.end()) {
      return std::optional<std::string>(it->second);
    }
  }
  const std::filesystem::path file = dir_ / name / key;
  std::error_code ec;
  if (std::filesystem::is_regular_file(file, ec)) {
    auto text = readFile(file);
    if (!text.ok()) {
      return text.status();
    }
    return std::optional<std::string>(*std::move(text));
  }
  const std::string var = secretVariable(name, key);
  if (const char* value = std::getenv(var.c_str()); value != nullptr) {
    return std::optional<std::string>(value);
  }
  return std::optional<std::string>();
}

absl::StatusOr<std::optional<std::map<std::string, std::string>>> LocalSecrets::all(
    const std::string& ns, const std::string& name) const {
  using Keys = std::map<std::string, std::string>;
  if (const SecretManifest* secret = manifest(ns, name); secret != nullptr) {
    return std::optional<Keys>(secret->data);
  }
  const std::filesystem::path dir = dir_ / name;
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) {
    Keys keys;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      const std::string key = entry.path().filename().string();
      std::error_code file_ec;
      if (key.starts_with('.') || !std::filesystem::is_regular_file(entry.path(), file_ec)) {
        continue;
      }
      auto text = readFile(entry.path());
      if (!text.ok()) {
        return text.status();
      }
      keys[key] = *std::move(text);
    }
    if (ec) {
      return absl::InternalError(cat("cannot list ", dir.string(), ": ", ec.message()));
    }
    return std::optional<Keys>(std::move(keys));
  }
  const std::string prefix = secretVariable(name, "");
  Keys keys;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view kv(*entry);
    const auto eq = kv.find('=');
    if (eq != std::string_view::npos && eq > prefix.size() && kv.starts_with(prefix)) {
      keys[std::string(kv.substr(prefix.size(), eq - prefix.size()))] =
          std::string(kv.substr(eq + 1));
    }
  }
  if (keys.empty()) {
    return std::optional<Keys>();
  }
  return std::optional<Keys>(std::move(keys));
}

std::string LocalSecrets::placesForKey(const std::string& ns, const std::string& name,
                                       const std::string& key) const {
  return cat("(looked in: a v1 Secret ", ns, "/", name, " in the -f files",
             manifest(ns, name) != nullptr ? cat(" (it has no key `", key, "`)") : std::string(),
             ", the file ", (dir_ / name / key).string(), " (--secret-dir), the variable ",
             secretVariable(name, key), ")");
}

std::string LocalSecrets::placesForSecret(const std::string& ns, const std::string& name) const {
  return cat("(looked in: a v1 Secret ", ns, "/", name, " in the -f files, the directory ",
             (dir_ / name).string(), " (--secret-dir), variables ", secretVariable(name, ""),
             "<KEY>)");
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> parseEnvFile(
    std::string_view text, const std::string& source) {
  std::vector<std::pair<std::string, std::string>> out;
  int line_no = 0;
  for (std::string_view line : strings::split(text, '\n')) {
    ++line_no;
    if (line.ends_with('\r')) {
      line.remove_suffix(1);
    }
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
      line.remove_prefix(1);
    }
    if (line.empty() || line.front() == '#') {
      continue;
    }
    const auto eq = line.find('=');
    const std::string name(line.substr(0, eq));
    if (!isEnvName(name)) {
      return absl::InvalidArgumentError(
          cat(source, ":", line_no, ": `", name,
              "` is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*); lines are "
              "NAME=VALUE, NAME, or # comments"));
    }
    if (eq == std::string_view::npos) {
      if (const char* value = std::getenv(name.c_str()); value != nullptr) {
        out.emplace_back(name, value);
      }
      continue;
    }
    out.emplace_back(name, std::string(line.substr(eq + 1)));
  }
  return out;
}

absl::StatusOr<std::pair<std::string, std::string>> parseEnvFlag(std::string_view text) {
  const auto eq = text.find('=');
  const std::string name(text.substr(0, eq));
  if (!isEnvName(name)) {
    return absl::InvalidArgumentError(
        cat("--env takes NAME=VALUE or NAME, and `", name,
            "` is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"));
  }
  if (eq != std::string_view::npos) {
    return std::make_pair(name, std::string(text.substr(eq + 1)));
  }
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) {
    return absl::InvalidArgumentError(
        cat("--env ", name, ": ", name,
            " is not set in this environment (give --env NAME=VALUE, or set it first)"));
  }
  return std::make_pair(name, std::string(value));
}

}  // namespace tributary::cli
