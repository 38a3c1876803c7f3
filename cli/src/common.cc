#include "common.h"

#include "tributary/common/strings.h"
#include "tributary/localdb/localdb.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <pwd.h>
#include <regex>
#include <sstream>
#include <unistd.h>

namespace tributary::cli {

using strings::cat;

std::optional<std::string> ParsedArgs::get(const std::string& name) const {
  const auto it = values.find(name);
  if (it == values.end() || it->second.empty()) {
    return std::nullopt;
  }
  return it->second.back();
}

std::vector<std::string> ParsedArgs::all(const std::string& name) const {
  const auto it = values.find(name);
  return it == values.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<ParsedArgs> parseArgs(const std::vector<std::string>& args, const FlagSpec& spec) {
  ParsedArgs out;
  bool only_positionals = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string word = args[i];
    if (only_positionals || word.size() < 2 || word[0] != '-') {
      out.positionals.push_back(word);
      continue;
    }
    if (word == "--") {
      only_positionals = true;
      continue;
    }
    std::optional<std::string> inline_value;
    if (const auto eq = word.find('='); eq != std::string::npos && word.starts_with("--")) {
      inline_value = word.substr(eq + 1);
      word = word.substr(0, eq);
    }
    if (spec.boolean.contains(word)) {
      if (inline_value) {
        return absl::InvalidArgumentError(cat(word, " takes no value"));
      }
      out.flags.insert(word);
      continue;
    }
    if (!spec.with_value.contains(word)) {
      return absl::InvalidArgumentError(cat("unknown option `", word, "`"));
    }
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(cat(word, " needs a value"));
    }
    auto& slot = out.values[word];
    if (!slot.empty() && !spec.repeatable.contains(word)) {
      return absl::InvalidArgumentError(cat(word, " given more than once"));
    }
    slot.push_back(std::move(value));
  }
  return out;
}

int usageError(std::string_view error, std::string_view usage) {
  std::cerr << "tributary: " << error << "\n\n" << usage;
  return kExitUsage;
}

absl::StatusOr<double> parseSeconds(const std::string& flag, const std::string& text) {
  double value = 0;
  try {
    std::size_t used = 0;
    value = std::stod(text, &used);
    if (used != text.size()) {
      value = 0;
    }
  } catch (const std::exception&) {
    value = 0;
  }
  if (!(value > 0) || !std::isfinite(value)) {
    return absl::InvalidArgumentError(
        cat(flag, " takes a positive number of seconds, got `", text, "`"));
  }
  return value;
}

namespace {

std::filesystem::path homeDir() {
  if (const char* home = std::getenv("HOME"); home != nullptr && *home == '/') {
    return home;
  }
  if (const passwd* pw = ::getpwuid(::geteuid()); pw != nullptr && pw->pw_dir != nullptr) {
    return pw->pw_dir;
  }
  return "/tmp";
}

}  // namespace

std::filesystem::path stateDir() {
  if (const char* state = std::getenv("XDG_STATE_HOME"); state != nullptr && *state == '/') {
    return std::filesystem::path(state) / "tributary";
  }
  if (::geteuid() == 0) {
    return "/var/lib/tributary";
  }
  return homeDir() / ".local" / "state" / "tributary";
}

std::filesystem::path cacheDir() {
  if (const char* cache = std::getenv("XDG_CACHE_HOME"); cache != nullptr && *cache == '/') {
    return std::filesystem::path(cache) / "tributary";
  }
  if (::geteuid() == 0) {
    return "/var/cache/tributary";
  }
  return homeDir() / ".cache" / "tributary";
}

std::string redactDsn(std::string_view dsn) {
  std::string text(dsn);
  static const std::regex uri_password(R"(^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@?#]*):[^@/?#]*@)");
  static const std::regex kv_password(R"((^|\s)password\s*=\s*('([^'\\]|\\.)*'|\S+))");
  static const std::regex query_password(R"(([?&])password=[^&#]*)");
  text = std::regex_replace(text, uri_password, "$1:***@");
  text = std::regex_replace(text, kv_password, "$1password=***");
  text = std::regex_replace(text, query_password, "$1password=***");
  return text;
}

absl::StatusOr<Database> resolveDatabase(const std::optional<std::string>& flag, LocalStart start) {
  std::optional<std::string> url = flag;
  if (!url) {
    if (const char* env = std::getenv("DATABASE_URL"); env != nullptr && *env != '\0') {
      url = env;
    }
  }
  if (url) {
    return Database{*url, redactDsn(*url), false};
  }
  auto db = localdb::LocalDb::create({});
  if (!db.ok()) {
    return db.status();
  }
  if (start == LocalStart::IfInitialized) {
    auto st = (*db)->status();
    if (st.ok() && !st->initialized) {
      return absl::NotFoundError(
          cat("no database: --database-url and DATABASE_URL are not set, and the local database (",
              (*db)->dir().string(), ") does not exist yet; `tributary run` creates it"));
    }
  }
  auto dsn = (*db)->ensureRunning();
  if (!dsn.ok()) {
    return absl::Status(dsn.status().code(),
                        cat("cannot start the local PostgreSQL: ", dsn.status().message()));
  }
  return Database{*dsn, (*db)->uri(), true};
}

bool stderrIsTerminal() { return ::isatty(2) == 1; }

log::SinkPtr commandSink() {
  return log::makeJsonLineSink(2, stderrIsTerminal() ? log::Level::Warn : log::Level::Info);
}

int report(const Failure& failure) {
  std::cerr << "tributary: " << failure.message << '\n';
  return failure.code;
}

std::string formatDuration(double seconds) {
  char buf[64];
  if (seconds < 1) {
    std::snprintf(buf, sizeof(buf), "%.0f ms", seconds * 1000);
  } else if (seconds < 120) {
    std::snprintf(buf, sizeof(buf), "%.2f s", seconds);
  } else {
    const auto total = static_cast<long long>(seconds);  // NOLINT(google-runtime-int)
    std::snprintf(buf, sizeof(buf), "%lld min %lld s", total / 60, total % 60);
  }
  return buf;
}

absl::StatusOr<std::string> readFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        cat("cannot read ", path.string(), ": ", strings::errnoMessage(errno)));
  }
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace tributary::cli
