#pragma once

// Helpers shared by the store suites: a fresh schema per test on the harness's PostgreSQL,
// page builders, and direct SQL for assertions.

#include "tributary/store/store.h"

#include "connector.pb.h"
#include "gtest/gtest.h"
#include "libpq-fe.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tributary::store::testing {

/// A direct libpq connection for assertions.
class Sql {
 public:
  explicit Sql(const std::string& dsn);
  ~Sql();
  Sql(const Sql&) = delete;
  Sql& operator=(const Sql&) = delete;

  /// Runs `sql`; fails the test on error. Returns rows as text (NULL → "<null>").
  std::vector<std::vector<std::string>> rows(const std::string& sql);
  /// First column of the first row.
  std::string value(const std::string& sql);
  std::int64_t number(const std::string& sql);
  /// Runs `sql`; returns the error message ("" on success).
  std::string tryExec(const std::string& sql);
  [[nodiscard]] PGconn* raw() const { return conn_; }

 private:
  PGconn* conn_;
};

/// One object for a page.
proto::DataObject object(const std::string& id, const std::string& metadata = "{}",
                         const std::string& name = "", const std::string& uri = "");

/// A page of objects "<prefix><i>" for i in [from, to), metadata {"v": <version>, "i": i}.
proto::SyncResponse rangePage(const std::string& prefix, int from, int to, int version = 1);

proto::SyncResponse pageOf(const std::vector<proto::DataObject>& objects);

/// A fake lease: increasing fencing tokens and a fresh lease id each time.
struct FakeLease {
  std::int64_t token;
  std::string lease_id;
};
FakeLease nextLease();

/**
 * Per-test fixture: the shared PostgreSQL, a fresh schema named after the test, a Store on it.
 */
class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  /// A run of `name` (namespace "ns") with a fresh fake lease.
  RunPtr begin(const std::string& name, DeletionPolicy policy = DeletionPolicy::Mark,
               std::function<absl::Status()> lease_check = nullptr);
  RunSpec spec(const std::string& name, DeletionPolicy policy = DeletionPolicy::Mark);

  /// `SELECT … FROM <schema>.<view>` helpers.
  std::string q(const std::string& name) const { return schema_ + "." + name; }
  std::int64_t liveCount(const std::string& job);
  /// The assertion connection, reconnected if the server restarted since.
  Sql& sql();
  /// remote_id → state ('present'/'missing'/'deleted'); objects absent from the table omitted.
  std::map<std::string, std::string> states(const std::string& job);

  StoreOptions options_;
  std::string schema_;
  std::string dsn_;
  StorePtr store_;
  std::unique_ptr<Sql> sql_;
};

/// A schema name unique to the running test ("st_<test>_<pid>").
std::string schemaForTest();

}  // namespace tributary::store::testing
