// Our CRDs (crds/*.yaml) on the real API server, through the real kubectl: the examples apply and
// get their defaults, bad input is rejected with the API server's exact message, and printer
// columns, short names, categories, selectable fields and the status subresource work.

#include "tributary/testing/kube.h"
#include "tributary/testing/probes.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef TRIBUTARY_CRD_EXAMPLES_DIR
#error "TRIBUTARY_CRD_EXAMPLES_DIR must be defined"
#endif

namespace tributary::harness {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string readAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

class CrdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<KubeApiServer*> server = KubeApiServer::sharedOrError();
    ASSERT_TRUE(server.ok()) << server.status();
  }

  void SetUp() override {
    // One namespace per test: the shared server outlives tests within a binary.
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    ns_ = absl::AsciiStrToLower(absl::StrCat("t-", info->name()));
    ns_ = absl::StrReplaceAll(ns_, {{"_", "-"}, {"/", "-"}});
    if (ns_.size() > 63) {
      ns_.resize(63);
    }
    const absl::Status created = kube().createNamespace(ns_);
    ASSERT_TRUE(created.ok()) << created;
  }

  static KubeApiServer& kube() { return KubeApiServer::shared(); }

  KubectlResult kubectl(std::vector<std::string> args, std::string_view input = {}) {
    args.insert(args.begin(), {"-n", ns_});
    return kube().runKubectl(args, input);
  }

  // Applies `yaml` in the test's namespace; fails the test if kubectl fails.
  void applyOk(std::string_view yaml) {
    const KubectlResult result = kubectl({"apply", "-f", "-"}, yaml);
    EXPECT_TRUE(result.ok()) << "kubectl apply failed:\n" << result.output << "\n" << yaml;
  }

  // Applies `yaml` expecting the API server to refuse it; returns kubectl's output.
  std::string applyRejected(std::string_view yaml) {
    const KubectlResult result = kubectl({"apply", "-f", "-"}, yaml);
    EXPECT_FALSE(result.ok()) << "kubectl apply unexpectedly succeeded:\n" << yaml;
    return result.output;
  }

  std::string get(const std::string& what, const std::string& jsonpath) {
    const KubectlResult result = kubectl({"get", what, "-o", "jsonpath=" + jsonpath});
    EXPECT_TRUE(result.ok()) << result.output;
    return result.output;
  }

  std::string ns_;
};

// A test case: a manifest the API server must refuse, and the message it must give.
struct Rejection {
  std::string name;
  std::string yaml;
  std::vector<std::string> messages;
};

constexpr const char* kConnectorHead = R"(apiVersion: tributary.dev/v1alpha1
kind: Connector
metadata: {name: bad}
)";

constexpr const char* kSyncJobHead = R"(apiVersion: tributary.dev/v1alpha1
kind: SyncJob
metadata: {name: bad}
)";

constexpr const char* kSyncRunHead = R"(apiVersion: tributary.dev/v1alpha1
kind: SyncRun
metadata: {name: bad}
)";

void expectRejections(CrdTest* test, const std::vector<Rejection>& cases,
                      const std::function<std::string(const std::string&)>& apply) {
  static_cast<void>(test);
  for (const Rejection& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string output = apply(c.yaml);
    for (const std::string& message : c.messages) {
      EXPECT_THAT(output, HasSubstr(message)) << c.yaml;
    }
  }
}

TEST_F(CrdTest, ExamplesApplyWithDefaults) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(TRIBUTARY_CRD_EXAMPLES_DIR)) {
    if (entry.path().extension() == ".yaml") {
      files.push_back(entry.path());
    }
  }
  ASSERT_GE(files.size(), 6U);
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    applyOk(readAll(file));
  }
  // Defaults of a SyncJob that sets nothing optional.
  EXPECT_EQ(get("syncjob/s3-initial-load",
                "{.spec.suspend} {.spec.concurrencyPolicy} {.spec.backoffLimit} "
                "{.spec.deletionPolicy} {.spec.successfulRunsHistoryLimit} "
                "{.spec.failedRunsHistoryLimit}"),
            "false Forbid 6 Mark 3 1");
  EXPECT_EQ(get("syncjob/github-issues-acme", "{.spec.options.organisation}"), "acme");
  // Handshake defaults fill what the HTTP example leaves out.
  EXPECT_EQ(get("connector/s3-buckets",
                "{.spec.handshake.cookieKey}={.spec.handshake.cookieValue} "
                "{.spec.handshake.protocolVersions} {.spec.handshake.pluginName}"),
            "S3_PLUGIN=s3 [1] connector");
  EXPECT_EQ(get("syncrun/github-issues-acme-29400000", "{.spec.trigger}"), "Schedule");
}

