// `tributary run`: the whole pipeline on one machine. Manifests (or a c1 connector JSON) →
// installer → plugin host → store, with an in-process lock for fencing.
#include "tributary/common/strings.h"
#include "tributary/sandbox/sandbox.h"

#include "absl/strings/numbers.h"
#include "commands.h"
#include "common.h"
#include "credentials.h"
#include "manifest.h"
#include "signals.h"
#include "sync_pipeline.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <cstdlib>
#include <iostream>
#include <optional>

namespace tributary::cli {
namespace {

using strings::cat;

constexpr const char* kUsage = R"USAGE(usage:
  tributary run -f MANIFESTS.yaml [-f ...] [--syncjob [NAMESPACE/]NAME] [options]
  tributary run --connector CONNECTOR.json [--options JSON | --options-file FILE] [--name NAME]
                [options]

Runs one sync on this machine: installs the connector, runs it through the go-plugin host and
writes its pages into PostgreSQL, then applies the deletion policy and prints a summary.

  -f, --filename FILE     Connector and SyncJob manifests (the YAML you would `kubectl apply`);
                          several documents per file; repeatable; `-` reads stdin. A v1 Secret in
                          the files can hold the options of spec.optionsFrom and the connector's
                          credentials (spec.env valueFrom, spec.envFrom, spec.files).
  --syncjob [NS/]NAME     which SyncJob to run (required when the files hold several)
  --namespace NS          namespace of manifests without one, and of --connector runs (default:
                          default)
  --connector FILE        a c1 connector JSON instead of manifests
  --options JSON          with --connector: the Sync options (default {}); never printed
  --options-file FILE     with --connector: read the options from a file
  --name NAME             with --connector: the SyncJob name the data is stored under (default:
                          the connector's name)
  --deletion-policy P     with --connector: Keep, Mark (default) or Delete
  --max-delete-percent N  deletion guard: a run that would remove more than N % of the source's
                          live objects removes nothing (default: the SyncJob's
                          spec.deletionGuard.maxDeletePercent, else 50); a run that would remove
                          all of them while listing none is always held back
  --confirm-deletion      apply this run's deletions whatever the deletion guard says (once the
                          objects are known to be gone upstream)
  --database-url URL      PostgreSQL connection string (default: $DATABASE_URL, else a private
                          local PostgreSQL started on demand; see `tributary db`)
  --database-timeout S    how long to keep trying to reach the database (default 15)
  --timeout S             Sync deadline in seconds (default: the SyncJob's activeDeadlineSeconds,
                          else 86400)
  --start-timeout S       how long the connector may take to print its handshake (default 60)
  --env NAME=VALUE        a variable for the connector process (repeatable); `--env NAME` copies
                          NAME from this environment (keeps the value off the command line)
  --env-file FILE         NAME=VALUE lines (# comments, `NAME` alone copies it), docker's format;
                          repeatable. Precedence, lowest first: the host variables connectors
                          inherit (PATH, HOME, LANG, proxies, ...), spec.envFrom, spec.env,
                          spec.files' variables, --env-file, --env. Connector process only:
                          install commands see spec.env values, and nothing here reinstalls
  --secret-dir DIR        secrets as files DIR/<secret>/<key> for optionsFrom.secretKeyRef, the
                          Connector's spec.env valueFrom, spec.envFrom, spec.files and secretRef
                          (default ${XDG_CONFIG_HOME:-~/.config}/tributary/secrets);
                          TRIBUTARY_SECRET_<SECRET>_<KEY> variables work too
  --cache-dir DIR         connector cache (default ${XDG_CACHE_HOME:-~/.cache}/tributary/connectors)
  --update                fetch the newest version of the connector first (installer update)
  --sandbox on|off        confine the connector (Landlock, limits, no_new_privs; default on;
                          cli/README.md) [TRIBUTARY_SANDBOX]
  --connector-user U[:G]  run the connector as this user (needs root; default when root:
                          65534; `root` keeps it root, warned) [TRIBUTARY_CONNECTOR_USER]
  --sandbox-read-only P   a path the connector may also read, repeatable
                          [TRIBUTARY_SANDBOX_READ_ONLY, colon-separated]
  --json                  print the summary as one JSON object on stdout

Progress goes to stderr: a status line on a terminal, JSON log lines otherwise.
Exit status: 0 ok, 1 connector failed, 2 usage, 3 invalid input, 4 database, 5 install,
6 fenced by another run, 130 interrupted (cli/README.md).
)USAGE";

int usage(const std::string& error) { return usageError(error, kUsage); }

std::filesystem::path secretDir(const ParsedArgs& args) {
  if (auto dir = args.get("--secret-dir")) {
    return *dir;
  }
  if (const char* config = std::getenv("XDG_CONFIG_HOME"); config != nullptr && *config == '/') {
    return std::filesystem::path(config) / "tributary" / "secrets";
  }
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home != nullptr ? home : "/tmp") / ".config" / "tributary" /
         "secrets";
}

absl::StatusOr<SyncPlan> planFromManifests(const ParsedArgs& args, const std::string& ns) {
  auto manifests = loadManifests(args.all("-f"), ns);
  if (!manifests.ok()) {
    return manifests.status();
  }
  const SyncJobManifest* job = nullptr;
  if (auto wanted = args.get("--syncjob")) {
    std::string want_ns;
    std::string want_name = *wanted;
    if (const auto slash = wanted->find('/'); slash != std::string::npos) {
      want_ns = wanted->substr(0, slash);
      want_name = wanted->substr(slash + 1);
    }
    for (const auto& j : manifests->syncjobs) {
      if (j.name == want_name && (want_ns.empty() || j.ns == want_ns)) {
        if (job != nullptr) {
          return absl::InvalidArgumentError(cat("--syncjob ", *wanted,
                                                " matches SyncJobs in several namespaces; "
                                                "write NAMESPACE/NAME"));
        }
        job = &j;
      }
    }
    if (job == nullptr) {
      std::vector<std::string> names;
      for (const auto& j : manifests->syncjobs) {
        names.push_back(cat(j.ns, "/", j.name));
      }
      return absl::InvalidArgumentError(
          cat("no SyncJob `", *wanted, "` in the given files (found: ",
              names.empty() ? std::string("none") : strings::join(names, ", "), ")"));
    }
  } else if (manifests->syncjobs.size() == 1) {
    job = &manifests->syncjobs.front();
  } else if (manifests->syncjobs.empty()) {
    return absl::InvalidArgumentError(
        "the given files hold no SyncJob; add one (spec.connectorRef names the Connector), or "
        "run a c1 connector JSON with --connector");
  } else {
    std::vector<std::string> names;
    for (const auto& j : manifests->syncjobs) {
      names.push_back(cat(j.ns, "/", j.name));
    }
    return absl::InvalidArgumentError(cat("the given files hold ", names.size(),
                                          " SyncJobs; choose one with --syncjob (",
                                          strings::join(names, ", "), ")"));
  }
  const ConnectorManifest* connector = manifests->connector(job->ns, job->connector_ref);
  SyncPlan plan;
  plan.ns = job->ns;
  plan.name = job->name;
  plan.connector = connector->spec;
  plan.handshake = sync::hostHandshake(connector->handshake);
  plan.limits = connector->limits;
  plan.deletion_policy =
      store::parseDeletionPolicy(job->deletion_policy).value_or(store::DeletionPolicy::Mark);
  plan.deletion_guard.max_delete_percent = job->max_delete_percent;
  if (job->active_deadline_seconds) {
    plan.active_deadline = std::chrono::seconds(*job->active_deadline_seconds);
  }
  const LocalSecrets secrets(*manifests, secretDir(args));
  auto credentials = api::resolveCredentials(*connector, secrets);
  if (!credentials.ok()) {
    return credentials.status();
  }
  plan.secret_env = std::move(credentials->env);
  plan.files = std::move(credentials->files);
  plan.notes.insert(plan.notes.end(), credentials->notes.begin(), credentials->notes.end());
  auto options = api::resolveOptions(*job, secrets);
  if (!options.ok()) {
    return options.status();
  }
  plan.options = *std::move(options);
  plan.options_are_secret = job->options_from.has_value();
  if (job->schedule) {
    plan.notes.push_back(cat("spec.schedule `", *job->schedule,
                             "` is for the controller; `tributary run` runs the SyncJob once now"));
  }
  if (job->suspend) {
    plan.notes.push_back("spec.suspend is true; `tributary run` runs the SyncJob anyway");
  }
  return plan;
}

// c1's connectors.json is a JSON array of connectors; `--connector` takes one. Says so (how many,
// which) and how to run one of them, or nothing when `file` is not such a list.
std::optional<std::string> connectorListProblem(const std::string& file) {
  auto text = readFile(file);
  if (!text.ok()) {
    return std::nullopt;
  }
  const nlohmann::json doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_array()) {
    return std::nullopt;
  }
  constexpr std::size_t kNamesShown = 10;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < doc.size() && i < kNamesShown; ++i) {
    const auto name = doc[i].is_object() ? doc[i].find("name") : doc[i].end();
    names.push_back(doc[i].is_object() && name != doc[i].end() && name->is_string()
                        ? name->get<std::string>()
                        : cat("#", i, " (no name)"));
  }
  if (doc.size() > kNamesShown) {
    names.push_back(cat("and ", doc.size() - kNamesShown, " more"));
  }
  const std::string what =
      doc.empty() ? std::string("an empty list of connectors")
                  : cat("a list of ", doc.size(), " connector", doc.size() == 1 ? "" : "s", " (",
                        strings::join(names, ", "), ")");
  return cat(file, " is ", what,
             " like c1's connectors.json, but --connector takes one connector (a JSON object). "
             "Turn the list into Connector manifests with `tributary connector import ",
             file,
             " > connectors.yaml` and run one of them with `tributary run -f connectors.yaml "
             "-f syncjob.yaml` (a SyncJob whose spec.connectorRef names it)");
}

