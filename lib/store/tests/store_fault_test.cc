// Faults: PostgreSQL restarted or crashed in the middle of a run, the database away past the
// deadline, and fencing with real Redis leases (two writers, Redis restarted mid-run, the lock
// expiring while a page is in flight). Own binary: these tests restart the shared servers.

#include "tributary/locks/lock.h"
#include "tributary/testing/probes.h"
#include "tributary/testing/services.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store_test_support.h"

#include <chrono>
#include <future>
#include <string>
#include <thread>

namespace tributary::store::testing {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

class FaultTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    auto pg = harness::SharedServices::postgres();
    ASSERT_TRUE(pg.ok());
    pg_ = *pg;
  }
  void TearDown() override {
    ASSERT_TRUE(pg_->start().ok());  // whatever the test did, leave a live server behind
    StoreTest::TearDown();
  }
  void loadFirstRun(const std::string& job, int n) {
    RunPtr first = begin(job);
    for (int p = 0; p < n; p += 100) {
      ASSERT_TRUE(first->writePage(rangePage("o", p, p + 100)).ok());
    }
    ASSERT_TRUE(first->finish(FinishRequest::succeeded()).ok());
  }
  harness::PostgresServer* pg_ = nullptr;
};

TEST_F(FaultTest, PostgresRestartedMidRunLosesAndDuplicatesNothing) {
  loadFirstRun("restart", 1000);
  RunPtr run = begin("restart");
  for (int p = 0; p < 500; p += 100) {
    ASSERT_TRUE(run->writePage(rangePage("o", p, p + 100)).ok());
  }
  ASSERT_TRUE(pg_->restart().ok());
  for (int p = 500; p < 1100; p += 100) {  // 1000..1099 are new
    absl::Status status = run->writePage(rangePage("o", p, p + 100));
    ASSERT_TRUE(status.ok()) << status;
  }
  auto summary = run->finish(FinishRequest::succeeded());
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_TRUE(summary->deletion_applied) << summary->note;  // UNLOGGED survives a clean restart
  EXPECT_EQ(summary->counters.pages, 11);
  EXPECT_EQ(summary->counters.unchanged, 1000);
  EXPECT_EQ(summary->counters.inserted, 100);
  sql_.reset();
  EXPECT_EQ(sql().number("SELECT count(*) FROM " + q("objects")), 1100);
  EXPECT_EQ(liveCount("restart"), 1100);
}

TEST_F(FaultTest, PostgresCrashMidRunKeepsDataButSkipsDeletion) {
  loadFirstRun("crash", 1000);
  RunPtr run = begin("crash");
  for (int p = 0; p < 500; p += 100) {
    ASSERT_TRUE(run->writePage(rangePage("o", p, p + 100)).ok());
  }
  ASSERT_TRUE(pg_->kill().ok());  // crash: UNLOGGED tables come back empty
  ASSERT_TRUE(pg_->start().ok());
  for (int p = 500; p < 900; p += 100) {  // 900..999 are gone upstream
    absl::Status status = run->writePage(rangePage("o", p, p + 100));
    ASSERT_TRUE(status.ok()) << status;
  }
  auto summary = run->finish(FinishRequest::succeeded());
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_FALSE(summary->deletion_applied);
  EXPECT_THAT(summary->note, HasSubstr("seen-set"));
  EXPECT_EQ(summary->counters.marked, 0);
  sql_.reset();
  EXPECT_EQ(liveCount("crash"), 1000);  // nothing marked on an incomplete seen-set
  EXPECT_THAT(sql().value("SELECT note FROM " + q("sync_runs") +
                          " WHERE run_id = " + std::to_string(run->id())),
              HasSubstr("crash"));
  // The next complete run applies the policy.
  RunPtr next = begin("crash");
  for (int p = 0; p < 900; p += 100) {
    ASSERT_TRUE(next->writePage(rangePage("o", p, p + 100)).ok());
  }
  auto next_summary = next->finish(FinishRequest::succeeded());
  ASSERT_TRUE(next_summary.ok());
  EXPECT_TRUE(next_summary->deletion_applied);
  EXPECT_EQ(next_summary->counters.marked, 100);
  EXPECT_EQ(liveCount("crash"), 900);
}

