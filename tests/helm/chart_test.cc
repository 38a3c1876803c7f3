// The Helm chart as helm and promtool see it: lint, what each values combination renders, the
// values schema and the template's own refusals, the CRDs from crds/, the alerts (promtool check
// and test) and the dashboards. What the objects do on a real API server is chart_apiserver_test.

#include "chart_support.h"
#include "manifest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace tributary::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::vector<std::string> containerArgs(const Json& workload) {
  return podSpec(workload)["containers"][0].value("args", std::vector<std::string>{});
}

std::string envValue(const Json& workload, const std::string& name) {
  for (const Json& e : podSpec(workload)["containers"][0].value("env", Json::array())) {
    if (e.value("name", "") == name) {
      return e.contains("value") ? e["value"].get<std::string>() : e.dump();
    }
  }
  return "";
}

// The restricted Pod Security profile, field by field (the API server's PodSecurity admission
// checks the same on a restricted namespace: chart_apiserver_test).
void expectRestricted(const Json& workload) {
  const std::string what =
      workload["kind"].get<std::string>() + " " + workload["metadata"]["name"].get<std::string>();
  const Json& spec = podSpec(workload);
  EXPECT_EQ(spec["securityContext"].value("runAsNonRoot", false), true) << what;
  EXPECT_EQ(spec["securityContext"]["seccompProfile"].value("type", ""), "RuntimeDefault") << what;
  for (const Json& c : spec["containers"]) {
    const Json& sc = c["securityContext"];
    EXPECT_EQ(sc.value("allowPrivilegeEscalation", true), false) << what;
    EXPECT_EQ(sc.value("readOnlyRootFilesystem", false), true) << what;
    EXPECT_EQ(sc["capabilities"]["drop"], Json::array({"ALL"})) << what;
    EXPECT_TRUE(c.contains("resources") && c["resources"].contains("limits")) << what;
  }
}

class ChartTest : public ::testing::Test {
 protected:
  Chart chart_;
};

TEST_F(ChartTest, LintStrictPassesForEachWayToInstall) {
  for (const auto& flags :
       {requiredValues(), std::vector<std::string>{"--set", "quickstart.enabled=true"},
        with(requiredValues(),
             {"--set", "rbac.scope=namespace", "--set", "watchNamespaces={team-a,team-b}"})}) {
    std::vector<std::string> args{"lint", "--strict", chart_.dir()};
    args.insert(args.end(), flags.begin(), flags.end());
    const auto r = chart_.helm(args);
    EXPECT_TRUE(r.ok()) << r.error << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr("0 chart(s) failed"));
  }
}