absl::StatusOr<SyncPlan> planFromConnectorJson(const ParsedArgs& args, const std::string& ns) {
  auto spec = installer::loadConnectorFile(*args.get("--connector"));
  if (!spec.ok()) {
    if (auto list = connectorListProblem(*args.get("--connector"))) {
      return absl::InvalidArgumentError(*list);
    }
    return spec.status();  // It names the file.
  }
  SyncPlan plan;
  plan.ns = ns;
  plan.name = args.get("--name").value_or(kubeName(spec->name));
  plan.connector = *spec;
  if (args.has("--options") && args.has("--options-file")) {
    return absl::InvalidArgumentError("give --options or --options-file, not both");
  }
  if (auto file = args.get("--options-file")) {
    auto text = readFile(*file);
    if (!text.ok()) {
      return text.status();
    }
    plan.options = *text;
    plan.options_are_secret = true;  // The way to keep credentials off the command line.
  } else {
    plan.options = args.get("--options").value_or("{}");
  }
  if (auto policy = args.get("--deletion-policy")) {
    if (*policy == "Keep") {
      plan.deletion_policy = store::DeletionPolicy::Keep;
    } else if (*policy == "Mark") {
      plan.deletion_policy = store::DeletionPolicy::Mark;
    } else if (*policy == "Delete") {
      plan.deletion_policy = store::DeletionPolicy::Delete;
    } else {
      return absl::InvalidArgumentError(
          cat("--deletion-policy must be Keep, Mark or Delete, got `", *policy, "`"));
    }
  }
  return plan;
}

}  // namespace

