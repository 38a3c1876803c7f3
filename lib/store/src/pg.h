#pragma once

// A thin libpq wrapper: connections, results with SQLSTATE-carrying errors, binary parameters,
// COPY, and the error classification the store's retry logic needs. Internal to the store.

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "libpq-fe.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::store::internal {

/// A failed libpq call. `sqlstate` is empty for client-side failures (lost connection, …).
struct PgError {
  std::string sqlstate;
  std::string message;
  bool connection_lost = false;

  [[nodiscard]] std::string describe() const;
  /// The server went away or refused us for now: reconnect and retry.
  [[nodiscard]] bool retryableConnection() const;
  /// Serialization failure / deadlock: retry the transaction as is.
  [[nodiscard]] bool retryableTransaction() const;
  /// SQLSTATE class 22 (data exception) or 54 (program limit, e.g. JSON nesting).
  [[nodiscard]] bool dataException() const;
};

/// Owns a PGresult.
class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(PGresult* result) : result_(result) {}

  [[nodiscard]] int rows() const { return result_ ? PQntuples(result_.get()) : 0; }
  [[nodiscard]] bool isNull(int row, int col) const {
    return PQgetisnull(result_.get(), row, col) != 0;
  }
  [[nodiscard]] std::string_view text(int row, int col) const;
  /// Text-format integer column (NULL → 0).
  [[nodiscard]] std::int64_t int64(int row, int col) const;
  [[nodiscard]] bool boolean(int row, int col) const { return text(row, col) == "t"; }
  [[nodiscard]] std::string commandTuples() const;

 private:
  struct Deleter {
    void operator()(PGresult* result) const { PQclear(result); }
  };
  std::unique_ptr<PGresult, Deleter> result_;
};

/// Either a result or an error.
class PgOutcome {
 public:
  PgOutcome(PgResult result) : result_(std::move(result)) {}  // NOLINT(google-explicit-constructor)
  PgOutcome(PgError error) : error_(std::move(error)) {}      // NOLINT(google-explicit-constructor)
  [[nodiscard]] bool ok() const { return !error_.has_value(); }
  [[nodiscard]] const PgError& error() const { return *error_; }
  [[nodiscard]] const PgResult& result() const { return result_; }

 private:
  PgResult result_;
  std::optional<PgError> error_;
};

/// One bound parameter. Text parameters (format 0) own a copy of their value; binary ones
/// (format 1, explicit type oid) point at data that must outlive the call.
struct PgParam {
  std::optional<std::string> owned;
  const char* data = nullptr;  ///< binary data; unused for text
  int length = 0;
  int format = 0;
  Oid type = 0;
  bool is_null = false;

  static PgParam text(std::string value) {
    PgParam param;
    param.length = static_cast<int>(value.size());
    param.owned = std::move(value);
    return param;
  }
  /// A bigint in text format with its type declared (for statements that do not use it).
  static PgParam int64(std::int64_t value) {
    PgParam param = text(std::to_string(value));
    param.type = 20;
    return param;
  }
  static PgParam binary(const std::string& value, Oid type) {
    PgParam param;
    param.data = value.data();
    param.length = static_cast<int>(value.size());
    param.format = 1;
    param.type = type;
    return param;
  }
  static PgParam null() {
    PgParam param;
    param.is_null = true;
    return param;
  }
  [[nodiscard]] const char* value() const {
    if (is_null) {
      return nullptr;
    }
    return owned ? owned->c_str() : data;
  }
};

inline constexpr Oid kTextArrayOid = 1009;
inline constexpr Oid kBoolArrayOid = 1000;
inline constexpr Oid kTextOid = 25;
inline constexpr Oid kBoolOid = 16;

/// Builds a one-dimensional array in PostgreSQL's binary format (array_send), element by
/// element, without per-element escaping.
class BinaryArrayBuilder {
 public:
  explicit BinaryArrayBuilder(Oid element_type) : element_type_(element_type) {}
  void reserve(std::size_t count, std::size_t bytes) { payload_.reserve(bytes + count * 4); }
  void add(std::string_view element);
  void addBool(bool value);
  /// The finished array (valid until the next add()).
  [[nodiscard]] const std::string& finish();
  [[nodiscard]] std::size_t size() const { return count_; }

 private:
  Oid element_type_;
  std::size_t count_ = 0;
  std::string payload_;
  std::string out_;
};

/** A libpq connection. Not thread-safe. */
class PgConnection {
 public:
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  /// Connects once (no retries). `dsn` is a libpq conninfo string or URI.
  static absl::StatusOr<std::unique_ptr<PgConnection>> connect(const std::string& dsn,
                                                               std::chrono::milliseconds timeout,
                                                               std::string_view application);

  /// Simple-query protocol; may hold several statements; returns the last result.
  PgOutcome exec(const std::string& sql);
  /// Extended protocol, unnamed statement; text results.
  PgOutcome execParams(const std::string& sql, const std::vector<PgParam>& params);
  /// Prepares `sql` under `name` once per connection (re-prepared after a reconnect, since a new
  /// connection is a new object).
  PgOutcome prepare(const std::string& name, const std::string& sql, const std::vector<Oid>& types);
  PgOutcome execPrepared(const std::string& name, const std::vector<PgParam>& params);
  /// COPY … FROM STDIN with `data` (binary or text, as the statement says).
  PgOutcome copyIn(const std::string& copy_sql, std::string_view data);

  [[nodiscard]] bool healthy() const;
  [[nodiscard]] PGconn* raw() const { return conn_; }
  [[nodiscard]] bool prepared(const std::string& name) const;
  /// Quotes an identifier ("my schema" → "\"my schema\"").
  [[nodiscard]] static std::string quoteIdentifier(std::string_view identifier);

 private:
  explicit PgConnection(PGconn* conn) : conn_(conn) {}
  PgOutcome collect(PGresult* result);

  PGconn* conn_;
  std::vector<std::string> prepared_;
};
using PgConnectionPtr = std::unique_ptr<PgConnection>;

/// Maps a PgError to an absl::Status with a clear message prefixed by `what`.
absl::Status toStatus(const PgError& error, std::string_view what);

/// Exponential backoff with jitter between `initial` and `max`.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max)
      : next_(initial), max_(max) {}
  std::chrono::milliseconds next();

 private:
  std::chrono::milliseconds next_;
  std::chrono::milliseconds max_;
};

}  // namespace tributary::store::internal
