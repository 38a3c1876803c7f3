#include "store_test_support.h"

#include "tributary/common/strings.h"
#include "tributary/testing/services.h"

#include <atomic>
#include <cctype>
#include <unistd.h>

namespace tributary::store::testing {

Sql::Sql(const std::string& dsn) : conn_(PQconnectdb(dsn.c_str())) {
  EXPECT_EQ(PQstatus(conn_), CONNECTION_OK) << PQerrorMessage(conn_);
  PQsetNoticeProcessor(
      conn_, [](void* /*arg*/, const char* /*message*/) {}, nullptr);
}

Sql::~Sql() { PQfinish(conn_); }

std::vector<std::vector<std::string>> Sql::rows(const std::string& sql) {
  std::vector<std::vector<std::string>> out;
  PGresult* result = PQexec(conn_, sql.c_str());
  const ExecStatusType status = PQresultStatus(result);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    ADD_FAILURE() << "SQL failed: " << sql << "\n" << PQresultErrorMessage(result);
    PQclear(result);
    return out;
  }
  for (int r = 0; r < PQntuples(result); ++r) {
    std::vector<std::string> row;
    for (int c = 0; c < PQnfields(result); ++c) {
      row.emplace_back(PQgetisnull(result, r, c)
                           ? "<null>"
                           : std::string(PQgetvalue(result, r, c),
                                         static_cast<std::size_t>(PQgetlength(result, r, c))));
    }
    out.push_back(std::move(row));
  }
  PQclear(result);
  return out;
}

std::string Sql::value(const std::string& sql) {
  auto result = rows(sql);
  if (result.empty() || result[0].empty()) {
    ADD_FAILURE() << "no value from: " << sql;
    return "";
  }
  return result[0][0];
}

std::int64_t Sql::number(const std::string& sql) { return std::stoll(value(sql)); }

std::string Sql::tryExec(const std::string& sql) {
  PGresult* result = PQexec(conn_, sql.c_str());
  const ExecStatusType status = PQresultStatus(result);
  std::string error;
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    error = PQresultErrorMessage(result);
    if (error.empty()) {
      error = "failed";
    }
  }
  PQclear(result);
  return error;
}

proto::DataObject object(const std::string& id, const std::string& metadata,
                         const std::string& name, const std::string& uri) {
  proto::DataObject o;
  o.set_remote_id(id);
  o.set_resource_name(name.empty() ? "name-" + id : name);
  o.set_uri(uri.empty() ? "s3://bucket/" + id : uri);
  o.set_metadata(metadata);
  return o;
}

proto::SyncResponse rangePage(const std::string& prefix, int from, int to, int version) {
  proto::SyncResponse page;
  for (int i = from; i < to; ++i) {
    *page.add_response() =
        object(strings::cat(prefix, i), strings::cat("{\"v\":", version, ",\"i\":", i, "}"));
  }
  return page;
}

proto::SyncResponse pageOf(const std::vector<proto::DataObject>& objects) {
  proto::SyncResponse page;
  for (const auto& o : objects) {
    *page.add_response() = o;
  }
  return page;
}

FakeLease nextLease() {
  static std::atomic<std::int64_t> counter{0};
  const std::int64_t n = ++counter;
  return {n, strings::cat("lease-", getpid(), "-", n)};
}

std::string schemaForTest() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = strings::cat(info->test_suite_name(), "_", info->name());
  std::string out = "st_";
  for (char c : name) {
    out.push_back(std::isalnum(static_cast<unsigned char>(c)) != 0
                      ? static_cast<char>(std::tolower(static_cast<unsigned char>(c)))
                      : '_');
  }
  out = out.substr(0, 40);
  return out;
}

void StoreTest::SetUp() {
  auto pg = harness::SharedServices::postgres();
  ASSERT_TRUE(pg.ok()) << pg.status();
  ASSERT_TRUE((*pg)->start().ok());
  dsn_ = (*pg)->dsn();
  schema_ = schemaForTest();
  sql_ = std::make_unique<Sql>(dsn_);
  sql_->rows("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
  options_.dsn = dsn_;
  options_.schema = schema_;
  options_.reconnect_deadline = std::chrono::seconds(20);
  options_.logger = log::Logger("store", log::makeJsonLineSink(2, log::Level::Warn));
  auto store = Store::open(options_);
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = *std::move(store);
}

void StoreTest::TearDown() { store_.reset(); }

RunSpec StoreTest::spec(const std::string& name, DeletionPolicy policy) {
  const FakeLease lease = nextLease();
  RunSpec spec;
  spec.ns = "ns";
  spec.name = name;
  spec.connector = "test";
  spec.holder = "test-holder";
  spec.fencing_token = lease.token;
  spec.lease_id = lease.lease_id;
  spec.deletion_policy = policy;
  return spec;
}

RunPtr StoreTest::begin(const std::string& name, DeletionPolicy policy,
                        std::function<absl::Status()> lease_check) {
  RunSpec s = spec(name, policy);
  s.lease_check = std::move(lease_check);
  auto run = store_->beginRun(s);
  EXPECT_TRUE(run.ok()) << run.status();
  return run.ok() ? *std::move(run) : nullptr;
}

Sql& StoreTest::sql() {
  if (sql_ == nullptr || PQstatus(sql_->raw()) != CONNECTION_OK) {
    sql_ = std::make_unique<Sql>(dsn_);
  }
  return *sql_;
}

std::int64_t StoreTest::liveCount(const std::string& job) {
  return sql().number("SELECT count(*) FROM " + q("live_objects") +
                      " WHERE namespace = 'ns' AND sync_job = '" + job + "'");
}

std::map<std::string, std::string> StoreTest::states(const std::string& job) {
  std::map<std::string, std::string> out;
  for (const auto& row : sql().rows("SELECT remote_id, state FROM " + q("object_versions") +
                                    " WHERE namespace = 'ns' AND sync_job = '" + job + "'")) {
    out[row[0]] = row[1];
  }
  return out;
}

}  // namespace tributary::store::testing
