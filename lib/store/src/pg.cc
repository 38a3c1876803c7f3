#include "pg.h"

#include "tributary/common/strings.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <random>

namespace tributary::store::internal {
namespace {

void appendInt32(std::string& out, std::int32_t value) {
  const auto u = static_cast<std::uint32_t>(value);
  const char bytes[4] = {static_cast<char>((u >> 24U) & 0xFFU),
                         static_cast<char>((u >> 16U) & 0xFFU),
                         static_cast<char>((u >> 8U) & 0xFFU), static_cast<char>(u & 0xFFU)};
  out.append(bytes, 4);
}

std::string trimMessage(const char* message) {
  std::string text = message == nullptr ? "" : message;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
    text.pop_back();
  }
  return text;
}

}  // namespace

std::string PgError::describe() const {
  if (sqlstate.empty()) {
    return message;
  }
  return strings::cat(message, " (SQLSTATE ", sqlstate, ")");
}

bool PgError::retryableConnection() const {
  if (connection_lost) {
    return true;
  }
  // 08: connection exception; 57P01 admin shutdown; 57P02 crash shutdown; 57P03 cannot connect
  // now (starting up / recovering); 53300 too many connections.
  return sqlstate.starts_with("08") || sqlstate == "57P01" || sqlstate == "57P02" ||
         sqlstate == "57P03" || sqlstate == "53300";
}

bool PgError::retryableTransaction() const { return sqlstate == "40001" || sqlstate == "40P01"; }

bool PgError::dataException() const {
  return sqlstate.starts_with("22") || sqlstate.starts_with("54");
}

std::string_view PgResult::text(int row, int col) const {
  const char* value = PQgetvalue(result_.get(), row, col);
  return {value, static_cast<std::size_t>(PQgetlength(result_.get(), row, col))};
}

std::int64_t PgResult::int64(int row, int col) const {
  if (isNull(row, col)) {
    return 0;
  }
  const std::string_view value = text(row, col);
  std::int64_t out = 0;
  std::from_chars(value.data(), value.data() + value.size(), out);
  return out;
}

std::string PgResult::commandTuples() const { return PQcmdTuples(result_.get()); }

void BinaryArrayBuilder::add(std::string_view element) {
  appendInt32(payload_, static_cast<std::int32_t>(element.size()));
  payload_.append(element);
  ++count_;
}

void BinaryArrayBuilder::addBool(bool value) {
  appendInt32(payload_, 1);
  payload_.push_back(value ? '\1' : '\0');
  ++count_;
}

const std::string& BinaryArrayBuilder::finish() {
  out_.clear();
  out_.reserve(payload_.size() + 20);
  if (count_ == 0) {
    appendInt32(out_, 0);  // ndim 0: the empty array
    appendInt32(out_, 0);
    appendInt32(out_, static_cast<std::int32_t>(element_type_));
    return out_;
  }
  appendInt32(out_, 1);  // ndim
  appendInt32(out_, 0);  // no NULLs
  appendInt32(out_, static_cast<std::int32_t>(element_type_));
  appendInt32(out_, static_cast<std::int32_t>(count_));
  appendInt32(out_, 1);  // lower bound
  out_.append(payload_);
  return out_;
}

namespace {

// Connection errors that waiting does not cure: what the user must change, or "" (a server that
// is down, starting or restarting is retried).
std::string_view configurationHint(std::string_view libpq_message) {
  const auto has = [&](std::string_view needle) {
    return libpq_message.find(needle) != std::string_view::npos;
  };
  if (has("certificate") || has("SSL error") || has("server does not support SSL")) {
    return "the server's TLS certificate was not accepted: give the CA that signed it "
           "(sslrootcert, the agent's --database-ca-file) and a host name the certificate "
           "names, or change sslmode";
  }
  if (has("password authentication failed") || has("no password supplied") ||
      has("SCRAM authentication")) {
    return "check the user and the password (the agent's --database-password-file)";
  }
  if (has("no pg_hba.conf entry")) {
    return "the server refuses this client, user or database in pg_hba.conf (TLS required?)";
  }
  return {};
}

}  // namespace

PgConnection::~PgConnection() {
  if (conn_ != nullptr) {
    PQfinish(conn_);
  }
}

