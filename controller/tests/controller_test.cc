// The controller against the real kube-apiserver v1.34 + etcd of the test harness, with our CRDs:
// the reconcilers run in-process with an injectable clock; agents are simulated by Leases and
// SyncRun status patches made through the API; the binary is run as two processes for leader
// failover and scraped for /metrics (checked by promtool).

#include "tributary/controller/controller.h"

#include "tributary/kube/client.h"
#include "tributary/kube/config.h"
#include "tributary/testing/kube.h"
#include "tributary/testing/net.h"
#include "tributary/testing/promtool.h"
#include "tributary/testing/spawn.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <signal.h>
#include <thread>
#include <unistd.h>

namespace tributary::controller {
namespace {

using namespace std::chrono_literals;
using harness::KubeApiServer;
using kube::Json;

template <typename Pred>
bool waitFor(Pred pred, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) {
      return true;
    }
    std::this_thread::sleep_for(50ms);
  }
  return pred();
}

std::shared_ptr<kube::Client> makeClient() {
  auto config = kube::loadKubeconfig(KubeApiServer::shared().kubeconfigPath());
  EXPECT_TRUE(config.ok()) << config.status();
  auto client = kube::Client::create(*config);
  EXPECT_TRUE(client.ok()) << client.status();
  return *client;
}

std::string uniqueNamespace(const std::string& prefix) {
  static std::atomic<int> n{0};
  std::string name = prefix + "-" + std::to_string(getpid() % 100000) + "-" + std::to_string(n++);
  std::string lower;
  for (char c : name) {
    lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  EXPECT_TRUE(KubeApiServer::shared().createNamespace(lower).ok());
  return lower;
}

Json connector(const std::string& name) {
  return {{"apiVersion", "tributary.dev/v1alpha1"},
          {"kind", "Connector"},
          {"metadata", {{"name", name}}},
          {"spec", {{"source", "Local"}, {"uri", "/opt/connectors/x"}, {"command", "./x"}}}};
}

Json syncJob(const std::string& name, const std::string& conn, Json extra = Json::object()) {
  Json spec = {{"connectorRef", {{"name", conn}}}, {"options", {{"k", "v"}}}};
  for (auto& [k, v] : extra.items()) {
    spec[k] = v;
  }
  return {{"apiVersion", "tributary.dev/v1alpha1"},
          {"kind", "SyncJob"},
          {"metadata", {{"name", name}}},
          {"spec", spec}};
}

std::string conditionStatus(const Json& obj, std::string_view type) {
  if (!obj.contains("status") || !obj["status"].contains("conditions")) {
    return "";
  }
  const Json* c = kube::findCondition(obj["status"]["conditions"], type);
  return c != nullptr ? c->value("status", "") : "";
}

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    client_ = makeClient();
    ns_ = uniqueNamespace("ctrl");
  }
  void TearDown() override {
    if (ctrl_) {
      ctrl_->stop();
    }
  }
  void startController(int workers = 2) {
    ControllerOptions o;
    o.client = client_;
    o.watch_namespaces = {ns_};
    o.agent_namespace = ns_;
    o.workers = workers;
    o.clock = [this] { return Clock::now() + std::chrono::seconds(offset_.load()); };
    o.max_requeue = 300ms;
    o.run_poll = 200ms;
    o.retry_backoff = [](int n) { return std::chrono::milliseconds(200 * n); };
    ctrl_ = std::make_unique<Controller>(o);
    ctrl_->startInformers();
    ASSERT_TRUE(ctrl_->waitForSync(20s));
    ctrl_->startWorkers();
  }
  Json create(const kube::ResourceType& type, Json obj) {
    auto r = client_->create(type, ns_, std::move(obj));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : Json();
  }
  Json get(const kube::ResourceType& type, const std::string& name) {
    auto r = client_->get(type, ns_, name);
    Json out = r.ok() ? *r : Json::object();
    if (!out.contains("status")) {
      out["status"] = Json::object();
    }
    return out;
  }
  std::vector<Json> runsOf(const std::string& job) {
    kube::ListOptions o;
    o.field_selector = "spec.syncJobRef.name=" + job;
    auto r = client_->listAll(kube::resources::syncRun(), ns_, o);
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<Json> items = r.ok() ? r->items : std::vector<Json>{};
    for (auto& i : items) {
      if (!i.contains("status")) {
        i["status"] = Json::object();
      }
    }
    return items;
  }
  std::vector<Json> eventsFor(const std::string& name) {
    auto r = client_->listAll(kube::resources::event(), ns_);
    std::vector<Json> out;
    if (r.ok()) {
      for (auto& e : r->items) {
        if (e["involvedObject"].value("name", "") == name) {
          out.push_back(e);
        }
      }
    }
    return out;
  }
  bool hasEvent(const std::string& name, const std::string& reason) {
    for (const auto& e : eventsFor(name)) {
      if (e.value("reason", "") == reason) {
        return true;
      }
    }
    return false;
  }
  // A simulated agent: a Lease renewed by the test.
  void putAgentLease(
      const std::string& name, Json labels = Json::object(), int duration = 30, int capacity = 4,
      std::chrono::system_clock::time_point renew = std::chrono::system_clock::now()) {
    labels["tributary.dev/agent"] = "true";
    Json lease = {{"apiVersion", "coordination.k8s.io/v1"},
                  {"kind", "Lease"},
                  {"metadata",
                   {{"name", name},
                    {"namespace", ns_},
                    {"labels", labels},
                    {"annotations", {{"tributary.dev/capacity", std::to_string(capacity)}}}}},
                  {"spec",
                   {{"holderIdentity", name},
                    {"leaseDurationSeconds", duration},
                    {"renewTime", kube::formatMicroTime(renew)}}}};
    auto existing = client_->get(kube::resources::lease(), ns_, name);
    if (existing.ok()) {
      lease["metadata"]["resourceVersion"] = kube::resourceVersionOf(*existing);
      auto r = client_->update(kube::resources::lease(), lease);
      ASSERT_TRUE(r.ok()) << r.status();
    } else {
      create(kube::resources::lease(), lease);
    }
  }
  // The agent reports on a run through the status subresource.
  void patchRunStatus(const std::string& run, const Json& status) {
    auto r = client_->patch(kube::resources::syncRun(), ns_, run, kube::PatchType::Merge,
                            Json{{"status", status}}, kube::PatchOptions{"status", "", false});
    ASSERT_TRUE(r.ok()) << r.status();
  }

  std::shared_ptr<kube::Client> client_;
  std::string ns_;
  std::atomic<std::int64_t> offset_{0};
  std::unique_ptr<Controller> ctrl_;
};

