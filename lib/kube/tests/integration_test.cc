// lib/kube against the real kube-apiserver v1.34 + etcd of the test harness, with our CRDs:
// config (client certificate, bearer token), CRUD + status subresource + conflicts, patches,
// pagination over 500 objects, Events, Secrets, informers (exactly-once delivery, quiet watches,
// server-closed streams, apiserver restart, 410 relist with a deletion the watch never saw), and
// leader election (one leader, failover, release, forced takeover).

#include "tributary/kube/client.h"
#include "tributary/kube/config.h"
#include "tributary/kube/informer.h"
#include "tributary/kube/leader_election.h"
#include "tributary/testing/kube.h"

#include "../src/util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace tributary::kube {
namespace {

using namespace std::chrono_literals;
using harness::KubeApiServer;
using ::testing::HasSubstr;

template <typename Pred>
bool waitFor(Pred pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) {
      return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

Json syncJob(const std::string& name, const std::string& option = "v") {
  return Json{{"apiVersion", "tributary.dev/v1alpha1"},
              {"kind", "SyncJob"},
              {"metadata", {{"name", name}}},
              {"spec", {{"connectorRef", {{"name", "c"}}}, {"options", {{"k", option}}}}}};
}

// Records informer notifications as text, in delivery order.
class Recorder {
 public:
  EventHandler handler() {
    return EventHandler{
        [this](const Json& o, bool initial) {
          add(std::string(initial ? "INIT " : "ADD ") + keyOf(o) + " " + resourceVersionOf(o));
        },
        [this](const Json&, const Json& n) {
          add("UPDATE " + keyOf(n) + " " + resourceVersionOf(n));
        },
        [this](const Json& o, bool unknown) {
          add(std::string(unknown ? "DELETE? " : "DELETE ") + keyOf(o));
        }};
  }
  std::vector<std::string> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::size_t count(const std::string& prefix) const {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const auto& e : events_) {
      if (e.rfind(prefix, 0) == 0) {
        ++n;
      }
    }
    return n;
  }
  bool has(const std::string& prefix) const { return count(prefix) > 0; }

 private:
  void add(std::string e) {
    std::lock_guard lock(mu_);
    events_.push_back(std::move(e));
  }
  mutable std::mutex mu_;
  std::vector<std::string> events_;
};

class KubeIntegration : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<KubeApiServer*> server = KubeApiServer::sharedOrError();
    ASSERT_TRUE(server.ok()) << server.status();
  }
  static KubeApiServer& kube() { return KubeApiServer::shared(); }

  static Config adminConfig() {
    auto config = loadKubeconfig(kube().kubeconfigPath());
    if (!config.ok()) {
      ADD_FAILURE() << config.status();
      return {};
    }
    return *config;
  }
  static std::shared_ptr<Client> client(Config config) {
    auto c = Client::create(std::move(config));
    if (!c.ok()) {
      ADD_FAILURE() << c.status();
      return nullptr;
    }
    return *c;
  }
  static std::shared_ptr<Client> adminClient() { return client(adminConfig()); }

  static std::string freshNamespace(const std::string& prefix) {
    static std::atomic<int> counter{0};
    std::mt19937 rng(std::random_device{}());
    const std::string name =
        prefix + "-" + std::to_string(counter++) + "-" + std::to_string(rng() % 100000);
    const absl::Status created = kube().createNamespace(name);
    EXPECT_TRUE(created.ok()) << created;
    return name;
  }

  static InformerOptions fastInformer(const std::string& ns) {
    InformerOptions options;
    options.type = resources::syncJob();
    options.namespaces = {ns};
    options.min_watch_timeout = 60s;
    options.max_watch_timeout = 60s;
    options.idle_timeout = 30s;
    options.backoff_initial = 100ms;
    options.backoff_max = 1s;
    return options;
  }
};

TEST_F(KubeIntegration, ClientCertificateKubeconfigAndKubeconfigEnv) {
  auto c = adminClient();
  ASSERT_NE(c, nullptr);
  EXPECT_THAT(c->config().describe(), HasSubstr("client certificate"));
  auto ns = c->get(resources::namespace_(), "", "default");
  ASSERT_TRUE(ns.ok()) << ns.status();
  EXPECT_EQ(nameOf(*ns), "default");

  LoadOptions options;
  options.kubeconfig_env = "/nonexistent/config:" + kube().kubeconfigPath();
  options.service_host = "";
  auto from_env = loadConfig(options);
  ASSERT_TRUE(from_env.ok()) << from_env.status();
  EXPECT_EQ(from_env->server, kube().url());
}

TEST_F(KubeIntegration, BearerTokensTokenFilesAndRbacErrors) {
  auto token_config = loadKubeconfig(kube().tokenKubeconfigPath());
  ASSERT_TRUE(token_config.ok()) << token_config.status();
  auto c = client(*token_config);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->get(resources::namespace_(), "", "default").ok());

  // Token from a file, CA from a file (what the in-cluster config uses).
  const std::string dir = kube().dir() + "/kube-client-test";
  std::filesystem::create_directories(dir);
  { std::ofstream(dir + "/token") << kube().bearerTokenFor("admin") << "\n"; }
  Config config;
  config.server = kube().url();
  config.ca_pem = *internal::readFile(kube().caFile());
  config.token_file = dir + "/token";
  auto by_file = client(config);
  ASSERT_NE(by_file, nullptr);
  ASSERT_TRUE(by_file->get(resources::namespace_(), "", "default").ok());

  // alice is authenticated but has no role: 403 with the server's reason.
  config.token_file.clear();
  config.bearer_token = kube().bearerTokenFor("alice");
  auto alice = client(config);
  auto denied = alice->list(resources::syncJob(), "default");
  ASSERT_FALSE(denied.ok());
  EXPECT_TRUE(absl::IsPermissionDenied(denied.status())) << denied.status();
  EXPECT_THAT(denied.status().message(), HasSubstr("alice"));
  EXPECT_THAT(denied.status().message(), HasSubstr("list syncjobs.tributary.dev default/*"));

  // A wrong token: 401.
  config.bearer_token = "not-a-token";
  auto nobody = client(config);
  auto unauth = nobody->get(resources::namespace_(), "", "default");
  EXPECT_TRUE(absl::IsUnauthenticated(unauth.status())) << unauth.status();

  // A server certificate signed by another CA is refused.
  config.bearer_token = kube().bearerTokenFor("admin");
  config.ca_pem = *internal::readFile("/etc/ssl/certs/ca-certificates.crt");
  auto wrong_ca = client(config);
  auto refused = wrong_ca->get(resources::namespace_(), "", "default");
  EXPECT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  config.ca_pem.clear();
  config.insecure_skip_tls_verify = true;
  auto insecure = client(config);
  EXPECT_TRUE(insecure->get(resources::namespace_(), "", "default").ok());
}

