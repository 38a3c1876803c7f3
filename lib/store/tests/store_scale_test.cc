// The store at a scale where plans change: 200 000 objects loaded, then re-synced at once, before
// autovacuum has analysed what the load wrote. Every statement's plan is captured by auto_explain
// and checked to be linear in the page or the source whatever the statistics say (DESIGN §4).

#include "tributary/common/strings.h"
#include "tributary/store/store.h"
#include "tributary/testing/services.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store_test_support.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace tributary::store::testing {
namespace {

constexpr int kObjects = 200'000;
constexpr int kPageSize = 1'000;

// ~300 B objects, like a bucket listing.
proto::SyncResponse page(int first, int count, int skip_every = 0) {
  proto::SyncResponse out;
  for (int i = first; i < first + count; ++i) {
    if (skip_every > 0 && i % skip_every == 0) {
      continue;
    }
    proto::DataObject* o = out.add_response();
    o->set_remote_id(strings::cat("bucket/prefix/object-", i));
    o->set_resource_name(strings::cat("object-", i, ".json"));
    o->set_uri(strings::cat("s3://bucket/prefix/object-", i, ".json"));
    o->set_metadata(
        strings::cat(R"({"size":)", 1000 + i, R"(,"etag":"d41d8cd98f00b204e9800998ecf8427e",)",
                     R"("storage_class":"STANDARD","last_modified":"2026-11-30T12:00:00Z",)",
                     R"("owner":"team-data","content_type":"application/json"})"));
  }
  return out;
}

// One plan logged by auto_explain (JSON format).
struct LoggedPlan {
  std::string query;
  nlohmann::json plan;
};

// The plans auto_explain wrote to the server log for statements that mention `needle`.
std::vector<LoggedPlan> loggedPlans(const std::string& log, const std::string& needle) {
  std::vector<LoggedPlan> out;
  std::size_t at = 0;
  while ((at = log.find("plan:\n", at)) != std::string::npos) {
    at += 6;
    // The JSON document is the following lines, each continued with a tab by the stderr logger.
    std::string json;
    std::size_t line = at;
    while (line < log.size() && log[line] == '\t') {
      const std::size_t end = log.find('\n', line);
      json += log.substr(line + 1, (end == std::string::npos ? log.size() : end) - line - 1);
      json += '\n';
      line = end == std::string::npos ? log.size() : end + 1;
    }
    auto doc = nlohmann::json::parse(json, nullptr, false);
    if (doc.is_discarded() || !doc.contains("Plan")) {
      continue;
    }
    const std::string query = doc.value("Query Text", "");
    if (query.find(needle) != std::string::npos) {
      out.push_back({query, doc["Plan"]});
    }
  }
  return out;
}

void collectNodes(const nlohmann::json& node, std::vector<const nlohmann::json*>& out) {
  out.push_back(&node);
  if (node.contains("Plans")) {
    for (const auto& child : node["Plans"]) {
      collectNodes(child, out);
    }
  }
}

// A nested loop whose inner side scans a whole table is O(outer × table): the shape that made
// the first re-sync after a large load take more than ten minutes.
std::string quadraticNode(const nlohmann::json& plan) {
  std::vector<const nlohmann::json*> nodes;
  collectNodes(plan, nodes);
  for (const nlohmann::json* node : nodes) {
    if (node->value("Node Type", "") != "Nested Loop" || !node->contains("Plans")) {
      continue;
    }
    for (const auto& child : (*node)["Plans"]) {
      std::vector<const nlohmann::json*> inner;
      if (child.value("Parent Relationship", "") != "Inner") {
        continue;
      }
      collectNodes(child, inner);
      for (const nlohmann::json* scan : inner) {
        if (scan->value("Node Type", "") == "Seq Scan") {
          return strings::cat("Nested Loop ", node->value("Join Type", ""), " over Seq Scan on ",
                              scan->value("Relation Name", "?"));
        }
      }
    }
  }
  return "";
}

bool hasLinearAntiJoin(const nlohmann::json& plan) {
  std::vector<const nlohmann::json*> nodes;
  collectNodes(plan, nodes);
  for (const nlohmann::json* node : nodes) {
    const std::string type = node->value("Node Type", "");
    if ((type == "Hash Join" || type == "Merge Join") && node->value("Join Type", "") == "Anti") {
      return true;
    }
  }
  return false;
}

class ScaleTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    // Every statement of the store's connections is explained into the server log (this binary
    // has the shared server to itself).
    options_.dsn = dsn_ +
                   " options='-c session_preload_libraries=auto_explain "
                   "-c auto_explain.log_min_duration=0 -c auto_explain.log_format=json'";
    auto store = Store::open(options_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  RunSummary syncBucket(int skip_every) {
    RunPtr run = begin("bucket", DeletionPolicy::Mark);
    for (int first = 0; first < kObjects; first += kPageSize) {
      const absl::Status written = run->writePage(page(first, kPageSize, skip_every));
      EXPECT_TRUE(written.ok()) << written;
      if (!written.ok()) {
        break;
      }
    }
    auto summary = run->finish(FinishRequest::succeeded());
    EXPECT_TRUE(summary.ok()) << summary.status();
    return summary.ok() ? *summary : RunSummary{};
  }
};

TEST_F(ScaleTest, ImmediateResyncsAfterALargeLoadUseLinearPlans) {
  const RunSummary load = syncBucket(0);
  EXPECT_EQ(load.counters.inserted, kObjects);
  // At once, before autovacuum analyses the objects: the planner's statistics still describe an
  // almost empty table.
  const RunSummary identical = syncBucket(0);
  EXPECT_EQ(identical.counters.unchanged, kObjects);
  EXPECT_EQ(identical.counters.upserted(), 0);
  EXPECT_TRUE(identical.deletion_applied);
  EXPECT_EQ(identical.counters.marked, 0);
  // 1 % gone.
  const RunSummary shrunk = syncBucket(100);
  EXPECT_EQ(shrunk.counters.unchanged, kObjects - kObjects / 100);
  EXPECT_EQ(shrunk.counters.marked, kObjects / 100);
  EXPECT_FALSE(shrunk.deletion_guarded);
  EXPECT_EQ(liveCount("bucket"), kObjects - kObjects / 100);

  auto pg = harness::SharedServices::postgres();
  ASSERT_TRUE(pg.ok());
  const std::string log = (*pg)->logTail(512U << 20U);
  const auto plans = loggedPlans(log, schema_);  // every statement names the schema
  ASSERT_GT(plans.size(), static_cast<std::size_t>(3 * kObjects / kPageSize))
      << "auto_explain logged too few plans; log tail:\n"
      << (*pg)->logTail();
  int anti_joins = 0;
  for (const LoggedPlan& p : plans) {
    EXPECT_EQ(quadraticNode(p.plan), "") << p.query.substr(0, 400);
    if (p.query.starts_with("WITH gone AS (")) {  // finish(): the deletion policy
      ++anti_joins;
      EXPECT_TRUE(hasLinearAntiJoin(p.plan)) << p.plan.dump(2).substr(0, 4000);
    }
  }
  EXPECT_EQ(anti_joins, 3) << "one deletion anti-join per successful run";
}

}  // namespace
}  // namespace tributary::store::testing
