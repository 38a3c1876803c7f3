// Connector, SyncJob and SyncRun objects as the API server returns them: good ones parse to the
// typed view, each kind of mistake is a Problem at the right field path.

#include "tributary/api/resources.h"

#include "tributary/api/credentials.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace tributary::api {
namespace {

Json connector(const Json& spec) {
  return {{"apiVersion", "tributary.dev/v1alpha1"},
          {"kind", "Connector"},
          {"metadata", {{"name", "files"}, {"namespace", "team-a"}, {"generation", 3}}},
          {"spec", spec}};
}

std::vector<std::string> paths(const std::vector<Problem>& problems) {
  std::vector<std::string> out;
  for (const Problem& p : problems) {
    out.push_back(p.path);
  }
  return out;
}

TEST(ParseConnector, FullSpec) {
  std::vector<Problem> problems;
  const Connector c =
      parseConnector(connector(Json::parse(R"({"source":"Local","uri":"/opt/c","command":"./c",
        "env":[{"name":"MODE","value":"fast"},
               {"name":"TOKEN","valueFrom":{"secretKeyRef":{"name":"creds","key":"token"}}}],
        "envFrom":[{"secretRef":{"name":"more"},"prefix":"X_"}],
        "files":[{"secretRef":{"name":"certs"},"items":[{"key":"ca.pem","env":"CA_FILE"}]}],
        "handshake":{"cookieKey":"K","cookieValue":"V","protocolVersions":[1,2]}})")),
                     problems);
  ASSERT_TRUE(problems.empty()) << describe(problems);
  EXPECT_EQ(c.origin, "Connector team-a/files");
  EXPECT_EQ(c.generation, 3);
  EXPECT_EQ(c.spec.name, "files");
  EXPECT_EQ(c.spec.env, (std::map<std::string, std::string>{{"MODE", "fast"}}));
  ASSERT_EQ(c.secret_env.size(), 1U);
  EXPECT_EQ(c.secret_env[0].ref.name, "creds");
  EXPECT_EQ(c.secret_env[0].path, "spec.env[1].valueFrom.secretKeyRef");
  ASSERT_EQ(c.env_from.size(), 1U);
  EXPECT_EQ(c.env_from[0].prefix, "X_");
  ASSERT_EQ(c.files.size(), 1U);
  EXPECT_EQ(c.files[0].items[0].path, "ca.pem");
  EXPECT_EQ(c.handshake.cookie_key, "K");
  EXPECT_EQ(c.handshake.protocol_versions, (std::vector<int>{1, 2}));
  EXPECT_EQ(c.specHash().size(), 16U);
}

TEST(ParseConnector, EveryMistakeHasItsPath) {
  std::vector<Problem> problems;
  parseConnector(connector(Json::parse(R"({"source":"FTP","command":"./c",
        "env":[{"name":"1BAD","value":"x"},{"name":"N","value":7},
               {"name":"S","valueFrom":{"configMapKeyRef":{"name":"m","key":"k"}}}],
        "files":[{"secretRef":{"name":"c"},"items":[{"key":"k","path":"../escape"}]}],
        "handshake":{"protocolVersions":[]},
        "extra":true})")),
                 problems);
  const auto got = paths(problems);
  for (const char* want : {"spec.source", "spec.uri", "spec.env[0].name", "spec.env[1].value",
                           "spec.env[2].valueFrom.configMapKeyRef", "spec.files[0].items[0].path",
                           "spec.handshake.protocolVersions", "spec.extra"}) {
    EXPECT_NE(std::find(got.begin(), got.end(), want), got.end()) << want << "\n"
                                                                  << describe(problems);
  }
  // A number where a string belongs says how to fix it.
  EXPECT_NE(describe(problems).find("spec.env[1].value: must be a string, got `7` (quote it)"),
            std::string::npos)
      << describe(problems);
}

TEST(ParseConnector, TypesAndCredentialsInTheUri) {
  std::vector<Problem> problems;
  parseConnector(connector(Json::parse(R"({"source":"VCS","command":"./c","ref":1234,
        "uri":"https://user:hunter2@example.com/repo.git","secretRef":{"name":["x"]}})")),
                 problems);
  const std::string all = describe(problems);
  EXPECT_NE(all.find("spec.ref: must be a string, got `1234` (quote it)"), std::string::npos)
      << all;
  EXPECT_NE(all.find("spec.uri: must not carry credentials"), std::string::npos) << all;
  EXPECT_NE(all.find("spec.secretRef.name: must be a string, got a list"), std::string::npos)
      << all;
  EXPECT_EQ(all.find("hunter2"), std::string::npos) << all;

  // A missing metadata is reported.
  problems.clear();
  parseConnector(Json::parse(R"({"spec":{"source":"Local","uri":"/c","command":"./c"}})"),
                 problems);
  ASSERT_FALSE(problems.empty());
  EXPECT_EQ(problems.front().path, "metadata") << describe(problems);
}

TEST(ParseSyncJob, OptionsFromSecretKeyRef) {
  std::vector<Problem> problems;
  const SyncJob j = parseSyncJob(Json::parse(R"({"metadata":{"name":"docs","namespace":"a"},
      "spec":{"connectorRef":{"name":"files"},
              "optionsFrom":{"secretKeyRef":{"name":"opts","key":"options.json"}}}})"),
                                 problems);
  ASSERT_TRUE(problems.empty()) << describe(problems);
  ASSERT_TRUE(j.options_from.has_value());
  EXPECT_EQ(j.options_from->name, "opts");
  EXPECT_EQ(j.options_from->key, "options.json");
  EXPECT_FALSE(j.options_json.has_value());

