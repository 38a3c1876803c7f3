// The fault campaign: a 50 000-object sync in 100 pages from the Go go-plugin connector, two
// agents and the real controller, with one fault injected mid-sync (PostgreSQL restarted or
// killed, Redis restarted or flushed, the API server restarted, the controller leader killed).
// The same source is then synced again with 90 pages through the same fault, and the rows are
// checked against what the connector sent: count, content, no duplicates, deleted states, one
// successful store run per trigger, fencing tokens that only grow.
//
// Each test runs in its own process (gtest_discover_tests), so the servers it breaks are its own.

#include "e2e_fixture.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <csignal>
#include <functional>
#include <iostream>
#include <string>

namespace tributary::e2e {
namespace {

constexpr int kPages = 100;
constexpr int kPageSize = 500;
constexpr int kResyncPages = 90;
const char* const kJob = "faulty";

class AgentFaults : public AgentE2E {
 protected:
  void SetUp() override {
    AgentE2E::SetUp();
    if (HasFatalFailure()) {
      return;
    }
    pg_ = *harness::SharedServices::postgres();
    redis_ = *harness::SharedServices::redis();
  }

  void startAgents() {
    startAgent("node-a");
    startAgent("node-b");
    apply(goConnector("go"));
  }

  static std::string jobYaml(int pages, int trigger) {
    std::string yaml = "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: " +
                       std::string(kJob) + "\n";
    if (trigger > 0) {  // the first run is the run-once trigger, later ones are run-now
      yaml += "  annotations:\n    tributary.dev/run-now: \"" + std::to_string(trigger) + "\"\n";
    }
    return yaml + "spec:\n  connectorRef:\n    name: go\n  options: " +
           Json{{"pages", pages}, {"page_size", kPageSize}, {"page_delay_ms", 40}}.dump() + "\n";
  }

  // Starts a sync of `pages` pages, calls `fault` once the run has committed at least 20 pages,
  // and waits for the run to succeed. Returns it (null if it did not).
  Json syncThrough(int pages, const std::function<void()>& fault) {
    std::set<std::string> before;
    for (const Json& r : runsOf(kJob)) {
      before.insert(kube::nameOf(r));
    }
    apply(jobYaml(pages, static_cast<int>(before.size())));
    auto newRun = [&]() -> std::optional<Json> {
      for (const Json& r : runsOf(kJob)) {
        if (before.count(kube::nameOf(r)) == 0) {
          return r;
        }
      }
      return std::nullopt;
    };
    const bool fired = waitFor(
        [&] {
          auto r = newRun();
          return r && r->value("/status/pages"_json_pointer, 0) >= 20 && phase(*r) == "Running";
        },
        120s);
    EXPECT_TRUE(fired) << "the run never got 20 pages in before the fault\n"
                       << kubectl({"get", "sr", "-o", "yaml"}).output;
    if (!fired) {
      return {};
    }
    const auto faulted = std::chrono::steady_clock::now();
    fault();
    Json done;
    waitFor(
        [&] {
          auto r = newRun();
          if (r && phase(*r) == "Succeeded") {
            done = *r;
            return true;
          }
          return r && phase(*r) == "Failed";
        },
        240s);
    const auto seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - faulted).count();
    std::cout << "fault campaign: "
              << ::testing::UnitTest::GetInstance()->current_test_info()->name()
              << " pages=" << pages << " phase=" << (done.is_null() ? "not Succeeded" : "Succeeded")
              << " attempt=" << done.value("/status/attempt"_json_pointer, 0)
              << " seconds_after_fault=" << seconds << "\n";
    EXPECT_FALSE(done.is_null()) << kubectl({"describe", "sr"}).output;
    return done;
  }

  // The rows against what the connector sent: every sync so far listed 100 pages at first, then
  // `live_pages`; objects obj-<page>-<index> with their exact fields.
  void expectExactRows(int live_pages, int successful_runs) {
    const std::string where = " FROM tributary.object_versions WHERE namespace = '" + ns_ +
                              "' AND sync_job = '" + std::string(kJob) + "'";
    EXPECT_EQ(scalar("SELECT count(*)" + where), std::to_string(kPages * kPageSize));
    EXPECT_EQ(scalar("SELECT count(DISTINCT remote_id)" + where),
              std::to_string(kPages * kPageSize));
    // Every row is exactly the object the connector built for its id, and ids cover the pages.
    EXPECT_EQ(scalar("SELECT count(*)" + where +
                     " AND NOT (remote_id ~ '^obj-[0-9]+-[0-9]+$' AND"
                     " uri = 'test://' || split_part(remote_id, '-', 2) || '/' ||"
                     " split_part(remote_id, '-', 3) AND"
                     " resource_name = 'resource ' || split_part(remote_id, '-', 3) AND"
                     " metadata_json = jsonb_build_object("
                     "'page', split_part(remote_id, '-', 2)::int,"
                     " 'index', split_part(remote_id, '-', 3)::int) AND"
                     " split_part(remote_id, '-', 2)::int < " +
                     std::to_string(kPages) + " AND split_part(remote_id, '-', 3)::int < " +
                     std::to_string(kPageSize) + ")"),
              "0");
    // Deleted exactly the pages the last listing left out, nothing else.
    EXPECT_EQ(scalar("SELECT count(*)" + where + " AND deleted_at IS NULL"),
              std::to_string(live_pages * kPageSize));
    EXPECT_EQ(scalar("SELECT count(*)" + where +
                     " AND (deleted_at IS NULL) <> "
                     "(split_part(remote_id, '-', 2)::int < " +
                     std::to_string(live_pages) + ")"),
              "0");
    // One successful store run per trigger; fencing tokens grow with every run begun.
    const std::string runs = " FROM tributary.sync_runs WHERE namespace = '" + ns_ + "'";
    EXPECT_EQ(scalar("SELECT count(*)" + runs + " AND outcome = 'succeeded'"),
              std::to_string(successful_runs));
    EXPECT_EQ(scalar("SELECT count(*) FROM tributary.sync_runs a JOIN tributary.sync_runs b ON "
                     "a.namespace = b.namespace AND a.sync_job = b.sync_job AND a.run_id < "
                     "b.run_id AND a.fence_token >= b.fence_token WHERE a.namespace = '" +
                     ns_ + "'"),
              "0");
    std::cout << "fault campaign: store runs " << kJob << ": "
              << scalar(
                     "SELECT string_agg(attempt || ':' || outcome || ' token ' || fence_token "
                     "|| ' by ' || holder, ', ' ORDER BY run_id)" +
                     runs)
              << "\n";
  }