TEST_F(CrdTest, ConnectorRejectsBadSpecs) {
  const std::string sha = std::string(64, 'a');
  const std::vector<Rejection> cases = {
      {"missing command", "spec: {source: Local, uri: /x}", {"spec.command: Required value"}},
      {"missing spec", "", {R"(The Connector "bad" is invalid: )", "\n* spec: Required value\n"}},
      {"bad source enum",
       "spec: {source: FTP, uri: ftp://x, command: ./c}",
       {R"(spec.source: Unsupported value: "FTP": supported values: "VCS", "HTTP", "Local")"}},
      {"sha256 not hex",
       "spec: {source: HTTP, uri: https://x/c.tgz, command: ./c, sha256: xyz}",
       {R"(spec.sha256: Invalid value: "xyz": spec.sha256 in body should match '^[0-9a-fA-F]{64}$')"}},
      {"sha256 with VCS",
       "spec: {source: VCS, uri: https://x/c.git, command: ./c, sha256: " + sha + "}",
       {"spec.sha256: Forbidden: spec.sha256 is only valid with source HTTP"}},
      {"ref with a space",
       "spec: {source: VCS, uri: https://x/c.git, command: ./c, ref: 'my branch'}",
       {R"(spec.ref: Invalid value: "my branch": spec.ref in body should match)"}},
      {"ref with HTTP",
       "spec: {source: HTTP, uri: https://x/c.tgz, command: ./c, ref: main}",
       {"spec.ref: Forbidden: spec.ref is only valid with source VCS"}},
      {"HTTP with a non-HTTP URI",
       "spec: {source: HTTP, uri: /tmp/c.tgz, command: ./c}",
       {R"(spec.uri: Invalid value: "object": spec.uri must be an http:// or https:// URL when source is HTTP)"}},
      {"Local with a relative path",
       "spec: {source: Local, uri: connectors/x, command: ./c}",
       {"spec.uri must be an absolute path or a file:// URL when source is Local"}},
      {"VCS with an odd URI",
       "spec: {source: VCS, uri: 'ftp://x/y', command: ./c}",
       {"spec.uri must be an https://, http://, git://, ssh:// or file:// URL, an scp-like "
        "user@host:path or an absolute path when source is VCS"}},
      {"empty command",
       "spec: {source: Local, uri: /x, command: ''}",
       {R"(spec.command: Invalid value: "": spec.command in body should be at least 1 chars long)"}},
      // spec.env takes two shapes and is untyped, so its names are checked by the controller
      // (controller_test) and `tributary run`; envFrom and files are typed.
      {"bad envFrom prefix",
       "spec: {source: Local, uri: /x, command: ./c, envFrom: [{secretRef: {name: s}, prefix: "
       "'1BAD'}]}",
       {R"(spec.envFrom[0].prefix: Invalid value: "1BAD": spec.envFrom[0].prefix in body should match)"}},
      {"envFrom without secretRef",
       "spec: {source: Local, uri: /x, command: ./c, envFrom: [{prefix: A_}]}",
       {"spec.envFrom[0].secretRef: Required value"}},
      {"file path with ..",
       "spec: {source: Local, uri: /x, command: ./c, files: [{secretRef: {name: s}, items: "
       "[{key: k, path: a/../b}]}]}",
       {"spec.files[].items[].path must not contain `.` or `..` components"}},
      {"files without items",
       "spec: {source: Local, uri: /x, command: ./c, files: [{secretRef: {name: s}}]}",
       {"spec.files[0].items: Required value"}},
      {"bad handshake protocol version",
       "spec: {source: Local, uri: /x, command: ./c, handshake: {protocolVersions: [0]}}",
       {"spec.handshake.protocolVersions[0]: Invalid value: 0: spec.handshake.protocolVersions[0] "
        "in body should be greater than or equal to 1"}},
      {"secretRef without name",
       "spec: {source: Local, uri: /x, command: ./c, secretRef: {}}",
       {"spec.secretRef.name: Required value"}},
  };
  expectRejections(this, cases, [&](const std::string& spec) {
    return applyRejected(absl::StrCat(kConnectorHead, spec));
  });
  // Several errors at once are all reported.
  const std::string output = applyRejected(absl::StrCat(
      kConnectorHead, "spec: {source: HTTP, uri: https://x, ref: main, sha256: nope}"));
  EXPECT_THAT(output, HasSubstr("spec.command: Required value"));
  EXPECT_THAT(output, HasSubstr("spec.sha256 in body should match"));
}

