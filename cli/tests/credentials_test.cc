// Unit tests of how a connector gets its credentials: the Connector manifest's spec.env (both
// forms), spec.envFrom and spec.files; Secret resolution from the three local places; the
// env-file and --env formats; the run's private directory; the host's note on dropped
// credential-like variables.
#include "credentials.h"

#include "tributary/plugin_host/plugin_host.h"

#include "cli_test_support.h"
#include "manifest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>

namespace tributary::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

const std::string kHead =
    "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: c\nspec:\n"
    "  source: Local\n  uri: /opt/c\n  command: ./c\n";

absl::StatusOr<Manifests> parse(const std::string& spec_tail) {
  return parseManifests(kHead + spec_tail, "c.yaml", "default");
}

// Sets a variable for the test's duration.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const std::string& value) : name_(std::move(name)) {
    ::setenv(name_.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() { ::unsetenv(name_.c_str()); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
};

TEST(ConnectorEnvManifest, PodStyleListSplitsPlainValuesFromSecretReferences) {
  auto m = parse(
      "  env:\n"
      "    - name: AWS_REGION\n      value: eu-west-3\n"
      "    - name: EMPTY\n"
      "    - name: AWS_SECRET_ACCESS_KEY\n      valueFrom:\n        secretKeyRef:\n"
      "          name: aws\n          key: secret-access-key\n"
      "    - name: AWS_SESSION_TOKEN\n      valueFrom:\n        secretKeyRef: "
      "{name: aws, key: session-token, optional: true}\n");
  ASSERT_TRUE(m.ok()) << m.status();
  const ConnectorManifest& c = m->connectors.at(0);
  // Plain values are the installer's (install commands, install hash); Secrets are not.
  EXPECT_THAT(c.spec.env, UnorderedElementsAre(Pair("AWS_REGION", "eu-west-3"), Pair("EMPTY", "")));
  ASSERT_EQ(c.secret_env.size(), 2U);
  EXPECT_EQ(c.secret_env[0].name, "AWS_SECRET_ACCESS_KEY");
  EXPECT_EQ(c.secret_env[0].ref.name, "aws");
  EXPECT_EQ(c.secret_env[0].ref.key, "secret-access-key");
  EXPECT_FALSE(c.secret_env[0].ref.optional);
  EXPECT_EQ(c.secret_env[0].path, "spec.env[2].valueFrom.secretKeyRef");
  EXPECT_TRUE(c.secret_env[1].ref.optional);
}

TEST(ConnectorEnvManifest, OlderMappingFormIsStillAccepted) {
  auto m = parse("  env:\n    GOFLAGS: -mod=readonly\n    MODE: normal\n");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT(m->connectors.at(0).spec.env,
              UnorderedElementsAre(Pair("GOFLAGS", "-mod=readonly"), Pair("MODE", "normal")));
  EXPECT_THAT(m->connectors.at(0).secret_env, IsEmpty());
}

TEST(ConnectorEnvManifest, EnvFromAndFiles) {
  auto m = parse(
      "  envFrom:\n    - secretRef: {name: aws}\n      prefix: AWS_\n"
      "    - secretRef: {name: more, optional: true}\n"
      "  files:\n    - secretRef: {name: gcp}\n      items:\n"
      "        - key: key.json\n          path: gcp/key.json\n"
      "          env: GOOGLE_APPLICATION_CREDENTIALS\n"
      "        - key: ca.pem\n");
  ASSERT_TRUE(m.ok()) << m.status();
  const ConnectorManifest& c = m->connectors.at(0);
  ASSERT_EQ(c.env_from.size(), 2U);
  EXPECT_EQ(c.env_from[0].secret, "aws");
  EXPECT_EQ(c.env_from[0].prefix, "AWS_");
  EXPECT_FALSE(c.env_from[0].optional);
  EXPECT_TRUE(c.env_from[1].optional);
  ASSERT_EQ(c.files.size(), 1U);
  ASSERT_EQ(c.files[0].items.size(), 2U);
  EXPECT_EQ(c.files[0].items[0].path, "gcp/key.json");
  EXPECT_EQ(c.files[0].items[0].env, "GOOGLE_APPLICATION_CREDENTIALS");
  EXPECT_EQ(c.files[0].items[1].path, "ca.pem");  // Absent path: the key.
  EXPECT_THAT(c.spec.env, IsEmpty());
}

struct BadCase {
  std::string spec;
  std::string message;
};

// ctest names the cases after the start of their message (field path and what).
void PrintTo(const BadCase& c, std::ostream* os) {
  std::string name;
  for (const char ch : c.message.substr(0, 48)) {
    const bool keep = std::isalnum(static_cast<unsigned char>(ch)) != 0;
    if (keep || (!name.empty() && name.back() != '_')) {
      name.push_back(keep ? ch : '_');
    }
  }
  *os << name;
}

class BadConnectorEnv : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConnectorEnv, IsRejectedWithTheFieldPath) {
  auto m = parse(GetParam().spec);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("c.yaml: document 1 (Connector default/c): " + GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadConnectorEnv,
    ::testing::Values(
        BadCase{"  env: [{name: A, value: x, valueFrom: {secretKeyRef: {name: s, key: k}}}]\n",
                "spec.env[0]: give value or valueFrom, not both"},
        BadCase{"  env: [{name: A, value: x}, {name: A, value: y}]\n",
                "spec.env[1].name: `A` is set more than once in spec.env"},
        BadCase{"  env: [{name: 1A, value: x}]\n",
                "spec.env[0].name: `1A` is not an environment variable name"},
        BadCase{"  env: [{value: x}]\n", "spec.env[0].name: required field is missing"},
        BadCase{"  env: [{name: A, value: 8080}]\n",
                "spec.env[0].value: must be a string, got `8080` (quote it)"},
        BadCase{"  env: [{name: A, valueFrom: {configMapKeyRef: {name: m, key: k}}}]\n",
                "spec.env[0].valueFrom.configMapKeyRef: not supported"},
        BadCase{"  env: [{name: A, valueFrom: {secretKeyRef: {name: s}}}]\n",
                "spec.env[0].valueFrom.secretKeyRef.key: required field is missing"},
        BadCase{"  env: [{name: A, valueFrom: {secretKeyRef: {name: S_x, key: k}}}]\n",
                "spec.env[0].valueFrom.secretKeyRef.name: `S_x` is not a valid Secret name"},
        BadCase{"  env: just-a-string\n", "spec.env: must be a list of {name, value}"},
        BadCase{"  envFrom: [{prefix: A_}]\n",
                "spec.envFrom[0].secretRef: required field is missing"},
        BadCase{"  envFrom: [{secretRef: {name: s}, prefix: 1A}]\n",
                "spec.envFrom[0].prefix: `1A` is not a valid variable name prefix"},
        BadCase{"  envFrom: [{secretRef: {name: s, key: k}}]\n",
                "spec.envFrom[0].secretRef.key: unknown field"},
        BadCase{"  files: [{secretRef: {name: s}}]\n",
                "spec.files[0].items: required field is missing"},
        BadCase{"  files: [{secretRef: {name: s}, items: [{key: k, path: ../../etc/x}]}]\n",
                "spec.files[0].items[0].path: `../../etc/x` must be a relative path"},
        BadCase{"  files: [{secretRef: {name: s}, items: [{key: k, path: /etc/x}]}]\n",
                "spec.files[0].items[0].path: `/etc/x` must be a relative path"},
        BadCase{"  files: [{secretRef: {name: s}, items: [{key: a, path: x}, {key: b, path: "
                "x}]}]\n",
                "spec.files[0].items[1].path: `x` is written more than once"},
        BadCase{"  env: [{name: CREDS, value: x}]\n  files: [{secretRef: {name: s}, items: "
                "[{key: k, env: CREDS}]}]\n",
                "spec.files[0].items[0].env: `CREDS` is also set by spec.env"},
        BadCase{"  envs: []\n", "spec.envs: unknown field"}));

// ---- Secret resolution: manifests, --secret-dir, TRIBUTARY_SECRET_* ----

ConnectorManifest connectorWith(const std::string& spec_tail, Manifests& all,
                                const std::string& secrets_yaml = "") {
  auto m = parseManifests(kHead + spec_tail + secrets_yaml, "c.yaml", "default");
  EXPECT_TRUE(m.ok()) << m.status();
  all = m.ok() ? *m : Manifests{};
  return all.connectors.empty() ? ConnectorManifest{} : all.connectors.front();
}

TEST(ResolveCredentials, FromTheThreePlacesWithPodPrecedence) {
  const cli_test::TempDir dir;
  dir.write("extra/REGION", "from-dir");
  dir.write("extra/A", "from-envfrom");
  dir.write("extra/..data", "skipped");
  dir.write("gcp/key.json", R"({"type":"service_account"})");
  const ScopedEnv var("TRIBUTARY_SECRET_TOKENS_API_TOKEN", "from-variable");
  Manifests all;
  const ConnectorManifest c = connectorWith(
      "  env:\n    - name: A\n      value: plain\n"
      "    - name: AWS_SECRET_ACCESS_KEY\n      valueFrom: {secretKeyRef: {name: aws, key: "
      "secret}}\n"
      "    - name: API_TOKEN\n      valueFrom: {secretKeyRef: {name: tokens, key: api-token}}\n"
      "    - name: MAYBE\n      valueFrom: {secretKeyRef: {name: none, key: k, optional: "
      "true}}\n"
      "  envFrom:\n    - secretRef: {name: extra}\n    - secretRef: {name: gone, optional: "
      "true}\n"
      "  files:\n    - secretRef: {name: gcp}\n      items: [{key: key.json, env: KEY_FILE}]\n",
      all,
      "---\napiVersion: v1\nkind: Secret\nmetadata: {name: aws}\nstringData: {secret: "
      "from-manifest}\n");
  auto creds = resolveCredentials(c, LocalSecrets(all, dir.path()));
  ASSERT_TRUE(creds.ok()) << creds.status();
  // `A` is a plain spec.env value: it wins over envFrom and stays in spec.env.
  EXPECT_THAT(creds->env,
              UnorderedElementsAre(Pair("AWS_SECRET_ACCESS_KEY", "from-manifest"),
                                   Pair("API_TOKEN", "from-variable"), Pair("REGION", "from-dir")));
  ASSERT_EQ(creds->files.size(), 1U);
  EXPECT_EQ(creds->files[0].path, "key.json");
  EXPECT_EQ(creds->files[0].env, "KEY_FILE");
  EXPECT_EQ(creds->files[0].content, R"({"type":"service_account"})");
}

TEST(ResolveCredentials, EnvFromVariablesAndPrefix) {
  const cli_test::TempDir dir;
  const ScopedEnv id("TRIBUTARY_SECRET_S3_ACCESS_KEY_ID", "AKIA-1");
  const ScopedEnv key("TRIBUTARY_SECRET_S3_SECRET_ACCESS_KEY", "shh");
  Manifests all;
  const ConnectorManifest c =
      connectorWith("  envFrom:\n    - secretRef: {name: s3}\n      prefix: AWS_\n", all);
  auto creds = resolveCredentials(c, LocalSecrets(all, dir.path()));
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_THAT(creds->env, UnorderedElementsAre(Pair("AWS_ACCESS_KEY_ID", "AKIA-1"),
                                               Pair("AWS_SECRET_ACCESS_KEY", "shh")));
}

TEST(ResolveCredentials, MissingSecretsNameTheFieldAndTheThreePlaces) {
  const cli_test::TempDir dir;
  Manifests all;
  const ConnectorManifest env = connectorWith(
      "  env: [{name: K, valueFrom: {secretKeyRef: {name: aws, key: secret}}}]\n", all);
  auto missing = resolveCredentials(env, LocalSecrets(all, dir.path()));
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(missing.status()));
  const std::string message(missing.status().message());
  EXPECT_THAT(message, HasSubstr("c.yaml: document 1 (Connector default/c): "
                                 "spec.env[0].valueFrom.secretKeyRef: secret `aws` key `secret` "
                                 "not found (looked in: a v1 Secret default/aws in the -f files"));
  EXPECT_THAT(message, HasSubstr(dir.path() + "/aws/secret (--secret-dir)"));
  EXPECT_THAT(message, HasSubstr("the variable TRIBUTARY_SECRET_AWS_SECRET)"));