// The server dies while a big page is being written, at several moments: before, during or just
// after its commit. Whatever happened, the retried page is stored exactly once and counted once.
TEST_F(FaultTest, PageInFlightWhenTheServerDiesIsRetriedExactlyOnce) {
  int round = 0;
  for (auto delay : {5ms, 150ms, 400ms, 800ms}) {
    const std::string job = "inflight-" + std::to_string(round++);
    RunPtr run = begin(job);
    ASSERT_TRUE(run->writePage(rangePage("pre-", 0, 10)).ok());
    std::thread killer([&] {
      std::this_thread::sleep_for(delay);
      EXPECT_TRUE(pg_->kill().ok());
      std::this_thread::sleep_for(500ms);
      EXPECT_TRUE(pg_->start().ok());
    });
    absl::Status status = run->writePage(rangePage("big-", 0, 30000));
    killer.join();
    ASSERT_TRUE(status.ok()) << "delay " << delay.count() << " ms: " << status;
    EXPECT_EQ(run->counters().pages, 2);
    EXPECT_EQ(run->counters().inserted, 30010) << "delay " << delay.count();
    ASSERT_TRUE(run->writePage(rangePage("post-", 0, 10)).ok());
    ASSERT_TRUE(run->finish(FinishRequest::succeeded()).ok());
    sql_.reset();
    EXPECT_EQ(sql().number("SELECT count(*) FROM " + q("object_versions") + " WHERE sync_job = '" +
                           job + "'"),
              30020);
    EXPECT_EQ(sql().number("SELECT objects_inserted FROM " + q("runs") +
                           " WHERE id = " + std::to_string(run->id())),
              30020);
  }
}

TEST_F(FaultTest, DatabaseAwayPastTheDeadlineFailsTheRunClearly) {
  options_.reconnect_deadline = 2s;
  auto store = Store::open(options_);
  ASSERT_TRUE(store.ok());
  store_ = *std::move(store);
  RunPtr run = begin("away");
  ASSERT_TRUE(run->writePage(rangePage("o", 0, 10)).ok());
  ASSERT_TRUE(pg_->stop().ok());
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = run->writePage(rangePage("o", 10, 20));
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("PostgreSQL unreachable"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("page 2 of run"));
  EXPECT_GE(waited, 1500ms);
  EXPECT_LT(waited, 15s);
  ASSERT_TRUE(pg_->start().ok());
  // Back again: the failure is recorded, and nothing of the refused page was stored.
  auto summary = run->finish(FinishRequest::failed(std::string(status.message())));
  ASSERT_TRUE(summary.ok()) << summary.status();
  sql_.reset();
  EXPECT_EQ(
      sql().value("SELECT outcome FROM " + q("runs") + " WHERE id = " + std::to_string(run->id())),
      "failed");
  EXPECT_EQ(sql().number("SELECT count(*) FROM " + q("objects")), 10);
}

// ---------------------------------------------------------------------------------------------
// With real Redis leases.

class LeaseFaultTest : public FaultTest {
 protected:
  void SetUp() override {
    FaultTest::SetUp();
    auto redis = harness::SharedServices::redis();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = *redis;
    ASSERT_TRUE(redis_->start().ok());
    locks::RedisLockOptions options;
    options.host = redis_->host();
    options.port = redis_->port();
    options.connect_timeout = 500ms;
    options.command_timeout = 500ms;
    options.key_prefix = "tributary:" + schema_ + ":";
    lock_ = locks::makeRedisLock(options);
  }
  void TearDown() override {
    ASSERT_TRUE(redis_->start().ok());
    FaultTest::TearDown();
  }

