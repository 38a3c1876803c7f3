#include "tributary/kube/config.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

#include "util.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <map>

namespace tributary::kube {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr std::string_view kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) {
    return std::nullopt;
  }
  return std::string(v);
}

// One named entry (cluster, user or context) and the file it came from.
struct Entry {
  Json value;
  std::string file;      // for messages
  std::string base_dir;  // for relative paths
};

struct Merged {
  std::map<std::string, Entry> clusters;
  std::map<std::string, Entry> users;
  std::map<std::string, Entry> contexts;
  std::string current_context;
  std::vector<std::string> files;

  [[nodiscard]] std::string where() const {
    return files.size() == 1 ? files.front() : strings::cat("[", strings::join(files, ", "), "]");
  }
};

std::string names(const std::map<std::string, Entry>& m) {
  std::vector<std::string> out;
  for (const auto& [name, _] : m) {
    out.push_back(strings::cat("\"", name, "\""));
  }
  return out.empty() ? "none" : strings::join(out, ", ");
}

std::string str(const Json& object, const char* field) {
  if (!object.is_object()) {
    return {};
  }
  const auto it = object.find(field);
  if (it == object.end() || !it->is_string()) {
    return {};
  }
  return it->get<std::string>();
}

bool truthy(const Json& object, const char* field) {
  if (!object.is_object()) {
    return false;
  }
  const auto it = object.find(field);
  if (it == object.end()) {
    return false;
  }
  if (it->is_boolean()) {
    return it->get<bool>();
  }
  return it->is_string() && strings::toLower(it->get<std::string>()) == "true";
}

absl::Status addFile(Merged& merged, const Json& doc, const std::string& file,
                     const std::string& base_dir) {
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(
        strings::cat("kubeconfig ", file,
                     " is not a YAML mapping (expected apiVersion: v1, "
                     "kind: Config, clusters, users, contexts)"));
  }
  merged.files.push_back(file);
  const auto add = [&](const char* list, const char* inner,
                       std::map<std::string, Entry>& into) -> absl::Status {
    const auto it = doc.find(list);
    if (it == doc.end() || it->is_null()) {
      return absl::OkStatus();
    }
    if (!it->is_array()) {
      return absl::InvalidArgumentError(
          strings::cat("kubeconfig ", file, ": '", list, "' must be a list"));
    }
    for (std::size_t i = 0; i < it->size(); ++i) {
      const Json& item = (*it)[i];
      const std::string name = str(item, "name");
      if (name.empty()) {
        return absl::InvalidArgumentError(
            strings::cat("kubeconfig ", file, ": ", list, "[", i, "] has no name"));
      }
      if (into.count(name) != 0) {
        continue;  // the first file to define a name wins
      }
      Json body = item.is_object() && item.contains(inner) ? item[inner] : Json::object();
      if (body.is_null()) {
        body = Json::object();
      }
      into[name] = Entry{std::move(body), file, base_dir};
    }
    return absl::OkStatus();
  };
  TRIBUTARY_RETURN_IF_ERROR(add("clusters", "cluster", merged.clusters));
  TRIBUTARY_RETURN_IF_ERROR(add("users", "user", merged.users));
  TRIBUTARY_RETURN_IF_ERROR(add("contexts", "context", merged.contexts));
  if (merged.current_context.empty()) {
    merged.current_context = str(doc, "current-context");
  }
  return absl::OkStatus();
}

std::string resolvePath(const std::string& path, const std::string& base_dir) {
  if (path.empty() || fs::path(path).is_absolute() || base_dir.empty()) {
    return path;
  }
  return (fs::path(base_dir) / path).lexically_normal().string();
}

