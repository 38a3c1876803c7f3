// RedisLock against a real Redis 7 (tests/harness) and InProcessLock.

#include "tributary/locks/lock.h"

#include "tributary/testing/probes.h"
#include "tributary/testing/services.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <hiredis/hiredis.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace tributary::locks {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

std::string uniqueSource(const std::string& base) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(info->name()) + "/" + base;
}

// Reads a key straight from Redis ("" when missing).
std::string redisGet(harness::RedisServer& redis, const std::string& key) {
  redisContext* ctx = redisConnect(redis.host().c_str(), redis.port());
  if (ctx == nullptr || ctx->err != 0) {
    if (ctx != nullptr) {
      redisFree(ctx);
    }
    return "<unreachable>";
  }
  auto* reply = static_cast<redisReply*>(redisCommand(ctx, "GET %s", key.c_str()));
  std::string value;
  if (reply != nullptr && reply->type == REDIS_REPLY_STRING) {
    value.assign(reply->str, reply->len);
  }
  freeReplyObject(reply);
  redisFree(ctx);
  return value;
}

class RedisLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto redis = harness::SharedServices::redis();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = *redis;
    ASSERT_TRUE(redis_->start().ok());
    RedisLockOptions options;
    options.host = redis_->host();
    options.port = redis_->port();
    options.connect_timeout = 500ms;
    options.command_timeout = 500ms;
    lock_ = makeRedisLock(options);
  }

  AcquireOptions opts(std::chrono::milliseconds ttl = 2s) {
    AcquireOptions o;
    o.ttl = ttl;
    return o;
  }

  harness::RedisServer* redis_ = nullptr;
  SourceLockPtr lock_;
};

// A Redis with a password (requirepass): the right one locks, a wrong or missing one fails with
// UNAUTHENTICATED and a message that names neither password.
TEST(RedisAuthTest, PasswordIsSentAndAWrongOneIsAClearError) {
  harness::RedisServer redis;  // a private one: its password does not leak into other tests
  ASSERT_TRUE(redis.start().ok());
  // Set after the start: the harness's readiness probe speaks without a password.
  redisContext* admin = redisConnect(redis.host().c_str(), redis.port());
  ASSERT_TRUE(admin != nullptr && admin->err == 0);
  freeReplyObject(redisCommand(admin, "CONFIG SET requirepass s3cret-pw"));
  redisFree(admin);
  auto lockWith = [&](const std::string& password) {
    RedisLockOptions options;
    options.host = redis.host();
    options.port = redis.port();
    options.password = password;
    return makeRedisLock(options);
  };
  AcquireOptions acquire;
  acquire.ttl = 2s;
  auto lease = lockWith("s3cret-pw")->acquire("auth/source", acquire);
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_GT((*lease)->fencingToken(), 0);
  for (const std::string& wrong : {std::string("wrong-pw"), std::string()}) {
    auto refused = lockWith(wrong)->acquire("auth/other", acquire);
    ASSERT_FALSE(refused.ok());
    const std::string message(refused.status().message());
    if (wrong.empty()) {
      EXPECT_THAT(message, HasSubstr("NOAUTH"));  // the server's own word for it
    } else {
      EXPECT_TRUE(absl::IsUnauthenticated(refused.status())) << refused.status();
      EXPECT_THAT(message, HasSubstr("check the Redis user and password"));
      EXPECT_EQ(message.find("wrong-pw"), std::string::npos);
    }
    EXPECT_EQ(message.find("s3cret-pw"), std::string::npos);
  }
  // probe() tells a wrong password from an outage before any lock is taken.
  EXPECT_TRUE(lockWith("s3cret-pw")->probe().ok());
  EXPECT_TRUE(absl::IsUnauthenticated(lockWith("wrong-pw")->probe()));
}

TEST(RedisLockTransport, ConnectionFailuresCarryWhatTheTransportKnows) {
  RedisLockOptions options;
  options.unix_socket = "/nonexistent/tributary-test/redis.sock";
  options.describe_transport = [] { return std::string("TLS tunnel: certificate verify failed"); };
  const absl::Status probed = makeRedisLock(options)->probe();
  EXPECT_TRUE(absl::IsUnavailable(probed)) << probed;
  EXPECT_THAT(probed.message(),
              HasSubstr("cannot connect to /nonexistent/tributary-test/redis.sock"));
  EXPECT_THAT(probed.message(), HasSubstr("(TLS tunnel: certificate verify failed)"));
  AcquireOptions acquire;
  acquire.ttl = 1s;
  auto lease = makeRedisLock(options)->acquire("transport/source", acquire);
  ASSERT_FALSE(lease.ok());
  EXPECT_THAT(lease.status().message(), HasSubstr("(TLS tunnel: certificate verify failed)"));
  options.describe_transport = [] { return std::string(); };  // nothing to add: no parentheses
  EXPECT_THAT(makeRedisLock(options)->probe().message(), Not(HasSubstr("(")));
}

