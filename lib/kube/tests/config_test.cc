// Config loading from real files: kubeconfig fields, relative paths, contexts, $KUBECONFIG merge,
// precedence, in-cluster service account, error messages, and token re-reading on rotation.

#include "tributary/kube/config.h"

#include "tributary/kube/client.h"
#include "tributary/testing/temp_dir.h"

#include "../src/util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <mutex>

namespace tributary::kube {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using tributary::harness::TempDir;

std::string b64(std::string_view s) { return internal::base64Encode(s); }

constexpr std::string_view kCa = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
constexpr std::string_view kCert = "-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n";
constexpr std::string_view kKey = "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n";

std::string twoContexts(const std::string& ca_line, const std::string& user_lines) {
  return "apiVersion: v1\n"
         "kind: Config\n"
         "current-context: dev\n"
         "clusters:\n"
         "- name: dev-cluster\n"
         "  cluster:\n"
         "    server: https://127.0.0.1:6443/\n" +
         ca_line +
         "- name: prod-cluster\n"
         "  cluster:\n"
         "    server: https://prod.example:443\n"
         "    insecure-skip-tls-verify: true\n"
         "users:\n"
         "- name: dev-user\n"
         "  user:\n" +
         user_lines +
         "- name: prod-user\n"
         "  user:\n"
         "    token: prod-token\n"
         "contexts:\n"
         "- name: dev\n"
         "  context: {cluster: dev-cluster, user: dev-user, namespace: team-a}\n"
         "- name: prod\n"
         "  context:\n"
         "    cluster: prod-cluster\n"
         "    user: prod-user\n";
}

TEST(KubeConfig, InlineDataCurrentContextAndNamespace) {
  TempDir dir;
  const std::string path =
      dir.write("config", twoContexts("    certificate-authority-data: " + b64(kCa) + "\n",
                                      "    client-certificate-data: " + b64(kCert) +
                                          "\n    client-key-data: " + b64(kKey) + "\n"));
  auto config = loadKubeconfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server, "https://127.0.0.1:6443");  // trailing slash removed
  EXPECT_EQ(config->ca_pem, kCa);
  EXPECT_EQ(config->client_cert_pem, kCert);
  EXPECT_EQ(config->client_key_pem, kKey);
  EXPECT_EQ(config->default_namespace, "team-a");
  EXPECT_FALSE(config->insecure_skip_tls_verify);
  EXPECT_THAT(config->origin, HasSubstr(path));
  EXPECT_THAT(config->origin, HasSubstr("context dev"));
  // describe() names the auth kind, never the secret.
  EXPECT_THAT(config->describe(), HasSubstr("client certificate"));
  EXPECT_THAT(config->describe(), Not(HasSubstr("KEY")));
}

TEST(KubeConfig, ExplicitContextTokenAndInsecure) {
  TempDir dir;
  const std::string path = dir.write("config", twoContexts("", "    token: dev-token\n"));
  auto config = loadKubeconfig(path, "prod");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server, "https://prod.example:443");
  EXPECT_EQ(config->bearer_token, "prod-token");
  EXPECT_TRUE(config->insecure_skip_tls_verify);
  EXPECT_EQ(config->default_namespace, "default");
  EXPECT_THAT(config->describe(), Not(HasSubstr("prod-token")));
  EXPECT_THAT(config->describe(), HasSubstr("DISABLED"));
}

TEST(KubeConfig, RelativeFilesResolveAgainstTheKubeconfigDirectory) {
  TempDir dir;
  dir.write("kube/pki/ca.crt", kCa);
  dir.write("kube/pki/client.crt", kCert);
  dir.write("kube/pki/client.key", kKey);
  dir.write("kube/token", "file-token\n");
  const std::string path =
      dir.write("kube/config", twoContexts("    certificate-authority: pki/ca.crt\n",
                                           "    client-certificate: pki/client.crt\n"
                                           "    client-key: ./pki/client.key\n"
                                           "    tokenFile: token\n"));
  auto config = loadKubeconfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->ca_pem, kCa);
  EXPECT_EQ(config->client_cert_pem, kCert);
  EXPECT_EQ(config->client_key_pem, kKey);
  EXPECT_EQ(config->token_file, (dir.path() / "kube/token").string());
}