TEST_F(ControllerTest, ConnectorGetsAcceptedAndReadyConditions) {
  startController();
  create(kube::resources::connector(), connector("good"));
  Json bad = connector("needs-secret");
  bad["spec"]["secretRef"] = {{"name", "creds"}};
  create(kube::resources::connector(), bad);
  ASSERT_TRUE(waitFor([&] {
    auto c = get(kube::resources::connector(), "good");
    return conditionStatus(c, "Ready") == "True" && conditionStatus(c, "Accepted") == "True" &&
           c["status"].value("observedGeneration", 0) == kube::generationOf(c) &&
           c["status"].value("specHash", "").size() == 16;
  }));
  ASSERT_TRUE(waitFor([&] {
    auto c = get(kube::resources::connector(), "needs-secret");
    return conditionStatus(c, "Accepted") == "True" && conditionStatus(c, "Ready") == "False";
  }));
  EXPECT_TRUE(waitFor([&] { return hasEvent("needs-secret", "SecretNotFound"); }));
}

TEST_F(ControllerTest, ConnectorEnvIsCheckedAndOnlyPlainValuesAreHashed) {
  // spec.env is untyped in the CRD (a Pod-style list or the older mapping): the controller checks
  // it, and hashes the plain values only, the same for both forms.
  startController();
  Json as_map = connector("env-map");
  as_map["spec"]["env"] = {{"GOFLAGS", "-mod=readonly"}};
  create(kube::resources::connector(), as_map);
  Json as_list = connector("env-list");
  as_list["spec"]["env"] =
      Json::array({{{"name", "GOFLAGS"}, {"value", "-mod=readonly"}},
                   {{"name", "AWS_SECRET_ACCESS_KEY"},
                    {"valueFrom", {{"secretKeyRef", {{"name", "aws"}, {"key", "secret"}}}}}}});
  create(kube::resources::connector(), as_list);
  Json bad = connector("env-bad");
  bad["spec"]["env"] = Json::array({{{"name", "1BAD"}, {"value", "x"}}});
  create(kube::resources::connector(), bad);
  std::string map_hash;
  std::string list_hash;
  ASSERT_TRUE(waitFor([&] {
    auto m = get(kube::resources::connector(), "env-map");
    auto l = get(kube::resources::connector(), "env-list");
    map_hash = m["status"].value("specHash", "");
    list_hash = l["status"].value("specHash", "");
    return conditionStatus(m, "Accepted") == "True" && conditionStatus(l, "Accepted") == "True" &&
           !map_hash.empty() && !list_hash.empty();
  }));
  EXPECT_EQ(map_hash, list_hash);
  ASSERT_TRUE(waitFor([&] {
    auto c = get(kube::resources::connector(), "env-bad");
    return conditionStatus(c, "Accepted") == "False";
  }));
  const Json env_bad = get(kube::resources::connector(), "env-bad");
  const Json* accepted = kube::findCondition(env_bad["status"]["conditions"], "Accepted");
  ASSERT_NE(accepted, nullptr);
  EXPECT_NE((*accepted)["message"].get<std::string>().find(
                "spec.env[0].name: `1BAD` is not an environment variable name"),
            std::string::npos)
      << accepted->dump();
}

