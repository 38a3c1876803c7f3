// The host's environment allow-list, seen from the user's side: which of this process's
// variables look like credentials and do not reach the connector, said once per process.
#include "tributary/common/strings.h"
#include "tributary/plugin_host/plugin_host.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <string_view>

extern char** environ;  // NOLINT: POSIX

namespace tributary::plugin_host {
namespace {

// The same matching as the allow-list itself: exact names, or a prefix with a trailing `*`.
bool inheritedByPattern(std::string_view name, const std::vector<std::string>& allowed) {
  return std::any_of(allowed.begin(), allowed.end(), [name](std::string_view pattern) {
    return pattern.ends_with('*') ? name.starts_with(pattern.substr(0, pattern.size() - 1))
                                  : name == pattern;
  });
}

std::atomic<bool> g_noted{false};

}  // namespace

bool looksLikeCredential(std::string_view name) {
  std::string upper;
  upper.reserve(name.size());
  for (const char c : name) {
    upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  const std::string_view n = upper;
  // Our own secrets (TRIBUTARY_SECRET_<NAME>_<KEY>) are for the CLI, never for connectors.
  if (n.starts_with("TRIBUTARY_")) {
    return false;
  }
  for (const std::string_view prefix :
       {"AWS_", "GOOGLE_", "GCP_", "GCLOUD_", "CLOUDSDK_", "AZURE_", "ARM_", "OCI_",
        "ALIBABA_CLOUD_", "DIGITALOCEAN_", "HCLOUD_"}) {
    if (n.starts_with(prefix)) {
      return true;
    }
  }
  for (const std::string_view exact : {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY"}) {
    if (n == exact) {
      return true;
    }
  }
  for (const std::string_view suffix : {"_TOKEN", "_KEY", "_KEY_ID", "_PASSWORD", "_PASSWD",
                                        "_PASS", "_CREDENTIALS", "_CREDS", "_APIKEY", "_AUTH"}) {
    if (n.ends_with(suffix)) {
      return true;
    }
  }
  for (const std::string_view part : {"_SECRET", "SECRET_", "_TOKEN_", "_PASSWORD_", "_KEY_"}) {
    if (n.find(part) != std::string_view::npos) {
      return true;
    }
  }
  return false;
}

std::vector<std::string> droppedCredentialVariables(const LaunchSpec& spec) {
  std::vector<std::string> out;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view kv(*entry);
    const auto eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      continue;
    }
    const std::string name(kv.substr(0, eq));
    if (looksLikeCredential(name) && !inheritedByPattern(name, spec.inherited_env) &&
        !spec.env.contains(name)) {
      out.push_back(name);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

bool noteDroppedCredentials(const LaunchSpec& spec, const log::Logger& logger) {
  if (g_noted.load()) {
    return false;
  }
  const std::vector<std::string> dropped = droppedCredentialVariables(spec);
  if (dropped.empty() || g_noted.exchange(true)) {
    return false;
  }
  logger.info(
      strings::cat("not passing ", dropped.size(),
                   " variable(s) of this environment that look like credentials to connectors: ",
                   strings::join(dropped, ", "),
                   "; connectors get an allow-list of the host's environment only. Pass what a "
                   "connector needs explicitly: `tributary run --env NAME` (copies it from here) "
                   "or --env-file, or the Connector's spec.env (value, or valueFrom.secretKeyRef), "
                   "spec.envFrom or spec.files"),
      {{"variables", dropped}});
  return true;
}

}  // namespace tributary::plugin_host