TEST_F(KubeIntegration, SyncJobCrudStatusSubresourceConflictsAndPatches) {
  auto c = adminClient();
  const std::string ns = freshNamespace("crud");
  auto created = c->create(resources::syncJob(), ns, syncJob("job"));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(generationOf(*created), 1);
  EXPECT_FALSE(uidOf(*created).empty());

  auto again = c->create(resources::syncJob(), ns, syncJob("job"));
  EXPECT_TRUE(isAlreadyExists(again.status())) << again.status();

  // Update the spec: generation moves; a second update from the stale copy conflicts.
  Json v1 = *created;
  v1["spec"]["options"]["k"] = "v2";
  auto updated = c->update(resources::syncJob(), v1);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(generationOf(*updated), 2);
  Json stale = *created;
  stale["spec"]["options"]["k"] = "v3";
  auto conflict = c->update(resources::syncJob(), stale);
  ASSERT_FALSE(conflict.ok());
  EXPECT_TRUE(isConflict(conflict.status())) << conflict.status();
  EXPECT_TRUE(absl::IsAborted(conflict.status()));
  EXPECT_THAT(conflict.status().message(), HasSubstr("the object has been modified"));

  // Status subresource: status changes, spec changes in the same request are ignored.
  Json with_status = *updated;
  setCondition(with_status["status"]["conditions"], "Ready", "False", "Waiting", "no agent", 2);
  with_status["status"]["observedGeneration"] = 2;
  with_status["spec"]["options"]["k"] = "ignored";
  auto status_updated = c->updateStatus(resources::syncJob(), with_status);
  ASSERT_TRUE(status_updated.ok()) << status_updated.status();
  EXPECT_EQ((*status_updated)["spec"]["options"]["k"], "v2");
  EXPECT_EQ((*status_updated)["status"]["observedGeneration"], 2);
  EXPECT_EQ(generationOf(*status_updated), 2);
  // Status update from a stale copy conflicts too.
  auto status_conflict = c->updateStatus(resources::syncJob(), with_status);
  EXPECT_TRUE(isConflict(status_conflict.status())) << status_conflict.status();

  // Merge patch of the spec and of the status.
  auto merged = c->patch(resources::syncJob(), ns, "job", PatchType::Merge,
                         Json{{"spec", {{"suspend", true}}}});
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ((*merged)["spec"]["suspend"], true);
  auto status_patch = c->patch(resources::syncJob(), ns, "job", PatchType::Merge,
                               Json{{"status", {{"lastScheduleTime", "2025-01-01T00:00:00Z"}}}},
                               PatchOptions{"status", "", false});
  ASSERT_TRUE(status_patch.ok()) << status_patch.status();
  EXPECT_EQ((*status_patch)["status"]["lastScheduleTime"], "2025-01-01T00:00:00Z");

  // JSON patch with a test op as a precondition: fails with 422 when the value differs.
  auto json_patch =
      c->patch(resources::syncJob(), ns, "job", PatchType::JsonPatch,
               Json::array({{{"op", "test"}, {"path", "/spec/suspend"}, {"value", true}},
                            {{"op", "replace"}, {"path", "/spec/suspend"}, {"value", false}}}));
  ASSERT_TRUE(json_patch.ok()) << json_patch.status();
  EXPECT_EQ((*json_patch)["spec"]["suspend"], false);
  auto failed_test =
      c->patch(resources::syncJob(), ns, "job", PatchType::JsonPatch,
               Json::array({{{"op", "test"}, {"path", "/spec/suspend"}, {"value", true}}}));
  EXPECT_FALSE(failed_test.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(failed_test.status())) << failed_test.status();

  // Server-side apply with a field manager.
  auto applied = c->patch(resources::syncJob(), ns, "applied", PatchType::Apply, syncJob("applied"),
                          PatchOptions{"", "tributary-test", true});
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(nameOf(*applied), "applied");

  // Validation errors (CEL rule of the CRD) come back with the server's message.
  Json bad = syncJob("bad");
  bad["spec"].erase("options");
  auto invalid = c->create(resources::syncJob(), ns, bad);
  ASSERT_FALSE(invalid.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(invalid.status()));
  EXPECT_EQ(httpCode(invalid.status()), 422);
  EXPECT_THAT(invalid.status().message(),
              HasSubstr("exactly one of spec.options and spec.optionsFrom"));

  // Delete with a stale resourceVersion precondition conflicts; then deletes.
  auto stale_delete = c->remove(resources::syncJob(), ns, "job",
                                DeleteOptions{"", resourceVersionOf(*created), "", std::nullopt});
  EXPECT_TRUE(isConflict(stale_delete)) << stale_delete;
  ASSERT_TRUE(c->remove(resources::syncJob(), ns, "job").ok());
  auto gone = c->get(resources::syncJob(), ns, "job");
  EXPECT_TRUE(isNotFound(gone.status())) << gone.status();
  EXPECT_THAT(gone.status().message(), HasSubstr("get syncjobs.tributary.dev " + ns + "/job"));
}

