// The informer cache: watch events applied once (replays dropped), relist diffs (adds, updates,
// deletes with final state unknown), backoff bounds, and the small JSON helpers.

#include "tributary/kube/client.h"
#include "tributary/kube/informer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

namespace tributary::kube {
namespace {

using namespace std::chrono_literals;

Json obj(const std::string& ns, const std::string& name, const std::string& rv, int value = 0) {
  return Json{{"metadata", {{"namespace", ns}, {"name", name}, {"resourceVersion", rv}}},
              {"spec", {{"value", value}}}};
}

TEST(Store, AppliesWatchEventsAndDropsReplays) {
  Store store;
  auto added = store.apply(WatchEvent::Type::Added, obj("a", "x", "1"));
  ASSERT_TRUE(added);
  EXPECT_EQ(added->type, Delta::Type::Added);
  EXPECT_EQ(added->key, "a/x");
  // The same object again (e.g. a watch restarted from an older RV): nothing.
  EXPECT_FALSE(store.apply(WatchEvent::Type::Added, obj("a", "x", "1")));
  EXPECT_FALSE(store.apply(WatchEvent::Type::Modified, obj("a", "x", "1")));
  auto updated = store.apply(WatchEvent::Type::Modified, obj("a", "x", "2", 5));
  ASSERT_TRUE(updated);
  EXPECT_EQ(updated->type, Delta::Type::Updated);
  EXPECT_EQ(resourceVersionOf(*updated->old_object), "1");
  EXPECT_EQ((*updated->object)["spec"]["value"], 5);
  // ADDED for a known key with a new RV is an update.
  auto readded = store.apply(WatchEvent::Type::Added, obj("a", "x", "3"));
  ASSERT_TRUE(readded);
  EXPECT_EQ(readded->type, Delta::Type::Updated);
  auto deleted = store.apply(WatchEvent::Type::Deleted, obj("a", "x", "4"));
  ASSERT_TRUE(deleted);
  EXPECT_EQ(deleted->type, Delta::Type::Deleted);
  EXPECT_FALSE(deleted->final_state_unknown);
  EXPECT_EQ(resourceVersionOf(*deleted->object), "4");
  EXPECT_FALSE(store.apply(WatchEvent::Type::Deleted, obj("a", "x", "5")));
  EXPECT_EQ(store.size(), 0U);
}

TEST(Store, ReplaceEmitsOnlyTheDifference) {
  Store store;
  store.apply(WatchEvent::Type::Added, obj("a", "keep", "1"));
  store.apply(WatchEvent::Type::Added, obj("a", "change", "1"));
  store.apply(WatchEvent::Type::Added, obj("a", "gone", "1"));
  store.apply(WatchEvent::Type::Added, obj("", "cluster-scoped", "1"));
  const ObjectPtr kept_before = store.get("a/keep");

  std::vector<Json> listed = {obj("a", "keep", "1"), obj("a", "change", "7"), obj("b", "new", "8")};
  const std::vector<Delta> deltas = store.replace(std::move(listed));
  ASSERT_EQ(deltas.size(), 4U);
  EXPECT_EQ(deltas[0].type, Delta::Type::Updated);
  EXPECT_EQ(deltas[0].key, "a/change");
  EXPECT_EQ(deltas[1].type, Delta::Type::Added);
  EXPECT_EQ(deltas[1].key, "b/new");
  EXPECT_EQ(deltas[2].type, Delta::Type::Deleted);
  EXPECT_EQ(deltas[2].key, "a/gone");
  EXPECT_TRUE(deltas[2].final_state_unknown);
  EXPECT_EQ(deltas[3].key, "cluster-scoped");
  EXPECT_EQ(store.keys(), (std::vector<std::string>{"a/change", "a/keep", "b/new"}));
  EXPECT_EQ(store.get("a/keep"), kept_before);  // unchanged objects keep their instance
  EXPECT_EQ(store.get("a/gone"), nullptr);
  // Replacing with the same content again changes nothing.
  EXPECT_TRUE(store.replace({obj("a", "keep", "1"), obj("a", "change", "7"), obj("b", "new", "8")})
                  .empty());
}

ObjectPtr ptr(Json j) { return std::make_shared<const Json>(std::move(j)); }

TEST(Store, ReplaceOfOneNamespaceLeavesTheOthers) {
  Store store;
  store.replace({obj("a", "x", "1"), obj("ab", "y", "1"), obj("b", "z", "1")});
  // Namespace "a" relisted without x: only a/x goes ("ab" shares the prefix, not the namespace).
  const std::vector<Delta> deltas = store.replace({obj("a", "w", "2")}, "a");
  ASSERT_EQ(deltas.size(), 2U);
  EXPECT_EQ(deltas[0].type, Delta::Type::Added);
  EXPECT_EQ(deltas[0].key, "a/w");
  EXPECT_EQ(deltas[1].type, Delta::Type::Deleted);
  EXPECT_EQ(deltas[1].key, "a/x");
  EXPECT_THAT(store.keys(), ::testing::ElementsAre("a/w", "ab/y", "b/z"));
}

TEST(NamespaceList, ParsesCommaSeparatedNamesAndNamesTheBadOne) {
  EXPECT_THAT(*parseNamespaceList(""), ::testing::IsEmpty());
  EXPECT_THAT(*parseNamespaceList("team-a,team-b,team-a"),
              ::testing::ElementsAre("team-a", "team-b"));
  for (const char* bad : {"a,,b", "Team", "a,-b", "a_b", ","}) {
    const auto parsed = parseNamespaceList(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_THAT(parsed.status().message(), ::testing::HasSubstr("is not a namespace name")) << bad;
  }
  EXPECT_THAT(parseNamespaceList("ok,Bad").status().message(), ::testing::HasSubstr("'Bad'"));
}

TEST(MutationCache, ServesOurWriteUntilTheCacheCatchesUp) {
  MutationCache writes;
  const ObjectPtr v1 = ptr(obj("a", "x", "1"));
  EXPECT_EQ(writes.newest("a/x", v1), v1);  // nothing remembered
  writes.remember(ptr(obj("a", "x", "2", 7)), "1");
  // The informer still has version 1: our version 2 is newer.
  EXPECT_EQ(resourceVersionOf(*writes.newest("a/x", v1)), "2");
  EXPECT_EQ(writes.size(), 1U);
  // The informer delivered version 2 (or anything later): its object wins, the entry goes.
  const ObjectPtr v3 = ptr(obj("a", "x", "3"));
  EXPECT_EQ(writes.newest("a/x", v3), v3);
  EXPECT_EQ(writes.size(), 0U);
  EXPECT_EQ(writes.newest("a/x", v1), v1);
}

TEST(MutationCache, CreatedObjectsAndChainsOfWrites) {
  MutationCache writes;
  // Created: visible before the informer has it.
  writes.remember(ptr(obj("a", "new", "5")), "");
  ASSERT_NE(writes.newest("a/new", nullptr), nullptr);
  EXPECT_EQ(resourceVersionOf(*writes.newest("a/new", nullptr)), "5");
  // A patch then a status update of the created object: the last write wins while the informer
  // shows any version of the chain (absent, 5 or 6).
  writes.remember(ptr(obj("a", "new", "6")), "5");
  writes.remember(ptr(obj("a", "new", "7")), "6");
  EXPECT_EQ(resourceVersionOf(*writes.newest("a/new", nullptr)), "7");
  EXPECT_EQ(resourceVersionOf(*writes.newest("a/new", ptr(obj("a", "new", "6")))), "7");
  // observe() of an intermediate version keeps the entry; of a later one drops it.
  writes.observe("a/new", ptr(obj("a", "new", "5")).get());
  EXPECT_EQ(writes.size(), 1U);
  const Json v7 = obj("a", "new", "7");
  writes.observe("a/new", &v7);
  EXPECT_EQ(writes.size(), 0U);
  // A write based on something else than the last remembered version starts a new chain.
  writes.remember(ptr(obj("a", "y", "2")), "1");
  writes.remember(ptr(obj("a", "y", "9")), "8");
  EXPECT_EQ(resourceVersionOf(*writes.newest("a/y", ptr(obj("a", "y", "8")))), "9");
  const ObjectPtr y1 = ptr(obj("a", "y", "1"));
  EXPECT_EQ(writes.newest("a/y", y1), y1);
  // Deleted (the informer says so): dropped.
  writes.remember(ptr(obj("a", "z", "2")), "1");
  writes.observe("a/z", nullptr);
  EXPECT_EQ(writes.size(), 0U);
}

TEST(MutationCache, OldEntriesAreNotTrusted) {
  MutationCache writes(50ms);
  writes.remember(ptr(obj("a", "x", "2")), "");
  ASSERT_NE(writes.newest("a/x", nullptr), nullptr);
  std::this_thread::sleep_for(80ms);
  // A relist may have hidden a create-then-delete: after the TTL the informer is believed.
  EXPECT_EQ(writes.newest("a/x", nullptr), nullptr);
  EXPECT_EQ(writes.size(), 0U);
}

TEST(Objects, StripManagedFieldsKeepsEverythingElse) {
  Json o = obj("a", "x", "1");
  o["metadata"]["managedFields"] = Json::array({{{"manager", "kubectl"}}});
  o["metadata"]["labels"] = {{"k", "v"}};
  Json expected = o;
  expected["metadata"].erase("managedFields");
  stripManagedFields(o);
  EXPECT_EQ(o, expected);
  Json no_metadata = {{"kind", "X"}};
  stripManagedFields(no_metadata);
  EXPECT_EQ(no_metadata, (Json{{"kind", "X"}}));
}

TEST(Backoff, GrowsWithJitterAndCaps) {
  Backoff backoff(100ms, 1s, 2.0, 42);
  const auto first = backoff.next();
  EXPECT_GE(first, 50ms);
  EXPECT_LE(first, 100ms);
  const auto second = backoff.next();
  EXPECT_GE(second, 100ms);
  EXPECT_LE(second, 200ms);
  for (int i = 0; i < 100; ++i) {
    EXPECT_LE(backoff.next(), 1s);
  }
  backoff.reset();
  EXPECT_LE(backoff.next(), 100ms);
}

TEST(Objects, KeysTimesAndConditions) {
  const Json o = obj("ns", "n", "9");
  EXPECT_EQ(keyOf(o), "ns/n");
  EXPECT_EQ(splitKey("ns/n"), (std::pair<std::string, std::string>{"ns", "n"}));
  EXPECT_EQ(splitKey("n"), (std::pair<std::string, std::string>{"", "n"}));

  const auto t = std::chrono::system_clock::from_time_t(1700000000) + 123456us;
  EXPECT_EQ(formatTime(t), "2023-11-14T22:13:20Z");
  EXPECT_EQ(formatMicroTime(t), "2023-11-14T22:13:20.123456Z");
  EXPECT_EQ(parseTime("2023-11-14T22:13:20.123456Z"), t);
  EXPECT_EQ(parseTime("2023-11-15T00:13:20.123456+02:00"), t);
  EXPECT_FALSE(parseTime("yesterday").has_value());

  Json conditions;
  const auto t1 = std::chrono::system_clock::from_time_t(1000);
  const auto t2 = std::chrono::system_clock::from_time_t(2000);
  EXPECT_TRUE(setCondition(conditions, "Ready", "False", "Pending", "waiting", 1, t1));
  EXPECT_FALSE(setCondition(conditions, "Ready", "False", "Pending", "waiting", 1, t2));
  EXPECT_TRUE(setCondition(conditions, "Ready", "False", "Pending", "still waiting", 2, t2));
  EXPECT_EQ((*findCondition(conditions, "Ready"))["lastTransitionTime"], formatTime(t1));
  EXPECT_TRUE(setCondition(conditions, "Ready", "True", "Done", "ok", 2, t2));
  EXPECT_EQ((*findCondition(conditions, "Ready"))["lastTransitionTime"], formatTime(t2));
  EXPECT_EQ((*findCondition(conditions, "Ready"))["observedGeneration"], 2);
  EXPECT_EQ(findCondition(conditions, "Accepted"), nullptr);
}

TEST(Objects, PathsAndReferences) {
  EXPECT_EQ(Client::path(resources::syncJob(), "ns", "j", "status"),
            "/apis/tributary.dev/v1alpha1/namespaces/ns/syncjobs/j/status");
  EXPECT_EQ(Client::path(resources::secret(), "ns"), "/api/v1/namespaces/ns/secrets");
  EXPECT_EQ(Client::path(resources::namespace_(), "ignored", "x"), "/api/v1/namespaces/x");
  EXPECT_EQ(Client::path(resources::lease(), ""), "/apis/coordination.k8s.io/v1/leases");
  const Json owner = {{"apiVersion", "tributary.dev/v1alpha1"},
                      {"kind", "SyncJob"},
                      {"metadata", {{"name", "j"}, {"namespace", "ns"}, {"uid", "u-1"}}}};
  const Json ref = controllerOwnerReference(owner);
  EXPECT_EQ(ref["uid"], "u-1");
  EXPECT_EQ(ref["controller"], true);
  EXPECT_EQ(objectReference(owner)["namespace"], "ns");
}

}  // namespace
}  // namespace tributary::kube