  problems.clear();
  parseSyncJob(Json::parse(R"({"metadata":{"name":"docs","namespace":"a"},
      "spec":{"connectorRef":{"name":"files"},
              "optionsFrom":{"secretKeyRef":{"name":"Bad_Name","optional":true}}}})"),
               problems);
  const auto got = paths(problems);
  for (const char* want :
       {"spec.optionsFrom.secretKeyRef.optional", "spec.optionsFrom.secretKeyRef.key",
        "spec.optionsFrom.secretKeyRef.name"}) {
    EXPECT_NE(std::find(got.begin(), got.end(), want), got.end()) << want << "\n"
                                                                  << describe(problems);
  }
}

TEST(ParseSyncJob, OptionsAndPolicies) {
  std::vector<Problem> problems;
  const SyncJob j = parseSyncJob(Json::parse(R"({"metadata":{"name":"docs","namespace":"a"},
      "spec":{"connectorRef":{"name":"files"},"options":{"root":"/srv"},
              "deletionPolicy":"Delete","deletionGuard":{"maxDeletePercent":10},
              "backoffLimit":2,"concurrencyPolicy":"Replace","schedule":"*/5 * * * *",
              "activeDeadlineSeconds":60,"agentSelector":{"matchLabels":{"zone":"b"}}}})"),
                                 problems);
  ASSERT_TRUE(problems.empty()) << describe(problems);
  EXPECT_EQ(j.options_json, R"({"root":"/srv"})");
  EXPECT_EQ(j.deletion_policy, "Delete");
  EXPECT_EQ(j.max_delete_percent, 10);
  EXPECT_EQ(j.backoff_limit, 2);
  EXPECT_EQ(j.concurrency_policy, "Replace");
  EXPECT_EQ(j.active_deadline_seconds, 60);
  ASSERT_TRUE(j.agent_selector.has_value());
}

TEST(ParseSyncJob, Mistakes) {
  std::vector<Problem> problems;
  parseSyncJob(Json::parse(R"({"metadata":{"name":"docs","namespace":"a"},
      "spec":{"options":{},"optionsFrom":{"secretKeyRef":{"name":"s","key":"k"}},
              "deletionPolicy":"Purge","deletionGuard":{"maxDeletePercent":101},
              "backoffLimit":-1}})"),
               problems);
  const auto got = paths(problems);
  for (const char* want : {"spec.connectorRef", "spec", "spec.deletionPolicy",
                           "spec.deletionGuard.maxDeletePercent", "spec.backoffLimit"}) {
    EXPECT_NE(std::find(got.begin(), got.end(), want), got.end()) << want << "\n"
                                                                  << describe(problems);
  }
}