TEST_F(KubeIntegration, ConcurrentStatusWritersSucceedWithRetryOnConflict) {
  auto c = adminClient();
  const std::string ns = freshNamespace("retry");
  ASSERT_TRUE(c->create(resources::syncJob(), ns, syncJob("job")).ok());
  std::atomic<int> conflicts{0};
  {
    std::vector<std::jthread> writers;
    for (int t = 0; t < 4; ++t) {
      writers.emplace_back([&, t] {
        for (int i = 0; i < 5; ++i) {
          const absl::Status status = retryOnConflict(
              [&]() -> absl::Status {
                auto current = c->get(resources::syncJob(), ns, "job");
                if (!current.ok()) {
                  return current.status();
                }
                setCondition((*current)["status"]["conditions"], "Writer" + std::to_string(t),
                             "True", "Wrote", "write " + std::to_string(i), 1);
                auto written = c->updateStatus(resources::syncJob(), *current);
                if (isConflict(written.status())) {
                  ++conflicts;
                }
                return written.status();
              },
              50);
          EXPECT_TRUE(status.ok()) << status;
        }
      });
    }
  }
  auto final_job = c->get(resources::syncJob(), ns, "job");
  ASSERT_TRUE(final_job.ok());
  for (int t = 0; t < 4; ++t) {  // no write was lost
    const Json* cond =
        findCondition((*final_job)["status"]["conditions"], "Writer" + std::to_string(t));
    ASSERT_NE(cond, nullptr) << t;
    EXPECT_EQ((*cond)["message"], "write 4");
  }
  std::printf("status conflicts retried: %d\n", conflicts.load());
}

TEST_F(KubeIntegration, LeaseUpdateConflict) {
  auto c = adminClient();
  const std::string ns = freshNamespace("lease");
  auto lease = c->create(resources::lease(), ns,
                         Json{{"metadata", {{"name", "l"}}},
                              {"spec", {{"holderIdentity", "a"}, {"leaseDurationSeconds", 15}}}});
  ASSERT_TRUE(lease.ok()) << lease.status();
  Json first = *lease;
  first["spec"]["holderIdentity"] = "b";
  ASSERT_TRUE(c->update(resources::lease(), first).ok());
  Json second = *lease;
  second["spec"]["holderIdentity"] = "c";
  auto conflict = c->update(resources::lease(), second);
  EXPECT_TRUE(isConflict(conflict.status())) << conflict.status();
}

TEST_F(KubeIntegration, PaginatedListOfMoreThan500Objects) {
  auto c = adminClient();
  const std::string ns = freshNamespace("pages");
  constexpr int kCount = 1100;
  std::atomic<int> next{0};
  std::atomic<int> failures{0};
  {
    std::vector<std::jthread> writers;
    for (int t = 0; t < 4; ++t) {
      writers.emplace_back([&] {
        for (int i = next++; i < kCount; i = next++) {
          auto r = c->create(resources::configMap(), ns,
                             Json{{"metadata", {{"name", "cm-" + std::to_string(i)}}},
                                  {"data", {{"i", std::to_string(i)}}}});
          if (!r.ok()) {
            ++failures;
          }
        }
      });
    }
  }
  ASSERT_EQ(failures.load(), 0);
  auto page = c->list(resources::configMap(), ns, ListOptions{"", "", 500, "", ""});
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->items.size(), 500U);
  EXPECT_FALSE(page->continue_token.empty());

  auto all = c->listAll(resources::configMap(), ns);
  ASSERT_TRUE(all.ok()) << all.status();
  std::set<std::string> names;
  for (const Json& item : all->items) {
    if (nameOf(item).rfind("cm-", 0) == 0) {
      names.insert(nameOf(item));
    }
    EXPECT_EQ(item["kind"], "ConfigMap");
  }
  EXPECT_EQ(names.size(), static_cast<std::size_t>(kCount));
  EXPECT_FALSE(all->resource_version.empty());
}

TEST_F(KubeIntegration, EventsAggregateAndSecretsReadOneKey) {
  auto c = adminClient();
  const std::string ns = freshNamespace("events");
  auto job = c->create(resources::syncJob(), ns, syncJob("job"));
  ASSERT_TRUE(job.ok()) << job.status();
  EventRecorder recorder(c, "tributary-controller", "host-1");
  ASSERT_TRUE(recorder.warning(*job, "MissingConnector", "connector c not found").ok());
  ASSERT_TRUE(recorder.warning(*job, "MissingConnector", "connector c not found").ok());
  ASSERT_TRUE(recorder.normal(*job, "Scheduled", "created run job-1").ok());
  auto events =
      c->list(resources::event(), ns, ListOptions{"", "involvedObject.name=job", 0, "", ""});
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->items.size(), 2U);
  std::map<std::string, Json> by_reason;
  for (const Json& e : events->items) {
    by_reason[e["reason"].get<std::string>()] = e;
  }
  EXPECT_EQ(by_reason["MissingConnector"]["count"], 2);
  EXPECT_EQ(by_reason["MissingConnector"]["type"], "Warning");
  EXPECT_EQ(by_reason["MissingConnector"]["involvedObject"]["uid"], uidOf(*job));
  EXPECT_EQ(by_reason["MissingConnector"]["involvedObject"]["kind"], "SyncJob");
  EXPECT_EQ(by_reason["Scheduled"]["count"], 1);
  EXPECT_EQ(by_reason["Scheduled"]["source"]["component"], "tributary-controller");

  ASSERT_TRUE(c->create(resources::secret(), ns,
                        Json{{"metadata", {{"name", "opts"}}},
                             {"stringData", {{"options.json", "{\"token\":\"s3cr3t\"}"}}}})
                  .ok());
  auto value = readSecretKey(*c, ns, "opts", "options.json");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "{\"token\":\"s3cr3t\"}");
  auto missing = readSecretKey(*c, ns, "opts", "other");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("\"options.json\""));
  EXPECT_THAT(missing.status().message(), ::testing::Not(HasSubstr("s3cr3t")));
  EXPECT_TRUE(isNotFound(readSecretKey(*c, ns, "nope", "x").status()));
}

