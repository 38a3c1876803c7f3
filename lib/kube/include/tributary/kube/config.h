#pragma once

// Where to reach the Kubernetes API server and how to authenticate: kubeconfig files (explicit
// path, $KUBECONFIG, ~/.kube/config) and the in-cluster service account.
//
// Supported in a kubeconfig: clusters[].cluster.{server, certificate-authority,
// certificate-authority-data, insecure-skip-tls-verify, tls-server-name}, users[].user.{token,
// tokenFile, client-certificate, client-certificate-data, client-key, client-key-data},
// contexts[].context.{cluster, user, namespace}, current-context. Relative file paths are resolved
// against the directory of the kubeconfig file that names them (as kubectl does). exec plugins,
// auth-provider, username/password and proxy-url are refused with a clear error.

#include "absl/status/statusor.h"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace tributary::kube {

/// A resolved client configuration. Holds secrets (token, key): never log it; use describe().
struct Config {
  /// https://host:port (no trailing slash).
  std::string server;
  /// PEM of the CAs that sign the server certificate. Empty: the system trust store.
  std::string ca_pem;
  bool insecure_skip_tls_verify = false;
  /// SNI and name to verify instead of the host of `server` (kubeconfig tls-server-name).
  std::string tls_server_name;
  /// PEM client certificate (chain) and private key.
  std::string client_cert_pem;
  std::string client_key_pem;
  /// Static bearer token.
  std::string bearer_token;
  /// A file holding the bearer token; re-read every `token_file_refresh` and after a 401
  /// (service account tokens rotate). Takes precedence over `bearer_token` when both are set.
  std::string token_file;
  std::chrono::milliseconds token_file_refresh{std::chrono::minutes(1)};
  /// The namespace of the context (or the pod's namespace in-cluster); "default" if none.
  std::string default_namespace = "default";
  /// Where this came from, e.g. "kubeconfig /home/u/.kube/config, context kind-dev". No secrets.
  std::string origin;
  /// Sent with every request.
  std::string user_agent = "tributary/0.1";
  /// Timeout for ordinary (non-watch) requests: no byte from the server for this long fails the
  /// request.
  std::chrono::milliseconds request_timeout{std::chrono::seconds(30)};

  /// Human-readable summary without secrets: server, origin, auth kinds.
  [[nodiscard]] std::string describe() const;
};

/// Inputs of loadConfig(). Every field that is unset falls back to the process environment, so
/// tests can pin all of them.
struct LoadOptions {
  /// --kubeconfig: this file only (it must exist).
  std::string kubeconfig;
  /// --context: a context name instead of current-context.
  std::string context;
  /// $KUBECONFIG (colon-separated list). nullopt: read the environment.
  std::optional<std::string> kubeconfig_env;
  /// $HOME (for ~/.kube/config). nullopt: read the environment.
  std::optional<std::string> home;
  /// In-cluster inputs. nullopt: the environment / the standard paths.
  std::optional<std::string> service_host;         // $KUBERNETES_SERVICE_HOST
  std::optional<std::string> service_port;         // $KUBERNETES_SERVICE_PORT
  std::optional<std::string> service_account_dir;  // /var/run/secrets/kubernetes.io/serviceaccount
};

/**
 * The client-go/controller-runtime order: `kubeconfig` (explicit) → $KUBECONFIG → in-cluster
 * service account (when $KUBERNETES_SERVICE_HOST and _PORT are set) → $HOME/.kube/config.
 *
 * $KUBECONFIG lists files separated by ':'. They are merged like kubectl does: missing files are
 * skipped, the first file that defines a cluster, user or context name wins for that name, and
 * the first non-empty current-context wins. Errors name the file and the field and say what to
 * do. The returned Config never contains secrets in `origin`.
 */
absl::StatusOr<Config> loadConfig(const LoadOptions& options = {});

/// One kubeconfig file; `context` empty means current-context.
absl::StatusOr<Config> loadKubeconfig(const std::string& path, const std::string& context = "");

/// Merged kubeconfig files (see loadConfig for the rules). Missing files are skipped; at least
/// one must exist.
absl::StatusOr<Config> loadKubeconfigs(const std::vector<std::string>& paths,
                                       const std::string& context = "");

/// Kubeconfig text; relative paths are resolved against `base_dir`; `origin` names the source in
/// errors.
absl::StatusOr<Config> parseKubeconfig(const std::string& yaml, const std::string& base_dir,
                                       const std::string& origin, const std::string& context = "");

/// The in-cluster service account: token file (re-read on rotation), ca.crt, namespace, and
/// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT (IPv6 hosts bracketed).
absl::StatusOr<Config> inClusterConfig(const LoadOptions& options = {});

}  // namespace tributary::kube