TEST_F(CrdTest, SyncJobRejectsBadSpecs) {
  const std::string ok = "connectorRef: {name: c}, options: {}";
  const std::vector<Rejection> cases = {
      {"missing connectorRef", "spec: {options: {}}", {"spec.connectorRef: Required value"}},
      {"both options and optionsFrom",
       "spec: {connectorRef: {name: c}, options: {a: 1}, optionsFrom: {secretKeyRef: {name: s, "
       "key: k}}}",
       {R"(spec: Invalid value: "object": exactly one of spec.options and spec.optionsFrom must be set)"}},
      {"neither options nor optionsFrom",
       "spec: {connectorRef: {name: c}}",
       {"exactly one of spec.options and spec.optionsFrom must be set"}},
      {"optionsFrom without key",
       "spec: {connectorRef: {name: c}, optionsFrom: {secretKeyRef: {name: s}}}",
       {"spec.optionsFrom.secretKeyRef.key: Required value"}},
      {"bad concurrencyPolicy",
       "spec: {" + ok + ", concurrencyPolicy: Allow}",
       {R"(spec.concurrencyPolicy: Unsupported value: "Allow": supported values: "Forbid", "Replace")"}},
      {"bad deletionPolicy",
       "spec: {" + ok + ", deletionPolicy: Purge}",
       {R"(spec.deletionPolicy: Unsupported value: "Purge": supported values: "Keep", "Mark", "Delete")"}},
      {"negative startingDeadlineSeconds",
       "spec: {" + ok + ", startingDeadlineSeconds: -1}",
       {"spec.startingDeadlineSeconds: Invalid value: -1: spec.startingDeadlineSeconds in body "
        "should be greater than or equal to 0"}},
      {"zero activeDeadlineSeconds",
       "spec: {" + ok + ", activeDeadlineSeconds: 0}",
       {"spec.activeDeadlineSeconds: Invalid value: 0: spec.activeDeadlineSeconds in body should "
        "be greater than or equal to 1"}},
      {"negative backoffLimit",
       "spec: {" + ok + ", backoffLimit: -3}",
       {"spec.backoffLimit: Invalid value: -3: spec.backoffLimit in body should be greater than "
        "or equal to 0"}},
      {"negative history limit",
       "spec: {" + ok + ", failedRunsHistoryLimit: -1}",
       {"spec.failedRunsHistoryLimit in body should be greater than or equal to 0"}},
      {"suspend not a boolean",
       "spec: {" + ok + ", suspend: sometimes}",
       {R"(spec.suspend: Invalid value: "string": spec.suspend in body must be of type boolean: "string")"}},
      {"bad time zone",
       "spec: {" + ok + ", timeZone: 'Europe/Paris '}",
       {R"(spec.timeZone: Invalid value: "Europe/Paris ": spec.timeZone in body should match)"}},
      {"In without values",
       "spec: {" + ok + ", agentSelector: {matchExpressions: [{key: zone, operator: In}]}}",
       {"spec.agentSelector.matchExpressions[0]: Invalid value: \"object\": values must be "
        "non-empty for operators In and NotIn, and absent for Exists and DoesNotExist"}},
      {"bad selector operator",
       "spec: {" + ok + ", agentSelector: {matchExpressions: [{key: zone, operator: Is}]}}",
       {R"(spec.agentSelector.matchExpressions[0].operator: Unsupported value: "Is")"}},
  };
  expectRejections(this, cases, [&](const std::string& spec) {
    return applyRejected(absl::StrCat(kSyncJobHead, spec));
  });

  const std::string long_name = std::string(53, 'x');
  EXPECT_THAT(applyRejected(absl::StrCat("apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\n",
                                         "metadata: {name: ", long_name, "}\nspec: {", ok, "}\n")),
              HasSubstr("SyncJob names are at most 52 characters"));
}