TEST_F(KubeIntegration, InformerDeliversListAndEveryChangeOnceInOrder) {
  auto c = adminClient();
  const std::string ns = freshNamespace("inf");
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(c->create(resources::syncJob(), ns, syncJob("pre-" + std::to_string(i))).ok());
  }
  InformerOptions options = fastInformer(ns);
  options.page_size = 2;  // the initial list takes three pages
  Informer informer(c, options);
  Recorder rec;
  informer.addEventHandler(rec.handler());
  informer.start();
  ASSERT_TRUE(informer.waitForSync(20s));
  EXPECT_EQ(rec.count("INIT "), 5U);
  EXPECT_EQ(informer.store().size(), 5U);

  auto a = c->create(resources::syncJob(), ns, syncJob("a"));
  ASSERT_TRUE(a.ok());
  Json a2 = *a;
  a2["spec"]["options"]["k"] = "2";
  auto a_updated = c->update(resources::syncJob(), a2);
  ASSERT_TRUE(a_updated.ok());
  ASSERT_TRUE(c->remove(resources::syncJob(), ns, "a").ok());
  ASSERT_TRUE(c->remove(resources::syncJob(), ns, "pre-0").ok());
  ASSERT_TRUE(waitFor([&] { return rec.has("DELETE " + ns + "/pre-0"); }, 10s));
  informer.stop();

  const std::vector<std::string> events = rec.events();
  const std::vector<std::string> tail(events.begin() + 5, events.end());
  EXPECT_THAT(tail, ::testing::ElementsAre("ADD " + ns + "/a " + resourceVersionOf(*a),
                                           "UPDATE " + ns + "/a " + resourceVersionOf(*a_updated),
                                           "DELETE " + ns + "/a", "DELETE " + ns + "/pre-0"));
  EXPECT_EQ(informer.store().size(), 4U);
}

TEST_F(KubeIntegration, InformerOverSeveralNamespacesSeesThoseAndNoOther) {
  auto c = adminClient();
  const std::string a = freshNamespace("infa");
  const std::string b = freshNamespace("infb");
  const std::string other = freshNamespace("infc");
  for (const std::string& ns : {a, b, other}) {
    ASSERT_TRUE(c->create(resources::syncJob(), ns, syncJob("pre")).ok());
  }
  InformerOptions options = fastInformer(a);
  options.namespaces = {a, b};
  Informer informer(c, options);
  Recorder rec;
  informer.addEventHandler(rec.handler());
  informer.start();
  ASSERT_TRUE(informer.waitForSync(20s));
  // Synced means both namespaces' first lists were delivered.
  EXPECT_EQ(rec.count("INIT "), 2U);
  EXPECT_THAT(informer.store().keys(), ::testing::ElementsAre(a + "/pre", b + "/pre"));

  ASSERT_TRUE(c->create(resources::syncJob(), other, syncJob("x")).ok());
  ASSERT_TRUE(c->create(resources::syncJob(), b, syncJob("x")).ok());
  ASSERT_TRUE(c->remove(resources::syncJob(), a, "pre").ok());
  ASSERT_TRUE(waitFor([&] { return rec.has("DELETE " + a + "/pre"); }, 10s));
  ASSERT_TRUE(waitFor([&] { return informer.store().get(b + "/x") != nullptr; }, 10s));
  informer.stop();
  EXPECT_THAT(informer.store().keys(), ::testing::ElementsAre(b + "/pre", b + "/x"));
  for (const std::string& e : rec.events()) {
    EXPECT_THAT(e, ::testing::Not(::testing::HasSubstr(other))) << "saw another namespace";
  }
}

TEST_F(KubeIntegration, InformerSurvivesQuietWatchesLongerThanTheClientTimeouts) {
  Config config = adminConfig();
  config.request_timeout = 1s;  // ordinary requests: 1 s; watches must not be bound by it
  auto c = client(config);
  auto admin = adminClient();
  const std::string ns = freshNamespace("quiet");
  auto x = admin->create(resources::syncJob(), ns, syncJob("x"));
  ASSERT_TRUE(x.ok()) << x.status();

  InformerOptions options = fastInformer(ns);
  options.idle_timeout = 10s;
  Informer patient(c, options);
  Recorder patient_rec;
  patient.addEventHandler(patient_rec.handler());
  options.idle_timeout = 1500ms;  // no bookmark within 1.5 s: reconnects while quiet
  Informer twitchy(c, options);
  Recorder twitchy_rec;
  twitchy.addEventHandler(twitchy_rec.handler());
  patient.start();
  twitchy.start();
  ASSERT_TRUE(patient.waitForSync(20s));
  ASSERT_TRUE(twitchy.waitForSync(20s));

  std::this_thread::sleep_for(5s);  // quiet: longer than request_timeout and the idle timeout
  EXPECT_EQ(patient.stats().watch_errors, 0U);
  EXPECT_GE(twitchy.stats().idle_timeouts, 2U);

  auto y = admin->create(resources::syncJob(), ns, syncJob("y"));
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_TRUE(waitFor([&] { return patient_rec.has("ADD " + ns + "/y"); }, 10s));
  ASSERT_TRUE(waitFor([&] { return twitchy_rec.has("ADD " + ns + "/y"); }, 10s));
  std::this_thread::sleep_for(2s);
  patient.stop();
  twitchy.stop();
  for (const Recorder* rec : {&patient_rec, &twitchy_rec}) {
    const std::vector<std::string> events = rec->events();
    ASSERT_EQ(events.size(), 2U) << ::testing::PrintToString(events);
    EXPECT_THAT(events[0], ::testing::StartsWith("INIT " + ns + "/x "));
    EXPECT_EQ(events[1], "ADD " + ns + "/y " + resourceVersionOf(*y));
  }
}

