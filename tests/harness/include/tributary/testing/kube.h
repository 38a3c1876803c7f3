#pragma once

// A real, private Kubernetes API server for integration tests: etcd v3.6 and kube-apiserver v1.34
// (built from the Go module proxy by scripts/build-kube.sh and cached), on free 127.0.0.1 ports,
// with generated certificates (scripts/kube-pki.sh), RBAC, and Tributary's CRDs (crds/*.yaml)
// applied with the real kubectl and Established.
//
// No controllers run (no kube-controller-manager): owner references are not garbage collected,
// namespaces are never finalized, no ServiceAccount tokens are auto-created. Same process model as
// services.h: own process groups, a private temp dir, the watchdog cleans up after a crash.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::harness {

struct KubeOptions {
  /// Apply crds/*.yaml and wait until they are Established (start() and every shared()).
  bool apply_crds = true;
  /// Extra kube-apiserver flags, e.g. {"--min-request-timeout=60"}.
  std::vector<std::string> apiserver_args;
  /// How long start() waits for etcd, then for /readyz, then for the CRDs.
  std::chrono::milliseconds start_timeout{120000};
  /// How long a stop waits for SIGTERM to work before SIGKILL.
  std::chrono::milliseconds stop_timeout{30000};
};

/// What a kubectl invocation returned.
struct KubectlResult {
  int exit_code = -1;  ///< -1: did not exit normally (killed, timed out)
  std::string output;  ///< stdout and stderr, interleaved as written
  [[nodiscard]] bool ok() const { return exit_code == 0; }
};

/**
 * etcd + kube-apiserver on 127.0.0.1.
 *
 * Authentication: client certificates (clientCertFile()/clientKeyFile(), CN=admin,
 * O=system:masters; the kubeconfig embeds them) and static bearer tokens (bearerTokenFor("admin")
 * is in system:masters; "alice" and "bob" have no groups, so RBAC denies them everything until a
 * test binds them a role). Authorization: RBAC. Admission: the defaults minus ServiceAccount.
 *
 * Binaries: $TRIBUTARY_KUBE_APISERVER, $TRIBUTARY_ETCD, $TRIBUTARY_KUBECTL, else
 * $TRIBUTARY_KUBE_BIN_DIR/{kube-apiserver,etcd,kubectl}, else scripts/build-kube.sh is run (a
 * no-op of a few milliseconds when its cache is warm; the CMake target kube_fixtures warms it).
 *
 * Lifecycle: start() → stopApiServer()/startApiServer()/restartApiServer()/killApiServer() (etcd
 * and its data stay; the port stays) … → stop() (graceful; start() resumes with the same data) or
 * the destructor (SIGKILLs both and removes the dir).
 * Lifecycle calls must come from one thread at a time; the getters and kubectl helpers are
 * thread-safe.
 */
class KubeApiServer {
 public:
  explicit KubeApiServer(KubeOptions options = {});
  ~KubeApiServer();
  KubeApiServer(const KubeApiServer&) = delete;
  KubeApiServer& operator=(const KubeApiServer&) = delete;
  KubeApiServer(KubeApiServer&&) = delete;
  KubeApiServer& operator=(KubeApiServer&&) = delete;

  /** One server per process, started on first use with the CRDs Established, stopped at exit.
   *  A failure to start is printed and aborts the process (use sharedOrError() to handle it). */
  static KubeApiServer& shared();
  /** The same server; a failure to start is remembered and returned to every later caller. */
  static absl::StatusOr<KubeApiServer*> sharedOrError();
  /** Stops the shared server now (also runs at exit). */
  static void shutdownShared();

  /** Starts etcd and kube-apiserver, waits for /readyz, applies the CRDs. No-op if running. */
  absl::Status start();
  /** Stops kube-apiserver and etcd. start() brings them back with the same data and ports. */
  absl::Status stop();

  /** SIGTERM kube-apiserver and wait for it (SIGKILL after stop_timeout); etcd keeps running.
   *  These four abort the process on failure (a test cannot go on); try*() return the error. */
  void stopApiServer();
  /** Starts kube-apiserver again on the same port and waits for /readyz (CRDs served again). */
  void startApiServer();
  void restartApiServer();
  /** SIGKILL kube-apiserver (a crash); startApiServer() brings it back. */
  void killApiServer();
  absl::Status tryStopApiServer();
  absl::Status tryStartApiServer();
  absl::Status tryRestartApiServer();
  absl::Status tryKillApiServer();