TEST_F(ChartTest, DefaultInstallIsTheOperatorWithLeastPrivilegeAndRestrictedPods) {
  const auto objects = chart_.render(requiredValues());
  ASSERT_FALSE(objects.empty());

  const Json* controller = findObject(objects, "Deployment", "rel-tributary-controller");
  ASSERT_NE(controller, nullptr);
  EXPECT_EQ((*controller)["spec"]["replicas"], 2);
  EXPECT_THAT(
      containerArgs(*controller),
      ::testing::IsSupersetOf({"--all-namespaces", "--agent-namespace=tributary-system",
                               "--leader-elect", "--leader-election-id=rel-tributary-controller",
                               "--leader-election-namespace=tributary-system"}));
  const Json* pdb = findObject(objects, "PodDisruptionBudget", "rel-tributary-controller");
  ASSERT_NE(pdb, nullptr);
  EXPECT_EQ((*pdb)["spec"]["minAvailable"], 1);

  const Json* agent = findObject(objects, "DaemonSet", "rel-tributary-agent");
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ(envValue(*agent, "NODE_NAME"),
            R"({"name":"NODE_NAME","valueFrom":{"fieldRef":{"fieldPath":"spec.nodeName"}}})");
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_LEASE_NAMESPACE"), "tributary-system");
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_AGENT_CAPACITY"), "4");
  EXPECT_THAT(envValue(*agent, "TRIBUTARY_DATABASE_URL"), HasSubstr("tributary-db"));
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_DATABASE_PASSWORD_FILE"),
            "/etc/tributary/database/password");
  EXPECT_THAT(containerArgs(*agent), ::testing::Contains("--drain-timeout=60s"));
  EXPECT_GT(podSpec(*agent)["terminationGracePeriodSeconds"].get<int>(), 60);
  EXPECT_EQ((*agent)["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"], 0);
  bool cache_limited = false;
  for (const Json& v : podSpec(*agent)["volumes"]) {
    if (v["name"] == "cache") {
      cache_limited = v["emptyDir"].value("sizeLimit", "") == "10Gi";
    }
    EXPECT_FALSE(v.contains("hostPath")) << v.dump();
  }
  EXPECT_TRUE(cache_limited);
  for (const Json* w : {controller, agent}) {
    expectRestricted(*w);
  }

  // RBAC: cluster scope; Nodes read-only; leases in the release namespace only; the
  // leader-election Lease by name; no wildcard anywhere; secrets only `get`.
  for (const char* kind : {"ClusterRole", "Role"}) {
    for (const Json* role : objectsOf(objects, kind)) {
      for (const Json& rule : (*role)["rules"]) {
        for (const Json& list : {rule["verbs"], rule["resources"], rule["apiGroups"]}) {
          EXPECT_THAT(list.dump(), ::testing::Not(HasSubstr("\"*\""))) << role->dump();
        }
        if (rule["resources"].dump().find("secrets") != std::string::npos) {
          EXPECT_EQ(rule["verbs"], Json::array({"get"})) << role->dump();
        }
      }
    }
  }
  const Json* leases = findObject(objects, "Role", "rel-tributary-controller-leases");
  ASSERT_NE(leases, nullptr);
  EXPECT_EQ((*leases)["metadata"]["namespace"], "tributary-system");
  EXPECT_THAT(
      (*leases)["rules"].dump(),
      HasSubstr(
          R"("resourceNames":["rel-tributary-controller"],"resources":["leases"],"verbs":["get","update"])"));

  // CRDs kept on uninstall; dashboards for the sidecar; no monitoring CRD objects without the
  // Prometheus operator's API.
  for (const Json* crd : objectsOf(objects, "CustomResourceDefinition")) {
    EXPECT_EQ((*crd)["metadata"]["annotations"].value("helm.sh/resource-policy", ""), "keep");
  }
  EXPECT_EQ(objectsOf(objects, "CustomResourceDefinition").size(), 3U);
  const auto dashboards = objectsOf(objects, "ConfigMap");
  ASSERT_EQ(dashboards.size(), 2U);
  for (const Json* cm : dashboards) {
    EXPECT_EQ((*cm)["metadata"]["labels"].value("grafana_dashboard", ""), "1");
  }
  EXPECT_TRUE(objectsOf(objects, "ServiceMonitor").empty());
  EXPECT_TRUE(objectsOf(objects, "PrometheusRule").empty());
  EXPECT_TRUE(objectsOf(objects, "StatefulSet").empty()) << "quickstart is off by default";
}