TEST_F(RedisLockTest, AcquireIsExclusiveAndReleaseFreesIt) {
  const std::string source = uniqueSource("a");
  auto first = lock_->acquire(source, opts());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->token().size(), 32U);
  EXPECT_TRUE((*first)->check().ok());
  EXPECT_EQ(redisGet(*redis_, "tributary:lock:" + source), (*first)->token());
  auto second = lock_->acquire(source, opts());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("held by another"));
  ASSERT_TRUE((*first)->release().ok());
  EXPECT_TRUE((*first)->lost());
  EXPECT_TRUE((*first)->release().ok());  // idempotent
  EXPECT_EQ(redisGet(*redis_, "tributary:lock:" + source), "");
  auto third = lock_->acquire(source, opts());
  ASSERT_TRUE(third.ok()) << third.status();
}

TEST_F(RedisLockTest, FencingTokensIncreaseAndRespectTheFloor) {
  const std::string source = uniqueSource("f");
  std::int64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    auto lease = lock_->acquire(source, opts());
    ASSERT_TRUE(lease.ok());
    EXPECT_GT((*lease)->fencingToken(), last);
    last = (*lease)->fencingToken();
  }
  AcquireOptions floor = opts();
  floor.min_fencing_token = 1000;
  auto lease = lock_->acquire(source, floor);
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ((*lease)->fencingToken(), 1001);
  ASSERT_TRUE((*lease)->release().ok());
  auto next = lock_->acquire(source, opts());  // a lower floor never lowers the counter
  ASSERT_TRUE(next.ok());
  EXPECT_EQ((*next)->fencingToken(), 1002);
}

TEST_F(RedisLockTest, WaitingAcquireGetsTheLockWhenReleased) {
  const std::string source = uniqueSource("w");
  auto holder = lock_->acquire(source, opts());
  ASSERT_TRUE(holder.ok());
  std::thread releaser([&] {
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE((*holder)->release().ok());
  });
  AcquireOptions waiting = opts();
  waiting.wait = 5s;
  auto waiter = lock_->acquire(source, waiting);
  releaser.join();
  ASSERT_TRUE(waiter.ok()) << waiter.status();
  EXPECT_GT((*waiter)->fencingToken(), (*holder)->fencingToken());
}

TEST_F(RedisLockTest, RenewalKeepsTheLeaseBeyondItsTtl) {
  const std::string source = uniqueSource("r");
  auto lease = lock_->acquire(source, opts(300ms));
  ASSERT_TRUE(lease.ok());
  std::this_thread::sleep_for(1200ms);
  EXPECT_TRUE((*lease)->check().ok()) << (*lease)->check();
  EXPECT_EQ(redisGet(*redis_, "tributary:lock:" + source), (*lease)->token());
  EXPECT_EQ(lock_->acquire(source, opts()).status().code(), absl::StatusCode::kAborted);
}