TEST_F(CrdTest, SyncJobScheduleSyntax) {
  const std::vector<std::string> good = {
      "'* * * * *'",       "'*/5 * * * *'",          "'0 3 * * 1-5'", "'30 2 1,15 * *'",
      "'0 0 1 JAN,jul *'", "'0 9-17/2 * * MON-FRI'", "'@hourly'",     "'@daily'",
      "'@every 1h30m'",    "'59 23 31 12 6'",        "'0 0 ? * *'",   "'5/15 * * * *'",
      "'0  0  *  *  0'"};
  const std::vector<std::string> bad = {"'* * * *'",
                                        "'60 * * * *'",
                                        "'* 24 * * *'",
                                        "'* * 0 * *'",
                                        "'* * * 13 *'",
                                        "'* * * * 7'",
                                        "'TZ=UTC 0 * * * *'",
                                        "'CRON_TZ=Europe/Paris 0 * * * *'",
                                        "'@often'",
                                        "'*/0 * * * *'",
                                        "'hello'",
                                        "'* * * * * *'"};
  int index = 0;
  for (const std::string& schedule : good) {
    SCOPED_TRACE(schedule);
    const KubectlResult result = kubectl(
        {"apply", "--dry-run=server", "-f", "-"},
        absl::StrCat(
            "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata: {name: good-", index++,
            "}\nspec: {connectorRef: {name: c}, options: {}, schedule: ", schedule, "}\n"));
    EXPECT_TRUE(result.ok()) << result.output;
  }
  for (const std::string& schedule : bad) {
    SCOPED_TRACE(schedule);
    const std::string output = applyRejected(absl::StrCat(
        kSyncJobHead, "spec: {connectorRef: {name: c}, options: {}, schedule: ", schedule, "}\n"));
    EXPECT_THAT(output, HasSubstr("spec.schedule: Invalid value: \"string\": spec.schedule must "
                                  "be a 5-field cron expression (minute 0-59, hour 0-23, day of "
                                  "month 1-31, month 1-12 or JAN-DEC, day of week 0-6 or "
                                  "SUN-SAT) or one of @yearly, @annually, @monthly, @weekly, "
                                  "@daily, @midnight, @hourly, @every <duration>; set the time "
                                  "zone in spec.timeZone, not with TZ="));
  }
}

TEST_F(CrdTest, ImmutableFields) {
  applyOk(absl::StrCat(kSyncJobHead, "spec: {connectorRef: {name: first}, options: {}}"));
  EXPECT_THAT(
      applyRejected(
          absl::StrCat(kSyncJobHead, "spec: {connectorRef: {name: second}, options: {}}")),
      HasSubstr(
          R"(spec.connectorRef: Invalid value: "object": spec.connectorRef is immutable; create a new SyncJob to sync another connector)"));
  // Other fields may change.
  applyOk(absl::StrCat(kSyncJobHead,
                       "spec: {connectorRef: {name: first}, options: {a: 2}, suspend: true}"));

  const std::string run =
      absl::StrCat(kSyncRunHead,
                   "spec: {syncJobRef: {name: j}, connectorRef: {name: c}, scheduledTime: "
                   "'2025-11-24T16:00:00Z'}\n");
  applyOk(run);
  EXPECT_THAT(applyRejected(absl::StrReplaceAll(run, {{"16:00:00Z", "16:01:00Z"}})),
              HasSubstr(R"(spec: Invalid value: "object": SyncRun spec is immutable)"));
}