int runCommand(const std::vector<std::string>& argv) {
  if (!argv.empty() && (argv[0] == "-h" || argv[0] == "--help")) {
    std::cout << kUsage;
    return kExitOk;
  }
  FlagSpec spec;
  spec.with_value = {"-f",
                     "--filename",
                     "--syncjob",
                     "--namespace",
                     "--connector",
                     "--options",
                     "--options-file",
                     "--name",
                     "--deletion-policy",
                     "--max-delete-percent",
                     "--database-url",
                     "--database-timeout",
                     "--timeout",
                     "--start-timeout",
                     "--secret-dir",
                     "--cache-dir",
                     "--env",
                     "--env-file",
                     "--sandbox",
                     "--connector-user",
                     "--sandbox-read-only"};
  spec.repeatable = {"-f", "--filename", "--env", "--env-file", "--sandbox-read-only"};
  spec.boolean = {"--json", "--update", "--confirm-deletion"};
  auto parsed = parseArgs(argv, spec);
  if (!parsed.ok()) {
    return usage(std::string(parsed.status().message()));
  }
  ParsedArgs& args = *parsed;
  for (const std::string& f : args.all("--filename")) {
    args.values["-f"].push_back(f);
  }
  if (!args.positionals.empty()) {
    return usage(cat("unexpected argument `", args.positionals.front(), "`"));
  }
  const bool manifests = args.has("-f");
  const bool connector = args.has("--connector");
  if (manifests == connector) {
    return usage("give manifests with -f, or a c1 connector JSON with --connector");
  }
  if (manifests) {
    for (const char* only : {"--options", "--options-file", "--name", "--deletion-policy"}) {
      if (args.has(only)) {
        return usage(cat(only, " goes with --connector; with manifests the SyncJob says it"));
      }
    }
  } else if (args.has("--syncjob")) {
    return usage("--syncjob goes with -f manifests");
  }
  RunFlags flags;
  flags.json = args.has("--json");
  flags.update = args.has("--update");
  flags.database_url = args.get("--database-url");
  flags.cache_dir = args.has("--cache-dir") ? std::filesystem::path(*args.get("--cache-dir"))
                                            : cacheDir() / "connectors";
  flags.secret_dir = secretDir(args);
  auto sandbox = sync::SandboxSettings::fromEnvironment();
  if (!sandbox.ok()) {
    return usage(std::string(sandbox.status().message()));
  }
  flags.sandbox = *std::move(sandbox);
  for (const char* flag : {"--sandbox", "--connector-user", "--sandbox-read-only"}) {
    for (const std::string& value : args.all(flag)) {
      if (absl::Status s = flags.sandbox.set(flag, value); !s.ok()) {
        return usage(std::string(s.message()));
      }
    }
  }
  // What a connector of another user leaves outside its process group becomes ours to kill.
  if (flags.sandbox.connectorUser()) {
    sandbox::adoptOrphans();
  }
  for (const auto& [flag, target] : {std::pair<const char*, std::optional<double>*>{
                                         "--database-timeout", &flags.database_timeout_s},
                                     {"--timeout", &flags.timeout_s},
                                     {"--start-timeout", &flags.start_timeout_s}}) {
    if (auto text = args.get(flag)) {
      auto seconds = parseSeconds(flag, *text);
      if (!seconds.ok()) {
        return usage(std::string(seconds.status().message()));
      }
      *target = *seconds;
    }
  }
  const std::string ns = args.get("--namespace").value_or("default");
  std::map<std::string, std::string> env_overrides;
  for (const std::string& file : args.all("--env-file")) {
    auto text = readFile(file);
    if (!text.ok()) {
      return report({kExitInvalid, cat("--env-file: ", text.status().message())});
    }
    auto lines = parseEnvFile(*text, file);
    if (!lines.ok()) {
      return report({kExitInvalid, std::string(lines.status().message())});
    }
    for (auto& [name, value] : *lines) {
      env_overrides[name] = std::move(value);
    }
  }
  for (const std::string& assignment : args.all("--env")) {
    auto parsed_env = parseEnvFlag(assignment);
    if (!parsed_env.ok()) {
      return usage(std::string(parsed_env.status().message()));
    }
    env_overrides[parsed_env->first] = std::move(parsed_env->second);
  }
  auto plan = manifests ? planFromManifests(args, ns) : planFromConnectorJson(args, ns);
  if (!plan.ok()) {
    return report({kExitInvalid, std::string(plan.status().message())});
  }
  plan->env_overrides = std::move(env_overrides);
  if (auto text = args.get("--max-delete-percent")) {
    int percent = -1;
    if (!absl::SimpleAtoi(*text, &percent) || percent < 0 || percent > 100) {
      return usage(
          cat("--max-delete-percent must be a whole number from 0 to 100, got `", *text, "`"));
    }
    plan->deletion_guard.max_delete_percent = percent;
  }
  plan->deletion_guard.confirmed = args.has("--confirm-deletion");
  return executeSync(*plan, flags);
}

}  // namespace tributary::cli