  const ConnectorManifest from = connectorWith("  envFrom: [{secretRef: {name: aws}}]\n", all);
  missing = resolveCredentials(from, LocalSecrets(all, dir.path()));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("spec.envFrom[0].secretRef: secret `aws` not found (looked in: a v1 "
                        "Secret default/aws in the -f files, the directory " +
                        dir.path() + "/aws (--secret-dir), variables TRIBUTARY_SECRET_AWS_<KEY>)"));

  const ConnectorManifest files =
      connectorWith("  files: [{secretRef: {name: gcp}, items: [{key: a}, {key: b}]}]\n", all,
                    "---\napiVersion: v1\nkind: Secret\nmetadata: {name: gcp}\nstringData: {a: "
                    "x}\n");
  missing = resolveCredentials(files, LocalSecrets(all, dir.path()));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("spec.files[0].items[1].key: secret `gcp` key `b` not found (looked in: "
                        "a v1 Secret default/gcp in the -f files (it has no key `b`)"));
}

// ---- --env-file and --env ----

TEST(EnvFile, DockerFormat) {
  const ScopedEnv copied("TRIBUTARY_TEST_COPIED", "copied value");
  auto lines = parseEnvFile(
      "# comment\n\nA=1\n  B=indented\nC=x=y\nQUOTED=\"kept\"\r\nTRIBUTARY_TEST_COPIED\n"
      "TRIBUTARY_TEST_UNSET_VARIABLE\nEMPTY=\n",
      "vars.env");
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_THAT(*lines,
              ElementsAre(Pair("A", "1"), Pair("B", "indented"), Pair("C", "x=y"),
                          Pair("QUOTED", "\"kept\""), Pair("TRIBUTARY_TEST_COPIED", "copied value"),
                          Pair("EMPTY", "")));
}

