// Tributary on a real one-node Kubernetes cluster (scripts/kube-node.sh: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd + runc, CNI, kubelet, kube-proxy, CoreDNS),
// installed with the chart and the images docker/Dockerfile builds (tests/images leaves them in
// the build tree). The cases run in order on one cluster, each building on the previous one:
//   1. helm install into a restricted namespace; the pods run; helm test passes
//   2. a Connector from a git repository served on the node, built by its install command in the
//      agent's pod, and a SyncJob: exact rows in the quickstart PostgreSQL
//   3. the same into a PostgreSQL outside the cluster (a selector-less Service), with a helm
//      upgrade rolling the agents in the middle of a long sync: exact rows, none twice
//   4. a Prometheus on the host discovers the pods through the API and every dashboard query
//      returns data; every alert rule loads
//   5. helm uninstall keeps the CRDs, the resources and the data; a reinstall runs a SyncJob
// Pod logs, events and the node's logs are printed when a case fails.

#include "tributary/testing/services.h"
#include "tributary/testing/spawn.h"
#include "tributary/testing/temp_dir.h"

#include "chart_support.h"
#include "prometheus_queries.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <libpq-fe.h>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace tributary::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kNamespace = "tributary-system";  // the release's, restricted
constexpr const char* kJobs = "team-a";                 // where the Connectors and SyncJobs live
constexpr const char* kExternalPassword = "external-db-secret";
constexpr const char* kRedisPassword = "external-redis-secret";

harness::CommandResult run(const std::vector<std::string>& argv, std::chrono::seconds timeout,
                           const std::string& input = "") {
  return runTool(argv, input, timeout);
}

harness::CommandResult kubectl(std::vector<std::string> args, const std::string& input = "",
                               std::chrono::seconds timeout = 2min) {
  args.insert(args.begin(), tool("kubectl"));
  return run(args, timeout, input);
}

Json kubectlJson(const std::vector<std::string>& args) {
  std::vector<std::string> all = args;
  all.emplace_back("-o");
  all.emplace_back("json");
  const auto r = kubectl(all);
  return r.ok() ? Json::parse(r.output, nullptr, false) : Json();
}

std::string seconds(Clock::time_point since) {
  return std::to_string(
             std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - since).count()) +
         " s";
}

// One value from PostgreSQL ("error: …" when the query fails).
std::string scalar(const std::string& dsn, const std::string& sql) {
  PGconn* conn = PQconnectdb(dsn.c_str());
  std::string out;
  if (PQstatus(conn) == CONNECTION_OK) {
    PGresult* r = PQexec(conn, sql.c_str());
    out = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0
              ? std::string(PQgetvalue(r, 0, 0))
              : std::string("error: ") + PQerrorMessage(conn);
    PQclear(r);
  } else {
    out = std::string("error: ") + PQerrorMessage(conn);
  }
  PQfinish(conn);
  return out;
}

// "<rows> <distinct remote_ids> <missing of the expected obj-<page>-<index>>" of a SyncJob's live
// objects: "N N 0" when the test connector's `pages` × `page_size` objects landed exactly.
std::string rowsOf(const std::string& dsn, const std::string& job, int pages, int page_size) {
  const std::string where = std::string("namespace = '") + kJobs + "' AND sync_job = '" + job + "'";
  return scalar(dsn, "SELECT (SELECT count(*) FROM tributary.live_objects WHERE " + where +
                         ") || ' ' || (SELECT count(DISTINCT remote_id) FROM "
                         "tributary.live_objects WHERE " +
                         where + ") || ' ' || (SELECT count(*) FROM generate_series(0, " +
                         std::to_string(pages - 1) + ") p, generate_series(0, " +
                         std::to_string(page_size - 1) +
                         ") i WHERE NOT EXISTS (SELECT 1 FROM tributary.live_objects WHERE " +
                         where + " AND remote_id = 'obj-' || p || '-' || i))");
}

std::string exactRows(int pages, int page_size) {
  const std::string n = std::to_string(pages * page_size);
  return n + " " + n + " 0";
}