TEST_F(KubeIntegration, InformerRewatchesWhenTheServerEndsTheStream) {
  auto c = adminClient();
  const std::string ns = freshNamespace("short");
  InformerOptions options = fastInformer(ns);
  options.min_watch_timeout = 1s;  // the server closes every watch after a second
  options.max_watch_timeout = 1s;
  Informer informer(c, options);
  Recorder rec;
  informer.addEventHandler(rec.handler());
  informer.start();
  ASSERT_TRUE(informer.waitForSync(20s));
  std::map<std::string, std::string> last_rv;
  for (int i = 0; i < 12; ++i) {
    auto created = c->create(resources::syncJob(), ns, syncJob("j" + std::to_string(i)));
    ASSERT_TRUE(created.ok());
    last_rv["j" + std::to_string(i)] = resourceVersionOf(*created);
    std::this_thread::sleep_for(400ms);
  }
  ASSERT_TRUE(waitFor([&] { return rec.count("ADD ") == 12; }, 10s));
  std::this_thread::sleep_for(1500ms);
  informer.stop();
  EXPECT_GE(informer.stats().watches, 4U);
  EXPECT_EQ(informer.stats().lists, 1U);
  EXPECT_EQ(rec.events().size(), 12U);
  for (const auto& [name, rv] : last_rv) {
    EXPECT_EQ(rec.count("ADD " + ns + "/" + name + " " + rv), 1U) << name;
  }
}

TEST_F(KubeIntegration, InformerWatchFromAnExpiredResourceVersionIsGone) {
  auto c = adminClient();
  const std::string ns = freshNamespace("gone");
  ASSERT_TRUE(c->create(resources::syncJob(), ns, syncJob("x")).ok());
  WatchOptions options;
  options.resource_version = "1";
  options.timeout_seconds = 5;
  bool error_410 = false;
  const absl::Status status = c->watch(resources::syncJob(), ns, options, [&](WatchEvent&& e) {
    if (e.type == WatchEvent::Type::Error) {
      error_410 = e.object.value("code", 0) == 410;
      return false;
    }
    return true;
  });
  // The server answers either HTTP 410 or a 200 stream with an ERROR event of code 410.
  EXPECT_TRUE(error_410 || isGone(status)) << status;
}

// Deletes an object behind the API server's back (directly in etcd) while it is down: the
// informer can only learn about it from the relist after a 410.
void deleteInEtcd(const std::string& etcd_url, const std::string& key) {
  Config config;
  config.server = etcd_url;
  auto transport = makeCppRestTransport(config);
  ASSERT_TRUE(transport.ok()) << transport.status();
  HttpRequest request;
  request.method = "POST";
  request.path = "/v3/kv/deleterange";
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = Json{{"key", internal::base64Encode(key)}}.dump();
  auto response = (*transport)->request(request);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->status, 200) << response->body;
  EXPECT_THAT(response->body, HasSubstr("\"deleted\":\"1\""));
}

TEST_F(KubeIntegration, InformerSurvivesApiServerRestartAndRelistsOnGone) {
  auto c = adminClient();
  const std::string ns = freshNamespace("restart");
  ASSERT_TRUE(c->create(resources::syncJob(), ns, syncJob("stays")).ok());
  ASSERT_TRUE(c->create(resources::syncJob(), ns, syncJob("vanishes")).ok());
  InformerOptions options = fastInformer(ns);
  options.backoff_max = 500ms;
  options.relist_after_failures = 1000;  // only a 410 may trigger the relist here
  Informer informer(c, options);
  Recorder rec;
  informer.addEventHandler(rec.handler());
  informer.start();
  ASSERT_TRUE(informer.waitForSync(20s));

  kube().stopApiServer();
  deleteInEtcd(kube().etcdUrl(), "/registry/tributary.dev/syncjobs/" + ns + "/vanishes");
  kube().startApiServer();

  auto after = c->create(resources::syncJob(), ns, syncJob("after"));
  ASSERT_TRUE(after.ok()) << after.status();
  Json stays = *c->get(resources::syncJob(), ns, "stays");
  stays["spec"]["options"]["k"] = "changed";
  auto changed = c->update(resources::syncJob(), stays);
  ASSERT_TRUE(changed.ok()) << changed.status();
  ASSERT_TRUE(waitFor(
      [&] {
        return rec.has("ADD " + ns + "/after") &&
               rec.has("UPDATE " + ns + "/stays " + resourceVersionOf(*changed)) &&
               rec.has("DELETE? " + ns + "/vanishes");
      },
      60s))
      << ::testing::PrintToString(rec.events());
  std::this_thread::sleep_for(1s);
  informer.stop();
  EXPECT_GE(informer.stats().watch_errors + informer.stats().relists_gone, 1U);
  EXPECT_GE(informer.stats().relists_gone, 1U);  // the deletion was only visible to a relist
  EXPECT_EQ(rec.count("ADD " + ns + "/after"), 1U);
  EXPECT_EQ(rec.count("UPDATE " + ns + "/stays"), 1U);
  EXPECT_EQ(rec.count("DELETE? " + ns + "/vanishes"), 1U);
  EXPECT_EQ(informer.store().size(), 2U);

  // And a plain restart (nothing changed behind its back) keeps delivering.
  Informer second(c, options);
  Recorder rec2;
  second.addEventHandler(rec2.handler());
  second.start();
  ASSERT_TRUE(second.waitForSync(20s));
  kube().restartApiServer();
  auto later = c->create(resources::syncJob(), ns, syncJob("later"));
  ASSERT_TRUE(later.ok()) << later.status();
  ASSERT_TRUE(waitFor([&] { return rec2.has("ADD " + ns + "/later"); }, 60s));
  std::this_thread::sleep_for(1s);
  second.stop();
  EXPECT_EQ(rec2.count("ADD " + ns + "/later"), 1U);
  EXPECT_EQ(rec2.count("INIT "), 2U);
  EXPECT_EQ(rec2.count("DELETE"), 0U);
}

