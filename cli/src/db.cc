// `tributary db url|start|status|stop`: the private local PostgreSQL.
#include "tributary/common/strings.h"
#include "tributary/localdb/localdb.h"

#include "commands.h"
#include "common.h"

#include <nlohmann/json.hpp>

#include <iostream>

namespace tributary::cli {
namespace {

constexpr const char* kUsage = R"USAGE(usage: tributary db url|start|status|stop [--json]

The private local PostgreSQL that `tributary run` uses when neither --database-url nor
DATABASE_URL is set. It lives in ${XDG_STATE_HOME:-~/.local/state}/tributary/postgres (as root:
/var/lib/tributary/postgres), listens on a unix socket only, and keeps running between runs.

  url      print its connection string (psql "$(tributary db url)"); a note on stderr when it
           is not running
  start    start it (initialising it on first use) and print the connection string
  status   print whether it exists and runs
  stop     stop it (the data stays; the next run starts it again)
)USAGE";

}  // namespace

int dbCommand(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0] == "-h" || argv[0] == "--help") {
    std::cout << kUsage;
    return argv.empty() ? kExitUsage : kExitOk;
  }
  FlagSpec spec;
  spec.boolean = {"--json"};
  auto args = parseArgs(std::vector<std::string>(argv.begin() + 1, argv.end()), spec);
  if (!args.ok() || !args->positionals.empty()) {
    return usageError(args.ok() ? strings::cat("unexpected argument `", args->positionals[0], "`")
                                : std::string(args.status().message()),
                      kUsage);
  }
  const bool json = args->has("--json");
  auto db = localdb::LocalDb::create({});
  if (!db.ok()) {
    return report({kExitDatabase, std::string(db.status().message())});
  }
  const std::string& verb = argv[0];
  if (verb == "url" || verb == "start") {
    if (verb == "start") {
      auto dsn = (*db)->ensureRunning();
      if (!dsn.ok()) {
        return report({kExitDatabase, strings::cat("cannot start the local PostgreSQL: ",
                                                   dsn.status().message())});
      }
    } else if (auto st = (*db)->status(); st.ok() && !st->running) {
      std::cerr << "tributary: the local PostgreSQL is "
                << (st->initialized ? "stopped" : "not created yet")
                << "; `tributary run` (or `tributary db start`) starts it\n";
    }
    if (json) {
      std::cout << nlohmann::json{{"url", (*db)->uri()}, {"dsn", (*db)->dsn()}}.dump() << '\n';
    } else {
      std::cout << (*db)->uri() << '\n';
    }
    return kExitOk;
  }
  if (verb == "status") {
    auto st = (*db)->status();
    if (!st.ok()) {
      return report({kExitDatabase, std::string(st.status().message())});
    }
    if (json) {
      std::cout << nlohmann::json{{"dir", (*db)->dir().string()},
                                  {"initialized", st->initialized},
                                  {"running", st->running},
                                  {"pid", st->pid},
                                  {"url", (*db)->uri()}}
                       .dump()
                << '\n';
    } else if (st->running) {
      std::cout << "running (pid " << st->pid << ") in " << (*db)->dir().string() << "\n"
                << (*db)->uri() << '\n';
    } else {
      std::cout << (st->initialized ? "stopped" : "not created") << " (" << (*db)->dir().string()
                << ")\n";
    }
    return kExitOk;
  }
  if (verb == "stop") {
    if (absl::Status stopped = (*db)->stop(); !stopped.ok()) {
      return report(
          {kExitDatabase, strings::cat("cannot stop the local PostgreSQL: ", stopped.message())});
    }
    if (!json) {
      std::cout << "stopped the local PostgreSQL (" << (*db)->dir().string() << ")\n";
    } else {
      std::cout << nlohmann::json{{"stopped", true}, {"dir", (*db)->dir().string()}}.dump() << '\n';
    }
    return kExitOk;
  }
  return usageError(strings::cat("unknown db command `", verb, "`"), kUsage);
}

}  // namespace tributary::cli