// The Go test connector from the git repository, built by its install command.
std::string connectorYaml(const std::string& name, const std::string& uri) {
  return "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: " + name +
         "\nspec:\n  source: VCS\n  uri: " + uri +
         "\n  installCommand: go build -mod=vendor -o connector .\n  command: ./connector\n---\n";
}

std::string syncJobYaml(const std::string& name, const std::string& connector,
                        const std::string& options, const std::string& extra = "") {
  return "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: " + name +
         "\nspec:\n  connectorRef: {name: " + connector + "}\n  options: " + options + "\n" +
         extra + "---\n";
}

std::vector<Json> runsOf(const std::string& job) {
  const Json list =
      kubectlJson({"get", "syncruns", "-n", kJobs, "-l", "tributary.dev/syncjob=" + job});
  return list.is_object() ? list["items"].get<std::vector<Json>>() : std::vector<Json>{};
}

std::string phaseOf(const Json& run) {
  return run.value("/status/phase"_json_pointer, std::string("Pending"));
}

// The first run of `job` that finished (Succeeded or Failed) within `timeout`; null if none.
Json waitForFinish(const std::string& job, std::chrono::seconds timeout) {
  Json found;
  waitFor(
      [&] {
        for (const Json& r : runsOf(job)) {
          if (phaseOf(r) == "Succeeded" || phaseOf(r) == "Failed") {
            found = r;
            return true;
          }
        }
        return false;
      },
      timeout);
  return found;
}

// What a run says about itself, for a failure message.
std::string describe(const Json& run) {
  return run.is_null()
             ? "no run finished"
             : phaseOf(run) + ": " + run.value("/status/message"_json_pointer, std::string());
}

// What the cluster changes on the host and must restore: links, nftables tables, the sysctls the
// kubelet and CNI set, mounts and network namespaces.
std::string hostState() {
  std::string state;
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {"/usr/sbin/ip", "-br", "link"},
           {"/usr/sbin/nft", "list", "tables"},
           {"/usr/sbin/sysctl", "vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops",
            "net.ipv4.ip_forward"},
           {"/usr/bin/findmnt", "-rn", "-o", "TARGET"}}) {
    const auto r = run(argv, 1min);
    state += argv[0] + ":\n" + (r.ok() ? r.output : std::string());
  }
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/run/netns", ec)) {
    state += "netns " + entry.path().filename().string() + "\n";
  }
  return state;
}

class Cluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();

  void TearDown() override {
    if (HasFailure()) {
      dumpDiagnostics();
    }
  }
  static void dumpDiagnostics();

  // helm install/upgrade of release rel with the test images, the claim-backed agent cache and
  // `flags` (waitForRollouts waits for the workloads).
  static harness::CommandResult helmInstall(const std::string& verb,
                                            const std::vector<std::string>& flags);
  static void waitForRollouts(bool quickstart);
  // The values of the external PostgreSQL and Redis (TLS with a client certificate).
  static std::vector<std::string> externalValues();
  // The quickstart PostgreSQL as a libpq DSN reached from the host through its Service.
  static std::string quickstartDsn();

  static inline Chart* chart_ = nullptr;
  static inline harness::TempDir* tmp_ = nullptr;
  static inline std::string node_ip_;
  static inline std::string node_script_;
  static inline std::string git_uri_;
  static inline harness::PostgresServer* external_pg_ = nullptr;
  static inline harness::RedisServer* external_redis_ = nullptr;
  static inline std::string external_dsn_;
  static inline Child git_daemon_;
  static inline Child prometheus_;
  static inline std::string prometheus_api_;
  static inline std::chrono::system_clock::time_point prometheus_started_;
  static inline bool up_ = false;
  static inline std::string host_before_;
};