  locks::LeasePtr acquire(const std::string& job, std::chrono::milliseconds ttl, bool renew,
                          bool use_floor = true) {
    locks::AcquireOptions options;
    options.ttl = ttl;
    options.renew = renew;
    options.wait = 5s;
    if (use_floor) {
      options.min_fencing_token = *store_->fencingHighWaterMark("ns", job);
    }
    auto lease = lock_->acquire("ns/" + job, options);
    EXPECT_TRUE(lease.ok()) << lease.status();
    return lease.ok() ? *std::move(lease) : nullptr;
  }

  absl::StatusOr<RunPtr> beginWith(const std::string& job, locks::Lease& lease, bool check) {
    RunSpec s = spec(job);
    s.fencing_token = lease.fencingToken();
    s.lease_id = lease.token();
    if (check) {
      s.lease_check = [&lease] { return lease.check(); };
    }
    return store_->beginRun(s);
  }

  harness::RedisServer* redis_ = nullptr;
  locks::SourceLockPtr lock_;
};

TEST_F(LeaseFaultTest, TwoWritersTheOneWhoseLeaseExpiredIsFencedOut) {
  // A is partitioned: its renewal stopped and it never checks its lease.
  locks::LeasePtr lease_a = acquire("two", 400ms, /*renew=*/false);
  ASSERT_NE(lease_a, nullptr);
  auto run_a = beginWith("two", *lease_a, /*check=*/false);
  ASSERT_TRUE(run_a.ok()) << run_a.status();
  ASSERT_TRUE((*run_a)->writePage(pageOf({object("x", "{\"by\":\"a1\"}")})).ok());
  std::this_thread::sleep_for(500ms);
  locks::LeasePtr lease_b = acquire("two", 5s, /*renew=*/true);
  ASSERT_NE(lease_b, nullptr);
  EXPECT_GT(lease_b->fencingToken(), lease_a->fencingToken());
  auto run_b = beginWith("two", *lease_b, /*check=*/true);
  ASSERT_TRUE(run_b.ok()) << run_b.status();
  absl::Status late =
      (*run_a)->writePage(pageOf({object("x", "{\"by\":\"a2\"}"), object("a-only", "{}")}));
  EXPECT_EQ(late.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(late.message()), HasSubstr("fenced"));
  ASSERT_TRUE((*run_b)->writePage(pageOf({object("x", "{\"by\":\"b\"}")})).ok());
  EXPECT_EQ((*run_a)->finish(FinishRequest::succeeded()).status().code(),
            absl::StatusCode::kAborted);
  ASSERT_TRUE((*run_b)->finish(FinishRequest::succeeded()).ok());
  EXPECT_EQ(sql().number("SELECT count(*) FROM " + q("objects") + " WHERE remote_id = 'a-only'"),
            0);
  EXPECT_EQ(sql().value("SELECT metadata FROM " + q("objects") + " WHERE remote_id = 'x'"),
            "{\"by\":\"b\"}");
  EXPECT_EQ(lease_a->release().code(), absl::StatusCode::kAborted);  // not the holder any more
  EXPECT_TRUE(lease_b->release().ok());
}