TEST_F(ControllerTest, RunOnceCreatesExactlyOneRunWithOwnerReference) {
  startController();
  create(kube::resources::connector(), connector("c"));
  const Json job = create(kube::resources::syncJob(), syncJob("once", "c"));
  ASSERT_TRUE(waitFor([&] { return runsOf("once").size() == 1; }));
  std::this_thread::sleep_for(1s);
  const auto runs = runsOf("once");
  ASSERT_EQ(runs.size(), 1U);
  const Json& run = runs[0];
  EXPECT_EQ(run["spec"]["trigger"], "Once");
  EXPECT_EQ(run["spec"]["syncJobRef"]["uid"], kube::uidOf(job));
  ASSERT_EQ(run["metadata"]["ownerReferences"].size(), 1U);
  EXPECT_EQ(run["metadata"]["ownerReferences"][0]["uid"], kube::uidOf(job));
  EXPECT_EQ(run["metadata"]["ownerReferences"][0]["controller"], true);
  const auto created = kube::parseTime(job["metadata"]["creationTimestamp"].get<std::string>());
  EXPECT_EQ(kube::nameOf(run), scheduledRunName("once", *created));
  ASSERT_TRUE(waitFor([&] {
    auto j = get(kube::resources::syncJob(), "once");
    return conditionStatus(j, "Ready") == "True" && j["status"].contains("lastScheduleTime") &&
           j["status"].contains("active");
  }));
  EXPECT_TRUE(hasEvent("once", "SuccessfulCreate"));
  // The run finishes; the job's status follows.
  patchRunStatus(kube::nameOf(run), {{"phase", "Bound"}, {"agent", "a1"}});
  patchRunStatus(kube::nameOf(run), {{"phase", "Succeeded"},
                                     {"completionTime", kube::formatTime(Clock::now())},
                                     {"objects", {{"upserted", 7}}}});
  ASSERT_TRUE(waitFor([&] {
    auto j = get(kube::resources::syncJob(), "once");
    return j["status"].contains("lastRun") && j["status"]["lastRun"]["phase"] == "Succeeded" &&
           j["status"]["lastRun"].value("objectsUpserted", 0) == 7 &&
           j["status"].contains("lastSuccessfulTime") && !j["status"].contains("active");
  }));
  EXPECT_EQ(runsOf("once").size(), 1U);
}

TEST_F(ControllerTest, MissingConnectorGivesConditionAndEventThenIsPickedUp) {
  startController();
  create(kube::resources::syncJob(), syncJob("orphan", "later"));
  ASSERT_TRUE(waitFor([&] {
    auto j = get(kube::resources::syncJob(), "orphan");
    return conditionStatus(j, "ConnectorFound") == "False" &&
           conditionStatus(j, "Ready") == "False";
  }));
  EXPECT_TRUE(waitFor([&] { return hasEvent("orphan", "ConnectorNotFound"); }));
  EXPECT_TRUE(runsOf("orphan").empty());
  create(kube::resources::connector(), connector("later"));
  ASSERT_TRUE(waitFor([&] {
    auto j = get(kube::resources::syncJob(), "orphan");
    return conditionStatus(j, "ConnectorFound") == "True" && conditionStatus(j, "Ready") == "True";
  }));
  EXPECT_TRUE(waitFor([&] { return runsOf("orphan").size() == 1; }));
}

TEST_F(ControllerTest, MissingOptionsSecretAndInvalidTimeZone) {
  startController();
  create(kube::resources::connector(), connector("c"));
  Json j = syncJob("secret-job", "c");
  j["spec"].erase("options");
  j["spec"]["optionsFrom"] = {{"secretKeyRef", {{"name", "opts"}, {"key", "json"}}}};
  create(kube::resources::syncJob(), j);
  create(kube::resources::syncJob(),
         syncJob("tz-job", "c", {{"schedule", "0 * * * *"}, {"timeZone", "Mars/Base"}}));
  ASSERT_TRUE(waitFor([&] {
    return conditionStatus(get(kube::resources::syncJob(), "secret-job"), "OptionsFound") ==
               "False" &&
           conditionStatus(get(kube::resources::syncJob(), "tz-job"), "ScheduleValid") == "False";
  }));
  EXPECT_TRUE(waitFor([&] { return hasEvent("tz-job", "UnknownTimeZone"); }));
  EXPECT_TRUE(runsOf("secret-job").empty());
  // The Secret appears: picked up by the periodic requeue.
  create(kube::resources::secret(), {{"apiVersion", "v1"},
                                     {"kind", "Secret"},
                                     {"metadata", {{"name", "opts"}}},
                                     {"stringData", {{"json", "{}"}}}});
  EXPECT_TRUE(waitFor([&] { return runsOf("secret-job").size() == 1; }, 30s));
}