TEST_F(ChartTest, MonitoringObjectsFollowThePrometheusOperatorsApi) {
  const auto objects = chart_.render(
      with(requiredValues(), {"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
                              "--api-versions", "monitoring.coreos.com/v1/PrometheusRule", "--set",
                              "metrics.prometheusRule.runbookBaseURL=https://runbooks.example/t"}));
  EXPECT_NE(findObject(objects, "ServiceMonitor", "rel-tributary-controller"), nullptr);
  EXPECT_NE(findObject(objects, "PodMonitor", "rel-tributary-agent"), nullptr);
  const Json* rule = findObject(objects, "PrometheusRule", "rel-tributary");
  ASSERT_NE(rule, nullptr);
  // The rules are files/prometheus/alerts.yaml (what promtool tests), only the runbook base
  // replaced.
  auto file = cli::yamlDocumentsToJson(
      readFile(fs::path(chart_.dir()) / "files/prometheus/alerts.yaml"), "alerts.yaml");
  ASSERT_TRUE(file.ok()) << file.status();
  std::string expected = (*file)[0].dump();
  expected = std::regex_replace(
      expected,
      std::regex(
          "https://github.com/tributary-dev/tributary/blob/main/deploy/helm/tributary/runbooks"),
      "https://runbooks.example/t");
  EXPECT_EQ((*rule)["spec"].dump(), expected);
  // false wins over an available API.
  const auto off = chart_.render(
      with(requiredValues(), {"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor", "--set",
                              "metrics.serviceMonitor.enabled=false"}));
  EXPECT_TRUE(objectsOf(off, "ServiceMonitor").empty());
}

TEST_F(ChartTest, NamespaceScopeGivesARolePerNamespaceAndWatchesOnlyThem) {
  const auto objects =
      chart_.render(with(requiredValues(), {"--set", "rbac.scope=namespace", "--set",
                                            "watchNamespaces={team-a,team-b}"}));
  for (const char* ns : {"team-a", "team-b"}) {
    for (const char* who : {"controller", "agent"}) {
      bool found = false;
      for (const Json* role : objectsOf(objects, "Role")) {
        found = found || ((*role)["metadata"]["name"] == std::string("rel-tributary-") + who &&
                          (*role)["metadata"]["namespace"] == ns);
      }
      EXPECT_TRUE(found) << who << " Role in " << ns;
    }
  }
  // Cluster-scoped rights that stay: the agents read Nodes, the helm test pod reads the 3 CRDs.
  std::set<std::string> cluster_roles;
  for (const Json* r : objectsOf(objects, "ClusterRole")) {
    cluster_roles.insert((*r)["metadata"]["name"].get<std::string>());
  }
  EXPECT_EQ(cluster_roles, (std::set<std::string>{"rel-tributary-agent-nodes",
                                                  "rel-tributary-test-tributary-system"}));
  const Json* controller = findObject(objects, "Deployment", "rel-tributary-controller");
  ASSERT_NE(controller, nullptr);
  EXPECT_THAT(containerArgs(*controller), ::testing::Contains("--namespace=team-a,team-b"));
  const Json* agent = findObject(objects, "DaemonSet", "rel-tributary-agent");
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_WATCH_NAMESPACE"), "team-a,team-b");
}

TEST_F(ChartTest, QuickstartBringsPostgresAndRedisAndWiresTheAgentsToThem) {
  const auto objects = chart_.render({"--set", "quickstart.enabled=true"});
  const Json* pg = findObject(objects, "StatefulSet", "rel-tributary-postgres");
  const Json* redis = findObject(objects, "Deployment", "rel-tributary-redis");
  ASSERT_NE(pg, nullptr);
  ASSERT_NE(redis, nullptr);
  expectRestricted(*pg);
  expectRestricted(*redis);
  const Json* secret = findObject(objects, "Secret", "rel-tributary-quickstart");
  ASSERT_NE(secret, nullptr);
  EXPECT_EQ((*secret)["data"]["postgres-password"].get<std::string>().size(), 44U)
      << "32 random characters, base64";
  const Json* agent = findObject(objects, "DaemonSet", "rel-tributary-agent");
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_DATABASE_URL"),
            "postgresql://tributary@rel-tributary-postgres:5432/tributary?sslmode=disable");
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_REDIS_ADDRESS"), "rel-tributary-redis:6379");
}