absl::StatusOr<std::unique_ptr<PgConnection>> PgConnection::connect(
    const std::string& dsn, std::chrono::milliseconds timeout, std::string_view application) {
  const std::string timeout_seconds =
      std::to_string(std::max<std::int64_t>(1, (timeout.count() + 999) / 1000));
  const std::string app(application);
  // expand_dbname=1: `dsn` may be a conninfo string or a URI; the later keys override it.
  const char* keys[] = {"dbname",     "connect_timeout", "application_name",    "client_encoding",
                        "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                        nullptr};
  const char* values[] = {
      dsn.c_str(), timeout_seconds.c_str(), app.c_str(), "UTF8", "1", "30", "10", "3", nullptr};
  PGconn* conn = PQconnectdbParams(keys, values, 1);
  if (conn == nullptr) {
    return absl::ResourceExhaustedError("libpq could not allocate a connection");
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string message = trimMessage(PQerrorMessage(conn));
    PQfinish(conn);
    if (const std::string_view hint = configurationHint(message); !hint.empty()) {
      return absl::FailedPreconditionError(
          strings::cat("cannot connect to PostgreSQL: ", message, "; ", hint));
    }
    return absl::UnavailableError(strings::cat("cannot connect to PostgreSQL: ", message));
  }
  // Server NOTICEs ("relation already exists, skipping") are expected; keep them off stderr.
  PQsetNoticeProcessor(
      conn, [](void* /*arg*/, const char* /*message*/) {}, nullptr);
  return std::unique_ptr<PgConnection>(new PgConnection(conn));
}

PgOutcome PgConnection::collect(PGresult* raw_result) {
  PgResult result(raw_result);
  const ExecStatusType status =
      raw_result == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(raw_result);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_COPY_IN) {
    return result;
  }
  PgError error;
  if (raw_result != nullptr) {
    const char* state = PQresultErrorField(raw_result, PG_DIAG_SQLSTATE);
    error.sqlstate = state == nullptr ? "" : state;
    const char* primary = PQresultErrorField(raw_result, PG_DIAG_MESSAGE_PRIMARY);
    error.message =
        primary != nullptr ? trimMessage(primary) : trimMessage(PQresultErrorMessage(raw_result));
  }
  if (error.message.empty()) {
    error.message = trimMessage(PQerrorMessage(conn_));
  }
  if (PQstatus(conn_) != CONNECTION_OK) {
    error.connection_lost = true;
  }
  if (error.message.empty()) {
    error.message = "unknown libpq error";
  }
  return error;
}

PgOutcome PgConnection::exec(const std::string& sql) { return collect(PQexec(conn_, sql.c_str())); }

namespace {
struct ParamArrays {
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
  explicit ParamArrays(const std::vector<PgParam>& params) {
    values.reserve(params.size());
    for (const PgParam& param : params) {
      values.push_back(param.value());
      lengths.push_back(param.length);
      formats.push_back(param.format);
    }
  }
};
}  // namespace

PgOutcome PgConnection::execParams(const std::string& sql, const std::vector<PgParam>& params) {
  ParamArrays arrays(params);
  std::vector<Oid> types;
  types.reserve(params.size());
  for (const PgParam& param : params) {
    types.push_back(param.type);
  }
  return collect(PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), types.data(),
                              arrays.values.data(), arrays.lengths.data(), arrays.formats.data(),
                              0));
}

bool PgConnection::prepared(const std::string& name) const {
  return std::find(prepared_.begin(), prepared_.end(), name) != prepared_.end();
}

PgOutcome PgConnection::prepare(const std::string& name, const std::string& sql,
                                const std::vector<Oid>& types) {
  if (prepared(name)) {
    return PgResult();
  }
  PgOutcome outcome = collect(
      PQprepare(conn_, name.c_str(), sql.c_str(), static_cast<int>(types.size()), types.data()));
  if (outcome.ok()) {
    prepared_.push_back(name);
  }
  return outcome;
}

PgOutcome PgConnection::execPrepared(const std::string& name, const std::vector<PgParam>& params) {
  ParamArrays arrays(params);
  return collect(PQexecPrepared(conn_, name.c_str(), static_cast<int>(params.size()),
                                arrays.values.data(), arrays.lengths.data(), arrays.formats.data(),
                                0));
}

PgOutcome PgConnection::copyIn(const std::string& copy_sql, std::string_view data) {
  PgOutcome start = collect(PQexec(conn_, copy_sql.c_str()));
  if (!start.ok()) {
    return start;
  }
  constexpr std::size_t kChunk = 1U << 20U;
  for (std::size_t offset = 0; offset < data.size(); offset += kChunk) {
    const std::size_t n = std::min(kChunk, data.size() - offset);
    if (PQputCopyData(conn_, data.data() + offset, static_cast<int>(n)) != 1) {
      return collect(nullptr);
    }
  }
  if (PQputCopyEnd(conn_, nullptr) != 1) {
    return collect(nullptr);
  }
  PgOutcome last = PgResult();
  while (PGresult* result = PQgetResult(conn_)) {
    PgOutcome outcome = collect(result);
    if (!outcome.ok() && last.ok()) {
      last = std::move(outcome);
    }
  }
  return last;
}

bool PgConnection::healthy() const { return PQstatus(conn_) == CONNECTION_OK; }

std::string PgConnection::quoteIdentifier(std::string_view identifier) {
  std::string out = "\"";
  for (char c : identifier) {
    if (c == '"') {
      out.push_back('"');
    }
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

absl::Status toStatus(const PgError& error, std::string_view what) {
  const std::string message = strings::cat(what, ": ", error.describe());
  if (error.retryableConnection()) {
    return absl::UnavailableError(message);
  }
  if (error.sqlstate == "TR001") {
    return absl::AbortedError(message);
  }
  if (error.retryableTransaction()) {
    return absl::AbortedError(message);
  }
  if (error.dataException()) {
    return absl::InvalidArgumentError(message);
  }
  if (error.sqlstate == "TR002") {
    return absl::FailedPreconditionError(message);
  }
  return absl::InternalError(message);
}

std::chrono::milliseconds Backoff::next() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::chrono::milliseconds current = next_;
  next_ = std::min(max_, next_ * 2);
  // Full jitter on the upper half: [current/2, current].
  std::uniform_int_distribution<std::int64_t> jitter(current.count() / 2, current.count());
  return std::chrono::milliseconds(jitter(rng));
}

}  // namespace tributary::store::internal