TEST_F(ControllerTest, CronScheduleRunsOnlyTheMostRecentMissedSlotAndFollowsTheClock) {
  startController();
  create(kube::resources::connector(), connector("c"));
  const Json job =
      create(kube::resources::syncJob(), syncJob("cron", "c", {{"schedule", "*/5 * * * *"}}));
  const auto created = *kube::parseTime(job["metadata"]["creationTimestamp"].get<std::string>());
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(runsOf("cron").empty());
  // 23 minutes later: 4 or 5 slots were missed; only the most recent one runs.
  offset_ = 23 * 60;
  ctrl_->enqueueAllSyncJobs();
  ASSERT_TRUE(waitFor([&] { return runsOf("cron").size() == 1; }));
  const auto now = Clock::now() + std::chrono::seconds(offset_.load());
  auto schedule = *CronSchedule::parse("*/5 * * * *");
  auto decision =
      *decideSchedule(schedule, *TimeZone::utc(), created, std::nullopt, std::nullopt, now);
  EXPECT_EQ(kube::nameOf(runsOf("cron")[0]), scheduledRunName("cron", *decision.run_at));
  ASSERT_TRUE(waitFor([&] {
    auto j = get(kube::resources::syncJob(), "cron");
    return j["status"].value("lastScheduleTime", "") == kube::formatTime(*decision.run_at) &&
           j["status"].contains("nextScheduleTime");
  }));
  // The run finishes; 5 minutes later the next slot runs.
  const std::string first = kube::nameOf(runsOf("cron")[0]);
  patchRunStatus(first, {{"phase", "Succeeded"}, {"completionTime", kube::formatTime(now)}});
  offset_ += 5 * 60;
  ASSERT_TRUE(waitFor([&] { return runsOf("cron").size() == 2; }));
  // Suspended: nothing new, however far the clock moves.
  for (const auto& r : runsOf("cron")) {
    patchRunStatus(kube::nameOf(r),
                   {{"phase", "Succeeded"}, {"completionTime", kube::formatTime(Clock::now())}});
  }
  auto p = client_->patch(kube::resources::syncJob(), ns_, "cron", kube::PatchType::Merge,
                          Json{{"spec", {{"suspend", true}}}});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(waitFor([&] {
    auto j = get(kube::resources::syncJob(), "cron");
    return j["status"].value("observedGeneration", 0) == kube::generationOf(j) &&
           !j["status"].contains("nextScheduleTime");
  }));
  offset_ += 60 * 60;
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(runsOf("cron").size(), 2U);
}

TEST_F(ControllerTest, TooManyMissedSchedulesWarnsAndRunsTheLatest) {
  startController();
  create(kube::resources::connector(), connector("c"));
  create(kube::resources::syncJob(), syncJob("many", "c", {{"schedule", "* * * * *"}}));
  offset_ = 3 * 3600;
  ctrl_->enqueueAllSyncJobs();
  ASSERT_TRUE(waitFor([&] { return runsOf("many").size() == 1; }));
  EXPECT_TRUE(waitFor([&] { return hasEvent("many", "TooManyMissedTimes"); }));
}

TEST_F(ControllerTest, ForbidSkipsWhileActiveAndReplaceDeletesTheActiveRun) {
  startController();
  create(kube::resources::connector(), connector("c"));
  create(kube::resources::syncJob(), syncJob("forbid", "c", {{"schedule", "*/5 * * * *"}}));
  create(kube::resources::syncJob(),
         syncJob("replace", "c", {{"schedule", "*/5 * * * *"}, {"concurrencyPolicy", "Replace"}}));
  offset_ = 6 * 60;
  ctrl_->enqueueAllSyncJobs();
  ASSERT_TRUE(
      waitFor([&] { return runsOf("forbid").size() == 1 && runsOf("replace").size() == 1; }));
  const std::string replaced = kube::nameOf(runsOf("replace")[0]);
  offset_ += 5 * 60;
  ctrl_->enqueueAllSyncJobs();
  ASSERT_TRUE(waitFor([&] {
    auto r = runsOf("replace");
    return r.size() == 1 && kube::nameOf(r[0]) != replaced;
  }));
  EXPECT_TRUE(waitFor([&] { return hasEvent("forbid", "JobAlreadyActive"); }));
  EXPECT_EQ(runsOf("forbid").size(), 1U);
  EXPECT_TRUE(hasEvent("replace", "SuccessfulDelete"));
}

TEST_F(ControllerTest, RunNowAnnotationStartsOneRunPerValue) {
  startController();
  create(kube::resources::connector(), connector("c"));
  create(kube::resources::syncJob(), syncJob("manual", "c", {{"schedule", "0 0 1 1 *"}}));
  auto annotate = [&](const std::string& v) {
    auto p = client_->patch(
        kube::resources::syncJob(), ns_, "manual", kube::PatchType::Merge,
        Json{{"metadata", {{"annotations", {{std::string(kRunNowAnnotation), v}}}}}});
    ASSERT_TRUE(p.ok()) << p.status();
  };
  annotate("one");
  ASSERT_TRUE(waitFor([&] { return runsOf("manual").size() == 1; }));
  EXPECT_EQ(kube::nameOf(runsOf("manual")[0]), manualRunName("manual", "one"));
  EXPECT_EQ(runsOf("manual")[0]["spec"]["trigger"], "Manual");
  ASSERT_TRUE(waitFor([&] {
    auto j = get(kube::resources::syncJob(), "manual");
    return j["status"].value("lastManualRun", "") == manualRunName("manual", "one");
  }));
  // Same value again: nothing. The first run finishes; a new value runs again.
  annotate("one");
  std::this_thread::sleep_for(700ms);
  EXPECT_EQ(runsOf("manual").size(), 1U);
  patchRunStatus(kube::nameOf(runsOf("manual")[0]),
                 {{"phase", "Failed"}, {"completionTime", kube::formatTime(Clock::now())}});
  annotate("two");
  ASSERT_TRUE(waitFor([&] { return runsOf("manual").size() == 2; }));
}