TEST_F(ChartTest, RedisTlsGivesTheAgentsItsSettingsAndTheSecretsFiles) {
  const auto plain = chart_.render(requiredValues());
  const Json* agent = findObject(plain, "DaemonSet", "rel-tributary-agent");
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_REDIS_TLS"), "");

  const auto objects = chart_.render(
      with(requiredValues(),
           {"--set", "redis.tls.enabled=true", "--set", "redis.tls.serverName=redis.internal",
            "--set", "redis.tls.existingSecret=redis-tls", "--set", "redis.tls.certKey=tls.crt",
            "--set", "redis.tls.keyKey=tls.key"}));
  agent = findObject(objects, "DaemonSet", "rel-tributary-agent");
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_REDIS_TLS"), "on");
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_REDIS_TLS_SERVER_NAME"), "redis.internal");
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_REDIS_TLS_CA_FILE"), "/etc/tributary/redis-tls/ca.crt");
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_REDIS_TLS_CERT_FILE"), "/etc/tributary/redis-tls/tls.crt");
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_REDIS_TLS_KEY_FILE"), "/etc/tributary/redis-tls/tls.key");
  const Json& spec = podSpec(*agent);
  Json volume;
  for (const Json& v : spec["volumes"]) {
    if (v.value("name", "") == "redis-tls") {
      volume = v;
    }
  }
  ASSERT_FALSE(volume.is_null()) << spec["volumes"].dump();
  EXPECT_EQ(volume["secret"]["secretName"], "redis-tls");
  EXPECT_EQ(volume["secret"]["items"],
            Json::parse(R"([{"key": "ca.crt", "path": "ca.crt"}, {"key": "tls.crt", "path": )"
                        R"("tls.crt"}, {"key": "tls.key", "path": "tls.key"}])"));
  bool mounted = false;
  for (const Json& m : spec["containers"][0]["volumeMounts"]) {
    mounted = mounted || (m.value("name", "") == "redis-tls" &&
                          m.value("mountPath", "") == "/etc/tributary/redis-tls");
  }
  EXPECT_TRUE(mounted);

  // No Secret: the image's system roots, nothing mounted.
  const auto roots = chart_.render(with(requiredValues(), {"--set", "redis.tls.enabled=true"}));
  agent = findObject(roots, "DaemonSet", "rel-tributary-agent");
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_REDIS_TLS"), "on");
  EXPECT_EQ(envValue(*agent, "TRIBUTARY_REDIS_TLS_CA_FILE"), "");
}