TEST_F(RedisLockTest, WithoutRenewalItExpiresAndReleaseIsOnlyByTheHolder) {
  const std::string source = uniqueSource("e");
  AcquireOptions no_renew = opts(300ms);
  no_renew.renew = false;
  auto old_lease = lock_->acquire(source, no_renew);
  ASSERT_TRUE(old_lease.ok());
  std::this_thread::sleep_for(400ms);
  EXPECT_TRUE((*old_lease)->lost());
  EXPECT_THAT(std::string((*old_lease)->check().message()), HasSubstr("TTL passed"));
  auto new_lease = lock_->acquire(source, opts());
  ASSERT_TRUE(new_lease.ok()) << new_lease.status();
  EXPECT_GT((*new_lease)->fencingToken(), (*old_lease)->fencingToken());
  // The old holder's release must not delete the new holder's lock.
  absl::Status released = (*old_lease)->release();
  EXPECT_EQ(released.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(redisGet(*redis_, "tributary:lock:" + source), (*new_lease)->token());
}

TEST_F(RedisLockTest, RedisRestartLosesTheLeaseAndNotifies) {
  const std::string source = uniqueSource("restart");
  std::atomic<int> notified{0};
  std::string reason;
  AcquireOptions options = opts(1500ms);
  options.on_lost = [&](const absl::Status& status) {
    reason = std::string(status.message());
    ++notified;
  };
  auto lease = lock_->acquire(source, options);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(redis_->restart().ok());  // persistence is off: the key is gone
  EXPECT_TRUE(harness::eventually([&] { return (*lease)->lost(); }, 5s));
  EXPECT_TRUE(harness::eventually([&] { return notified.load() == 1; }, 5s));
  EXPECT_THAT(reason, HasSubstr("gone"));
  // The lock service reconnects: new acquisitions work, and with the store's floor the tokens
  // continue above the old ones even though Redis forgot its counter.
  AcquireOptions floor = opts();
  floor.min_fencing_token = (*lease)->fencingToken();
  auto next = lock_->acquire(source, floor);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_GT((*next)->fencingToken(), (*lease)->fencingToken());
}

TEST_F(RedisLockTest, RedisUnreachablePastTheTtlLosesTheLease) {
  const std::string source = uniqueSource("down");
  std::atomic<int> notified{0};
  AcquireOptions options = opts(800ms);
  options.on_lost = [&](const absl::Status&) { ++notified; };
  auto lease = lock_->acquire(source, options);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(redis_->kill().ok());
  EXPECT_TRUE(harness::eventually([&] { return notified.load() == 1; }, 5s));
  EXPECT_TRUE((*lease)->lost());
  auto refused = lock_->acquire(source, opts());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(redis_->start().ok());
  auto after = lock_->acquire(source, opts());
  EXPECT_TRUE(after.ok()) << after.status();
}

TEST_F(RedisLockTest, ShortOutageWithinTheTtlIsSurvivedByReconnecting) {
  // A Redis that drops connections but keeps its data (CLIENT KILL) must not lose the lease.
  const std::string source = uniqueSource("blip");
  auto lease = lock_->acquire(source, opts(1500ms));
  ASSERT_TRUE(lease.ok());
  redisContext* ctx = redisConnect(redis_->host().c_str(), redis_->port());
  ASSERT_TRUE(ctx != nullptr && ctx->err == 0);
  for (int i = 0; i < 3; ++i) {
    freeReplyObject(redisCommand(ctx, "CLIENT KILL TYPE normal SKIPME yes"));
    std::this_thread::sleep_for(500ms);
  }
  redisFree(ctx);
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE((*lease)->check().ok()) << (*lease)->check();
  EXPECT_EQ(redisGet(*redis_, "tributary:lock:" + source), (*lease)->token());
}

TEST_F(RedisLockTest, CancelledWaitReturnsPromptly) {
  const std::string source = uniqueSource("cancel");
  auto holder = lock_->acquire(source, opts());
  ASSERT_TRUE(holder.ok());
  std::stop_source stop;
  AcquireOptions waiting = opts();
  waiting.wait = 30s;
  waiting.stop = stop.get_token();
  std::thread canceller([&] {
    std::this_thread::sleep_for(200ms);
    stop.request_stop();
  });
  const auto start = std::chrono::steady_clock::now();
  auto waiter = lock_->acquire(source, waiting);
  canceller.join();
  EXPECT_EQ(waiter.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

// ---------------------------------------------------------------------------------------------

TEST(InProcessLockTest, SameContract) {
  auto lock = InProcessLock::create();
  AcquireOptions options;
  auto first = lock->acquire("ns/job", options);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ((*first)->fencingToken(), 1);
  EXPECT_EQ(lock->acquire("ns/job", options).status().code(), absl::StatusCode::kAborted);
  auto other = lock->acquire("ns/other", options);
  ASSERT_TRUE(other.ok());
  std::thread releaser([&] {
    std::this_thread::sleep_for(100ms);
    EXPECT_TRUE((*first)->release().ok());
  });
  AcquireOptions waiting;
  waiting.wait = 5s;
  waiting.min_fencing_token = 40;
  auto second = lock->acquire("ns/job", waiting);
  releaser.join();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->fencingToken(), 41);
  EXPECT_NE((*second)->token(), (*first)->token());
}

TEST(InProcessLockTest, RevokeLosesTheLeaseAndNotifies) {
  auto lock = InProcessLock::create();
  int notified = 0;
  AcquireOptions options;
  options.on_lost = [&](const absl::Status& status) {
    EXPECT_THAT(std::string(status.message()), HasSubstr("revoked"));
    ++notified;
  };
  auto lease = lock->acquire("s", options);
  ASSERT_TRUE(lease.ok());
  lock->revoke("s");
  EXPECT_EQ(notified, 1);
  EXPECT_TRUE((*lease)->lost());
  auto next = lock->acquire("s", AcquireOptions());
  ASSERT_TRUE(next.ok());
  EXPECT_EQ((*lease)->release().code(), absl::StatusCode::kAborted);  // not the holder any more
  EXPECT_TRUE((*next)->check().ok());
}

TEST(InProcessLockTest, LeaseMayOutliveTheLock) {
  LeasePtr lease;
  {
    auto lock = InProcessLock::create();
    auto acquired = lock->acquire("s", AcquireOptions());
    ASSERT_TRUE(acquired.ok());
    lease = *std::move(acquired);
  }
  EXPECT_TRUE(lease->release().ok());
}

}  // namespace
}  // namespace tributary::locks
