#pragma once

#include "tributary/sdk/connector.h"

#include <chrono>
#include <string>
#include <string_view>

/// hclog-compatible JSON logging on stderr (go-plugin §9). go-plugin hosts parse every stderr line
/// with unchecked string assertions, so `@level`, `@message`, `@timestamp` and `@module` are always
/// JSON strings and the timestamp has exactly six fractional digits.
namespace tributary::sdk::internal {

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds), the layout hclog and go-plugin use.
std::string hclogTimestamp(std::chrono::system_clock::time_point when);

/// One JSON line including the trailing newline. Fields named like the `@` keys are dropped.
std::string formatHclogLine(LogLevel level, std::string_view module, std::string_view message,
                            const LogFields& fields, std::chrono::system_clock::time_point when);

/// Sets the module name and minimum level used by `tributary::sdk::log`. Thread-safe.
void configureLog(std::string_view module, LogLevel min_level);

/// Routes gRPC core's and protobuf's own log output through `log()` so stderr stays JSON.
void routeLibraryLogs();

}  // namespace tributary::sdk::internal
