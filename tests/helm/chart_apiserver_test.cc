// The chart's objects on the real kube-apiserver: every pod passes the restricted Pod Security
// profile, and the real controller and agent binaries do a whole sync with the chart's
// ServiceAccounts and RBAC (tokens from the TokenRequest API) and are refused everything else.

#include "tributary/kube/client.h"
#include "tributary/kube/config.h"
#include "tributary/testing/kube.h"
#include "tributary/testing/net.h"
#include "tributary/testing/services.h"

#include "chart_support.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <libpq-fe.h>
#include <sstream>
#include <thread>

namespace tributary::testing {
namespace {

namespace fs = std::filesystem;
using harness::KubeApiServer;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

TEST(ChartOnApiServer, EveryPodPassesTheRestrictedPodSecurityProfile) {
  auto& kube = KubeApiServer::shared();
  const std::string ns = uniqueName("restricted");
  ASSERT_TRUE(kube.createNamespace(ns).ok());
  for (const char* mode : {"enforce", "warn", "audit"}) {
    const auto label =
        kube.runKubectl({"label", "namespace", ns,
                         std::string("pod-security.kubernetes.io/") + mode + "=restricted"});
    ASSERT_TRUE(label.ok()) << label.output;
  }
  Chart chart;
  // The quickstart renders every pod the chart has (controller, agents, PostgreSQL, Redis and
  // the helm test pod); the CRDs are left out (the harness installed them).
  const std::string yaml = chart.renderYaml(
      {"--namespace", ns, "--set", "quickstart.enabled=true", "--set", "crds.enabled=false"});
  ASSERT_FALSE(yaml.empty());
  const auto applied =
      kube.runKubectl({"apply", "--dry-run=server", "--namespace", ns, "-f", "-"}, yaml);
  EXPECT_TRUE(applied.ok()) << applied.output;
  // Workloads only warn on violations; a Pod (the test hook) is refused.
  EXPECT_THAT(applied.output, ::testing::Not(HasSubstr("PodSecurity"))) << applied.output;
  EXPECT_THAT(applied.output, HasSubstr("pod/rel-tributary-test created (server dry run)"));
  EXPECT_THAT(applied.output,
              HasSubstr("daemonset.apps/rel-tributary-agent created (server dry run)"));

  // `helm install` against this API server (server dry run): NOTES.txt warns the quickstart is
  // not for production.
  const auto dry = chart.helm({"install", "rel", chart.dir(), "--dry-run=server", "--namespace", ns,
                               "--kubeconfig=" + kube.kubeconfigPath(), "--set",
                               "quickstart.enabled=true", "--set", "crds.enabled=false"});
  EXPECT_TRUE(dry.ok()) << dry.output;
  EXPECT_THAT(dry.output, HasSubstr("NOT FOR PRODUCTION"));
  EXPECT_THAT(dry.output, HasSubstr("helm test rel"));

  // The check has teeth: a privileged variant is refused.
  const std::string privileged = chart.renderYaml(
      {"--namespace", ns, "--set", "quickstart.enabled=true", "--set", "crds.enabled=false",
       "--set", "containerSecurityContext.allowPrivilegeEscalation=true", "--show-only",
       "templates/tests/status.yaml"});
  const auto refused =
      kube.runKubectl({"apply", "--dry-run=server", "--namespace", ns, "-f", "-"}, privileged);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.output, HasSubstr("violates PodSecurity \"restricted:latest\""));
}

// The chart's RBAC on the real API server, with the real binaries under its ServiceAccounts.
class ChartRbac : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto& kube = KubeApiServer::shared();
    release_ns_ = uniqueName("rel");
    watched_ = uniqueName("team");
    other_ = uniqueName("other");
    for (const std::string& ns : {release_ns_, watched_, other_}) {
      ASSERT_TRUE(kube.createNamespace(ns).ok());
    }
    release_ = uniqueName("r");
    std::vector<std::string> flags =
        with({"--namespace", release_ns_, "--show-only", "templates/rbac.yaml", "--show-only",
              "templates/serviceaccounts.yaml"},
             requiredValues());
    if (GetParam() == "namespace") {
      flags.insert(flags.end(), {"--set", "rbac.scope=namespace", "--set",
                                 "watchNamespaces={" + watched_ + "}"});
    }
    const auto rendered = chart_.helm(with({"template", release_, chart_.dir()}, flags));
    ASSERT_TRUE(rendered.ok()) << rendered.output;
    const auto applied = kube.runKubectl({"apply", "-f", "-"}, rendered.output);
    ASSERT_TRUE(applied.ok()) << applied.output;
    controller_sa_ = release_ + "-tributary-controller";
    agent_sa_ = release_ + "-tributary-agent";
    controller_kubeconfig_ = kubeconfigFor(controller_sa_);
    agent_kubeconfig_ = kubeconfigFor(agent_sa_);