TEST(KubeConfig, ErrorsNameTheFileTheFieldAndWhatToDo) {
  TempDir dir;
  {
    const std::string path =
        dir.write("nocurrent",
                  "apiVersion: v1\nkind: Config\ncontexts:\n- name: a\n  context: "
                  "{cluster: c}\n");
    auto config = loadKubeconfig(path);
    ASSERT_FALSE(config.ok());
    EXPECT_THAT(config.status().message(), HasSubstr("no current-context"));
    EXPECT_THAT(config.status().message(), HasSubstr(path));
    EXPECT_THAT(config.status().message(), HasSubstr("\"a\""));
  }
  {
    const std::string path = dir.write("c1", twoContexts("", "    token: t\n"));
    auto config = loadKubeconfig(path, "staging");
    ASSERT_FALSE(config.ok());
    EXPECT_TRUE(absl::IsNotFound(config.status()));
    EXPECT_THAT(config.status().message(), HasSubstr("context \"staging\" is not defined"));
    EXPECT_THAT(config.status().message(), HasSubstr("\"dev\", \"prod\""));
  }
  {
    const std::string path = dir.write(
        "c2", twoContexts("    certificate-authority: missing/ca.crt\n", "    token: t\n"));
    auto config = loadKubeconfig(path);
    ASSERT_FALSE(config.ok());
    EXPECT_THAT(config.status().message(),
                HasSubstr("clusters[name=dev-cluster].cluster.certificate-authority in " + path));
    EXPECT_THAT(config.status().message(), HasSubstr("missing/ca.crt"));
    EXPECT_THAT(config.status().message(), HasSubstr("certificate-authority-data"));
  }
  {
    const std::string path = dir.write(
        "c3", twoContexts("",
                          "    client-certificate-data: '%%%not base64'\n    client-key-data: "
                          "eA==\n"));
    auto config = loadKubeconfig(path);
    ASSERT_FALSE(config.ok());
    EXPECT_THAT(config.status().message(),
                HasSubstr("users[name=dev-user].user.client-certificate-data"));
    EXPECT_THAT(config.status().message(), HasSubstr("not valid base64"));
  }
  {
    const std::string path =
        dir.write("c4", twoContexts("",
                                    "    exec:\n      command: aws\n      apiVersion: "
                                    "client.authentication.k8s.io/v1\n"));
    auto config = loadKubeconfig(path);
    ASSERT_FALSE(config.ok());
    EXPECT_THAT(config.status().message(), HasSubstr("users[name=dev-user].user.exec"));
    EXPECT_THAT(config.status().message(), HasSubstr("not supported"));
  }
  {
    const std::string path =
        dir.write("c5", twoContexts("", "    client-certificate-data: " + b64(kCert) + "\n"));
    auto config = loadKubeconfig(path);
    ASSERT_FALSE(config.ok());
    EXPECT_THAT(config.status().message(), HasSubstr("no client-key"));
  }
  {
    const std::string path = dir.write("c6", "clusters: [\n");
    auto config = loadKubeconfig(path);
    ASSERT_FALSE(config.ok());
    EXPECT_THAT(config.status().message(), HasSubstr(path));
    EXPECT_THAT(config.status().message(), HasSubstr("line"));
  }
  {
    auto config = loadKubeconfig((dir.path() / "does-not-exist").string());
    ASSERT_FALSE(config.ok());
    EXPECT_TRUE(absl::IsNotFound(config.status()));
    EXPECT_THAT(config.status().message(), HasSubstr("does-not-exist"));
  }
  {
    const std::string path = dir.write(
        "c7", "current-context: x\ncontexts:\n- name: x\n  context: {cluster: gone, user: u}\n");
    auto config = loadKubeconfig(path);
    ASSERT_FALSE(config.ok());
    EXPECT_THAT(config.status().message(), HasSubstr("refers to cluster \"gone\""));
  }
  {
    const std::string path =
        dir.write("c8",
                  "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'ftp://h'}\n"
                  "contexts:\n- name: x\n  context: {cluster: c}\n");
    auto config = loadKubeconfig(path);
    ASSERT_FALSE(config.ok());
    EXPECT_THAT(config.status().message(), HasSubstr("must start with https://"));
  }
}