TEST_F(CrdTest, SyncRunRejectsBadSpecs) {
  const std::vector<Rejection> cases = {
      {"missing scheduledTime",
       "spec: {syncJobRef: {name: j}, connectorRef: {name: c}}",
       {"spec.scheduledTime: Required value"}},
      {"scheduledTime not a date-time",
       "spec: {syncJobRef: {name: j}, connectorRef: {name: c}, scheduledTime: yesterday}",
       {R"(spec.scheduledTime: Invalid value: "yesterday": spec.scheduledTime in body must be of type date-time: "yesterday")"}},
      {"bad trigger",
       "spec: {syncJobRef: {name: j}, connectorRef: {name: c}, scheduledTime: "
       "'2025-11-24T16:00:00Z', trigger: Cron}",
       {R"(spec.trigger: Unsupported value: "Cron": supported values: "Schedule", "Once", "Manual")"}},
  };
  expectRejections(this, cases, [&](const std::string& spec) {
    return applyRejected(absl::StrCat(kSyncRunHead, spec));
  });
}

TEST_F(CrdTest, StatusSubresource) {
  applyOk(absl::StrCat(kSyncRunHead,
                       "spec: {syncJobRef: {name: j}, connectorRef: {name: c}, scheduledTime: "
                       "'2025-11-24T16:00:00Z'}\n"));
  // Status goes through /status only.
  KubectlResult patched =
      kubectl({"patch", "syncrun", "bad", "--subresource=status", "--type=merge", "-p",
               R"({"status":{"phase":"Bound","agent":"agent-1","attempt":1}})"});
  ASSERT_TRUE(patched.ok()) << patched.output;
  EXPECT_EQ(get("syncrun/bad", "{.status.phase} {.status.agent} {.status.attempt}"),
            "Bound agent-1 1");
  // A status in a main-resource update is ignored.
  patched = kubectl({"patch", "syncrun", "bad", "--type=merge", "-p",
                     R"({"status":{"phase":"Failed"},"metadata":{"labels":{"x":"y"}}})"});
  ASSERT_TRUE(patched.ok()) << patched.output;
  EXPECT_EQ(get("syncrun/bad", "{.status.phase} {.metadata.labels.x}"), "Bound y");

  // Status rules.
  KubectlResult refused = kubectl({"patch", "syncrun", "bad", "--subresource=status", "--type=json",
                                   "-p", R"([{"op":"remove","path":"/status/agent"}])"});
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.output,
              HasSubstr("status: Invalid value: \"object\": status.agent must be set when "
                        "status.phase is Bound or Running"));
  refused = kubectl({"patch", "syncrun", "bad", "--subresource=status", "--type=merge", "-p",
                     R"({"status":{"phase":"Exploded"}})"});
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.output, HasSubstr(R"(status.phase: Unsupported value: "Exploded")"));
  refused = kubectl({"patch", "syncrun", "bad", "--subresource=status", "--type=merge", "-p",
                     R"({"status":{"objects":{"upserted":-1}}})"});
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.output,
              HasSubstr("status.objects.upserted: Invalid value: -1: objects.upserted in body "
                        "should be greater than or equal to 0"));

  patched = kubectl({"patch", "syncrun", "bad", "--subresource=status", "--type=merge", "-p",
                     R"({"status":{"phase":"Succeeded","completionTime":"2025-11-24T16:05:00Z",)"
                     R"("pages":3,"objects":{"upserted":250,"unchanged":10,"deleted":1}}})"});
  ASSERT_TRUE(patched.ok()) << patched.output;
  refused = kubectl({"patch", "syncrun", "bad", "--subresource=status", "--type=merge", "-p",
                     R"({"status":{"phase":"Running"}})"});
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.output,
              HasSubstr("a finished SyncRun (phase Succeeded or Failed) cannot change phase"));

  // Conditions follow metav1.Condition.
  refused = kubectl({"patch", "syncrun", "bad", "--subresource=status", "--type=merge", "-p",
                     R"({"status":{"conditions":[{"type":"Complete","status":"Yes"}]}})"});
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.output,
              HasSubstr(R"(status.conditions[0].status: Unsupported value: "Yes")"));
  EXPECT_THAT(refused.output, HasSubstr("status.conditions[0].lastTransitionTime: Required value"));
}