TEST_F(KubeIntegration, InformerUnderConcurrentWritesConvergesWithoutDuplicates) {
  auto c = adminClient();
  const std::string ns = freshNamespace("stress");
  InformerOptions options = fastInformer(ns);
  options.page_size = 7;
  options.min_watch_timeout = 1s;  // the server ends watches every second while we write
  options.max_watch_timeout = 2s;
  Informer informer(c, options);
  std::mutex mu;
  std::map<std::string, std::vector<std::pair<std::string, std::uint64_t>>> seen;  // key → ops
  const auto record = [&](const std::string& op, const Json& o) {
    std::lock_guard lock(mu);
    seen[keyOf(o)].emplace_back(op, std::stoull(resourceVersionOf(o)));
  };
  informer.addEventHandler(EventHandler{
      [&](const Json& o, bool) { record("ADD", o); },
      [&](const Json&, const Json& n) { record("UPDATE", n); },
      [&](const Json& o, bool unknown) { record(unknown ? "DELETE?" : "DELETE", o); }});
  informer.start();
  ASSERT_TRUE(informer.waitForSync(20s));

  std::atomic<int> writes{0};
  {
    std::vector<std::jthread> writers;
    for (int t = 0; t < 4; ++t) {
      writers.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t) * 7919U + 1U);
        const auto until = std::chrono::steady_clock::now() + 6s;
        while (std::chrono::steady_clock::now() < until) {
          const std::string name = "obj-" + std::to_string(rng() % 30);
          switch (rng() % 3) {
            case 0:
              if (c->create(resources::syncJob(), ns, syncJob(name)).ok()) {
                ++writes;
              }
              break;
            case 1: {
              auto current = c->get(resources::syncJob(), ns, name);
              if (current.ok()) {
                (*current)["spec"]["options"]["k"] = std::to_string(rng());
                if (c->update(resources::syncJob(), *current).ok()) {
                  ++writes;
                }
              }
              break;
            }
            default:
              if (c->remove(resources::syncJob(), ns, name).ok()) {
                ++writes;
              }
              break;
          }
        }
      });
    }
  }
  EXPECT_GT(writes.load(), 100);

  // The cache converges to the server's state...
  auto truth = c->listAll(resources::syncJob(), ns);
  ASSERT_TRUE(truth.ok()) << truth.status();
  std::map<std::string, std::string> expected;
  for (const Json& item : truth->items) {
    expected[keyOf(item)] = resourceVersionOf(item);
  }
  const auto cached = [&] {
    std::map<std::string, std::string> out;
    for (const ObjectPtr& o : informer.store().list()) {
      out[keyOf(*o)] = resourceVersionOf(*o);
    }
    return out;
  };
  ASSERT_TRUE(waitFor([&] { return cached() == expected; }, 20s));
  std::this_thread::sleep_for(500ms);
  informer.stop();
  EXPECT_GE(informer.stats().watches, 3U);

  // ...and per object the handlers saw a well-formed history: resourceVersions strictly
  // increasing (no duplicate, no going back), ADD only when absent, UPDATE/DELETE only when
  // present, ending in the server's state.
  std::lock_guard lock(mu);
  for (const auto& [key, ops] : seen) {
    bool present = false;
    std::uint64_t last = 0;
    for (const auto& [op, rv] : ops) {
      if (op == "DELETE?") {
        EXPECT_GE(rv, last) << key << " " << op;  // the last state we knew
      } else {
        EXPECT_GT(rv, last) << key << " " << op;
      }
      last = std::max(last, rv);
      if (op == "ADD") {
        EXPECT_FALSE(present) << key;
        present = true;
      } else {
        EXPECT_TRUE(present) << key << " " << op;
        present = op == "UPDATE";
      }
    }
    EXPECT_EQ(present, expected.count(key) == 1) << key;
  }
}

TEST_F(KubeIntegration, AgentStyleInformerWithAFieldSelectorOnASelectableField) {
  auto c = adminClient();
  const std::string ns = freshNamespace("agent");
  const auto run = [&](const std::string& name) {
    return c->create(resources::syncRun(), ns,
                     Json{{"metadata", {{"name", name}}},
                          {"spec",
                           {{"syncJobRef", {{"name", "job"}, {"generation", 1}}},
                            {"connectorRef", {{"name", "c"}, {"generation", 1}}},
                            {"scheduledTime", "2025-11-24T16:00:00Z"}}}});
  };
  ASSERT_TRUE(run("r1").ok());
  ASSERT_TRUE(run("r2").ok());
  InformerOptions options = fastInformer(ns);
  options.type = resources::syncRun();
  options.field_selector = "status.agent=node-1";
  Informer informer(c, options);
  Recorder rec;
  informer.addEventHandler(rec.handler());
  informer.start();
  ASSERT_TRUE(informer.waitForSync(20s));
  EXPECT_EQ(informer.store().size(), 0U);

  const auto bind = [&](const std::string& name, const std::string& agent) {
    auto patched = c->patch(resources::syncRun(), ns, name, PatchType::Merge,
                            Json{{"status", {{"agent", agent}, {"phase", "Bound"}}}},
                            PatchOptions{"status", "tributary-controller", false});
    EXPECT_TRUE(patched.ok()) << patched.status();
  };
  bind("r1", "node-1");  // enters the selection: ADDED
  bind("r2", "node-2");  // not ours
  ASSERT_TRUE(waitFor([&] { return rec.has("ADD " + ns + "/r1"); }, 10s));
  bind("r1", "node-2");  // leaves the selection: DELETED
  ASSERT_TRUE(waitFor([&] { return rec.has("DELETE " + ns + "/r1"); }, 10s));
  std::this_thread::sleep_for(500ms);
  informer.stop();
  EXPECT_EQ(rec.events().size(), 2U) << ::testing::PrintToString(rec.events());
  EXPECT_EQ(rec.count(std::string("ADD ") + ns + "/r2"), 0U);
}