TEST_F(LeaseFaultTest, RedisRestartedMidRunStopsTheOldWriterAndTokensKeepIncreasing) {
  locks::LeasePtr lease_a = acquire("redis", 1s, /*renew=*/true);
  ASSERT_NE(lease_a, nullptr);
  auto run_a = beginWith("redis", *lease_a, /*check=*/true);
  ASSERT_TRUE(run_a.ok()) << run_a.status();
  ASSERT_TRUE((*run_a)->writePage(rangePage("o", 0, 100)).ok());
  ASSERT_TRUE(redis_->restart().ok());  // no persistence: the lock and the fence counter vanish
  ASSERT_TRUE(harness::eventually([&] { return lease_a->lost(); }, 5s));
  absl::Status refused = (*run_a)->writePage(rangePage("o", 100, 200));
  EXPECT_EQ(refused.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("lock of ns/redis lost"));

  // Without the store's floor the restarted counter hands out an old token: refused at begin.
  locks::LeasePtr no_floor = acquire("redis", 5s, true, /*use_floor=*/false);
  ASSERT_NE(no_floor, nullptr);
  EXPECT_LE(no_floor->fencingToken(), lease_a->fencingToken());
  auto stale = beginWith("redis", *no_floor, true);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  ASSERT_TRUE(no_floor->release().ok());
  // With the floor (what the agent does) the new holder proceeds.
  locks::LeasePtr lease_b = acquire("redis", 5s, true);
  ASSERT_NE(lease_b, nullptr);
  EXPECT_GT(lease_b->fencingToken(), lease_a->fencingToken());
  auto run_b = beginWith("redis", *lease_b, true);
  ASSERT_TRUE(run_b.ok()) << run_b.status();
  ASSERT_TRUE((*run_b)->writePage(rangePage("o", 0, 300)).ok());
  ASSERT_TRUE((*run_b)->finish(FinishRequest::succeeded()).ok());
  EXPECT_EQ(liveCount("redis"), 300);
  EXPECT_EQ(sql().value("SELECT outcome FROM " + q("runs") +
                        " WHERE id = " + std::to_string((*run_a)->id())),
            "abandoned");
}

// A's page is in flight (blocked inside the database) when A's lease expires and B takes over.
// The fence orders the two: A's page commits before B's claim or is refused, never after it;
// everything A sends afterwards is refused, and B's data is what remains.
TEST_F(LeaseFaultTest, LockExpiringWhileAPageIsInFlight) {
  locks::LeasePtr lease_a = acquire("flight", 600ms, /*renew=*/false);
  ASSERT_NE(lease_a, nullptr);
  auto run_a = beginWith("flight", *lease_a, /*check=*/true);
  ASSERT_TRUE(run_a.ok()) << run_a.status();
  ASSERT_TRUE((*run_a)->writePage(pageOf({object("x", "{\"by\":\"a0\"}")})).ok());

  // Hold the source row so A's next page blocks in its fence check, after its lease check.
  Sql blocker(dsn_);
  blocker.rows("BEGIN");
  blocker.rows("SELECT * FROM " + q("sources") + " FOR UPDATE");
  auto in_flight = std::async(std::launch::async, [&] {
    return (*run_a)->writePage(pageOf({object("x", "{\"by\":\"a-inflight\"}"), object("y")}));
  });
  ASSERT_TRUE(harness::eventually(
      [&] {
        return sql().number(
                   "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                   "'Lock' AND query LIKE '%check_fence%'") > 0;
      },
      5s));
  ASSERT_TRUE(harness::eventually([&] { return lease_a->lost(); }, 5s));  // expired meanwhile
  locks::LeasePtr lease_b = acquire("flight", 5s, /*renew=*/true);
  ASSERT_NE(lease_b, nullptr);
  auto begin_b =
      std::async(std::launch::async, [&] { return beginWith("flight", *lease_b, true); });
  std::this_thread::sleep_for(200ms);  // B queues behind A on the row lock
  blocker.rows("COMMIT");
  absl::Status a_status = in_flight.get();
  auto run_b = begin_b.get();
  ASSERT_TRUE(run_b.ok()) << run_b.status();
  // Ordered before B's claim (committed) or refused; either is correct.
  EXPECT_THAT(a_status.code(), AnyOf(absl::StatusCode::kOk, absl::StatusCode::kAborted))
      << a_status;
  absl::Status a_after = (*run_a)->writePage(pageOf({object("x", "{\"by\":\"a-late\"}")}));
  EXPECT_EQ(a_after.code(), absl::StatusCode::kAborted);
  ASSERT_TRUE((*run_b)->writePage(pageOf({object("x", "{\"by\":\"b\"}")})).ok());
  ASSERT_TRUE((*run_b)->finish(FinishRequest::succeeded()).ok());
  EXPECT_EQ(sql().value("SELECT metadata FROM " + q("objects") + " WHERE remote_id = 'x'"),
            "{\"by\":\"b\"}");
}

}  // namespace
}  // namespace tributary::store::testing