// Reads `<field>-data` (base64) or `<field>` (a file) of an entry.
absl::StatusOr<std::string> pemFrom(const Entry& entry, const std::string& what,
                                    const std::string& field) {
  const std::string data = str(entry.value, strings::cat(field, "-data").c_str());
  if (!data.empty()) {
    auto decoded = internal::base64Decode(data);
    if (!decoded.ok()) {
      return absl::InvalidArgumentError(strings::cat(what, ".", field, "-data in ", entry.file,
                                                     " is not valid base64 (it must hold the "
                                                     "base64 of the PEM file)"));
    }
    return *std::move(decoded);
  }
  const std::string file = str(entry.value, field.c_str());
  if (file.empty()) {
    return std::string();
  }
  const std::string path = resolvePath(file, entry.base_dir);
  auto content = internal::readFile(path);
  if (!content.ok()) {
    return absl::Status(
        content.status().code(),
        strings::cat(what, ".", field, " in ", entry.file, ": ", content.status().message(),
                     " (fix the path or use ", field, "-data)"));
  }
  return *std::move(content);
}

absl::StatusOr<Config> resolve(const Merged& merged, const std::string& wanted_context) {
  const std::string context_name = wanted_context.empty() ? merged.current_context : wanted_context;
  if (context_name.empty()) {
    return absl::FailedPreconditionError(strings::cat(
        "kubeconfig ", merged.where(),
        " has no current-context; choose one with `kubectl config use-context NAME` or pass a "
        "context (available: ",
        names(merged.contexts), ")"));
  }
  const auto ctx_it = merged.contexts.find(context_name);
  if (ctx_it == merged.contexts.end()) {
    return absl::NotFoundError(strings::cat("context \"", context_name, "\" is not defined in ",
                                            merged.where(), " (available: ", names(merged.contexts),
                                            ")"));
  }
  const Entry& ctx = ctx_it->second;
  const std::string cluster_name = str(ctx.value, "cluster");
  const std::string user_name = str(ctx.value, "user");
  const auto cluster_it = merged.clusters.find(cluster_name);
  if (cluster_name.empty() || cluster_it == merged.clusters.end()) {
    return absl::NotFoundError(strings::cat(
        "context \"", context_name, "\" in ", ctx.file, " refers to cluster \"", cluster_name,
        "\", which is not defined (clusters: ", names(merged.clusters), ")"));
  }
  const Entry& cluster = cluster_it->second;
  const std::string cluster_what = strings::cat("clusters[name=", cluster_name, "].cluster");

  Config config;
  config.origin = strings::cat("kubeconfig ", merged.where(), ", context ", context_name);
  config.server = str(cluster.value, "server");
  if (config.server.empty()) {
    return absl::InvalidArgumentError(strings::cat(cluster_what, ".server is missing in ",
                                                   cluster.file, " (expected https://host:port)"));
  }
  if (config.server.rfind("https://", 0) != 0 && config.server.rfind("http://", 0) != 0) {
    return absl::InvalidArgumentError(strings::cat(cluster_what, ".server in ", cluster.file,
                                                   " is \"", config.server,
                                                   "\"; it must start with https:// (or http://)"));
  }
  while (!config.server.empty() && config.server.back() == '/') {
    config.server.pop_back();
  }
  if (cluster.value.contains("proxy-url")) {
    return absl::UnimplementedError(
        strings::cat(cluster_what, ".proxy-url in ", cluster.file, " is not supported; remove it"));
  }
  config.insecure_skip_tls_verify = truthy(cluster.value, "insecure-skip-tls-verify");
  config.tls_server_name = str(cluster.value, "tls-server-name");
  TRIBUTARY_ASSIGN_OR_RETURN(config.ca_pem,
                             pemFrom(cluster, cluster_what, "certificate-authority"));
  if (config.insecure_skip_tls_verify && !config.ca_pem.empty()) {
    return absl::InvalidArgumentError(strings::cat(
        cluster_what, " in ", cluster.file,
        " sets both insecure-skip-tls-verify and a certificate authority; remove one"));
  }

  if (!user_name.empty()) {
    const auto user_it = merged.users.find(user_name);
    if (user_it == merged.users.end()) {
      return absl::NotFoundError(
          strings::cat("context \"", context_name, "\" in ", ctx.file, " refers to user \"",
                       user_name, "\", which is not defined (users: ", names(merged.users), ")"));
    }
    const Entry& user = user_it->second;
    const std::string user_what = strings::cat("users[name=", user_name, "].user");
    for (const char* unsupported : {"exec", "auth-provider"}) {
      if (user.value.contains(unsupported) && !user.value[unsupported].is_null()) {
        return absl::UnimplementedError(
            strings::cat(user_what, ".", unsupported, " in ", user.file,
                         " (credential plugins) is not supported by tributary; use a token, "
                         "tokenFile or a client certificate"));
      }
    }
    if (user.value.contains("username") || user.value.contains("password")) {
      return absl::UnimplementedError(strings::cat(
          user_what, " in ", user.file,
          " uses username/password (basic auth), which Kubernetes no longer supports; use a "
          "token or a client certificate"));
    }
    config.bearer_token = str(user.value, "token");
    const std::string token_file = str(user.value, "tokenFile");
    if (!token_file.empty()) {
      config.token_file = resolvePath(token_file, user.base_dir);
      auto token = internal::readFile(config.token_file);
      if (!token.ok()) {
        return absl::Status(
            token.status().code(),
            strings::cat(user_what, ".tokenFile in ", user.file, ": ", token.status().message()));
      }
    }
    TRIBUTARY_ASSIGN_OR_RETURN(config.client_cert_pem,
                               pemFrom(user, user_what, "client-certificate"));
    TRIBUTARY_ASSIGN_OR_RETURN(config.client_key_pem, pemFrom(user, user_what, "client-key"));
    if (config.client_cert_pem.empty() != config.client_key_pem.empty()) {
      return absl::InvalidArgumentError(strings::cat(user_what, " in ", user.file, " has a client ",
                                                     config.client_cert_pem.empty()
                                                         ? "key but no client-certificate(-data)"
                                                         : "certificate but no client-key(-data)",
                                                     "; both are needed"));
    }
  }
  const std::string ns = str(ctx.value, "namespace");
  if (!ns.empty()) {
    config.default_namespace = ns;
  }
  return config;
}