// The deletion guard travels to the run; a new confirm-deletion value confirms one run only.
TEST_F(ControllerTest, DeletionGuardAndItsOneShotConfirmationReachTheRuns) {
  startController();
  create(kube::resources::connector(), connector("c"));
  create(kube::resources::syncJob(),
         syncJob("guarded", "c",
                 {{"schedule", "0 0 1 1 *"}, {"deletionGuard", {{"maxDeletePercent", 20}}}}));
  auto annotate = [&](const Json& annotations) {
    auto p = client_->patch(kube::resources::syncJob(), ns_, "guarded", kube::PatchType::Merge,
                            Json{{"metadata", {{"annotations", annotations}}}});
    ASSERT_TRUE(p.ok()) << p.status();
  };
  auto finishAll = [&] {
    for (const auto& r : runsOf("guarded")) {
      patchRunStatus(kube::nameOf(r),
                     {{"phase", "Succeeded"}, {"completionTime", kube::formatTime(Clock::now())}});
    }
  };
  auto runNamed = [&](const std::string& name) {
    for (const auto& r : runsOf("guarded")) {
      if (kube::nameOf(r) == name) {
        return r;
      }
    }
    return Json();
  };
  // Confirmation and run-now together: the run is confirmed.
  annotate({{std::string(kRunNowAnnotation), "one"}, {"tributary.dev/confirm-deletion", "t1"}});
  ASSERT_TRUE(waitFor([&] { return runsOf("guarded").size() == 1; }));
  const Json first = runNamed(manualRunName("guarded", "one"));
  EXPECT_EQ(first["spec"]["deletionGuard"], (Json{{"maxDeletePercent", 20}, {"confirmed", true}}));
  ASSERT_TRUE(waitFor([&] {
    return get(kube::resources::syncJob(), "guarded")["status"].value("lastDeletionConfirmation",
                                                                      "") == "t1";
  }));
  // The same confirmation value does not confirm the next run.
  finishAll();
  annotate({{std::string(kRunNowAnnotation), "two"}});
  ASSERT_TRUE(waitFor([&] { return runsOf("guarded").size() == 2; }));
  EXPECT_EQ(runNamed(manualRunName("guarded", "two"))["spec"]["deletionGuard"],
            (Json{{"maxDeletePercent", 20}}));
  // A job without deletionGuard gets the CRD's default.
  create(kube::resources::syncJob(), syncJob("plain", "c"));
  ASSERT_TRUE(waitFor([&] { return runsOf("plain").size() == 1; }));
  EXPECT_EQ(runsOf("plain")[0]["spec"]["deletionGuard"], (Json{{"maxDeletePercent", 50}}));
}

TEST_F(ControllerTest, BindsToTheLeastLoadedMatchingAgentAndRetriesWhenItLosesItsLease) {
  startController();
  create(kube::resources::connector(), connector("c"));
  putAgentLease("agent-gpu", {{"pool", "gpu"}});
  putAgentLease("agent-a", {{"pool", "general"}});
  putAgentLease("agent-b", {{"pool", "general"}});
  for (int i = 0; i < 4; ++i) {
    create(kube::resources::syncJob(),
           syncJob(
               "job" + std::to_string(i), "c",
               {{"agentSelector", {{"matchLabels", {{"pool", "general"}}}}}, {"backoffLimit", 2}}));
  }
  std::map<std::string, int> per_agent;
  ASSERT_TRUE(waitFor([&] {
    per_agent.clear();
    for (int i = 0; i < 4; ++i) {
      for (const auto& r : runsOf("job" + std::to_string(i))) {
        if (r.contains("status") && r["status"].value("phase", "") == "Bound") {
          per_agent[r["status"]["agent"].get<std::string>()]++;
        }
      }
    }
    int total = 0;
    for (auto& [a, n] : per_agent) {
      total += n;
    }
    return total == 4;
  }));
  EXPECT_EQ(per_agent["agent-gpu"], 0);
  EXPECT_EQ(per_agent["agent-a"], 2);  // least loaded: spread evenly
  EXPECT_EQ(per_agent["agent-b"], 2);
  // agent-a stops renewing (expired lease): its runs go back to Pending (attempt 2) and are bound
  // to agent-b.
  putAgentLease("agent-a", {{"pool", "general"}}, 1, 4, Clock::now() - 10s);
  ASSERT_TRUE(waitFor([&] {
    int on_b = 0;
    int attempt2 = 0;
    for (int i = 0; i < 4; ++i) {
      for (const auto& r : runsOf("job" + std::to_string(i))) {
        if (r["status"].value("agent", "") == "agent-b") {
          ++on_b;
        }
        if (r["status"].value("attempt", 0) == 2) {
          ++attempt2;
        }
      }
    }
    return on_b == 4 && attempt2 == 2;
  })) <<
      [&] {
        std::string out;
        for (int i = 0; i < 4; ++i) {
          for (const auto& r : runsOf("job" + std::to_string(i))) {
            out += kube::nameOf(r) + " " + r["status"].dump() + "\n";
          }
        }
        return out;
      }();
  bool lost_event = false;
  for (int i = 0; i < 4; ++i) {
    for (const auto& r : runsOf("job" + std::to_string(i))) {
      lost_event = lost_event || hasEvent(kube::nameOf(r), "AgentLost");
    }
  }
  EXPECT_TRUE(lost_event);
}