TEST(EnvFile, BadNameNamesTheLine) {
  auto lines = parseEnvFile("A=1\nexport B=2\n", "vars.env");
  ASSERT_FALSE(lines.ok());
  EXPECT_THAT(std::string(lines.status().message()),
              HasSubstr("vars.env:2: `export B` is not an environment variable name"));
}

TEST(EnvFlag, AssignmentOrCopy) {
  const ScopedEnv copied("TRIBUTARY_TEST_COPIED", "from here");
  EXPECT_THAT(*parseEnvFlag("A=b=c"), Pair("A", "b=c"));
  EXPECT_THAT(*parseEnvFlag("TRIBUTARY_TEST_COPIED"), Pair("TRIBUTARY_TEST_COPIED", "from here"));
  EXPECT_THAT(std::string(parseEnvFlag("TRIBUTARY_TEST_UNSET_VARIABLE").status().message()),
              HasSubstr("is not set in this environment"));
  EXPECT_THAT(std::string(parseEnvFlag("=x").status().message()),
              HasSubstr("--env takes NAME=VALUE or NAME"));
}

TEST(EnvFileSpaces, NameWithTrailingSpaceIsRejected) {
  // docker rejects whitespace in names; so do we (values are kept verbatim, names are not
  // trimmed).
  auto lines = parseEnvFile("B =1\n", "vars.env");
  EXPECT_FALSE(lines.ok());
}