TEST_F(KubeIntegration, InformerResyncReplaysCachedObjects) {
  auto c = adminClient();
  const std::string ns = freshNamespace("resync");
  ASSERT_TRUE(c->create(resources::syncJob(), ns, syncJob("a")).ok());
  InformerOptions options = fastInformer(ns);
  options.resync_period = 300ms;
  Informer informer(c, options);
  Recorder rec;
  informer.addEventHandler(rec.handler());
  informer.start();
  ASSERT_TRUE(informer.waitForSync(20s));
  ASSERT_TRUE(waitFor([&] { return rec.count("UPDATE " + ns + "/a") >= 2; }, 5s));
  informer.stop();
}

TEST_F(KubeIntegration, StrippedManagedFieldsAreKeptByTheServerOnUpdate) {
  auto c = adminClient();
  const std::string ns = freshNamespace("strip");
  ASSERT_TRUE(c->create(resources::syncJob(), ns, syncJob("a")).ok());
  InformerOptions options = fastInformer(ns);
  options.transform = stripManagedFields;
  Informer informer(c, options);
  informer.start();
  ASSERT_TRUE(informer.waitForSync(20s));
  const ObjectPtr cached = informer.store().get(ns + "/a");
  ASSERT_NE(cached, nullptr);
  EXPECT_FALSE((*cached)["metadata"].contains("managedFields"));
  // A status update sent from the stripped copy: the server keeps (and extends) managedFields.
  Json updated = *cached;
  updated["status"] = {{"observedGeneration", 1}};
  ASSERT_TRUE(c->updateStatus(resources::syncJob(), updated).ok());
  auto fresh = c->get(resources::syncJob(), ns, "a");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  ASSERT_TRUE((*fresh)["metadata"]["managedFields"].is_array());
  std::set<std::string> subresources;
  for (const auto& f : (*fresh)["metadata"]["managedFields"]) {
    subresources.insert(f.value("subresource", ""));
  }
  EXPECT_EQ(subresources, (std::set<std::string>{"", "status"}));
  // And the watch event of that update reaches the cache stripped as well.
  ASSERT_TRUE(waitFor(
      [&] {
        auto o = informer.store().get(ns + "/a");
        return o && o->contains("status") && (*o)["status"].value("observedGeneration", 0) == 1;
      },
      20s));
  EXPECT_FALSE((*informer.store().get(ns + "/a"))["metadata"].contains("managedFields"));
  informer.stop();
}

TEST_F(KubeIntegration, PostedEventsAreWrittenInTheBackgroundAndOverflowIsCounted) {
  auto c = adminClient();
  const std::string ns = freshNamespace("postev");
  auto job = c->create(resources::syncJob(), ns, syncJob("job"));
  ASSERT_TRUE(job.ok()) << job.status();
  {
    EventRecorder recorder(c, "tributary-controller", "host-1");
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(recorder.post(*job, "Normal", "Created", "created run " + std::to_string(i)));
    }
    EXPECT_TRUE(recorder.post(*job, "Warning", "Again", "same message"));
    EXPECT_TRUE(recorder.post(*job, "Warning", "Again", "same message"));
    ASSERT_TRUE(recorder.flush(20s));
    EXPECT_EQ(recorder.dropped(), 0U);
  }
  auto events =
      c->list(resources::event(), ns, ListOptions{"", "involvedObject.name=job", 0, "", ""});
  ASSERT_TRUE(events.ok()) << events.status();
  std::map<std::string, int> count_by_message;
  for (const Json& e : events->items) {
    count_by_message[e["message"].get<std::string>()] = e["count"].get<int>();
    EXPECT_EQ(e["involvedObject"]["uid"], uidOf(*job));
    EXPECT_EQ(e["involvedObject"]["kind"], "SyncJob");
  }
  EXPECT_EQ(
      count_by_message,
      (std::map<std::string, int>{
          {"created run 0", 1}, {"created run 1", 1}, {"created run 2", 1}, {"same message", 2}}));

  // A queue of 2 fed much faster than the API server answers: the excess is dropped and counted,
  // posting never blocks, and what was queued is written.
  const std::string ns2 = freshNamespace("postev2");
  auto job2 = c->create(resources::syncJob(), ns2, syncJob("job"));
  ASSERT_TRUE(job2.ok()) << job2.status();
  EventRecorder small(c, "tributary-controller", "host-1", 2);
  int accepted = 0;
  for (int i = 0; i < 50; ++i) {
    accepted += small.post(*job2, "Normal", "Burst", "event " + std::to_string(i)) ? 1 : 0;
  }
  ASSERT_TRUE(small.flush(20s));
  EXPECT_GT(small.dropped(), 0U);
  EXPECT_EQ(accepted + static_cast<int>(small.dropped()), 50);
  auto burst =
      c->list(resources::event(), ns2, ListOptions{"", "involvedObject.name=job", 0, "", ""});
  ASSERT_TRUE(burst.ok()) << burst.status();
  EXPECT_EQ(static_cast<int>(burst->items.size()), accepted);
}

// --- leader election -----------------------------------------------------------------------------

struct Candidate {
  std::unique_ptr<LeaderElector> elector;
  std::atomic<bool> leading{false};
  std::atomic<int> started{0};
  std::atomic<int> stopped{0};
  std::atomic<bool> leading_token_stopped{false};
  std::stop_source stop;
  std::jthread thread;
  absl::Status result;