TEST_F(ControllerTest, AnAgentLeaseThatSilentlyExpiresGivesItsRunsBack) {
  startController();
  create(kube::resources::connector(), connector("c"));
  putAgentLease("quiet", {}, 30);
  create(kube::resources::syncJob(), syncJob("j", "c"));
  ASSERT_TRUE(waitFor([&] {
    auto r = runsOf("j");
    return r.size() == 1 && r[0]["status"].value("agent", "") == "quiet";
  }));
  // No Lease event at all: the controller's clock passes renewTime + 30 s. The agent monitor
  // (every run_poll) notices; the run goes back to Pending for attempt 2.
  offset_ = 60;
  ASSERT_TRUE(waitFor([&] {
    auto r = runsOf("j");
    return r.size() == 1 && r[0]["status"].value("attempt", 0) == 2 &&
           r[0]["status"].value("phase", "") == "Pending" &&
           r[0]["status"].value("reason", "") == "AgentLost";
  })) << runsOf("j")[0]["status"].dump();
  // A renewal (at the controller's time) brings the agent back and the run is bound again.
  putAgentLease("quiet", {}, 30, 4, std::chrono::system_clock::now() + 60s);
  EXPECT_TRUE(waitFor([&] {
    auto r = runsOf("j");
    return r.size() == 1 && r[0]["status"].value("phase", "") == "Bound";
  }));
}

TEST_F(ControllerTest, NoAgentLeavesRunsPendingUntilOneAppears) {
  startController();
  create(kube::resources::connector(), connector("c"));
  create(kube::resources::syncJob(), syncJob("wait", "c"));
  ASSERT_TRUE(waitFor([&] {
    auto r = runsOf("wait");
    return r.size() == 1 && r[0].contains("status") && r[0]["status"]["phase"] == "Pending" &&
           conditionStatus(r[0], "Bound") == "False";
  }));
  putAgentLease("late-agent");
  EXPECT_TRUE(waitFor([&] {
    auto r = runsOf("wait");
    return r.size() == 1 && r[0]["status"].value("agent", "") == "late-agent";
  }));
}

TEST_F(ControllerTest, ActiveDeadlineFailsTheRun) {
  startController();
  create(kube::resources::connector(), connector("c"));
  putAgentLease("agent");
  create(kube::resources::syncJob(), syncJob("slow", "c", {{"activeDeadlineSeconds", 2}}));
  ASSERT_TRUE(waitFor([&] {
    auto r = runsOf("slow");
    return r.size() == 1 && r[0]["status"].value("phase", "") == "Bound";
  }));
  const std::string run = kube::nameOf(runsOf("slow")[0]);
  patchRunStatus(run, {{"phase", "Running"}, {"startTime", kube::formatTime(Clock::now())}});
  ASSERT_TRUE(waitFor([&] {
    auto r = get(kube::resources::syncRun(), run);
    return r["status"].value("phase", "") == "Failed" &&
           r["status"].value("reason", "") == "DeadlineExceeded";
  }));
  EXPECT_TRUE(waitFor([&] {
    auto j = get(kube::resources::syncJob(), "slow");
    return j["status"].contains("lastRun") && j["status"]["lastRun"]["phase"] == "Failed" &&
           j["status"]["lastRun"]["reason"] == "DeadlineExceeded";
  }));
}

TEST_F(ControllerTest, FailedAttemptsAreRetriedUpToBackoffLimit) {
  startController();
  create(kube::resources::connector(), connector("c"));
  putAgentLease("agent");
  create(kube::resources::syncJob(), syncJob("flaky", "c", {{"backoffLimit", 1}}));
  auto failAttempt = [&](int attempt) {
    ASSERT_TRUE(waitFor([&] {
      auto r = runsOf("flaky");
      return r.size() == 1 && r[0]["status"].value("phase", "") == "Bound" &&
             r[0]["status"].value("attempt", 0) == attempt;
    })) << "attempt "
        << attempt;
    const std::string run = kube::nameOf(runsOf("flaky")[0]);
    patchRunStatus(run, {{"phase", "Running"}, {"startTime", kube::formatTime(Clock::now())}});
    auto r = get(kube::resources::syncRun(), run);
    Json conditions = r["status"]["conditions"];
    kube::setCondition(conditions, "Failed", "True", "ConnectorFailed", "exit code 1", 1);
    patchRunStatus(run, {{"conditions", conditions}});
  };
  failAttempt(1);
  failAttempt(2);
  ASSERT_TRUE(waitFor([&] {
    auto r = runsOf("flaky");
    return r.size() == 1 && r[0]["status"].value("phase", "") == "Failed" &&
           r[0]["status"].value("reason", "") == "BackoffLimitExceeded";
  }));
  EXPECT_EQ(runsOf("flaky").size(), 1U);
}