TEST(KubeConfig, KubeconfigListMergesFirstWins) {
  TempDir dir;
  // First file: current-context and a "shared" cluster; second file: the user, another
  // definition of "shared" (ignored) and its own current-context (ignored).
  const std::string first = dir.write(
      "a",
      "current-context: ctx\nclusters:\n- name: shared\n  cluster: {server: 'https://a:1'}\n"
      "contexts:\n- name: ctx\n  context: {cluster: shared, user: u2, namespace: from-a}\n");
  const std::string second = dir.write(
      "b",
      "current-context: other\nclusters:\n- name: shared\n  cluster: {server: 'https://b:2'}\n"
      "users:\n- name: u2\n  user: {token: tok-b}\n");
  LoadOptions options;
  options.kubeconfig_env = first + ":" + (dir.path() / "missing").string() + ":" + second;
  options.service_host = "";
  options.home = dir.path().string();
  auto config = loadConfig(options);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server, "https://a:1");
  EXPECT_EQ(config->bearer_token, "tok-b");
  EXPECT_EQ(config->default_namespace, "from-a");

  options.kubeconfig_env = (dir.path() / "missing").string();
  auto none = loadConfig(options);
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("KUBECONFIG"));
}

TEST(KubeConfig, PrecedenceExplicitThenEnvThenInClusterThenHome) {
  TempDir dir;
  const auto one = [&](const std::string& name, const std::string& server) {
    return dir.write(name, "current-context: c\nclusters:\n- name: k\n  cluster: {server: '" +
                               server + "'}\ncontexts:\n- name: c\n  context: {cluster: k}\n");
  };
  const std::string explicit_path = one("explicit", "https://explicit:1");
  const std::string env_path = one("env", "https://env:1");
  one("home/.kube/config", "https://home:1");
  dir.write("sa/token", "sa-token");
  dir.write("sa/ca.crt", kCa);
  dir.write("sa/namespace", "pod-ns\n");

  LoadOptions options;
  options.kubeconfig = explicit_path;
  options.kubeconfig_env = env_path;
  options.service_host = "10.0.0.1";
  options.service_port = "443";
  options.service_account_dir = (dir.path() / "sa").string();
  options.home = (dir.path() / "home").string();
  EXPECT_EQ(loadConfig(options)->server, "https://explicit:1");
  options.kubeconfig.clear();
  EXPECT_EQ(loadConfig(options)->server, "https://env:1");
  options.kubeconfig_env = "";
  auto in_cluster = loadConfig(options);
  ASSERT_TRUE(in_cluster.ok()) << in_cluster.status();
  EXPECT_EQ(in_cluster->server, "https://10.0.0.1:443");
  EXPECT_EQ(in_cluster->default_namespace, "pod-ns");
  EXPECT_EQ(in_cluster->ca_pem, kCa);
  EXPECT_EQ(in_cluster->token_file, (dir.path() / "sa/token").string());
  options.service_host = "";
  EXPECT_EQ(loadConfig(options)->server, "https://home:1");
  options.home = (dir.path() / "nohome").string();
  auto nothing = loadConfig(options);
  ASSERT_FALSE(nothing.ok());
  EXPECT_THAT(nothing.status().message(), HasSubstr("--kubeconfig"));
}

TEST(KubeConfig, InClusterIpv6AndMissingToken) {
  TempDir dir;
  dir.write("sa/token", "t");
  dir.write("sa/ca.crt", kCa);
  LoadOptions options;
  options.service_host = "fd00::1";
  options.service_port = "6443";
  options.service_account_dir = (dir.path() / "sa").string();
  auto config = inClusterConfig(options);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server, "https://[fd00::1]:6443");
  EXPECT_EQ(config->default_namespace, "default");

  options.service_account_dir = (dir.path() / "nosa").string();
  auto missing = inClusterConfig(options);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("automountServiceAccountToken"));
}

// A Transport that records requests and answers 401 to tokens other than `valid`.
class RecordingTransport : public Transport {
 public:
  absl::StatusOr<HttpResponse> request(const HttpRequest& request, std::stop_token) override {
    std::lock_guard lock(mu);
    std::string auth;
    for (const auto& [k, v] : request.headers) {
      if (k == "Authorization") {
        auth = v;
      }
    }
    seen.push_back(auth);
    HttpResponse response;
    response.status = auth == "Bearer " + valid ? 200 : 401;
    response.body =
        response.status == 200
            ? R"({"kind":"Namespace","metadata":{"name":"x"}})"
            : R"({"kind":"Status","message":"Unauthorized","reason":"Unauthorized","code":401})";
    return response;
  }
  absl::StatusOr<StreamResult> stream(const HttpRequest&,
                                      const std::function<bool(std::string_view)>&,
                                      std::stop_token) override {
    return absl::UnimplementedError("no streams");
  }
  std::mutex mu;
  std::string valid;
  std::vector<std::string> seen;
};