TEST(ParseSyncRun, AgentProtocolFields) {
  const SyncRun r = parseSyncRun(Json::parse(R"({"metadata":{"name":"docs-1","namespace":"a",
      "uid":"u1"},"spec":{"syncJobRef":{"name":"docs"},"connectorRef":{"name":"files",
      "generation":4},"deletionPolicy":"Keep","deletionGuard":{"maxDeletePercent":20,
      "confirmed":true},"activeDeadlineSeconds":30},
      "status":{"phase":"Running","agent":"node-1","attempt":2,
      "conditions":[{"type":"Failed","status":"True"}]}})"));
  EXPECT_EQ(r.job, "docs");
  EXPECT_EQ(r.connector_generation, 4);
  EXPECT_EQ(r.deletion_policy, "Keep");
  EXPECT_EQ(r.max_delete_percent, 20);
  EXPECT_TRUE(r.deletion_confirmed);
  EXPECT_EQ(r.active_deadline_seconds, 30);
  EXPECT_EQ(r.agent, "node-1");
  EXPECT_EQ(r.attempt, 2);
  EXPECT_TRUE(r.attempt_failed);
  EXPECT_FALSE(r.finished());
  const SyncRun pending = parseSyncRun(Json::parse(R"({"metadata":{"name":"x"},"spec":{}})"));
  EXPECT_EQ(pending.phase, "Pending");
  EXPECT_EQ(pending.attempt, 1);
}

class MapSecrets : public SecretSource {
 public:
  std::map<std::string, std::map<std::string, std::string>> secrets;
  absl::StatusOr<std::optional<std::string>> key(const std::string& /*ns*/, const std::string& name,
                                                 const std::string& key) const override {
    const auto s = secrets.find(name);
    if (s == secrets.end() || !s->second.contains(key)) {
      return std::optional<std::string>();
    }
    return std::optional(s->second.at(key));
  }
  absl::StatusOr<std::optional<std::map<std::string, std::string>>> all(
      const std::string& /*ns*/, const std::string& name) const override {
    const auto s = secrets.find(name);
    return s == secrets.end() ? std::optional<std::map<std::string, std::string>>()
                              : std::optional(s->second);
  }
};

TEST(ResolveCredentials, EnvWinsOverEnvFromAndMissingKeysAreNamed) {
  std::vector<Problem> problems;
  const Connector c =
      parseConnector(connector(Json::parse(R"({"source":"Local","uri":"/opt/c","command":"./c",
        "env":[{"name":"X_A","valueFrom":{"secretKeyRef":{"name":"one","key":"a"}}}],
        "envFrom":[{"secretRef":{"name":"many"},"prefix":"X_"}]})")),
                     problems);
  ASSERT_TRUE(problems.empty()) << describe(problems);
  MapSecrets secrets;
  secrets.secrets["one"] = {{"a", "from-env"}};
  secrets.secrets["many"] = {{"A", "from-envfrom"}, {"a", "shadowed"}, {"B", "b"}};
  auto creds = resolveCredentials(c, secrets);
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_EQ(creds->env.at("X_A"), "from-env");  // spec.env wins over envFrom
  EXPECT_EQ(creds->env.at("X_a"), "shadowed");
  EXPECT_EQ(creds->env.at("X_B"), "b");
  secrets.secrets.erase("one");
  auto missing = resolveCredentials(c, secrets);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("spec.env[0].valueFrom.secretKeyRef"),
            std::string::npos)
      << missing.status();
  EXPECT_EQ(std::string(missing.status().message()).find("shadowed"), std::string::npos);
}

}  // namespace
}  // namespace tributary::api