    auto pg = harness::SharedServices::postgres();
    ASSERT_TRUE(pg.ok()) << pg.status();
    auto dsn = (*pg)->createDatabase("chart_rbac");
    ASSERT_TRUE(dsn.ok()) << dsn.status();
    dsn_ = *dsn;
    auto redis = harness::SharedServices::redis();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_port_ = (*redis)->port();
    fs::create_directories(tmp_.path() / "go");
    fs::copy_file(fs::path(TRIBUTARY_GO_BIN_DIR) / "connector-go-v1_6",
                  tmp_.path() / "go" / "connector");
  }

  void TearDown() override {
    agent_.stop();
    controller_.stop();
    if (HasFailure()) {
      std::cerr << "--- controller log\n"
                << readFile(controller_.log) << "--- agent log\n"
                << readFile(agent_.log);
    }
  }

  std::string kubeconfigFor(const std::string& account) {
    auto token = KubeApiServer::shared().serviceAccountToken(release_ns_, account);
    EXPECT_TRUE(token.ok()) << token.status();
    return tmp_.write(account + ".kubeconfig",
                      "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
                      "    server: " +
                          KubeApiServer::shared().url() +
                          "\n    certificate-authority: " + KubeApiServer::shared().caFile() +
                          "\nusers:\n- name: u\n  user:\n    token: " + token.value_or("") +
                          "\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
                          "current-context: x\n");
  }

  void start(Child& child, const std::vector<std::string>& argv, const std::string& name) {
    ASSERT_TRUE(child.start(argv, (tmp_.path() / (name + ".log")).string()));
  }

  // `kubectl auth can-i` as the ServiceAccount (a SubjectAccessReview by the real authorizer).
  // `resource` is TYPE[/NAME][#SUBRESOURCE].
  bool can(const std::string& account, const std::string& verb, const std::string& resource,
           const std::string& ns) {
    const auto hash = resource.find('#');
    std::vector<std::string> args{"auth", "can-i", verb, resource.substr(0, hash),
                                  "--as=system:serviceaccount:" + release_ns_ + ":" + account};
    if (hash != std::string::npos) {
      args.push_back("--subresource=" + resource.substr(hash + 1));
    }
    if (!ns.empty()) {
      args.push_back("--namespace=" + ns);
    }
    // The answer is the last line (a warning may come first, e.g. for cluster-scoped types).
    std::string out = KubeApiServer::shared().runKubectl(args).output;
    while (!out.empty() && out.back() == '\n') {
      out.pop_back();
    }
    return out.substr(out.find_last_of('\n') + 1) == "yes";
  }

  std::string scalar(const std::string& sql) {
    PGconn* conn = PQconnectdb(dsn_.c_str());
    std::string out;
    PGresult* r = PQexec(conn, sql.c_str());
    out = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 ? PQgetvalue(r, 0, 0)
                                                                   : PQerrorMessage(conn);
    PQclear(r);
    PQfinish(conn);
    return out;
  }

  Chart chart_;
  harness::TempDir tmp_{"chart-rbac"};
  std::string release_;
  std::string release_ns_;
  std::string watched_;
  std::string other_;
  std::string controller_sa_;
  std::string agent_sa_;
  std::string controller_kubeconfig_;
  std::string agent_kubeconfig_;
  std::string dsn_;
  int redis_port_ = 0;
  Child controller_;
  Child agent_;
};