absl::StatusOr<Json> parseFile(const std::string& path, const std::string& content) {
  auto doc = internal::parseYaml(content);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(
        strings::cat("kubeconfig ", path, ": ", doc.status().message()));
  }
  if (doc->is_null()) {
    return Json::object();
  }
  return *std::move(doc);
}

}  // namespace

std::string Config::describe() const {
  std::vector<std::string> auth;
  if (!client_cert_pem.empty()) {
    auth.emplace_back("client certificate");
  }
  if (!token_file.empty()) {
    auth.push_back(strings::cat("token file ", token_file));
  } else if (!bearer_token.empty()) {
    auth.emplace_back("bearer token");
  }
  if (auth.empty()) {
    auth.emplace_back("anonymous");
  }
  return strings::cat(server, " (", origin, "; auth: ", strings::join(auth, ", "),
                      insecure_skip_tls_verify ? "; TLS verification DISABLED" : "", ")");
}

absl::StatusOr<Config> parseKubeconfig(const std::string& yaml, const std::string& base_dir,
                                       const std::string& origin, const std::string& context) {
  TRIBUTARY_ASSIGN_OR_RETURN(Json doc, parseFile(origin, yaml));
  Merged merged;
  TRIBUTARY_RETURN_IF_ERROR(addFile(merged, doc, origin, base_dir));
  return resolve(merged, context);
}

absl::StatusOr<Config> loadKubeconfigs(const std::vector<std::string>& paths,
                                       const std::string& context) {
  Merged merged;
  for (const std::string& path : paths) {
    if (path.empty()) {
      continue;
    }
    auto content = internal::readFile(path);
    if (!content.ok()) {
      if (absl::IsNotFound(content.status())) {
        continue;  // kubectl skips missing files in $KUBECONFIG
      }
      return absl::Status(content.status().code(),
                          strings::cat("kubeconfig: ", content.status().message()));
    }
    TRIBUTARY_ASSIGN_OR_RETURN(Json doc, parseFile(path, *content));
    TRIBUTARY_RETURN_IF_ERROR(addFile(merged, doc, path, fs::path(path).parent_path().string()));
  }
  if (merged.files.empty()) {
    return absl::NotFoundError(
        strings::cat("none of the kubeconfig files exist: ", strings::join(paths, ", ")));
  }
  return resolve(merged, context);
}

