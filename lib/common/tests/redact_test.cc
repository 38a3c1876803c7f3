#include "tributary/common/redact.h"

#include "tributary/common/log.h"

#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <vector>

namespace tributary::log {
namespace {

TEST(Redactor, ReplacesEveryOccurrence) {
  Redactor r;
  r.add("hunter2-secret");
  EXPECT_EQ(r.apply("a hunter2-secret b hunter2-secret"), "a [redacted] b [redacted]");
  EXPECT_EQ(r.apply("nothing here"), "nothing here");
}

TEST(Redactor, ShortValuesAreLeftAlone) {
  Redactor r;
  r.add("abc");
  r.add("   ");
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.apply("abc"), "abc");
}

TEST(Redactor, JsonStringsAndLinesAreSecretsOnTheirOwn) {
  Redactor r;
  r.add(R"({"bucket": "private-bucket", "auth": {"token": "tok-123456"}, "pages": 10})");
  EXPECT_EQ(r.apply("GET private-bucket with tok-123456"), "GET [redacted] with [redacted]");
  Redactor pem;
  pem.add("-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END KEY-----\n");
  EXPECT_EQ(pem.apply("key line MIIEvQIBADANBgkqhkiG9w0B"), "key line [redacted]");
}

TEST(Redactor, LongestValueWins) {
  Redactor r;
  r.add("secret");
  r.add("secret-and-more");
  EXPECT_EQ(r.apply("x secret-and-more y secret"), "x [redacted] y [redacted]");
}

TEST(Redactor, JsonValuesAndKeysAreRedacted) {
  Redactor r;
  r.add("hunter2-secret");
  nlohmann::json v = {
      {"msg", "token hunter2-secret"}, {"list", {"hunter2-secret", 3}}, {"hunter2-secret", true}};
  r.apply(v);
  EXPECT_EQ(v.dump(), R"({"[redacted]":true,"list":["[redacted]",3],"msg":"token [redacted]"})");
}

class CollectingSink final : public Sink {
 public:
  void write(const Record& record) override {
    const std::lock_guard lock(mu_);
    records.push_back(record);
  }
  std::mutex mu_;
  std::vector<Record> records;
};

TEST(Redactor, RedactingLoggerCleansMessageAndFields) {
  auto sink = std::make_shared<CollectingSink>();
  auto secrets = std::make_shared<Redactor>();
  secrets->add("hunter2-secret");
  const Logger logger = Logger("test", sink).with({{"carried", "hunter2-secret"}});
  logger.redacting(secrets).info("said hunter2-secret", {{"field", "x hunter2-secret"}});
  logger.info("unredacted logger: hunter2-secret");
  ASSERT_EQ(sink->records.size(), 2U);
  EXPECT_EQ(sink->records[0].message, "said [redacted]");
  EXPECT_EQ(sink->records[0].fields["field"], "x [redacted]");
  EXPECT_EQ(sink->records[0].fields["carried"], "[redacted]");
  EXPECT_EQ(sink->records[1].message, "unredacted logger: hunter2-secret");
}

}  // namespace
}  // namespace tributary::log