TEST_F(CrdTest, SpecAndStatusUpdatesAreSeparate) {
  applyOk(absl::StrCat(kSyncJobHead, "spec: {connectorRef: {name: c}, options: {a: 1}}"));
  EXPECT_EQ(get("syncjob/bad", "{.metadata.generation}"), "1");
  KubectlResult patched =
      kubectl({"patch", "syncjob", "bad", "--subresource=status", "--type=merge", "-p",
               R"({"status":{"observedGeneration":1,"lastScheduleTime":"2025-11-24T16:00:00Z",)"
               R"("active":[{"name":"bad-29400000","uid":"u1"}]}})"});
  ASSERT_TRUE(patched.ok()) << patched.output;
  // A status write does not bump the generation...
  EXPECT_EQ(get("syncjob/bad", "{.metadata.generation}"), "1");
  // ...a spec change does, and leaves the status alone.
  applyOk(absl::StrCat(kSyncJobHead, "spec: {connectorRef: {name: c}, options: {a: 2}}"));
  EXPECT_EQ(get("syncjob/bad",
                "{.metadata.generation} {.status.observedGeneration} {.status.lastScheduleTime} "
                "{.status.active[0].name}"),
            "2 1 2025-11-24T16:00:00Z bad-29400000");
  // Metadata-only changes do not bump it either.
  ASSERT_TRUE(kubectl({"label", "syncjob", "bad", "team=data"}).ok());
  EXPECT_EQ(get("syncjob/bad", "{.metadata.generation}"), "2");
}

TEST_F(CrdTest, PrinterColumns) {
  applyOk(readAll(TRIBUTARY_CRD_EXAMPLES_DIR "/connector-vcs.yaml"));
  applyOk(readAll(TRIBUTARY_CRD_EXAMPLES_DIR "/syncjob-scheduled.yaml"));
  applyOk(readAll(TRIBUTARY_CRD_EXAMPLES_DIR "/syncrun.yaml"));
  ASSERT_TRUE(
      kubectl({"patch", "syncrun", "github-issues-acme-29400000", "--subresource=status",
               "--type=merge", "-p",
               R"({"status":{"phase":"Running","agent":"node-a","objects":{"upserted":42}}})"})
          .ok());
  ASSERT_TRUE(kubectl({"patch", "syncjob", "github-issues-acme", "--subresource=status",
                       "--type=merge", "-p",
                       R"({"status":{"lastScheduleTime":"2025-11-24T16:00:00Z",)"
                       R"("lastRun":{"name":"github-issues-acme-29399985","phase":"Succeeded"}}})"})
                  .ok());
  ASSERT_TRUE(
      kubectl(
          {"patch", "connector", "github-issues", "--subresource=status", "--type=merge", "-p",
           R"({"status":{"conditions":[{"type":"Ready","status":"True",)"
           R"("reason":"Accepted","message":"ok","lastTransitionTime":"2025-11-24T16:00:00Z"}]}})"})
          .ok());

  KubectlResult out = kubectl({"get", "syncjobs"});
  ASSERT_TRUE(out.ok()) << out.output;
  EXPECT_THAT(out.output,
              ::testing::MatchesRegex(
                  "NAME +CONNECTOR +SCHEDULE +SUSPEND +LAST SCHEDULE +LAST RESULT +AGE\n"
                  "github-issues-acme +github-issues +\\*/15 8-18 \\* \\* MON-FRI +false "
                  "+[0-9]+[a-z0-9]* +Succeeded +[0-9]+[a-z0-9]*\n"));
  out = kubectl({"get", "syncjobs", "-o", "wide"});
  ASSERT_TRUE(out.ok()) << out.output;
  EXPECT_THAT(out.output, HasSubstr("LAST RUN"));
  EXPECT_THAT(out.output, HasSubstr("github-issues-acme-29399985"));
  EXPECT_THAT(out.output, HasSubstr("NEXT SCHEDULE"));

  out = kubectl({"get", "syncruns"});
  ASSERT_TRUE(out.ok()) << out.output;
  EXPECT_THAT(out.output, ::testing::MatchesRegex(
                              "NAME +JOB +PHASE +AGENT +OBJECTS +AGE\n"
                              "github-issues-acme-29400000 +github-issues-acme +Running +node-a "
                              "+42 +[0-9]+[a-z0-9]*\n"));

  out = kubectl({"get", "connectors"});
  ASSERT_TRUE(out.ok()) << out.output;
  EXPECT_THAT(out.output, ::testing::MatchesRegex("NAME +SOURCE +READY +AGE\n"
                                                  "github-issues +VCS +True +[0-9]+[a-z0-9]*\n"));
  out = kubectl({"get", "connectors", "-o", "wide"});
  EXPECT_THAT(out.output, HasSubstr("https://git.example.com/acme/connector-github.git"));
}