TEST_F(ControllerTest, HistoryLimitsDeleteTheOldestFinishedRuns) {
  startController();
  create(kube::resources::connector(), connector("c"));
  create(kube::resources::syncJob(),
         syncJob("hist", "c", {{"schedule", "* * * * *"}, {"successfulRunsHistoryLimit", 2}}));
  std::set<std::string> seen;
  for (int i = 1; i <= 4; ++i) {
    offset_ += 60;
    ctrl_->enqueueAllSyncJobs();
    ASSERT_TRUE(waitFor([&] {
      for (const auto& r : runsOf("hist")) {
        if (!seen.contains(kube::nameOf(r))) {
          seen.insert(kube::nameOf(r));
          return true;
        }
      }
      return false;
    }));
    for (const auto& r : runsOf("hist")) {
      if (r["status"].value("phase", "Pending") == "Pending") {
        patchRunStatus(kube::nameOf(r), {{"phase", "Succeeded"},
                                         {"completionTime", kube::formatTime(Clock::now())}});
      }
    }
  }
  EXPECT_TRUE(waitFor([&] { return runsOf("hist").size() == 2; }));
}

TEST_F(ControllerTest, RestartInTheMiddleOfSchedulingDoesNotDuplicateRuns) {
  create(kube::resources::connector(), connector("c"));
  constexpr int kJobs = 40;
  for (int i = 0; i < kJobs; ++i) {
    create(kube::resources::syncJob(),
           syncJob("r" + std::to_string(i), "c", {{"schedule", "*/10 * * * *"}}));
  }
  offset_ = 15 * 60;
  for (int round = 0; round < 4; ++round) {
    startController(4);
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + 100 * round));
    ctrl_->stop();  // mid-flight: some runs created, some statuses not yet written
    ctrl_.reset();
  }
  startController(4);
  ASSERT_TRUE(waitFor(
      [&] {
        kube::ListOptions o;
        auto all = client_->listAll(kube::resources::syncRun(), ns_, o);
        return all.ok() && all->items.size() == kJobs;
      },
      60s));
  std::this_thread::sleep_for(1s);
  for (int i = 0; i < kJobs; ++i) {
    EXPECT_EQ(runsOf("r" + std::to_string(i)).size(), 1U) << "r" << i;
  }
}

TEST_F(ControllerTest, AThousandSyncJobsCreatedAtOnceAreAllScheduled) {
  create(kube::resources::connector(), connector("c"));
  startController(4);
  constexpr int kJobs = 1000;
  std::vector<std::thread> creators;
  for (int t = 0; t < 4; ++t) {
    creators.emplace_back([&, t] {
      for (int i = t; i < kJobs; i += 4) {
        auto r = client_->create(kube::resources::syncJob(), ns_,
                                 syncJob("bulk" + std::to_string(i), "c"));
        EXPECT_TRUE(r.ok()) << r.status();
      }
    });
  }
  for (auto& t : creators) {
    t.join();
  }
  ASSERT_TRUE(waitFor(
      [&] {
        auto all = client_->listAll(kube::resources::syncRun(), ns_);
        return all.ok() && all->items.size() == kJobs;
      },
      180s));
  std::this_thread::sleep_for(1s);
  auto all = client_->listAll(kube::resources::syncRun(), ns_);
  ASSERT_TRUE(all.ok());
  std::set<std::string> jobs;
  for (const auto& r : all->items) {
    jobs.insert(r["spec"]["syncJobRef"]["name"].get<std::string>());
  }
  EXPECT_EQ(jobs.size(), static_cast<std::size_t>(kJobs));
  EXPECT_EQ(all->items.size(), static_cast<std::size_t>(kJobs));
}

TEST_F(ControllerTest, KeepsWorkingAcrossAnApiServerRestart) {
  startController();
  create(kube::resources::connector(), connector("c"));
  putAgentLease("agent", {}, 600);
  create(kube::resources::syncJob(), syncJob("before", "c"));
  ASSERT_TRUE(waitFor([&] {
    auto r = runsOf("before");
    return r.size() == 1 && r[0]["status"].value("phase", "") == "Bound";
  }));
  KubeApiServer::shared().restartApiServer();
  // /readyz is served before the custom resources' storage is back (429 "storage is
  // (re)initializing" for a moment): wait for that like any client would.
  ASSERT_TRUE(waitFor([&] {
    return client_->listAll(kube::resources::syncRun(), ns_).ok() &&
           client_->listAll(kube::resources::syncJob(), ns_).ok();
  }));
  // Every watch of the controller was cut; the informers re-watch (or relist) and the reconcilers
  // see what happens next: a new job is scheduled and bound, an agent report is acted on. (The
  // test's own create is retried like any client's while the server is still settling.)
  ASSERT_TRUE(waitFor([&] {
    auto r = client_->create(kube::resources::syncJob(), ns_, syncJob("after", "c"));
    return r.ok() || kube::isAlreadyExists(r.status());
  }));
  ASSERT_TRUE(waitFor(
      [&] {
        auto r = runsOf("after");
        return r.size() == 1 && r[0]["status"].value("phase", "") == "Bound";
      },
      60s));
  patchRunStatus(kube::nameOf(runsOf("before")[0]),
                 {{"phase", "Succeeded"}, {"completionTime", kube::formatTime(Clock::now())}});
  EXPECT_TRUE(waitFor([&] {
    auto j = get(kube::resources::syncJob(), "before");
    return j["status"].contains("lastRun") && j["status"]["lastRun"]["phase"] == "Succeeded";
  }));
  EXPECT_EQ(runsOf("before").size(), 1U);
  EXPECT_EQ(runsOf("after").size(), 1U);
}

