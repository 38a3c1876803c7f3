#include "tributary/testing/kube.h"
#include "tributary/testing/spawn.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "process.h"
#include "watchdog.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <unistd.h>

#ifndef TRIBUTARY_SOURCE_DIR
#error "TRIBUTARY_SOURCE_DIR must be defined (tests/harness/CMakeLists.txt)"
#endif

namespace tributary::harness {
namespace {

using internal::ExitInfo;
using Clock = std::chrono::steady_clock;

long msSince(Clock::time_point start) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
}

std::string envOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? std::string(value) : fallback;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string trimTrailingNewlines(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) {
    text.pop_back();
  }
  return text;
}

// True if something accepts TCP connections on 127.0.0.1:port.
bool tcpAccepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// A free TCP port on 127.0.0.1 below the kernel's ephemeral range, so that none of the many
// outgoing connections made while the servers start (kube-apiserver opens dozens to etcd) can
// take it between now and the server's bind(). Falls back to any free port.
absl::StatusOr<int> pickServerPort() {
  int low = 32768;
  {
    std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
    int first = 0;
    if (range >> first && first > 0) {
      low = first;
    }
  }
  constexpr int kMin = 10000;
  if (low > kMin + 1000) {
    std::mt19937 rng(static_cast<unsigned>(::getpid()) ^
                     static_cast<unsigned>(Clock::now().time_since_epoch().count()));
    std::uniform_int_distribution<int> dist(kMin, low - 1);
    for (int attempt = 0; attempt < 100; ++attempt) {
      const int port = dist(rng);
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        break;
      }
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(port));
      const bool free = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
      ::close(fd);
      if (free) {
        return port;
      }
    }
  }
  return internal::pickFreePort();
}

bool addressInUse(const std::string& log_tail) {
  return absl::StrContains(log_tail, "address already in use");
}

// PATH for the build script: Go may live in /usr/local/go/bin only.
std::vector<std::string> scriptEnvironment() {
  std::vector<std::string> env;
  std::string path = envOr("PATH", "/usr/local/bin:/usr/bin:/bin");
  path += ":/usr/local/go/bin";
  env.push_back("PATH=" + path);
  for (const char* name : {"HOME", "GO", "GOPATH", "GOMODCACHE", "GOCACHE", "GOPROXY", "GOFLAGS",
                           "GONOSUMDB", "GOSUMDB", "GOTOOLCHAIN", "XDG_CACHE_HOME",
                           "TRIBUTARY_CACHE_DIR", "TRIBUTARY_KUBE_BUILD_JOBS"}) {
    if (const char* value = std::getenv(name); value != nullptr) {
      env.push_back(absl::StrCat(name, "=", value));
    }
  }
  env.emplace_back("LANG=C");
  return env;
}

struct Binaries {
  std::string apiserver;
  std::string etcd;
  std::string kubectl;
};

absl::StatusOr<Binaries> findBinaries(const std::string& source_dir, const std::string& scratch) {
  Binaries bins;
  const std::string bin_dir = envOr("TRIBUTARY_KUBE_BIN_DIR", "");
  bins.apiserver = envOr("TRIBUTARY_KUBE_APISERVER",
                         bin_dir.empty() ? std::string() : bin_dir + "/kube-apiserver");
  bins.etcd = envOr("TRIBUTARY_ETCD", bin_dir.empty() ? std::string() : bin_dir + "/etcd");
  bins.kubectl = envOr("TRIBUTARY_KUBECTL", bin_dir.empty() ? std::string() : bin_dir + "/kubectl");
  if (bins.apiserver.empty() || bins.etcd.empty() || bins.kubectl.empty() ||
      !internal::isExecutable(bins.apiserver) || !internal::isExecutable(bins.etcd) ||
      !internal::isExecutable(bins.kubectl)) {
    // Ask the build script (a no-op when its cache is warm; else a long Go build).
    const std::string script = source_dir + "/scripts/build-kube.sh";
    const CommandResult built = runCommand({"/bin/bash", script}, scriptEnvironment(), source_dir,
                                           scratch, {}, std::chrono::minutes(60));
    if (!built.error.empty() || built.exit_code != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(script, " failed (", built.error.empty() ? "" : built.error + "; ", "exit ",
                       built.exit_code, "):\n", built.output));
    }
    std::istringstream lines(built.output);
    std::string line;
    while (std::getline(lines, line)) {
      const std::string base = std::filesystem::path(line).filename();
      if (line.empty() || line[0] != '/') {
        continue;
      }
      if (base == "kube-apiserver" && bins.apiserver.empty()) {
        bins.apiserver = line;
      } else if (base == "etcd" && bins.etcd.empty()) {
        bins.etcd = line;
      } else if (base == "kubectl" && bins.kubectl.empty()) {
        bins.kubectl = line;
      }
    }
  }
  for (const auto& [name, path] : {std::pair{"kube-apiserver", bins.apiserver},
                                   {"etcd", bins.etcd},
                                   {"kubectl", bins.kubectl}}) {
    if (!internal::isExecutable(path)) {
      return absl::NotFoundError(absl::StrCat(
          name, " binary '", path,
          "' is not executable; run scripts/build-kube.sh (or set TRIBUTARY_KUBE_BIN_DIR)"));
    }
  }
  return bins;
}