TEST_P(ChartRbac, ControllerAndAgentSyncWithTheChartsRightsAndAreRefusedTheRest) {
  auto& kube = KubeApiServer::shared();
  const std::string node = uniqueName("node");
  ASSERT_TRUE(
      kube.kubectlApply("apiVersion: v1\nkind: Node\nmetadata:\n  name: " + node + "\n").ok());
  const std::string watch_flag =
      GetParam() == "namespace" ? "--namespace=" + watched_ : "--all-namespaces";
  // The flags the chart gives the controller (leader election on its named Lease).
  const int probes = harness::freeLoopbackPort().value_or(0);
  start(controller_,
        {TRIBUTARY_CONTROLLER_BINARY, "--kubeconfig=" + controller_kubeconfig_, watch_flag,
         "--agent-namespace=" + release_ns_, "--leader-elect",
         "--leader-election-id=" + release_ + "-tributary-controller",
         "--leader-election-namespace=" + release_ns_, "--metrics-bind-address=0",
         "--health-probe-bind-address=127.0.0.1:" + std::to_string(probes)},
        "controller");
  std::vector<std::string> agent_args{TRIBUTARY_AGENT_BINARY,
                                      "--kubeconfig=" + agent_kubeconfig_,
                                      "--name=" + node,
                                      "--node-name=" + node,
                                      "--lease-namespace=" + release_ns_,
                                      "--database-url=" + dsn_,
                                      "--redis-address=127.0.0.1:" + std::to_string(redis_port_),
                                      "--cache-dir=" + (tmp_.path() / "cache").string(),
                                      "--local-root=" + tmp_.path().string(),
                                      "--metrics-bind-address=0",
                                      "--health-probe-bind-address=0",
                                      "--lease-duration=3s"};
  if (GetParam() == "namespace") {
    agent_args.push_back("--namespace=" + watched_);
  }
  start(agent_, agent_args, "agent");

  // A sync that touches every right: a Secret for the options (agent) and one for the
  // connector's environment (agent), events (both), run status (both), the Lease (both).
  const std::string manifests =
      "apiVersion: v1\nkind: Secret\nmetadata:\n  name: opts\nstringData:\n"
      "  options.json: '{\"pages\": 3, \"page_size\": 10}'\n---\n"
      "apiVersion: v1\nkind: Secret\nmetadata:\n  name: env\nstringData:\n  mode: normal\n---\n"
      "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: go\nspec:\n"
      "  source: Local\n  uri: " +
      (tmp_.path() / "go").string() +
      "\n  command: ./connector\n  env:\n    - name: TEST_CONNECTOR_MODE\n      valueFrom:\n"
      "        secretKeyRef: {name: env, key: mode}\n---\n"
      "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: job\nspec:\n"
      "  connectorRef: {name: go}\n  optionsFrom:\n    secretKeyRef: {name: opts, key: "
      "options.json}\n";
  const auto applied = kube.runKubectl({"apply", "--namespace=" + watched_, "-f", "-"}, manifests);
  ASSERT_TRUE(applied.ok()) << applied.output;
  std::string phase;
  EXPECT_TRUE(waitFor(
      [&] {
        phase = syncRunPhases(watched_);
        return phase == "Succeeded";
      },
      90s))
      << "phase: " << phase;
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.live_objects WHERE namespace = '" + watched_ +
                   "' AND sync_job = 'job'"),
            "30");
  const auto events = kube.runKubectl(
      {"get", "events", "--namespace=" + watched_, "-o", "jsonpath={.items[*].reason}"});
  EXPECT_THAT(events.output, HasSubstr("Bound"));      // the controller's
  EXPECT_THAT(events.output, HasSubstr("Succeeded"));  // the agent's
  // Neither binary met a refusal on the way.
  for (const Child* c : {&controller_, &agent_}) {
    std::string log = readFile(c->log);
    std::transform(log.begin(), log.end(), log.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    EXPECT_THAT(log, ::testing::Not(HasSubstr("forbidden"))) << c->log;
  }

  // `helm test`: `tributary status` with the test hook's ServiceAccount and rights.
  const auto test_hook =
      chart_.helm(with({"template", release_, chart_.dir(), "--namespace", release_ns_,
                        "--show-only", "templates/tests/status.yaml"},
                       requiredValues()));
  ASSERT_TRUE(test_hook.ok()) << test_hook.output;
  // Everything but the Pod: the test runs the command itself.
  const std::string rbac_only = test_hook.output.substr(0, test_hook.output.rfind("---\n# Source"));
  const auto test_rbac = kube.runKubectl({"apply", "-f", "-"}, rbac_only);
  ASSERT_TRUE(test_rbac.ok()) << test_rbac.output;
  const std::string status_kubeconfig = kubeconfigFor(release_ + "-tributary-test");
  const std::vector<std::string> status_cmd{
      TRIBUTARY_CLI,
      "status",
      "--kubeconfig=" + status_kubeconfig,
      "--namespace=" + release_ns_,
      "--leader-lease=" + release_ + "-tributary-controller",
      "--controller-url=http://127.0.0.1:" + std::to_string(probes) + "/readyz"};
  const auto healthy = runTool(status_cmd);
  EXPECT_EQ(healthy.exit_code, 0) << healthy.output;
  EXPECT_THAT(healthy.output, HasSubstr("ok    CRD syncruns.tributary.dev: Established"));
  EXPECT_THAT(healthy.output, HasSubstr("ok    1 live agent(s) in " + release_ns_));
  EXPECT_THAT(healthy.output, HasSubstr("ok    leader Lease"));
  EXPECT_THAT(healthy.output, HasSubstr(": HTTP 200"));
  std::vector<std::string> too_many = status_cmd;
  too_many.push_back("--min-agents=3");
  const auto short_of_agents = runTool(too_many);
  EXPECT_EQ(short_of_agents.exit_code, 1) << short_of_agents.output;
  EXPECT_THAT(short_of_agents.output,
              HasSubstr("FAIL  1 live agent(s) in " + release_ns_ + ", 3 required"));

  // What each may do, and what it may not (each line a real authorization decision).
  const std::string& w = watched_;
  const std::string& r = release_ns_;
  struct Right {
    std::string account, verb, resource, ns;
    bool allowed;
  };
  const std::string c = controller_sa_;
  const std::string a = agent_sa_;
  std::vector<Right> rights = {
      {c, "create", "syncruns.tributary.dev", w, true},
      {c, "delete", "syncruns.tributary.dev", w, true},
      {c, "update", "syncjobs.tributary.dev#status", w, true},
      {c, "get", "secrets", w, true},
      {c, "get", "leases/" + release_ + "-tributary-controller", r, true},
      {c, "list", "secrets", w, false},
      {c, "watch", "secrets", w, false},
      {c, "create", "secrets", w, false},
      {c, "update", "syncjobs.tributary.dev", w, false},
      {c, "delete", "connectors.tributary.dev", w, false},
      {c, "update", "leases/someone-elses-lease", r, false},
      {c, "delete", "leases", r, false},
      {c, "get", "leases", w, false},
      {c, "get", "nodes", "", false},
      {c, "create", "pods", w, false},
      {c, "get", "configmaps", w, false},
      {a, "update", "syncruns.tributary.dev#status", w, true},
      {a, "get", "secrets", w, true},
      {a, "get", "nodes", "", true},
      {a, "update", "leases", r, true},
      {a, "create", "syncruns.tributary.dev", w, false},
      {a, "delete", "syncruns.tributary.dev", w, false},
      {a, "update", "syncruns.tributary.dev", w, false},
      {a, "update", "syncjobs.tributary.dev#status", w, false},
      {a, "update", "connectors.tributary.dev#status", w, false},
      {a, "list", "secrets", w, false},
      {a, "list", "connectors.tributary.dev", w, false},
      {a, "delete", "leases", r, false},
      {a, "update", "leases", w, false},
      {a, "list", "nodes", "", false},
      {a, "patch", "nodes", "", false},
      {a, "create", "pods", w, false},
      {a, "create", "pods#exec", w, false},
      {a, "create", "serviceaccounts#token", r, false},
  };
  if (GetParam() == "namespace") {
    // Namespace scope: nothing at all outside the watched namespaces.
    for (const std::string& account : {c, a}) {
      rights.push_back({account, "get", "secrets", other_, false});
      rights.push_back({account, "list", "syncruns.tributary.dev", other_, false});
      rights.push_back({account, "list", "syncruns.tributary.dev", "", false});
    }
  }
  for (const Right& right : rights) {
    EXPECT_EQ(can(right.account, right.verb, right.resource, right.ns), right.allowed)
        << right.account << " " << right.verb << " " << right.resource << " in '" << right.ns
        << "'";
  }
}

INSTANTIATE_TEST_SUITE_P(Scopes, ChartRbac, ::testing::Values("cluster", "namespace"));

}  // namespace
}  // namespace tributary::testing