// --- the binary ----------------------------------------------------------------------------------

struct Process {
  pid_t pid = -1;
  int metrics_port = 0;
  int probe_port = 0;
  std::string log;
};

Process spawnController(const std::string& ns, const std::string& log_path) {
  Process p;
  p.metrics_port = harness::freeLoopbackPort().value_or(0);
  p.probe_port = harness::freeLoopbackPort().value_or(0);
  p.log = log_path;
  const std::string kubeconfig = KubeApiServer::shared().kubeconfigPath();
  const std::vector<std::string> args = {
      TRIBUTARY_CONTROLLER_BINARY,
      "--kubeconfig=" + kubeconfig,
      "--namespace=" + ns,
      "--agent-namespace=" + ns,
      "--leader-elect",
      "--leader-election-id=ctrl-" + ns,
      "--leader-elect-lease-duration=4s",
      "--leader-elect-renew-deadline=3s",
      "--leader-elect-retry-period=1s",
      "--metrics-bind-address=127.0.0.1:" + std::to_string(p.metrics_port),
      "--health-probe-bind-address=127.0.0.1:" + std::to_string(p.probe_port)};
  auto pid = harness::spawnLogged(args, log_path);
  EXPECT_TRUE(pid.ok()) << pid.status();
  p.pid = pid.value_or(-1);
  return p;
}

bool isLeader(const Process& p) {
  const std::string m = harness::httpGetLoopback(p.metrics_port, "/metrics");
  const auto pos = m.find("\nleader_election_master_status{");
  if (pos == std::string::npos) {
    return false;
  }
  const auto close = m.find("} ", pos);
  return close != std::string::npos && m.compare(close + 2, 1, "1") == 0;
}

TEST_F(ControllerTest, TwoBinariesOneLeaderFailoverAfterSigkillAndMetricsPassPromtool) {
  const std::string dir = KubeApiServer::shared().dir();
  create(kube::resources::connector(), connector("c"));
  Process a = spawnController(ns_, dir + "/ctrl-a-" + ns_ + ".log");
  Process b = spawnController(ns_, dir + "/ctrl-b-" + ns_ + ".log");
  ASSERT_TRUE(waitFor(
      [&] {
        int code_a = 0;
        int code_b = 0;
        harness::httpGetLoopback(a.probe_port, "/readyz", &code_a);
        harness::httpGetLoopback(b.probe_port, "/readyz", &code_b);
        return code_a == 200 && code_b == 200;
      },
      30s));
  ASSERT_TRUE(waitFor([&] { return isLeader(a) || isLeader(b); }, 30s));
  std::this_thread::sleep_for(1s);
  ASSERT_NE(isLeader(a), isLeader(b)) << "exactly one leader";
  Process& leader = isLeader(a) ? a : b;
  Process& standby = isLeader(a) ? b : a;
  create(kube::resources::syncJob(), syncJob("before", "c"));
  ASSERT_TRUE(waitFor([&] { return runsOf("before").size() == 1; }));

  // /metrics of the leader passes promtool and has the controller-runtime names.
  const std::string metrics = harness::httpGetLoopback(leader.metrics_port, "/metrics");
  for (const char* name :
       {"controller_runtime_reconcile_total{controller=\"syncjob\",result=\"success\"}",
        "controller_runtime_reconcile_time_seconds_bucket",
        "controller_runtime_reconcile_errors_total", "workqueue_depth", "workqueue_adds_total",
        "workqueue_retries_total", "workqueue_queue_duration_seconds_bucket",
        "workqueue_work_duration_seconds_bucket", "leader_election_master_status",
        "rest_client_requests_total{", "tributary_syncruns_created_total",
        "process_resident_memory_bytes"}) {
    EXPECT_NE(metrics.find(name), std::string::npos) << name;
  }
  const absl::Status promtool = harness::promtoolCheckMetrics(metrics);
  EXPECT_TRUE(promtool.ok()) << promtool;

  // SIGKILL the leader: the standby takes over within a lease duration and schedules.
  ::kill(leader.pid, SIGKILL);
  ::waitpid(leader.pid, nullptr, 0);
  ASSERT_TRUE(waitFor([&] { return isLeader(standby); }, 20s));
  create(kube::resources::syncJob(), syncJob("after", "c"));
  EXPECT_TRUE(waitFor([&] { return runsOf("after").size() == 1; }));
  EXPECT_EQ(runsOf("before").size(), 1U);

  // SIGTERM: graceful, exit code 0, the lease is released (holder cleared).
  ::kill(standby.pid, SIGTERM);
  int status = 0;
  ::waitpid(standby.pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  auto lease = client_->get(kube::resources::lease(), ns_, "ctrl-" + ns_);
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ((*lease)["spec"].value("holderIdentity", ""), "");
}

}  // namespace
}  // namespace tributary::controller