[[noreturn]] void fatal(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "tributary test harness: %s failed: %s\n", what, status.ToString().c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace

KubeApiServer::KubeApiServer(KubeOptions options)
    : options_(std::move(options)), source_dir_(internal::sourceDir()), owner_pid_(::getpid()) {}

KubeApiServer::~KubeApiServer() {
  if (::getpid() != owner_pid_ || dir_.empty()) {
    return;
  }
  // The data goes away with the directory, so nothing needs a graceful shutdown: SIGKILL saves
  // about 1.5 s per test binary.
  for (pid_t* pid : {&apiserver_pid_, &etcd_pid_}) {
    if (*pid > 0) {
      internal::signalGroup(*pid, SIGKILL);
      static_cast<void>(internal::waitForExit(*pid, std::chrono::seconds(10)));
      internal::Watchdog::get().untrackGroup(*pid);
      internal::unregisterHarnessPid(*pid);
      *pid = 0;
    }
  }
  internal::removeTree(dir_);
  internal::Watchdog::get().untrackDir(dir_);
}

std::string KubeApiServer::url() const {
  return absl::StrCat("https://127.0.0.1:", apiserver_port_);
}
std::string KubeApiServer::etcdUrl() const { return absl::StrCat("http://127.0.0.1:", etcd_port_); }
std::string KubeApiServer::kubeconfigPath() const { return pki_ + "/kubeconfig"; }
std::string KubeApiServer::tokenKubeconfigPath() const { return pki_ + "/kubeconfig-token"; }
std::string KubeApiServer::caFile() const { return pki_ + "/ca.crt"; }
std::string KubeApiServer::clientCertFile() const { return pki_ + "/admin.crt"; }
std::string KubeApiServer::clientKeyFile() const { return pki_ + "/admin.key"; }

std::string KubeApiServer::bearerTokenFor(std::string_view user) const {
  const auto it = tokens_.find(std::string(user));
  return it == tokens_.end() ? std::string() : it->second;
}

std::string KubeApiServer::apiserverLogTail(std::size_t max_bytes) const {
  return dir_.empty() ? std::string() : internal::fileTail(dir_ + "/kube-apiserver.log", max_bytes);
}

std::string KubeApiServer::etcdLogTail(std::size_t max_bytes) const {
  return dir_.empty() ? std::string() : internal::fileTail(dir_ + "/etcd.log", max_bytes);
}

// Directory, binaries, ports, certificates: everything that happens once.
absl::Status KubeApiServer::prepare() {
  if (!dir_.empty()) {
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> dir = internal::makeTempDir("kube", std::nullopt);
  if (!dir.ok()) {
    return dir.status();
  }
  dir_ = *dir;
  internal::Watchdog::get().trackDir(dir_);
  pki_ = dir_ + "/pki";

  absl::StatusOr<Binaries> bins = findBinaries(source_dir_, dir_ + "/build-kube");
  if (!bins.ok()) {
    return bins.status();
  }
  apiserver_bin_ = bins->apiserver;
  etcd_bin_ = bins->etcd;
  kubectl_ = bins->kubectl;

  return absl::OkStatus();
}

// Fresh ports, and the PKI/kubeconfigs for them (certificates are kept: they name no port).
absl::Status KubeApiServer::choosePorts() {
  for (int* port : {&apiserver_port_, &etcd_port_, &etcd_peer_port_}) {
    absl::StatusOr<int> free_port = pickServerPort();
    if (!free_port.ok()) {
      return free_port.status();
    }
    *port = *free_port;
  }
  if (apiserver_port_ == etcd_port_ || apiserver_port_ == etcd_peer_port_ ||
      etcd_port_ == etcd_peer_port_) {
    return absl::UnavailableError("picked the same free port twice");
  }
  const std::string script = source_dir_ + "/scripts/kube-pki.sh";
  const CommandResult pki =
      runCommand({"/bin/bash", script, pki_, url()}, internal::serverEnvironment(), dir_,
                 dir_ + "/pki-run", {}, std::chrono::seconds(60));
  if (!pki.error.empty() || pki.exit_code != 0) {
    return absl::InternalError(
        absl::StrCat(script, " failed: ", pki.error, " exit ", pki.exit_code, "\n", pki.output));
  }
  for (const char* user : {"admin", "alice", "bob"}) {
    tokens_[user] = trimTrailingNewlines(readFile(absl::StrCat(pki_, "/token-", user)));
  }
  return absl::OkStatus();
}

absl::Status KubeApiServer::start() {
  if (running()) {
    return absl::OkStatus();
  }
  const auto begin = Clock::now();
  const auto deadline = begin + options_.start_timeout;
  absl::Status status = prepare();
  if (!status.ok()) {
    return status;
  }
  timings_.clear();
  if (!ports_settled_) {
    // First start: another process may take a port between our check and the server's bind;
    // then choose new ports and try again (later starts must keep the ports).
    constexpr int kAttempts = 4;
    for (int attempt = 1;; ++attempt) {
      if (status = choosePorts(); !status.ok()) {
        return status;
      }
      timings_["prepare"] = msSince(begin);
      status = startServers(deadline);
      if (status.ok()) {
        break;
      }
      const bool in_use = addressInUse(etcdLogTail()) || addressInUse(apiserverLogTail());
      if (!in_use || attempt == kAttempts) {
        return status;
      }
      std::fprintf(stderr, "tributary test harness: port taken, retrying with others: %s\n",
                   std::string(status.message().substr(0, 200)).c_str());
      static_cast<void>(tryKillApiServer());
      static_cast<void>(stopEtcd());
      internal::removeTree(dir_ + "/etcd");
      // Fresh logs, so the next attempt's failure is judged on its own output.
      std::error_code ec;
      std::filesystem::rename(dir_ + "/etcd.log", dir_ + "/etcd.log.port-taken", ec);
      std::filesystem::rename(dir_ + "/kube-apiserver.log", dir_ + "/kube-apiserver.log.port-taken",
                              ec);
    }
    ports_settled_ = true;
  } else if (status = startServers(deadline); !status.ok()) {
    return status;
  }
  auto step = Clock::now();
  if (options_.apply_crds) {
    if (status = applyCrds(deadline); !status.ok()) {
      return status;
    }
  }
  timings_["crds"] = msSince(step);
  timings_["total"] = msSince(begin);
  return absl::OkStatus();
}

// etcd (unless running) and kube-apiserver, until /readyz.
absl::Status KubeApiServer::startServers(Clock::time_point deadline) {
  auto step = Clock::now();
  if (etcd_pid_ == 0) {
    if (absl::Status status = startEtcd(); !status.ok()) {
      return status;
    }
  }
  timings_["etcd"] = msSince(step);
  step = Clock::now();
  if (absl::Status status = launchApiServer(); !status.ok()) {
    return status;
  }
  if (absl::Status status = waitReady(deadline); !status.ok()) {
    return status;
  }
  timings_["apiserver"] = msSince(step);
  return absl::OkStatus();
}

absl::Status KubeApiServer::startEtcd() {
  internal::SpawnOptions options;
  const std::string client = etcdUrl();
  const std::string peer = absl::StrCat("http://127.0.0.1:", etcd_peer_port_);
  options.argv = {etcd_bin_,
                  "--name=tributary-test",
                  "--data-dir=" + dir_ + "/etcd",
                  "--listen-client-urls=" + client,
                  "--advertise-client-urls=" + client,
                  "--listen-peer-urls=" + peer,
                  "--initial-advertise-peer-urls=" + peer,
                  "--initial-cluster=tributary-test=" + peer,
                  "--unsafe-no-fsync=true",
                  "--log-level=warn",
                  "--quota-backend-bytes=4294967296"};
  options.env = internal::serverEnvironment();
  options.workdir = dir_;
  options.log_path = dir_ + "/etcd.log";
  absl::StatusOr<pid_t> pid = internal::spawn(options);
  if (!pid.ok()) {
    return pid.status();
  }
  etcd_pid_ = *pid;
  internal::registerHarnessPid(etcd_pid_);
  internal::Watchdog::get().trackGroup(etcd_pid_);
  const auto deadline = Clock::now() + options_.start_timeout;
  while (!tcpAccepts(etcd_port_)) {
    ExitInfo info;
    if (internal::hasExited(etcd_pid_, &info)) {
      internal::Watchdog::get().untrackGroup(etcd_pid_);
      internal::unregisterHarnessPid(etcd_pid_);
      etcd_pid_ = 0;
      return absl::InternalError(
          absl::StrCat("etcd on port ", etcd_port_, " ", internal::describeExit(info),
                       " during startup\n--- etcd log ---\n", etcdLogTail()));
    }
    if (Clock::now() >= deadline) {
      static_cast<void>(stopEtcd());
      return absl::DeadlineExceededError(
          absl::StrCat("etcd did not listen on 127.0.0.1:", etcd_port_, " within ",
                       options_.start_timeout.count(), " ms\n--- etcd log ---\n", etcdLogTail()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::OkStatus();
}

absl::Status KubeApiServer::launchApiServer() {
  internal::SpawnOptions options;
  // --shutdown-watch-termination-grace-period: end watches at SIGTERM; HTTP/1.1 watch
  // connections otherwise hold a graceful shutdown until its 60 s timeout.
  options.argv = {apiserver_bin_,
                  "--etcd-servers=" + etcdUrl(),
                  "--bind-address=127.0.0.1",
                  "--advertise-address=127.0.0.1",
                  absl::StrCat("--secure-port=", apiserver_port_),
                  "--cert-dir=" + dir_ + "/apiserver-certs",
                  "--tls-cert-file=" + pki_ + "/apiserver.crt",
                  "--tls-private-key-file=" + pki_ + "/apiserver.key",
                  "--client-ca-file=" + pki_ + "/ca.crt",
                  "--token-auth-file=" + pki_ + "/tokens.csv",
                  "--service-account-issuer=" + url(),
                  "--service-account-key-file=" + pki_ + "/sa.pub",
                  "--service-account-signing-key-file=" + pki_ + "/sa.key",
                  "--service-cluster-ip-range=10.0.0.0/24",
                  "--authorization-mode=RBAC",
                  "--disable-admission-plugins=ServiceAccount",
                  "--allow-privileged=true",
                  "--endpoint-reconciler-type=none",
                  "--watch-cache=true",
                  "--shutdown-watch-termination-grace-period=5s",
                  "--profiling=false",
                  "--v=0"};
  for (const std::string& arg : options_.apiserver_args) {
    options.argv.push_back(arg);
  }
  options.env = internal::serverEnvironment();
  options.workdir = dir_;
  options.log_path = dir_ + "/kube-apiserver.log";
  // A marker in the (appended) log separates restarts.
  {
    std::ofstream log(options.log_path, std::ios::app);
    log << "\n=== tributary test harness: starting kube-apiserver on " << url() << " ===\n";
  }
  absl::StatusOr<pid_t> pid = internal::spawn(options);
  if (!pid.ok()) {
    return pid.status();
  }
  apiserver_pid_ = *pid;
  internal::registerHarnessPid(apiserver_pid_);
  internal::Watchdog::get().trackGroup(apiserver_pid_);
  return absl::OkStatus();
}

absl::Status KubeApiServer::waitReady(Clock::time_point deadline) {
  std::string last;
  while (true) {
    ExitInfo info;
    if (internal::hasExited(apiserver_pid_, &info)) {
      internal::Watchdog::get().untrackGroup(apiserver_pid_);
      internal::unregisterHarnessPid(apiserver_pid_);
      apiserver_pid_ = 0;
      return absl::InternalError(
          absl::StrCat("kube-apiserver on ", url(), " ", internal::describeExit(info),
                       " during startup\n--- log tail ---\n", apiserverLogTail()));
    }
    // Cheap TCP polling first; kubectl (a process per try) only once the port is open.
    if (tcpAccepts(apiserver_port_)) {
      const KubectlResult ready =
          runKubectl({"get", "--raw", "/readyz"}, {}, std::chrono::seconds(10));
      if (ready.ok() && absl::StrContains(ready.output, "ok")) {
        return absl::OkStatus();
      }
      last = ready.output;
    }
    if (Clock::now() >= deadline) {
      const KubectlResult verbose =
          runKubectl({"get", "--raw", "/readyz?verbose"}, {}, std::chrono::seconds(10));
      static_cast<void>(tryKillApiServer());
      return absl::DeadlineExceededError(
          absl::StrCat("kube-apiserver on ", url(), " not ready within ",
                       options_.start_timeout.count(), " ms\n--- /readyz?verbose ---\n",
                       verbose.output, "\n--- log tail ---\n", apiserverLogTail()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

absl::Status KubeApiServer::applyCrds(Clock::time_point deadline) {
  const std::string crds = envOr("TRIBUTARY_CRDS_DIR", source_dir_ + "/crds");
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(crds, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".yaml") {
      files.push_back(entry.path());
    }
  }
  if (ec || files.empty()) {
    return absl::NotFoundError(absl::StrCat("no CRDs (*.yaml) in ", crds));
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> apply = {"apply", "--server-side", "--force-conflicts",
                                    "--field-manager=tributary-test-harness"};
  for (const std::string& file : files) {
    apply.push_back("-f");
    apply.push_back(file);
  }
  const KubectlResult applied = runKubectl(apply);
  if (!applied.ok()) {
    return absl::InternalError(
        absl::StrCat("kubectl apply of the CRDs in ", crds, " failed:\n", applied.output));
  }
  const auto remaining = std::chrono::duration_cast<std::chrono::seconds>(deadline - Clock::now());
  std::vector<std::string> wait = {
      "wait", "--for=condition=Established",
      absl::StrCat("--timeout=", std::max<long>(remaining.count(), 5), "s")};
  for (const std::string& file : files) {
    wait.push_back("-f");
    wait.push_back(file);
  }
  const KubectlResult established = runKubectl(wait, {}, remaining + std::chrono::seconds(10));
  if (!established.ok()) {
    return absl::DeadlineExceededError(
        absl::StrCat("the CRDs in ", crds, " did not become Established:\n", established.output));
  }
  // Discovery lags Established by a moment (a separate controller), and kubectl's disk cache
  // (filled by the apply above) would hide the new resources and categories for a while.
  // `api-resources` refreshes that cache; wait until it lists every CRD of ours.
  std::string last;
  while (true) {
    const KubectlResult resources =
        runKubectl({"api-resources", "--api-group=tributary.dev", "-o", "name"});
    const auto listed = static_cast<std::size_t>(
        std::count(resources.output.begin(), resources.output.end(), '\n'));
    if (resources.ok() && listed >= files.size()) {
      return absl::OkStatus();
    }
    last = resources.output;
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("the CRDs in ", crds, " are Established but not all in discovery:\n", last));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

KubectlResult KubeApiServer::runKubectl(const std::vector<std::string>& args,
                                        std::string_view input,
                                        std::chrono::milliseconds timeout) const {
  std::vector<std::string> argv = {kubectl_};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<std::string> env = internal::serverEnvironment();
  env.push_back("KUBECONFIG=" + kubeconfigPath());
  env.push_back("HOME=" + dir_);  // discovery cache in dir_/.kube/cache
  const std::string scratch = absl::StrCat(dir_, "/kubectl-", ::getpid(), "-", run_counter_++);
  const CommandResult run = runCommand(argv, env, dir_, scratch, input, timeout);
  KubectlResult result;
  result.exit_code = run.exit_code;
  result.output = run.output;
  if (!run.error.empty()) {
    result.exit_code = -1;
    result.output += "\n" + run.error;
  }
  return result;
}

absl::Status KubeApiServer::kubectlApply(std::string_view yaml, std::string* output) const {
  const KubectlResult result = runKubectl({"apply", "-f", "-"}, yaml);
  if (output != nullptr) {
    *output = result.output;
  }
  if (!result.ok()) {
    return absl::InvalidArgumentError(trimTrailingNewlines(result.output));
  }
  return absl::OkStatus();
}

absl::Status KubeApiServer::createNamespace(std::string_view name) const {
  const KubectlResult result = runKubectl({"create", "namespace", std::string(name)});
  if (!result.ok() && !absl::StrContains(result.output, "AlreadyExists") &&
      !absl::StrContains(result.output, "already exists")) {
    return absl::InternalError(
        absl::StrCat("kubectl create namespace ", std::string(name), ": ", result.output));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> KubeApiServer::serviceAccountToken(
    std::string_view namespace_name, std::string_view account,
    std::chrono::seconds duration) const {
  const std::string ns(namespace_name);
  const std::string name(account);
  if (absl::Status status = createNamespace(ns); !status.ok()) {
    return status;
  }
  const KubectlResult created = runKubectl({"create", "serviceaccount", name, "-n", ns});
  if (!created.ok() && !absl::StrContains(created.output, "already exists")) {
    return absl::InternalError(
        absl::StrCat("kubectl create serviceaccount ", name, " -n ", ns, ": ", created.output));
  }
  const KubectlResult token =
      runKubectl({"create", "token", name, "-n", ns,
                  absl::StrCat("--duration=", static_cast<long>(duration.count()), "s")});
  if (!token.ok()) {
    return absl::InternalError(
        absl::StrCat("kubectl create token ", name, " -n ", ns, ": ", token.output));
  }
  return trimTrailingNewlines(token.output);
}

absl::Status KubeApiServer::stopProcess(pid_t* pid, const char* what) {
  if (*pid <= 0) {
    return absl::OkStatus();
  }
  absl::Status result = absl::OkStatus();
  ::kill(*pid, SIGTERM);
  ExitInfo info = internal::waitForExit(*pid, options_.stop_timeout);
  if (!info.exited) {
    internal::signalGroup(*pid, SIGKILL);
    info = internal::waitForExit(*pid, std::chrono::seconds(10));
    result = absl::DeadlineExceededError(absl::StrCat(
        what, " did not shut down within ", options_.stop_timeout.count(), " ms; killed"));
  }
  internal::signalGroup(*pid, SIGKILL);  // stragglers in its group
  internal::Watchdog::get().untrackGroup(*pid);
  internal::unregisterHarnessPid(*pid);
  *pid = 0;
  return result;
}

absl::Status KubeApiServer::stopEtcd() { return stopProcess(&etcd_pid_, "etcd"); }

absl::Status KubeApiServer::stop() {
  absl::Status apiserver = stopProcess(&apiserver_pid_, "kube-apiserver");
  absl::Status etcd = stopEtcd();
  return apiserver.ok() ? etcd : apiserver;
}

absl::Status KubeApiServer::tryStopApiServer() {
  return stopProcess(&apiserver_pid_, "kube-apiserver");
}

absl::Status KubeApiServer::tryStartApiServer() {
  if (running()) {
    return absl::OkStatus();
  }
  if (dir_.empty() || etcd_pid_ == 0) {
    return start();
  }
  const auto begin = Clock::now();
  // The port was ours a moment ago; a socket in TIME_WAIT never blocks Go's listener
  // (SO_REUSEADDR), but an unrelated process could have taken it.
  if (absl::Status status = launchApiServer(); !status.ok()) {
    return status;
  }
  absl::Status status = waitReady(begin + options_.start_timeout);
  timings_["restart"] = msSince(begin);
  return status;
}

absl::Status KubeApiServer::tryRestartApiServer() {
  if (absl::Status status = tryStopApiServer(); !status.ok()) {
    return status;
  }
  return tryStartApiServer();
}

absl::Status KubeApiServer::tryKillApiServer() {
  if (apiserver_pid_ <= 0) {
    return absl::OkStatus();
  }
  internal::signalGroup(apiserver_pid_, SIGKILL);
  const ExitInfo info = internal::waitForExit(apiserver_pid_, std::chrono::seconds(10));
  internal::Watchdog::get().untrackGroup(apiserver_pid_);
  internal::unregisterHarnessPid(apiserver_pid_);
  apiserver_pid_ = 0;
  if (!info.exited) {
    return absl::InternalError("kube-apiserver did not die from SIGKILL within 10 s");
  }
  return absl::OkStatus();
}

void KubeApiServer::stopApiServer() {
  if (absl::Status status = tryStopApiServer(); !status.ok()) {
    fatal("stopping kube-apiserver", status);
  }
}

void KubeApiServer::startApiServer() {
  if (absl::Status status = tryStartApiServer(); !status.ok()) {
    fatal("starting kube-apiserver", status);
  }
}

void KubeApiServer::restartApiServer() {
  if (absl::Status status = tryRestartApiServer(); !status.ok()) {
    fatal("restarting kube-apiserver", status);
  }
}

void KubeApiServer::killApiServer() {
  if (absl::Status status = tryKillApiServer(); !status.ok()) {
    fatal("killing kube-apiserver", status);
  }
}

// The shared instance. Leaked on purpose: shutdownShared() runs from atexit.
namespace {

struct SharedState {
  std::mutex mu;
  pid_t owner_pid = ::getpid();
  bool atexit_registered = false;
  std::unique_ptr<KubeApiServer> server;
  absl::Status failure = absl::OkStatus();
};

SharedState& sharedState() {
  static auto* instance = new SharedState();
  return *instance;
}

void shutdownAtExit() { KubeApiServer::shutdownShared(); }

}  // namespace

absl::StatusOr<KubeApiServer*> KubeApiServer::sharedOrError() {
  SharedState& s = sharedState();
  const std::lock_guard<std::mutex> lock(s.mu);
  if (!s.failure.ok()) {
    return s.failure;
  }
  if (s.server == nullptr) {
    if (!s.atexit_registered) {
      s.atexit_registered = true;
      std::atexit(shutdownAtExit);
    }
    auto fresh = std::make_unique<KubeApiServer>();
    if (absl::Status status = fresh->start(); !status.ok()) {
      s.failure = absl::Status(
          status.code(), absl::StrCat("shared kube-apiserver did not start: ", status.message()));
      return s.failure;
    }
    const auto timings = fresh->startupTimings();
    std::fprintf(stderr,
                 "tributary test harness: kube-apiserver running on %s (pid %d, etcd %s) in %ld ms "
                 "(etcd %ld ms, apiserver ready %ld ms, CRDs established %ld ms)\n",
                 fresh->url().c_str(), static_cast<int>(fresh->apiserverPid()),
                 fresh->etcdUrl().c_str(), timings.at("total"), timings.at("etcd"),
                 timings.at("apiserver"), timings.at("crds"));
    s.server = std::move(fresh);
  }
  return s.server.get();
}

KubeApiServer& KubeApiServer::shared() {
  absl::StatusOr<KubeApiServer*> server = sharedOrError();
  if (!server.ok()) {
    fatal("KubeApiServer::shared()", server.status());
  }
  return **server;
}

void KubeApiServer::shutdownShared() {
  SharedState& s = sharedState();
  const std::lock_guard<std::mutex> lock(s.mu);
  if (::getpid() != s.owner_pid) {
    static_cast<void>(s.server.release());  // a fork()ed child: the server is the parent's
    return;
  }
  s.server.reset();
}

}  // namespace tributary::harness