  // Both syncs through `fault`: the initial load and a re-sync that deletes 10 pages. A database
  // crash may take the run's seen-set (UNLOGGED) with it: then the run must say that it applied
  // no deletion, delete nothing, and the next run applies it.
  void campaign(const std::function<void()>& fault) {
    ASSERT_FALSE(syncThrough(kPages, fault).is_null());
    expectExactRows(kPages, 1);
    const Json resync = syncThrough(kResyncPages, fault);
    ASSERT_FALSE(resync.is_null());
    const std::string message = resync.value("/status/message"_json_pointer, std::string());
    if (message.find("deletion policy not applied") != std::string::npos) {
      std::cout << "fault campaign: deletion deferred: " << message << "\n";
      expectExactRows(kPages, 2);
      ASSERT_FALSE(syncThrough(kResyncPages, [] {}).is_null());
      expectExactRows(kResyncPages, 3);
    } else {
      expectExactRows(kResyncPages, 2);
    }
    for (auto& [name, agent] : agents_) {
      EXPECT_TRUE(agent.alive()) << name << " died\n" << tail(agent.log);
    }
  }

  harness::PostgresServer* pg_ = nullptr;
  harness::RedisServer* redis_ = nullptr;
};

// 1a. PostgreSQL restarted (fast shutdown, start) mid-sync: the store reconnects and the run goes
// on, or the attempt fails and is retried; nothing is lost or applied twice.
TEST_F(AgentFaults, PostgresRestartedMidSync) {
  startController();
  startAgents();
  campaign([&] { ASSERT_TRUE(pg_->restart().ok()) << pg_->logTail(); });
}

// 1b. PostgreSQL killed (-9) mid-sync and back after 2 s of crash recovery.
TEST_F(AgentFaults, PostgresKilledMidSync) {
  startController();
  startAgents();
  campaign([&] {
    ASSERT_TRUE(pg_->kill().ok());
    std::this_thread::sleep_for(2s);
    ASSERT_TRUE(pg_->start().ok()) << pg_->logTail();
  });
}

// 2a. Redis restarted mid-sync (persistence off: every lock and the token counter gone): the
// holder loses its lease, and the next attempt's token still exceeds the database's high-water
// mark.
TEST_F(AgentFaults, RedisRestartedMidSync) {
  startController();
  startAgents();
  campaign([&] { ASSERT_TRUE(redis_->restart().ok()) << redis_->logTail(); });
}

// 2b. Redis loses its data (FLUSHALL) mid-sync while it keeps running.
TEST_F(AgentFaults, RedisFlushedMidSync) {
  startController();
  startAgents();
  campaign([&] {
    redisContext* ctx = redisConnect("127.0.0.1", redis_->port());
    ASSERT_TRUE(ctx != nullptr && ctx->err == 0);
    auto* reply = static_cast<redisReply*>(redisCommand(ctx, "FLUSHALL"));
    ASSERT_TRUE(reply != nullptr && reply->type == REDIS_REPLY_STATUS);
    freeReplyObject(reply);
    redisFree(ctx);
  });
}

// 4a. kube-apiserver restarted mid-sync: the agent's status writes and Lease renewals fail for a
// while; the run finishes once with the right status.
TEST_F(AgentFaults, ApiServerRestartedMidSync) {
  startController();
  startAgents();
  campaign([&] { ASSERT_TRUE(KubeApiServer::shared().tryRestartApiServer().ok()); });
}

// 4b. The controller leader killed (-9) mid-sync: the standby takes the lead; the run finishes
// once (one SyncRun per trigger, one successful store run).
TEST_F(AgentFaults, ControllerLeaderKilledMidSync) {
  const std::vector<std::string> election = {"--leader-elect", "--leader-elect-lease-duration=4s",
                                             "--leader-elect-renew-deadline=3s",
                                             "--leader-elect-retry-period=1s"};
  Process standby;
  startControllerAs(controller_, "controller-1", election);
  startControllerAs(standby, "controller-2", election);
  startAgents();
  int kills = 0;
  campaign([&] {
    Process& leader = readFile(controller_.log).find("\"msg\":\"leading\"") != std::string::npos
                          ? controller_
                          : standby;
    ASSERT_NE(readFile(leader.log).find("\"msg\":\"leading\""), std::string::npos)
        << "no controller leads\n"
        << tail(controller_.log) << tail(standby.log);
    leader.stop(SIGKILL);
    ++kills;
    // The next fault kills the new leader: restart the dead one as the standby.
    startControllerAs(leader, "controller-" + std::to_string(kills + 2), election);
  });
  EXPECT_EQ(runsOf(kJob).size(), 2U) << kubectl({"get", "sr"}).output;
  standby.stop(SIGTERM, 20s);
}

}  // namespace
}  // namespace tributary::e2e
