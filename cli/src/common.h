#pragma once

// Shared pieces of the `tributary` commands: exit codes, a small flag parser, the user's
// directories, the database to use, and output helpers.

#include "tributary/common/log.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::cli {

/// Exit codes of every command (documented in cli/README.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitConnector = 1,     ///< The connector failed (start, handshake, Sync error, crash, timeout)
                          ///< or a conformance check failed.
  kExitUsage = 2,         ///< Bad command line.
  kExitInvalid = 3,       ///< Invalid manifests, connector JSON, options or secrets; not found.
  kExitDatabase = 4,      ///< PostgreSQL unreachable, local server failed, store write failed.
  kExitInstall = 5,       ///< The connector could not be installed.
  kExitConflict = 6,      ///< Another run of the same SyncJob took over (fenced).
  kExitInterrupted = 130  ///< SIGINT/SIGTERM.
};

/// A command's failure: what to print and how to exit.
struct Failure {
  int code = kExitConnector;
  std::string message;
};

/// Parsed flags: `--name value`, `--name=value`, boolean `--name`; positionals in order.
struct ParsedArgs {
  std::map<std::string, std::vector<std::string>> values;
  std::set<std::string> flags;
  std::vector<std::string> positionals;

  [[nodiscard]] bool has(const std::string& name) const {
    return flags.contains(name) || values.contains(name);
  }
  [[nodiscard]] std::optional<std::string> get(const std::string& name) const;
  [[nodiscard]] std::vector<std::string> all(const std::string& name) const;
};

struct FlagSpec {
  std::set<std::string> with_value;  ///< e.g. "--options"
  std::set<std::string> boolean;     ///< e.g. "--json"
  std::set<std::string> repeatable;  ///< subset of with_value
};

/// Parses `args` (the words after the command). Errors are usage errors.
absl::StatusOr<ParsedArgs> parseArgs(const std::vector<std::string>& args, const FlagSpec& spec);

/// Prints "tributary: <error>", a blank line and the command's usage to stderr; returns
/// kExitUsage (what every command returns for a usage error).
int usageError(std::string_view error, std::string_view usage);

/// Parses a positive number of seconds (fractions allowed) for `flag`.
absl::StatusOr<double> parseSeconds(const std::string& flag, const std::string& text);

/// `${XDG_STATE_HOME:-~/.local/state}/tributary` (root without XDG_STATE_HOME: /var/lib/tributary).
std::filesystem::path stateDir();
/// `${XDG_CACHE_HOME:-~/.cache}/tributary` (root without XDG_CACHE_HOME: /var/cache/tributary).
std::filesystem::path cacheDir();

/// Where the data goes: the URL given, DATABASE_URL, or the private local PostgreSQL.
struct Database {
  std::string dsn;      ///< For libpq (may hold a password: never print it).
  std::string display;  ///< Printable (password redacted).
  bool local = false;
};

enum class LocalStart { Always, IfInitialized };

/// Resolves --database-url / DATABASE_URL / the local server (started per `start`).
absl::StatusOr<Database> resolveDatabase(const std::optional<std::string>& flag, LocalStart start);

/// `user:password@` and `password=…` replaced, for printing a connection string.
std::string redactDsn(std::string_view dsn);

/// True when stderr is a terminal (progress lines instead of JSON log lines).
bool stderrIsTerminal();

/// The logger sink for a command: JSON lines on stderr, at Warn on a terminal (the progress line
/// says the rest), at Info otherwise.
log::SinkPtr commandSink();

/// Prints `tributary: <message>` to stderr and returns `failure.code`.
int report(const Failure& failure);

/// Human-readable seconds: "850 ms", "2.31 s", "3 min 12 s".
std::string formatDuration(double seconds);

/// Reads a whole file; errors name the file.
absl::StatusOr<std::string> readFile(const std::filesystem::path& path);

}  // namespace tributary::cli