TEST_F(ChartTest, SchemaRejectsUnknownAndMistypedValuesNamingThem) {
  struct Case {
    std::vector<std::string> flags;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--set", "controller.replica=2"}, "additional properties 'replica' not allowed"},
      {{"--set-string", "controller.replicas=two"},
       "/controller/replicas': got string, want integer"},
      {{"--set", "imagePullPolicy=Sometimes"}, "/imagePullPolicy"},
      {{"--set", "rbac.scope=everywhere"}, "/rbac/scope"},
      {{"--set", "agent.capacity=0"}, "/agent/capacity': minimum: got 0, want 1"},
      {{"--set", "watchNamespaces={Team_A}"}, "/watchNamespaces/0"},
      {{"--set", "redis.address=no-port"}, "/redis/address"},
      {{"--set", "redis.tls.enable=true"}, "additional properties 'enable' not allowed"},
      {{"--set", "controller.leaderElection.leaseDuration=15"},
       "/controller/leaderElection/leaseDuration"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = with({"template", kRelease, chart_.dir()}, requiredValues());
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    const auto r = chart_.helm(args);
    EXPECT_NE(r.exit_code, 0) << c.flags.back();
    EXPECT_THAT(r.output, HasSubstr("values don't meet the specifications of the schema"))
        << c.flags.back();
    EXPECT_THAT(r.output, HasSubstr(c.says)) << c.flags.back();
  }
}

TEST_F(ChartTest, TemplateRefusesCombinationsThatWouldBreakTheOperator) {
  struct Case {
    std::vector<std::string> flags;
    std::string says;
  };
  const std::vector<Case> cases = {
      {with(requiredValues(), {"--set", "rbac.scope=namespace"}),
       "rbac.scope=namespace needs watchNamespaces"},
      {with(requiredValues(), {"--set", "controller.leaderElection.enabled=false"}),
       "needs controller.leaderElection.enabled=true"},
      {with(requiredValues(), {"--set", "agent.terminationGracePeriodSeconds=30"}),
       "must be larger than agent.drainTimeoutSeconds"},
      {{"--set", "redis.address=r:6379"}, "database.existingSecret is required"},
      {with(requiredValues(), {"--set", "agent.cache.type=persistentVolumeClaim"}),
       "needs agent.cache.existingClaim"},
      {with(requiredValues(), {"--set", "redis.tls.enabled=true", "--set",
                               "redis.tls.existingSecret=r", "--set", "redis.tls.certKey=c"}),
       "redis.tls.certKey needs redis.tls.keyKey"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args{"template", kRelease, chart_.dir()};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    const auto r = chart_.helm(args);
    EXPECT_NE(r.exit_code, 0) << c.says;
    EXPECT_THAT(r.output, HasSubstr(c.says));
  }
}

TEST_F(ChartTest, CrdsAreTheRepositorysOwnAndCanBeLeftOut) {
  const auto objects = chart_.render(requiredValues());
  const fs::path crds = fs::path(TRIBUTARY_SOURCE_DIR) / "crds";
  int compared = 0;
  for (const auto& entry : fs::directory_iterator(crds)) {
    if (entry.path().extension() != ".yaml") {
      continue;
    }
    auto source = cli::yamlDocumentsToJson(readFile(entry.path()), entry.path().string());
    ASSERT_TRUE(source.ok()) << source.status();
    Json expected = (*source)[0];
    const Json* rendered = findObject(objects, "CustomResourceDefinition",
                                      expected["metadata"]["name"].get<std::string>());
    ASSERT_NE(rendered, nullptr) << entry.path();
    Json got = *rendered;
    // The chart adds its labels and the keep annotation, nothing else.
    got["metadata"].erase("labels");
    got["metadata"].erase("annotations");
    expected["metadata"].erase("labels");
    expected["metadata"].erase("annotations");
    EXPECT_EQ(got, expected) << entry.path();
    ++compared;
  }
  EXPECT_EQ(compared, 3);
  const auto without = chart_.render(with(requiredValues(), {"--set", "crds.enabled=false"}));
  EXPECT_TRUE(objectsOf(without, "CustomResourceDefinition").empty());
  const auto unkept = chart_.render(with(requiredValues(), {"--set", "crds.keep=false"}));
  for (const Json* crd : objectsOf(unkept, "CustomResourceDefinition")) {
    EXPECT_FALSE((*crd)["metadata"].contains("annotations") &&
                 (*crd)["metadata"]["annotations"].contains("helm.sh/resource-policy"));
  }
}

TEST_F(ChartTest, AlertsPassPromtoolAndEveryAlertHasARunbook) {
  const fs::path dir = fs::path(chart_.dir()) / "files/prometheus";
  const auto check = runTool({tool("promtool"), "check", "rules", (dir / "alerts.yaml").string()});
  EXPECT_TRUE(check.ok()) << check.output;
  // Each alert is shown to fire on the series that should raise it and to stay quiet on the
  // others (alerts_test.yaml).
  const auto test =
      runTool({tool("promtool"), "test", "rules", (dir / "alerts_test.yaml").string()});
  EXPECT_TRUE(test.ok()) << test.output;
  EXPECT_THAT(test.output, HasSubstr("SUCCESS"));

  auto rules = cli::yamlDocumentsToJson(readFile(dir / "alerts.yaml"), "alerts.yaml");
  ASSERT_TRUE(rules.ok());
  const std::string tests = readFile(dir / "alerts_test.yaml");
  int alerts = 0;
  for (const Json& group : (*rules)[0]["groups"]) {
    for (const Json& rule : group["rules"]) {
      const std::string name = rule["alert"];
      ++alerts;
      const std::string url = rule["annotations"]["runbook_url"];
      EXPECT_THAT(url, ::testing::EndsWith("/runbooks/" + name + ".md"));
      EXPECT_TRUE(fs::exists(fs::path(chart_.dir()) / "runbooks" / (name + ".md"))) << name;
      EXPECT_THAT(tests, HasSubstr("alertname: " + name)) << name << " has no promtool test";
      EXPECT_TRUE(rule["labels"].contains("severity")) << name;
    }
  }
  EXPECT_GE(alerts, 10);
}

TEST_F(ChartTest, DashboardsAreTemplatedDescribedAndTheirQueriesParse) {
  std::set<std::string> uids;
  std::ostringstream recording;  // every panel query as a recording rule, for promtool
  recording << "groups:\n  - name: dashboards\n    rules:\n";
  int queries = 0;
  for (const char* file : {"operator.json", "syncs.json"}) {
    const Json d = Json::parse(readFile(fs::path(chart_.dir()) / "files/dashboards" / file));
    EXPECT_TRUE(uids.insert(d["uid"].get<std::string>()).second) << file;
    EXPECT_THAT(d["uid"].get<std::string>(), ::testing::StartsWith("tributary-"));
    EXPECT_EQ(d["templating"]["list"][0]["type"], "datasource") << file;
    std::set<int> ids;
    for (const Json& panel : d["panels"]) {
      const std::string what = std::string(file) + ": " + panel["title"].get<std::string>();
      EXPECT_TRUE(ids.insert(panel["id"].get<int>()).second) << what;
      EXPECT_FALSE(panel.value("description", "").empty()) << what;
      EXPECT_FALSE(panel["fieldConfig"]["defaults"].value("unit", "").empty()) << what;
      EXPECT_EQ(panel["datasource"]["uid"], "${datasource}") << what;
      for (const Json& target : panel["targets"]) {
        std::string expr = target["expr"];
        EXPECT_EQ(target["datasource"]["uid"], "${datasource}") << what;
        // Rates use Grafana's $__rate_interval (or the panel's whole $__range), never a fixed
        // window that breaks with another scrape interval.
        static const std::regex kWindow(R"((rate|increase)\([^\[]*\[([^\]]*)\])");
        for (std::sregex_iterator m(expr.begin(), expr.end(), kWindow); m != std::sregex_iterator();
             ++m) {
          EXPECT_THAT((*m)[2].str(), ::testing::AnyOf("$__rate_interval", "$__range")) << what;
        }
        expr = std::regex_replace(expr, std::regex(R"(\$__rate_interval|\$__range)"), "5m");
        expr = std::regex_replace(expr, std::regex(R"(\$namespace)"), ".*");
        recording << "      - record: dashboard:query" << queries++
                  << "\n        expr: " << Json(expr).dump() << "\n";
      }
    }
  }
  EXPECT_GE(queries, 30);
  harness::TempDir tmp("dashboards");
  const std::string rules = tmp.write("queries.yaml", recording.str());
  const auto check = runTool({tool("promtool"), "check", "rules", rules});
  EXPECT_TRUE(check.ok()) << check.output << "\n" << recording.str();
  // The ConfigMaps carry the files unchanged.
  const auto objects = chart_.render(requiredValues());
  const Json* cm = findObject(objects, "ConfigMap", "rel-tributary-dashboard-syncs");
  ASSERT_NE(cm, nullptr);
  EXPECT_EQ(Json::parse((*cm)["data"]["syncs.json"].get<std::string>()),
            Json::parse(readFile(fs::path(chart_.dir()) / "files/dashboards/syncs.json")));
}

}  // namespace
}  // namespace tributary::testing