// ---- the run's private directory ----

TEST(RunDirectory, FilesAre0600InA0700DirectoryRemovedAfterwards) {
  std::filesystem::path root;
  std::string key_path;
  {
    auto dir = sync::RunDirectory::create(
        {RunFile{"gcp/key.json", "{\"k\":1}", "KEY"}, RunFile{"plain", "x", ""}});
    ASSERT_TRUE(dir.ok()) << dir.status();
    root = (*dir)->path();
    struct stat st {};
    ASSERT_EQ(::stat(root.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777U, 0700U);
    ASSERT_TRUE((*dir)->env().contains("KEY"));
    key_path = (*dir)->env().at("KEY");
    EXPECT_EQ(key_path, (root / "gcp/key.json").string());
    ASSERT_EQ(::stat(key_path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777U, 0600U);
    ASSERT_EQ(::stat((root / "gcp").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777U, 0700U);
    EXPECT_EQ((*dir)->env().size(), 1U);
  }
  EXPECT_FALSE(std::filesystem::exists(root));
}

// ---- the host's note on dropped credential-like variables ----

TEST(DroppedCredentials, LooksLikeCredential) {
  for (const char* yes :
       {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "GOOGLE_CLOUD_PROJECT",
        "AZURE_CLIENT_SECRET", "GITHUB_TOKEN", "DB_PASSWORD", "STRIPE_API_KEY", "MY_SECRET_THING",
        "SLACK_BOT_TOKEN_2", "github_token"}) {
    EXPECT_TRUE(plugin_host::looksLikeCredential(yes)) << yes;
  }
  for (const char* no : {"PATH", "HOME", "LANG", "TERM", "KEYBOARD", "SSH_AUTH_SOCK", "EDITOR",
                         "TRIBUTARY_SECRET_X_KEY"}) {
    EXPECT_FALSE(plugin_host::looksLikeCredential(no)) << no;
  }
}

// Collects records.
class Collect : public log::Sink {
 public:
  void write(const log::Record& record) override { records.push_back(record); }
  std::vector<log::Record> records;
};

TEST(DroppedCredentials, NamesOnlyOncePerProcess) {
  const ScopedEnv secret("TRIBUTARY_TEST_UNIT_PASSWORD_VALUE_IS", "do-not-print-me");
  const ScopedEnv aws("AWS_SECRET_ACCESS_KEY", "do-not-print-me-either");
  const ScopedEnv token("SOME_SERVICE_TOKEN", "nor-me");
  plugin_host::LaunchSpec spec;
  spec.env["SOME_SERVICE_TOKEN"] = "given explicitly";
  const auto dropped = plugin_host::droppedCredentialVariables(spec);
  EXPECT_THAT(dropped, ::testing::Contains("AWS_SECRET_ACCESS_KEY"));
  EXPECT_THAT(dropped, ::testing::Not(::testing::Contains("SOME_SERVICE_TOKEN")));  // Set by env.
  EXPECT_THAT(dropped, ::testing::Not(::testing::Contains("PATH")));
  EXPECT_THAT(dropped,
              ::testing::Not(::testing::Contains("TRIBUTARY_TEST_UNIT_PASSWORD_VALUE_IS")));
  spec.inherited_env.emplace_back("AWS_*");
  EXPECT_THAT(plugin_host::droppedCredentialVariables(spec),
              ::testing::Not(::testing::Contains("AWS_SECRET_ACCESS_KEY")));
  spec.inherited_env.pop_back();

  auto sink = std::make_shared<Collect>();
  const log::Logger logger("plugin-host", sink);
  EXPECT_TRUE(plugin_host::noteDroppedCredentials(spec, logger));
  EXPECT_FALSE(plugin_host::noteDroppedCredentials(spec, logger));
  ASSERT_EQ(sink->records.size(), 1U);
  const log::Record& r = sink->records[0];
  EXPECT_EQ(r.level, log::Level::Info);
  EXPECT_THAT(r.message, HasSubstr("AWS_SECRET_ACCESS_KEY"));
  EXPECT_THAT(r.message, HasSubstr("--env"));
  EXPECT_THAT(r.message, HasSubstr("spec.env"));
  EXPECT_THAT(r.fields["variables"].dump(), HasSubstr("\"AWS_SECRET_ACCESS_KEY\""));
  const std::string all = r.message + r.fields.dump();
  EXPECT_THAT(all, ::testing::Not(HasSubstr("do-not-print-me")));
  EXPECT_THAT(all, ::testing::Not(HasSubstr("nor-me")));
}

}  // namespace
}  // namespace tributary::cli