absl::StatusOr<Config> loadKubeconfig(const std::string& path, const std::string& context) {
  auto content = internal::readFile(path);
  if (!content.ok()) {
    return absl::Status(content.status().code(),
                        strings::cat("kubeconfig: ", content.status().message()));
  }
  return parseKubeconfig(*content, fs::path(path).parent_path().string(), path, context);
}

absl::StatusOr<Config> inClusterConfig(const LoadOptions& options) {
  const std::string host =
      options.service_host ? *options.service_host : env("KUBERNETES_SERVICE_HOST").value_or("");
  const std::string port =
      options.service_port ? *options.service_port : env("KUBERNETES_SERVICE_PORT").value_or("");
  if (host.empty() || port.empty()) {
    return absl::NotFoundError(
        "not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
        "must both be set");
  }
  const std::string dir =
      options.service_account_dir ? *options.service_account_dir : std::string(kServiceAccountDir);
  Config config;
  config.server = strings::cat(
      "https://", host.find(':') != std::string::npos ? strings::cat("[", host, "]") : host, ":",
      port);
  config.token_file = strings::cat(dir, "/token");
  if (auto token = internal::readFile(config.token_file); !token.ok()) {
    return absl::Status(token.status().code(),
                        strings::cat("in-cluster config: ", token.status().message(),
                                     " (is automountServiceAccountToken disabled for the pod?)"));
  }
  auto ca = internal::readFile(strings::cat(dir, "/ca.crt"));
  if (!ca.ok()) {
    return absl::Status(ca.status().code(),
                        strings::cat("in-cluster config: ", ca.status().message()));
  }
  config.ca_pem = *std::move(ca);
  if (auto ns = internal::readFile(strings::cat(dir, "/namespace")); ns.ok()) {
    const std::string trimmed(strings::trim(*ns));
    if (!trimmed.empty()) {
      config.default_namespace = trimmed;
    }
  }
  config.origin = strings::cat("in-cluster service account ", dir);
  return config;
}

absl::StatusOr<Config> loadConfig(const LoadOptions& options) {
  if (!options.kubeconfig.empty()) {
    return loadKubeconfig(options.kubeconfig, options.context);
  }
  const std::string list =
      options.kubeconfig_env ? *options.kubeconfig_env : env("KUBECONFIG").value_or("");
  if (!list.empty()) {
    std::vector<std::string> paths;
    for (const auto part : strings::split(list, ':')) {
      if (!part.empty()) {
        paths.emplace_back(part);
      }
    }
    if (!paths.empty()) {
      auto config = loadKubeconfigs(paths, options.context);
      if (!config.ok()) {
        return absl::Status(config.status().code(),
                            strings::cat(config.status().message(), " (from $KUBECONFIG)"));
      }
      return config;
    }
  }
  const std::string host =
      options.service_host ? *options.service_host : env("KUBERNETES_SERVICE_HOST").value_or("");
  const std::string port =
      options.service_port ? *options.service_port : env("KUBERNETES_SERVICE_PORT").value_or("");
  if (!host.empty() && !port.empty()) {
    return inClusterConfig(options);
  }
  const std::string home = options.home ? *options.home : env("HOME").value_or("");
  if (!home.empty()) {
    const std::string path = strings::cat(home, "/.kube/config");
    std::error_code ec;
    if (fs::exists(path, ec)) {
      return loadKubeconfig(path, options.context);
    }
  }
  return absl::NotFoundError(
      "no Kubernetes configuration found: pass --kubeconfig, set KUBECONFIG, run in a pod with a "
      "service account (KUBERNETES_SERVICE_HOST/PORT), or create ~/.kube/config");
}

}  // namespace tributary::kube