TEST_F(CrdTest, ShortNamesCategoriesAndSelectableFields) {
  applyOk(readAll(TRIBUTARY_CRD_EXAMPLES_DIR "/connector-local.yaml"));
  applyOk(readAll(TRIBUTARY_CRD_EXAMPLES_DIR "/syncjob-once.yaml"));
  applyOk(readAll(TRIBUTARY_CRD_EXAMPLES_DIR "/syncrun.yaml"));
  KubectlResult out = kubectl({"get", "conn,sj,sr", "-o", "name"});
  ASSERT_TRUE(out.ok()) << out.output;
  EXPECT_EQ(out.output,
            "connector.tributary.dev/local-files\n"
            "syncjob.tributary.dev/s3-initial-load\n"
            "syncrun.tributary.dev/github-issues-acme-29400000\n");
  out = kubectl({"get", "tributary", "-o", "name"});
  ASSERT_TRUE(out.ok()) << out.output;
  EXPECT_THAT(out.output, HasSubstr("connector.tributary.dev/local-files"));
  EXPECT_THAT(out.output, HasSubstr("syncjob.tributary.dev/s3-initial-load"));
  EXPECT_THAT(out.output, HasSubstr("syncrun.tributary.dev/github-issues-acme-29400000"));
  // Not in `all`.
  out = kubectl({"get", "all", "-o", "name"});
  EXPECT_THAT(out.output, Not(HasSubstr("tributary.dev")));

  // Agents list the runs bound to them with a field selector.
  ASSERT_TRUE(kubectl({"patch", "syncrun", "github-issues-acme-29400000", "--subresource=status",
                       "--type=merge", "-p", R"({"status":{"phase":"Bound","agent":"node-b"}})"})
                  .ok());
  out = kubectl({"get", "syncruns", "--field-selector", "status.agent=node-b", "-o", "name"});
  ASSERT_TRUE(out.ok()) << out.output;
  EXPECT_EQ(out.output, "syncrun.tributary.dev/github-issues-acme-29400000\n");
  out = kubectl({"get", "syncruns", "--field-selector", "status.agent=node-c", "-o", "name"});
  ASSERT_TRUE(out.ok()) << out.output;
  EXPECT_EQ(out.output, "");
  out = kubectl(
      {"get", "syncjobs", "--field-selector", "spec.connectorRef.name=s3-buckets", "-o", "name"});
  ASSERT_TRUE(out.ok()) << out.output;
  EXPECT_EQ(out.output, "syncjob.tributary.dev/s3-initial-load\n");
}

TEST_F(CrdTest, ExplainShowsDescriptions) {
  // The API server publishes a new CRD's OpenAPI schema a moment after it is Established:
  // "couldn't find resource" until then.
  KubectlResult out = kube().runKubectl({"explain", "syncjob.spec.deletionPolicy"});
  for (int i = 0; i < 60 && !out.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    out = kube().runKubectl({"explain", "syncjob.spec.deletionPolicy"});
  }
  ASSERT_TRUE(out.ok()) << out.output;
  EXPECT_THAT(out.output, HasSubstr("Mark soft-deletes them"));
  EXPECT_THAT(out.output, HasSubstr("ENUM"));
}

}  // namespace
}  // namespace tributary::harness