void Cluster::SetUpTestSuite() {
  tmp_ = new harness::TempDir("cluster");
  chart_ = new Chart();
  node_script_ = std::string(TRIBUTARY_SOURCE_DIR) + "/scripts/kube-node.sh";
  ::setenv("TRIBUTARY_KUBE_NODE_DIR", TRIBUTARY_KUBE_NODE_DIR, 1);

  // The cluster, from nothing (a previous run's state is removed first).
  static_cast<void>(run({"/bin/bash", node_script_, "clean"}, 3min));
  host_before_ = hostState();
  const auto cluster_start = Clock::now();
  const auto up = run({"/bin/bash", node_script_, "up"}, 10min);
  up_ = true;
  ASSERT_TRUE(up.ok()) << up.error << "\n" << up.output;
  std::cout << "cluster: node Ready after " << seconds(cluster_start) << "\n";
  const auto env = run({"/bin/bash", node_script_, "env"}, 1min);
  ASSERT_TRUE(env.ok()) << env.output;
  std::istringstream lines(env.output);
  for (std::string line; std::getline(lines, line);) {
    // export NAME=value
    const auto eq = line.find('=');
    if (line.rfind("export ", 0) != 0 || eq == std::string::npos) {
      continue;
    }
    const std::string name = line.substr(7, eq - 7);
    const std::string value = line.substr(eq + 1);
    if (name == "KUBECONFIG" || name == "KUBECACHEDIR") {
      ::setenv(name.c_str(), value.c_str(), 1);
    } else if (name == "TRIBUTARY_NODE_IP") {
      node_ip_ = value;
    }
  }
  ASSERT_FALSE(node_ip_.empty()) << env.output;

  const auto load_start = Clock::now();
  std::vector<std::string> load{"/bin/bash", node_script_, "load"};
  for (const char* image : {"tributary-controller", "tributary-agent", "tributary",
                            "tributary-quickstart-postgres", "tributary-quickstart-redis"}) {
    const fs::path tar = fs::path(TRIBUTARY_IMAGES_DIR) / (std::string(image) + ".tar");
    ASSERT_TRUE(fs::exists(tar)) << tar << " is missing: the images test builds it";
    load.push_back(tar.string());
  }
  const auto loaded = run(load, 10min);
  ASSERT_TRUE(loaded.ok()) << loaded.error << "\n" << loaded.output;
  std::cout << "cluster: images imported in " << seconds(load_start) << "\n";

  // The connector's git repository: the Go test connector (go-plugin v1.6.3) with the SDK and
  // its dependencies vendored, so the install command builds it in the pod without a network.
  const fs::path repo = tmp_->path() / "git" / "connector";
  const fs::path source = TRIBUTARY_SOURCE_DIR;
  fs::create_directories(repo);
  for (const auto& [from, to] : std::vector<std::pair<fs::path, fs::path>>{
           {"tests/connectors/go/v1_6", "."},
           {"tests/connectors/go/testconnector", "testconnector"},
           {"sdk/go", "sdk/go"}}) {
    fs::create_directories(repo / to);
    fs::copy(source / from, repo / to,
             fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  }
  const std::string go = std::string(TRIBUTARY_GO_EXECUTABLE);
  const std::string r = repo.string();
  for (const std::vector<std::string>& step : std::vector<std::vector<std::string>>{
           {go, "-C", r, "mod", "edit", "-replace", "tributary.dev/sdk/go=./sdk/go", "-replace",
            "tributary.dev/tests/testconnector=./testconnector"},
           {go, "-C", r, "mod", "vendor"},
           {"/usr/bin/git", "-C", r, "init", "-q", "-b", "main"},
           {"/usr/bin/git", "-C", r, "add", "-A"},
           {"/usr/bin/git", "-C", r, "-c", "user.name=test", "-c", "user.email=test@example",
            "commit", "-q", "-m", "connector"}}) {
    const auto done = run(step, 5min);
    ASSERT_TRUE(done.ok()) << step[1] << " " << step[2] << ": " << done.output;
  }
  const int git_port = 9418;
  ASSERT_TRUE(git_daemon_.start(
      {"/usr/bin/git", "daemon", "--listen=" + node_ip_, "--port=" + std::to_string(git_port),
       "--export-all", "--reuseaddr", "--base-path=" + (tmp_->path() / "git").string(),
       (tmp_->path() / "git").string()},
      (tmp_->path() / "git-daemon.log").string()));
  git_uri_ = "git://" + node_ip_ + ":" + std::to_string(git_port) + "/connector";

  // A PostgreSQL and a Redis outside the cluster, on the node address (pods cannot reach the
  // host's loopback), with passwords the pods get from Secrets.
  harness::PostgresOptions pg_options;
  pg_options.settings = {"listen_addresses=127.0.0.1," + node_ip_};
  external_pg_ = new harness::PostgresServer(pg_options);
  ASSERT_TRUE(external_pg_->start().ok());
  {
    std::ofstream hba(fs::path(external_pg_->dataDir()) / "pg_hba.conf", std::ios::app);
    hba << "host all all 10.213.0.0/16 scram-sha-256\n";
  }
  EXPECT_EQ(scalar(external_pg_->dsn(), "SELECT pg_reload_conf()::text"), "true");
  auto db = external_pg_->createDatabase("cluster_external");
  ASSERT_TRUE(db.ok()) << db.status();
  external_dsn_ = *db;
  EXPECT_THAT(scalar(external_dsn_, std::string("ALTER USER postgres PASSWORD '") +
                                        kExternalPassword + "'; SELECT 'ok'"),
              "ok");
  // Redis only over TLS, wanting a client certificate (its default): the agents reach it through
  // their stunnel.
  harness::RedisOptions redis_options;
  redis_options.tls = true;
  redis_options.args = {"--bind", "127.0.0.1", node_ip_};
  external_redis_ = new harness::RedisServer(redis_options);
  ASSERT_TRUE(external_redis_->start().ok());
  const auto pass = run({"/usr/bin/redis-cli", "-s", external_redis_->unixSocket(), "CONFIG", "SET",
                         "requirepass", kRedisPassword},
                        1min);
  ASSERT_TRUE(pass.ok()) << pass.output;

  // Prometheus before anything runs, so every counter is seen from zero. It finds the pods the
  // way a Prometheus in the cluster would (role: pod, prometheus.io/* annotations), with the
  // admin client certificate. Upstream's, from scripts/build-kube.sh: Debian's prometheus has
  // the Kubernetes discovery patched out.
  const std::string pki = std::string(TRIBUTARY_KUBE_NODE_DIR) + "/pki";
  const std::string config = tmp_->write(
      "prometheus.yml",
      "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
      "rule_files: ['" +
          chart_->dir() +
          "/files/prometheus/alerts.yaml']\n"
          "scrape_configs:\n"
          "  - job_name: kubernetes-pods\n"
          "    kubernetes_sd_configs:\n"
          "      - role: pod\n"
          "        api_server: https://" +
          node_ip_ +
          ":6443\n"
          "        namespaces: {names: [" +
          kNamespace + "]}\n        tls_config: {ca_file: " + pki + "/ca.crt, cert_file: " + pki +
          "/admin.crt, key_file: " + pki +
          "/admin.key}\n"
          "    relabel_configs:\n"
          "      - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], "
          "action: keep, regex: 'true'}\n"
          "      - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], "
          "target_label: __metrics_path__, regex: '(.+)'}\n"
          "      - {source_labels: [__meta_kubernetes_pod_ip, "
          "__meta_kubernetes_pod_annotation_prometheus_io_port], target_label: __address__, "
          "regex: '(.+);(.+)', replacement: '$1:$2'}\n"
          "      - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}\n"
          "      - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}\n");
  const int prometheus_port = 19090;
  ASSERT_TRUE(
      prometheus_.start({tool("prometheus"), "--config.file=" + config,
                         "--storage.tsdb.path=" + (tmp_->path() / "tsdb").string(),
                         "--web.listen-address=127.0.0.1:" + std::to_string(prometheus_port)},
                        (tmp_->path() / "prometheus.log").string()));
  prometheus_api_ = "http://127.0.0.1:" + std::to_string(prometheus_port);
  prometheus_started_ = std::chrono::system_clock::now();
  ASSERT_TRUE(
      waitFor([] { return getJson(prometheus_api_, "/api/v1/status/buildinfo").is_object(); }, 30s))
      << readFile(prometheus_.log);
}

void Cluster::TearDownTestSuite() {
  prometheus_.stop();
  git_daemon_.stop();
  delete external_redis_;
  delete external_pg_;
  if (up_) {
    const auto down = run({"/bin/bash", node_script_, "clean"}, 3min);
    EXPECT_TRUE(down.ok()) << down.output;
    // The host as it was: no bridge, no nftables table of ours, the sysctls back, nothing mounted.
    EXPECT_EQ(hostState(), host_before_);
    EXPECT_FALSE(fs::exists("/run/tributary-kube-node"));
  }
  delete chart_;
  delete tmp_;
}

void Cluster::dumpDiagnostics() {
  std::cerr << "--- pods, SyncRuns, events\n"
            << kubectl({"get", "pods,syncruns", "-A", "-o", "wide"}).output
            << kubectl({"get", "events", "-A", "--sort-by=.lastTimestamp"}).output;
  const Json pods = kubectlJson({"get", "pods", "-n", kNamespace});
  if (pods.is_object()) {
    for (const Json& pod : pods["items"]) {
      const std::string name = pod["metadata"]["name"];
      std::cerr
          << "--- logs of " << name << "\n"
          << kubectl({"logs", "-n", kNamespace, name, "--all-containers", "--tail=80"}).output;
    }
  }
  for (const char* process : {"kubelet", "kube-apiserver", "containerd"}) {
    const std::string log = std::string(TRIBUTARY_KUBE_NODE_DIR) + "/logs/" + process + ".log";
    const std::string text = readFile(log);
    std::cerr << "--- last of " << log << "\n"
              << text.substr(text.size() > 6000 ? text.size() - 6000 : 0);
  }
}

std::vector<std::string> Cluster::externalValues() {
  return {"--set", "database.existingSecret=external-db", "--set",
          "redis.address=external-redis." + std::string(kNamespace) +
              ".svc:" + std::to_string(external_redis_->port()),
          "--set", "redis.existingSecret=external-redis", "--set", "redis.tls.enabled=true",
          // The test certificate names localhost and 127.0.0.1, not the Service.
          "--set", "redis.tls.serverName=localhost", "--set",
          "redis.tls.existingSecret=external-redis-tls", "--set", "redis.tls.certKey=tls.crt",
          "--set", "redis.tls.keyKey=tls.key"};
}

harness::CommandResult Cluster::helmInstall(const std::string& verb,
                                            const std::vector<std::string>& flags) {
  // The agents' connector cache on a claim (a hostPath volume on the node): installed connectors
  // outlive agent pods, so the rolls and the reinstall below do not rebuild the connector.
  std::vector<std::string> args{verb,
                                kRelease,
                                chart_->dir(),
                                "--namespace",
                                kNamespace,
                                "--set",
                                "imageTag=test",
                                "--set",
                                "imagePullPolicy=Never",
                                "--set",
                                "agent.cache.type=persistentVolumeClaim",
                                "--set",
                                "agent.cache.existingClaim=agent-cache"};
  args.insert(args.end(), flags.begin(), flags.end());
  return chart_->helm(args, 5min);
}

void Cluster::waitForRollouts(bool quickstart) {
  std::vector<std::string> workloads{"deployment/rel-tributary-controller",
                                     "daemonset/rel-tributary-agent"};
  if (quickstart) {
    workloads.emplace_back("statefulset/rel-tributary-postgres");
    workloads.emplace_back("deployment/rel-tributary-redis");
  }
  for (const std::string& workload : workloads) {
    const auto rolled =
        kubectl({"rollout", "status", "-n", kNamespace, workload, "--timeout=240s"}, "", 5min);
    ASSERT_TRUE(rolled.ok()) << workload << ": " << rolled.output;
  }
}

std::string Cluster::quickstartDsn() {
  const std::string ip = kubectl({"get", "service", "-n", kNamespace, "rel-tributary-postgres",
                                  "-o", "jsonpath={.spec.clusterIP}"})
                             .output;
  const std::string password =
      kubectl({"get", "secret", "-n", kNamespace, "rel-tributary-quickstart", "-o",
               "jsonpath={.data.postgres-password}"})
          .output;
  const auto decoded = run({"/usr/bin/base64", "-d"}, 1min, password);
  return "host=" + ip +
         " port=5432 user=tributary dbname=tributary connect_timeout=5 password=" + decoded.output;
}

TEST_F(Cluster, HelmInstallIntoARestrictedNamespaceRunsThePodsAndHelmTestPasses) {
  const auto start = Clock::now();
  ASSERT_TRUE(kubectl({"create", "namespace", kNamespace}).ok());
  ASSERT_TRUE(
      kubectl({"label", "namespace", kNamespace, "pod-security.kubernetes.io/enforce=restricted",
               "pod-security.kubernetes.io/warn=restricted"})
          .ok());
  ASSERT_TRUE(kubectl({"create", "namespace", kJobs}).ok());
  const fs::path cache = fs::path(TRIBUTARY_KUBE_NODE_DIR) / "agent-cache";
  fs::create_directories(cache);
  ASSERT_EQ(::chown(cache.c_str(), 65532, 65532), 0);
  const auto claim = kubectl(
      {"apply", "-f", "-"},
      "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: agent-cache}\nspec:\n"
      "  capacity: {storage: 10Gi}\n  accessModes: [ReadWriteMany]\n  storageClassName: manual\n"
      "  hostPath: {path: " +
          cache.string() +
          ", type: Directory}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\n"
          "metadata: {name: agent-cache, namespace: " +
          kNamespace +
          "}\nspec:\n  accessModes: [ReadWriteMany]\n  storageClassName: manual\n"
          "  volumeName: agent-cache\n  resources: {requests: {storage: 10Gi}}\n");
  ASSERT_TRUE(claim.ok()) << claim.output;
  const auto installed =
      helmInstall("install", {"--set", "quickstart.enabled=true", "--wait", "--timeout=4m"});
  ASSERT_TRUE(installed.ok()) << installed.error << "\n" << installed.output;
  EXPECT_THAT(installed.output, ::testing::Not(::testing::HasSubstr("would violate PodSecurity")));
  waitForRollouts(true);
  std::cout << "install: every workload rolled out after " << seconds(start) << "\n";
  const auto tested = chart_->helm({"test", kRelease, "--namespace", kNamespace, "--logs"}, 5min);
  EXPECT_TRUE(tested.ok()) << tested.output;
  EXPECT_THAT(tested.output, ::testing::HasSubstr("Succeeded"));

  const Json pods =
      kubectlJson({"get", "pods", "-n", kNamespace, "-l", "app.kubernetes.io/name=tributary"});
  ASSERT_TRUE(pods.is_object());
  int running = 0;
  for (const Json& pod : pods["items"]) {
    if (pod.value("/status/phase"_json_pointer, std::string()) == "Running") {
      ++running;
      EXPECT_EQ(pod.value("/spec/securityContext/runAsNonRoot"_json_pointer, false), true)
          << pod["metadata"]["name"];
    }
  }
  EXPECT_GE(running, 5);  // 2 controllers, 1 agent, PostgreSQL, Redis
}

TEST_F(Cluster, GitConnectorBuiltInTheAgentPodSyncsExactRowsIntoTheQuickstartPostgres) {
  const auto start = Clock::now();
  const auto applied = kubectl({"apply", "-n", kJobs, "-f", "-"},
                               connectorYaml("go-git", git_uri_) +
                                   syncJobYaml("first", "go-git", "{pages: 20, page_size: 50}"));
  ASSERT_TRUE(applied.ok()) << applied.output;
  const Json run = waitForFinish("first", 15min);
  ASSERT_EQ(phaseOf(run), "Succeeded") << describe(run);
  std::cout << "first sync (install in the pod included): " << seconds(start) << "\n";
  EXPECT_EQ(run["status"]["objects"]["upserted"], 1000);
  EXPECT_EQ(rowsOf(quickstartDsn(), "first", 20, 50), exactRows(20, 50));
}

TEST_F(Cluster, ExternalPostgresThroughAServiceWhileAnUpgradeRollsTheAgentsMidSync) {
  // The database and Redis outside the cluster, named by selector-less Services.
  std::string objects;
  for (const auto& [name, port] :
       std::vector<std::pair<std::string, int>>{{"external-postgres", external_pg_->port()},
                                                {"external-redis", external_redis_->port()}}) {
    objects += "apiVersion: v1\nkind: Service\nmetadata: {name: " + name +
               "}\nspec:\n  ports: [{name: tcp, port: " + std::to_string(port) +
               ", protocol: TCP}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
               "metadata:\n  name: " +
               name + "-1\n  labels: {kubernetes.io/service-name: " + name +
               "}\naddressType: IPv4\nports: [{name: tcp, port: " + std::to_string(port) +
               ", protocol: TCP}]\nendpoints: [{addresses: [" + node_ip_ + "]}]\n---\n";
  }
  objects +=
      "apiVersion: v1\nkind: Secret\nmetadata: {name: external-db}\nstringData:\n"
      "  url: postgresql://postgres@external-postgres." +
      std::string(kNamespace) + ".svc:" + std::to_string(external_pg_->port()) +
      "/cluster_external?sslmode=disable\n  password: " + kExternalPassword +
      "\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: external-redis}\n"
      "stringData:\n  password: " +
      kRedisPassword + "\n";
  const auto created = kubectl({"apply", "-n", kNamespace, "-f", "-"}, objects);
  ASSERT_TRUE(created.ok()) << created.output;
  const harness::TlsFiles tls = external_redis_->tlsFiles();
  const auto tls_secret =
      kubectl({"create", "secret", "generic", "external-redis-tls", "-n", kNamespace,
               "--from-file=ca.crt=" + tls.ca, "--from-file=tls.crt=" + tls.client_cert,
               "--from-file=tls.key=" + tls.client_key});
  ASSERT_TRUE(tls_secret.ok()) << tls_secret.output;
  // A drain shorter than the sync: the upgrade interrupts it and the run is retried.
  const std::vector<std::string> external = with(
      externalValues(),
      {"--set", "agent.drainTimeoutSeconds=5", "--set", "agent.terminationGracePeriodSeconds=30"});
  const auto moved = helmInstall("upgrade", external);
  ASSERT_TRUE(moved.ok()) << moved.output;
  waitForRollouts(false);

  // ≈ 24 s of pages (60 × 100 objects, 400 ms apart).
  const int pages = 60;
  const int page_size = 100;
  const auto applied =
      kubectl({"apply", "-n", kJobs, "-f", "-"},
              syncJobYaml("long", "go-git", "{pages: 60, page_size: 100, page_delay_ms: 400}"));
  ASSERT_TRUE(applied.ok()) << applied.output;
  // Rolled once it is writing pages.
  ASSERT_TRUE(waitFor(
      [&] {
        for (const Json& r : runsOf("long")) {
          if (phaseOf(r) == "Running" && r.value("/status/pages"_json_pointer, 0) >= 5) {
            return true;
          }
        }
        return false;
      },
      15min))
      << kubectl({"get", "syncruns", "-n", kJobs, "-o", "yaml"}).output;
  const auto rolled =
      helmInstall("upgrade", with(external, {"--set", "agent.podAnnotations.rolled=yes"}));
  ASSERT_TRUE(rolled.ok()) << rolled.output;
  waitForRollouts(false);
  const Json run = waitForFinish("long", 15min);
  ASSERT_EQ(phaseOf(run), "Succeeded") << describe(run);
  const int attempt = run.value("/status/attempt"_json_pointer, 0);
  std::cout << "long sync: succeeded on attempt " << attempt << "\n";
  EXPECT_GE(attempt, 2) << "the roll did not interrupt the sync";
  EXPECT_EQ(rowsOf(external_dsn_, "long", pages, page_size), exactRows(pages, page_size));
  // One store run per attempt; only the last one succeeded.
  EXPECT_EQ(scalar(external_dsn_, std::string("SELECT count(*) FILTER (WHERE outcome = "
                                              "'succeeded') FROM tributary.sync_runs WHERE "
                                              "namespace = '") +
                                      kJobs + "' AND sync_job = 'long'"),
            "1");
}

TEST_F(Cluster, PrometheusDiscoversThePodsAndEveryDashboardQueryHasData) {
  // A job whose every attempt fails (the connector refuses its options: retried, then failed for
  // good), for the failure panels; the same Connector, so nothing is installed again.
  const auto applied =
      kubectl({"apply", "-n", kJobs, "-f", "-"},
              syncJobYaml("doomed", "go-git", "{pages: -1}", "  backoffLimit: 1\n") +
                  syncJobYaml("again", "go-git", "{pages: 5, page_size: 20}"));
  ASSERT_TRUE(applied.ok()) << applied.output;
  const Json doomed = waitForFinish("doomed", 10min);
  EXPECT_EQ(phaseOf(doomed), "Failed") << describe(doomed);
  const Json again = waitForFinish("again", 10min);
  EXPECT_EQ(phaseOf(again), "Succeeded") << describe(again);
  // Every pod of the release scraped (2 controllers and the agent), a few more scrapes after
  // the last change so every rate has two samples.
  EXPECT_TRUE(waitFor([] { return scrapesTargets(prometheus_api_, 3); }, 60s))
      << getJson(prometheus_api_, "/api/v1/targets").dump().substr(0, 3000);
  std::this_thread::sleep_for(6s);

  const DashboardQueries queries =
      runDashboardQueries(prometheus_api_, chart_->dir() + "/files/dashboards", prometheus_started_,
                          std::chrono::system_clock::now());
  EXPECT_GE(queries.evaluated, 30);
  EXPECT_THAT(queries.without_data, ::testing::IsEmpty()) << "panel queries without data";
  std::vector<std::string> unhealthy;
  EXPECT_EQ(loadedAlertRules(prometheus_api_, &unhealthy), 12);
  EXPECT_THAT(unhealthy, ::testing::IsEmpty());
}

TEST_F(Cluster, UninstallKeepsCrdsResourcesAndDataAndAReinstallRunsTheSyncJobs) {
  const std::string rows_before = rowsOf(external_dsn_, "long", 60, 100);
  const auto removed =
      chart_->helm({"uninstall", kRelease, "--namespace", kNamespace, "--wait"}, 5min);
  ASSERT_TRUE(removed.ok()) << removed.output;
  // Every pod of the release goes (Helm leaves the last `helm test` pod: it deletes no hooks).
  EXPECT_TRUE(waitFor(
      [] {
        const Json pods = kubectlJson(
            {"get", "pods", "-n", kNamespace, "-l", "app.kubernetes.io/component!=test"});
        return pods.is_object() && pods["items"].empty();
      },
      3min))
      << kubectl({"get", "pods", "-n", kNamespace}).output;
  for (const char* crd :
       {"connectors.tributary.dev", "syncjobs.tributary.dev", "syncruns.tributary.dev"}) {
    EXPECT_TRUE(kubectl({"get", "crd", crd}).ok()) << crd;
  }
  EXPECT_THAT(kubectl({"get", "syncjobs", "-n", kJobs, "-o", "name"}).output,
              ::testing::HasSubstr("syncjob.tributary.dev/long"));
  EXPECT_EQ(rows_before, exactRows(60, 100));
  EXPECT_EQ(rowsOf(external_dsn_, "long", 60, 100), rows_before);

  // A SyncJob created while no operator runs; the reinstall runs it.
  const auto applied = kubectl({"apply", "-n", kJobs, "-f", "-"},
                               syncJobYaml("while-away", "go-git", "{pages: 10, page_size: 30}"));
  ASSERT_TRUE(applied.ok()) << applied.output;
  const auto reinstalled = helmInstall("install", externalValues());
  ASSERT_TRUE(reinstalled.ok()) << reinstalled.output;
  waitForRollouts(false);
  const Json run = waitForFinish("while-away", 15min);
  ASSERT_EQ(phaseOf(run), "Succeeded") << describe(run);
  EXPECT_EQ(rowsOf(external_dsn_, "while-away", 10, 30), exactRows(10, 30));
  // The finished run-once jobs are not run again.
  EXPECT_EQ(runsOf("long").size(), 1U);
}

}  // namespace
}  // namespace tributary::testing