  [[nodiscard]] bool running() const { return apiserver_pid_ > 0; }
  /** https://127.0.0.1:<port>; the port stays the same across restarts. */
  [[nodiscard]] std::string url() const;
  [[nodiscard]] int port() const { return apiserver_port_; }
  /** Admin kubeconfig (client certificate auth, CA and client cert/key embedded as data). */
  [[nodiscard]] std::string kubeconfigPath() const;
  /** Admin kubeconfig with a bearer token and a certificate-authority file path. */
  [[nodiscard]] std::string tokenKubeconfigPath() const;
  [[nodiscard]] std::string caFile() const;
  [[nodiscard]] std::string clientCertFile() const;
  [[nodiscard]] std::string clientKeyFile() const;
  /** The static token of "admin" (system:masters), "alice" or "bob" (no groups); "" otherwise. */
  [[nodiscard]] std::string bearerTokenFor(std::string_view user) const;
  /** http://127.0.0.1:<port> of etcd (no auth). */
  [[nodiscard]] std::string etcdUrl() const;
  /** The kubectl binary (v1.34, built with the server). */
  [[nodiscard]] std::string kubectl() const { return kubectl_; }
  [[nodiscard]] std::string apiserverBinary() const { return apiserver_bin_; }
  [[nodiscard]] std::string etcdBinary() const { return etcd_bin_; }
  [[nodiscard]] pid_t apiserverPid() const { return apiserver_pid_; }
  [[nodiscard]] pid_t etcdPid() const { return etcd_pid_; }
  /** The private directory (pki/, etcd/, logs). */
  [[nodiscard]] const std::string& dir() const { return dir_; }
  [[nodiscard]] std::string apiserverLogTail(std::size_t max_bytes = 8192) const;
  [[nodiscard]] std::string etcdLogTail(std::size_t max_bytes = 4096) const;
  /** How long the last start() took, per step (etcd, apiserver, crds, total), in ms. */
  [[nodiscard]] std::map<std::string, long> startupTimings() const { return timings_; }

  /** Runs the real kubectl with the admin kubeconfig: `kubectl <args...>`; stdin from `input`
   *  when given. Never fails itself: look at exit_code and output. */
  KubectlResult runKubectl(const std::vector<std::string>& args, std::string_view input = {},
                           std::chrono::milliseconds timeout = std::chrono::seconds(60)) const;
  /** `kubectl apply -f -` with `yaml`; the error carries kubectl's output (the API server's
   *  message). `output`, if given, receives the output either way. */
  absl::Status kubectlApply(std::string_view yaml, std::string* output = nullptr) const;
  /** Creates namespace `name` (AlreadyExists is fine). */
  absl::Status createNamespace(std::string_view name) const;
  /** A bound service-account token (TokenRequest API, `kubectl create token`) for
   *  `namespace_name`/`account`, creating the namespace and the ServiceAccount if needed. With
   *  caFile() it is what an in-cluster client reads from /var/run/secrets/kubernetes.io/. The
   *  account has no RBAC permissions until a test binds it some. */
  absl::StatusOr<std::string> serviceAccountToken(
      std::string_view namespace_name, std::string_view account,
      std::chrono::seconds duration = std::chrono::seconds(3600)) const;

 private:
  absl::Status prepare();
  absl::Status choosePorts();
  absl::Status startServers(std::chrono::steady_clock::time_point deadline);
  absl::Status startEtcd();
  absl::Status launchApiServer();
  absl::Status waitReady(std::chrono::steady_clock::time_point deadline);
  absl::Status applyCrds(std::chrono::steady_clock::time_point deadline);
  absl::Status stopProcess(pid_t* pid, const char* what);
  absl::Status stopEtcd();

  KubeOptions options_;
  std::string dir_;
  std::string pki_;
  std::string source_dir_;
  std::string apiserver_bin_;
  std::string etcd_bin_;
  std::string kubectl_;
  int apiserver_port_ = 0;
  int etcd_port_ = 0;
  int etcd_peer_port_ = 0;
  pid_t apiserver_pid_ = 0;
  pid_t etcd_pid_ = 0;
  bool ports_settled_ = false;  // after the first successful start, the ports never change
  std::map<std::string, std::string> tokens_;
  std::map<std::string, long> timings_;
  mutable std::atomic<unsigned> run_counter_{0};
  pid_t owner_pid_;
};

}  // namespace tributary::harness