TEST(KubeConfig, TokenFileIsReadAgainAfterRotation) {
  TempDir dir;
  const std::string token_file = dir.write("token", "old-token\n");
  Config config;
  config.server = "https://127.0.0.1:1";
  config.token_file = token_file;
  config.token_file_refresh = std::chrono::hours(1);  // only a 401 makes it re-read
  auto transport = std::make_shared<RecordingTransport>();
  transport->valid = "old-token";
  auto client = Client::create(config, ClientOptions{transport, {}});
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->get(resources::namespace_(), "", "x").ok());

  // The kubelet rotates the token; the server stops accepting the old one.
  dir.write("token", "new-token\n");
  transport->valid = "new-token";
  auto after = (*client)->get(resources::namespace_(), "", "x");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_THAT(transport->seen,
              ::testing::ElementsAre("Bearer old-token", "Bearer old-token", "Bearer new-token"));

  // Periodic re-read without any 401.
  config.token_file_refresh = std::chrono::milliseconds(0);
  auto periodic = Client::create(config, ClientOptions{transport, {}});
  ASSERT_TRUE(periodic.ok());
  dir.write("token", "third-token\n");
  transport->valid = "third-token";
  transport->seen.clear();
  ASSERT_TRUE((*periodic)->get(resources::namespace_(), "", "x").ok());
  EXPECT_THAT(transport->seen, ::testing::ElementsAre("Bearer third-token"));
}

TEST(KubeConfig, StatusErrorsAreParsedAndMapped) {
  auto transport = std::make_shared<RecordingTransport>();
  transport->valid = "nope";
  Config config;
  config.server = "https://127.0.0.1:1";
  config.bearer_token = "wrong";
  auto client = Client::create(config, ClientOptions{transport, {}});
  ASSERT_TRUE(client.ok());
  auto result = (*client)->get(resources::syncJob(), "ns1", "job1");
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::IsUnauthenticated(result.status()));
  EXPECT_EQ(httpCode(result.status()), 401);
  EXPECT_EQ(statusReason(result.status()), "Unauthorized");
  EXPECT_THAT(result.status().message(),
              HasSubstr("get syncjobs.tributary.dev ns1/job1: Unauthorized (HTTP 401"));
}

TEST(KubeConfig, TransportRejectsBadPem) {
  Config config;
  config.server = "https://127.0.0.1:1";
  config.origin = "kubeconfig /x, context y";
  config.ca_pem = "not a pem";
  auto transport = makeCppRestTransport(config);
  ASSERT_FALSE(transport.ok());
  EXPECT_THAT(transport.status().message(), HasSubstr("kubeconfig /x, context y"));
  config.ca_pem.clear();
  config.client_cert_pem = std::string(kCert);
  config.client_key_pem = std::string(kKey);
  EXPECT_FALSE(makeCppRestTransport(config).ok());
}

TEST(KubeYaml, ScalarsAnchorsAndFlowStyles) {
  auto doc = internal::parseYaml(
      "a: &x {b: 'true', c: true, d: ~, e: [1, two]}\nf: *x\ng: |\n  line1\n  line2\n");
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ((*doc)["a"]["b"], "true");
  EXPECT_EQ((*doc)["a"]["c"], true);
  EXPECT_TRUE((*doc)["a"]["d"].is_null());
  EXPECT_EQ((*doc)["a"]["e"][1], "two");
  EXPECT_EQ((*doc)["f"], (*doc)["a"]);
  EXPECT_EQ((*doc)["g"], "line1\nline2\n");
}

TEST(KubeYaml, Base64RoundTrip) {
  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    auto decoded = internal::base64Decode(internal::base64Encode(s));
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, s);
  }
  EXPECT_FALSE(internal::base64Decode("ab$c").ok());
}

}  // namespace
}  // namespace tributary::kube
