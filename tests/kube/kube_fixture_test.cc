// The kube fixture itself: a real etcd + kube-apiserver with our CRDs, reachable with the admin
// kubeconfig, client certificates and static tokens, RBAC on, and data that survives apiserver
// restarts and crashes.

#include "tributary/testing/kube.h"
#include "tributary/testing/probes.h"

#include "absl/strings/str_cat.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace tributary::harness {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class KubeFixtureTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<KubeApiServer*> server = KubeApiServer::sharedOrError();
    ASSERT_TRUE(server.ok()) << server.status();
  }
  KubeApiServer& kube() { return KubeApiServer::shared(); }
};

std::string readAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST_F(KubeFixtureTest, ServesReadyzOverLoopbackWithGeneratedCertificates) {
  EXPECT_THAT(kube().url(), ::testing::StartsWith("https://127.0.0.1:"));
  const KubectlResult ready = kube().runKubectl({"get", "--raw", "/readyz"});
  ASSERT_TRUE(ready.ok()) << ready.output;
  EXPECT_EQ(ready.output, "ok");

  for (const std::string& file : {kube().caFile(), kube().clientCertFile(), kube().clientKeyFile(),
                                  kube().kubeconfigPath(), kube().tokenKubeconfigPath()}) {
    EXPECT_TRUE(std::filesystem::is_regular_file(file)) << file;
  }
  const std::string kubeconfig = readAll(kube().kubeconfigPath());
  EXPECT_THAT(kubeconfig, HasSubstr("server: " + kube().url()));
  EXPECT_THAT(kubeconfig, HasSubstr("client-certificate-data: "));
  EXPECT_THAT(kubeconfig, HasSubstr("certificate-authority-data: "));

  const std::map<std::string, long> timings = kube().startupTimings();
  ASSERT_TRUE(timings.count("total"));
  std::printf("startup: total %ld ms, etcd %ld ms, apiserver %ld ms, crds %ld ms\n",
              timings.at("total"), timings.at("etcd"), timings.at("apiserver"), timings.at("crds"));
}

TEST_F(KubeFixtureTest, ServesVersion134AndUsesKubectl134) {
  const KubectlResult version = kube().runKubectl({"version", "-o", "json"});
  ASSERT_TRUE(version.ok()) << version.output;
  EXPECT_THAT(version.output, HasSubstr(R"("gitVersion": "v1.34.)"));
  EXPECT_THAT(version.output, Not(HasSubstr("v0.0.0")));
  EXPECT_THAT(version.output, HasSubstr(R"("minor": "34")"));
}

TEST_F(KubeFixtureTest, AdminIsSystemMastersByCertificateAndByToken) {
  const KubectlResult whoami = kube().runKubectl(
      {"auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"});
  ASSERT_TRUE(whoami.ok()) << whoami.output;
  EXPECT_THAT(whoami.output, HasSubstr("admin"));
  EXPECT_THAT(whoami.output, HasSubstr("system:masters"));

  const KubectlResult by_token =
      kube().runKubectl({"--kubeconfig", kube().tokenKubeconfigPath(), "auth", "can-i", "*", "*"});
  EXPECT_TRUE(by_token.ok()) << by_token.output;
  EXPECT_THAT(by_token.output, HasSubstr("yes"));
}

TEST_F(KubeFixtureTest, RbacDeniesUnboundTokenUsersUntilBound) {
  const std::string token = kube().bearerTokenFor("alice");
  ASSERT_FALSE(token.empty());
  EXPECT_TRUE(kube().bearerTokenFor("nobody").empty());
  ASSERT_TRUE(kube().createNamespace("rbac-test").ok());

  // --kubeconfig=/dev/null: the admin kubeconfig's client certificate would be sent too.
  auto asAliceDirect = [&](std::vector<std::string> args) {
    std::vector<std::string> full = {"--kubeconfig=/dev/null",
                                     "--server",
                                     kube().url(),
                                     "--certificate-authority",
                                     kube().caFile(),
                                     "--token",
                                     token,
                                     "-n",
                                     "rbac-test"};
    full.insert(full.end(), args.begin(), args.end());
    return kube().runKubectl(full);
  };

  const KubectlResult denied = asAliceDirect({"get", "syncjobs"});
  EXPECT_FALSE(denied.ok());
  EXPECT_THAT(denied.output,
              HasSubstr("syncjobs.tributary.dev is forbidden: User \"alice\" cannot list resource "
                        "\"syncjobs\" in API group \"tributary.dev\" in the namespace "
                        "\"rbac-test\""));

  ASSERT_TRUE(kube()
                  .kubectlApply(R"(
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: syncjob-reader, namespace: rbac-test}
rules:
- apiGroups: [tributary.dev]
  resources: [syncjobs]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-reads-syncjobs, namespace: rbac-test}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: syncjob-reader}
subjects:
- {kind: User, apiGroup: rbac.authorization.k8s.io, name: alice}
)")
                  .ok());
  EXPECT_TRUE(eventually(
      [&] {
        return asAliceDirect({"get", "syncjobs"}).ok();
      },
      std::chrono::seconds(10)));
  const KubectlResult still_denied = asAliceDirect({"get", "syncruns"});
  EXPECT_FALSE(still_denied.ok());
  EXPECT_THAT(still_denied.output, HasSubstr("forbidden"));
}