  void run() {
    thread = std::jthread([this] { result = elector->run(stop.get_token()); });
  }
};

std::unique_ptr<Candidate> candidate(std::shared_ptr<Client> c, const std::string& ns,
                                     const std::string& id, bool release) {
  auto cand = std::make_unique<Candidate>();
  LeaderElectionConfig config;
  config.lease_namespace = ns;
  config.lease_name = "tributary-controller";
  config.identity = id;
  config.lease_duration = 3s;
  config.renew_deadline = 2s;
  config.retry_period = 500ms;
  config.release_on_cancel = release;
  Candidate* raw = cand.get();
  config.on_started_leading = [raw](std::stop_token leading) {
    raw->leading = true;
    ++raw->started;
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait(lock, leading, [] { return false; });
    raw->leading_token_stopped = true;
  };
  config.on_stopped_leading = [raw] {
    raw->leading = false;
    ++raw->stopped;
  };
  auto elector = LeaderElector::create(std::move(c), config);
  EXPECT_TRUE(elector.ok()) << elector.status();
  cand->elector = std::move(*elector);
  return cand;
}

TEST_F(KubeIntegration, LeaderElectionOneLeaderThenFailoverAfterAKill) {
  auto c = adminClient();
  const std::string ns = freshNamespace("le");
  auto a = candidate(c, ns, "a", /*release=*/false);
  auto b = candidate(c, ns, "b", false);
  a->run();
  b->run();
  ASSERT_TRUE(waitFor([&] { return a->elector->isLeader() || b->elector->isLeader(); }, 10s));
  for (int i = 0; i < 20; ++i) {  // never two leaders
    EXPECT_FALSE(a->elector->isLeader() && b->elector->isLeader());
    std::this_thread::sleep_for(100ms);
  }
  Candidate* leader = a->elector->isLeader() ? a.get() : b.get();
  Candidate* follower = leader == a.get() ? b.get() : a.get();
  EXPECT_EQ(follower->elector->leader(), leader->elector->config().identity);

  // "Kill" the leader: it stops renewing and does not release the lease.
  const auto killed_at = std::chrono::steady_clock::now();
  leader->stop.request_stop();
  leader->thread.join();
  ASSERT_TRUE(waitFor([&] { return follower->elector->isLeader(); }, 15s));
  const auto took = std::chrono::steady_clock::now() - killed_at;
  EXPECT_GE(took, 2s);  // waited for the lease to expire (3 s after its last renewal)
  EXPECT_LT(took, 8s);
  EXPECT_TRUE(waitFor([&] { return follower->leading.load(); }, 2s));
  auto lease = c->get(resources::lease(), ns, "tributary-controller");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(leaseRecordFrom(*lease).holder_identity, follower->elector->config().identity);
  EXPECT_EQ(leaseRecordFrom(*lease).lease_transitions, 1);
  follower->stop.request_stop();
  follower->thread.join();
}

TEST_F(KubeIntegration, LeaderElectionReleaseOnCancelHandsOverQuickly) {
  auto c = adminClient();
  const std::string ns = freshNamespace("le-release");
  auto a = candidate(c, ns, "a", /*release=*/true);
  a->run();
  ASSERT_TRUE(waitFor([&] { return a->elector->isLeader(); }, 10s));
  auto b = candidate(c, ns, "b", true);
  b->run();
  std::this_thread::sleep_for(1s);
  EXPECT_FALSE(b->elector->isLeader());
  const auto released_at = std::chrono::steady_clock::now();
  a->stop.request_stop();
  a->thread.join();
  EXPECT_TRUE(a->result.ok()) << a->result;
  EXPECT_EQ(a->stopped.load(), 1);
  EXPECT_TRUE(a->leading_token_stopped.load());
  ASSERT_TRUE(waitFor([&] { return b->elector->isLeader(); }, 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - released_at, 2500ms);  // not the 3 s expiry
  b->stop.request_stop();
  b->thread.join();
  auto lease = c->get(resources::lease(), ns, "tributary-controller");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(leaseRecordFrom(*lease).holder_identity, "");
  EXPECT_EQ(leaseRecordFrom(*lease).lease_duration_seconds, 1);
}

TEST_F(KubeIntegration, LeaderElectionLosingTheLeaseStopsLeadingAtOnce) {
  auto c = adminClient();
  const std::string ns = freshNamespace("le-lost");
  auto a = candidate(c, ns, "a", true);
  a->run();
  ASSERT_TRUE(waitFor([&] { return a->leading.load(); }, 10s));

  // Someone takes the lease by force.
  auto lease = c->get(resources::lease(), ns, "tributary-controller");
  ASSERT_TRUE(lease.ok());
  Json taken = *lease;
  taken["spec"]["holderIdentity"] = "intruder";
  taken["spec"]["renewTime"] = formatMicroTime(std::chrono::system_clock::now());
  const auto taken_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(c->update(resources::lease(), taken).ok());
  ASSERT_TRUE(waitFor([&] { return a->stopped.load() == 1; }, 5s));
  EXPECT_LT(std::chrono::steady_clock::now() - taken_at, 1500ms);  // one retry period, not 10 s
  EXPECT_TRUE(waitFor([&] { return a->leading_token_stopped.load(); }, 1s));
  EXPECT_FALSE(a->elector->isLeader());
  a->thread.join();
  EXPECT_TRUE(absl::IsAborted(a->result)) << a->result;
  EXPECT_THAT(a->result.message(), HasSubstr("intruder"));
  // It did not release (or overwrite) the intruder's lease.
  auto after = c->get(resources::lease(), ns, "tributary-controller");
  EXPECT_EQ(leaseRecordFrom(*after).holder_identity, "intruder");
}

}  // namespace
}  // namespace tributary::kube