TEST_F(KubeFixtureTest, IssuesServiceAccountTokens) {
  absl::StatusOr<std::string> token = kube().serviceAccountToken("sa-test", "robot");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(std::count(token->begin(), token->end(), '.'), 2) << "not a JWT: " << *token;
  const KubectlResult whoami =
      kube().runKubectl({"--kubeconfig=/dev/null", "--server", kube().url(),
                         "--certificate-authority", kube().caFile(), "--token", *token, "auth",
                         "whoami", "-o", "jsonpath={.status.userInfo.username}"});
  ASSERT_TRUE(whoami.ok()) << whoami.output;
  EXPECT_EQ(whoami.output, "system:serviceaccount:sa-test:robot");
  // A second token for the same account works too (the account already exists).
  EXPECT_TRUE(kube().serviceAccountToken("sa-test", "robot", std::chrono::seconds(600)).ok());
}

TEST_F(KubeFixtureTest, RestartAndCrashKeepDataAndPort) {
  ASSERT_TRUE(kube().createNamespace("restart-test").ok());
  std::string output;
  ASSERT_TRUE(kube()
                  .kubectlApply(R"(
apiVersion: tributary.dev/v1alpha1
kind: Connector
metadata: {name: survives, namespace: restart-test}
spec: {source: Local, uri: /opt/connector, command: ./run}
)",
                                &output)
                  .ok())
      << output;
  const std::string url = kube().url();
  const pid_t before = kube().apiserverPid();

  const auto begin = std::chrono::steady_clock::now();
  kube().restartApiServer();
  const auto restart_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - begin)
                              .count();
  std::printf("apiserver restart (SIGTERM → ready): %lld ms\n", static_cast<long long>(restart_ms));
  EXPECT_NE(kube().apiserverPid(), before);
  EXPECT_EQ(kube().url(), url);
  KubectlResult got = kube().runKubectl(
      {"get", "connector", "survives", "-n", "restart-test", "-o", "jsonpath={.spec.uri}"});
  ASSERT_TRUE(got.ok()) << got.output;
  EXPECT_EQ(got.output, "/opt/connector");

  kube().killApiServer();
  EXPECT_FALSE(kube().running());
  EXPECT_FALSE(kube().runKubectl({"get", "--raw", "/readyz"}, {}, std::chrono::seconds(5)).ok());
  kube().startApiServer();
  got = kube().runKubectl(
      {"get", "conn", "survives", "-n", "restart-test", "-o", "jsonpath={.spec.command}"});
  ASSERT_TRUE(got.ok()) << got.output;
  EXPECT_EQ(got.output, "./run");
  // The CRDs are served again, not only stored.
  const KubectlResult established = kube().runKubectl(
      {"wait", "--for=condition=Established", "--timeout=30s", "crd/syncjobs.tributary.dev"});
  EXPECT_TRUE(established.ok()) << established.output;
}

TEST_F(KubeFixtureTest, SecondInstanceIsIndependent) {
  KubeOptions options;
  options.apply_crds = false;
  KubeApiServer other(options);
  ASSERT_TRUE(other.start().ok());
  EXPECT_NE(other.url(), kube().url());
  EXPECT_NE(other.etcdUrl(), kube().etcdUrl());
  // No CRDs there.
  const KubectlResult crds = other.runKubectl({"get", "crd", "-o", "name"});
  ASSERT_TRUE(crds.ok()) << crds.output;
  EXPECT_THAT(crds.output, Not(HasSubstr("tributary.dev")));
  const std::string dir = other.dir();
  ASSERT_TRUE(other.stop().ok());
  EXPECT_FALSE(other.running());
  // Same data, same ports after a full stop/start.
  ASSERT_TRUE(other.start().ok());
  EXPECT_TRUE(other.runKubectl({"get", "--raw", "/readyz"}).ok());
}

}  // namespace
}  // namespace tributary::harness
