// tributary-agent: see agent/README.md.

#include "tributary/agent/agent.h"
#include "tributary/common/log.h"
#include "tributary/common/strings.h"
#include "tributary/installer/installer.h"
#include "tributary/installer/secrets.h"
#include "tributary/kube/config.h"
#include "tributary/kube/informer.h"
#include "tributary/kube/metrics.h"
#include "tributary/locks/lock.h"
#include "tributary/metrics/http_server.h"
#include "tributary/metrics/process.h"
#include "tributary/sandbox/sandbox.h"
#include "tributary/store/store.h"

#include "redis_tls_tunnel.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <signal.h>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace {

using namespace tributary;
using namespace std::chrono_literals;
using strings::cat;

constexpr const char* kUsage = R"(usage: tributary-agent [flags]

Every flag can also be set by the environment variable named in brackets.

  --name NAME                  agent name = its Lease's name [TRIBUTARY_AGENT_NAME, else NODE_NAME,
                               else the host name]
  --node-name NODE             Node whose cordon (spec.unschedulable) stops new runs [NODE_NAME]
  --lease-namespace NS         namespace of the agent Leases (default tributary-system)
                               [TRIBUTARY_LEASE_NAMESPACE]
  --namespace NS[,NS...]       run SyncRuns of these only (default: all) [TRIBUTARY_WATCH_NAMESPACE]
  --label KEY=VALUE            a label of the agent's Lease (agentSelector), repeatable
                               [TRIBUTARY_AGENT_LABELS, comma-separated]
  --capacity N                 runs at once (default 4) [TRIBUTARY_AGENT_CAPACITY]
  --database-url URL           PostgreSQL (libpq URI or key=value) [TRIBUTARY_DATABASE_URL]
  --database-password-file F   password for it, read from a file (a mounted Secret)
                               [TRIBUTARY_DATABASE_PASSWORD_FILE; or TRIBUTARY_DATABASE_PASSWORD]
  --database-ca-file F         verify the server's TLS certificate with this CA (sslmode
                               verify-full unless the URL says otherwise) [TRIBUTARY_DATABASE_CA_FILE]
  --redis-address HOST:PORT    Redis of the source locks (default 127.0.0.1:6379)
                               [TRIBUTARY_REDIS_ADDRESS]
  --redis-username USER        Redis 6 ACL user (default: the default user) [TRIBUTARY_REDIS_USERNAME]
  --redis-password-file F      [TRIBUTARY_REDIS_PASSWORD_FILE; or TRIBUTARY_REDIS_PASSWORD]
  --redis-tls on|off           TLS to Redis through a supervised stunnel (agent/README.md,
                               "Transport security"); on when any --redis-tls-* flag below is
                               set (default off) [TRIBUTARY_REDIS_TLS]
  --redis-tls-ca-file F        CA bundle that verifies Redis (default: the system's roots)
                               [TRIBUTARY_REDIS_TLS_CA_FILE]
  --redis-tls-server-name N    name the certificate must carry (default: the address's host)
                               [TRIBUTARY_REDIS_TLS_SERVER_NAME]
  --redis-tls-cert-file F      client certificate and key, for a Redis that asks for one
  --redis-tls-key-file F       [TRIBUTARY_REDIS_TLS_CERT_FILE, TRIBUTARY_REDIS_TLS_KEY_FILE]
  --cache-dir DIR              connector cache (default /var/cache/tributary) [TRIBUTARY_CACHE_DIR]
  --local-root DIR             allowed root of Local connector sources, repeatable (default: any)
                               [TRIBUTARY_LOCAL_ROOTS, colon-separated]
  --secret-dir DIR             credentials of VCS/HTTP sources (spec.secretRef): <DIR>/<name>/
                               [TRIBUTARY_SECRET_DIR]
  --metrics-bind-address ADDR  /metrics (default :9090; 0 disables)
  --health-probe-bind-address ADDR  /healthz and /readyz (default :9091; 0 disables)
  --drain-timeout D            on SIGTERM, how long running syncs may finish (default 60s)
  --lease-duration D           agent Lease duration (default 15s)
  --progress-interval D        least time between progress writes of a run (default 5s)
  --lock-ttl D                 source lock TTL (default 30s); --lock-wait D (default 45s)
  --start-timeout D            connector handshake timeout (default: the host's)
  --sandbox on|off             confine connectors (agent/README.md, "Connector sandbox"; default on)
                               [TRIBUTARY_SANDBOX]
  --connector-user UID[:GID]   run connectors as this user (needs root; default when root:
                               65534; `root` keeps them root, warned) [TRIBUTARY_CONNECTOR_USER]
  --sandbox-read-only PATH     also readable by connectors, repeatable (e.g. an interpreter
                               outside /usr) [TRIBUTARY_SANDBOX_READ_ONLY, colon-separated]
  --kubeconfig PATH            (default: $KUBECONFIG, in-cluster, ~/.kube/config)
  --log-level LEVEL            debug|info|warn|error (default info) [TRIBUTARY_LOG_LEVEL]
)";

std::string env(const char* name, std::string fallback = {}) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : std::move(fallback);
}

std::optional<std::chrono::milliseconds> parseDuration(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || v < 0) {
    return std::nullopt;
  }
  const std::string unit(end);
  double ms = 0;
  if (unit == "ms") {
    ms = v;
  } else if (unit == "s" || unit.empty()) {
    ms = v * 1000;
  } else if (unit == "m") {
    ms = v * 60000;
  } else if (unit == "h") {
    ms = v * 3600000;
  } else {
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
}

// A secret from a file (trailing newline dropped) or a variable; "" when neither.
absl::StatusOr<std::string> secretValue(const std::string& file, const char* variable) {
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) {
      return absl::NotFoundError(cat("cannot read ", file));
    }
    std::stringstream text;
    text << in.rdbuf();
    std::string value = text.str();
    while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) {
      value.pop_back();
    }
    return value;
  }
  return env(variable);
}

std::string hostName() {
  char buf[256] = {};
  return ::gethostname(buf, sizeof(buf) - 1) == 0 ? std::string(buf) : std::string("agent");
}

}  // namespace

int main(int argc, char** argv) {
  // First thing: connectors run with our uid, and this process holds the store's and the
  // locks' credentials (a same-uid process must not read our memory or environment).
  const bool protected_process = sandbox::protectThisProcess();
  agent::AgentOptions options;
  options.name = env("TRIBUTARY_AGENT_NAME", env("NODE_NAME"));
  options.node_name = env("NODE_NAME");
  options.lease_namespace = env("TRIBUTARY_LEASE_NAMESPACE", "tributary-system");
  std::string watch_namespaces = env("TRIBUTARY_WATCH_NAMESPACE");
  options.capacity = std::atoi(env("TRIBUTARY_AGENT_CAPACITY", "4").c_str());
  std::string database_url = env("TRIBUTARY_DATABASE_URL");
  std::string database_password_file = env("TRIBUTARY_DATABASE_PASSWORD_FILE");
  std::string database_ca_file = env("TRIBUTARY_DATABASE_CA_FILE");
  std::string redis_username = env("TRIBUTARY_REDIS_USERNAME");
  std::string redis_address = env("TRIBUTARY_REDIS_ADDRESS", "127.0.0.1:6379");
  std::string redis_password_file = env("TRIBUTARY_REDIS_PASSWORD_FILE");
  std::string redis_tls = env("TRIBUTARY_REDIS_TLS");
  agent::RedisTlsOptions redis_tls_options;
  redis_tls_options.ca_file = env("TRIBUTARY_REDIS_TLS_CA_FILE");
  redis_tls_options.server_name = env("TRIBUTARY_REDIS_TLS_SERVER_NAME");
  redis_tls_options.cert_file = env("TRIBUTARY_REDIS_TLS_CERT_FILE");
  redis_tls_options.key_file = env("TRIBUTARY_REDIS_TLS_KEY_FILE");
  std::string cache_dir = env("TRIBUTARY_CACHE_DIR", "/var/cache/tributary");
  std::string secret_dir = env("TRIBUTARY_SECRET_DIR");
  std::vector<std::filesystem::path> local_roots;
  for (const std::string_view root : strings::split(env("TRIBUTARY_LOCAL_ROOTS"), ':')) {
    if (!root.empty()) {
      local_roots.emplace_back(root);
    }
  }
  for (const std::string_view label : strings::split(env("TRIBUTARY_AGENT_LABELS"), ',')) {
    if (const auto eq = label.find('='); eq != std::string_view::npos) {
      options.labels[std::string(label.substr(0, eq))] = std::string(label.substr(eq + 1));
    }
  }
  if (auto sandbox = sync::SandboxSettings::fromEnvironment(); sandbox.ok()) {
    options.sandbox = *std::move(sandbox);
  } else {
    std::cerr << "tributary-agent: " << sandbox.status().message() << "\n";
    return 2;
  }
  std::string metrics_addr = ":9090";
  std::string probe_addr = ":9091";
  std::string level = env("TRIBUTARY_LOG_LEVEL", "info");
  std::string kubeconfig;
  std::chrono::milliseconds drain_timeout = 60s;

  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    const bool has_eq = arg.starts_with("--") && arg.find('=') != std::string::npos;
    if (has_eq) {
      value = arg.substr(arg.find('=') + 1);
      arg.resize(arg.find('='));
    }
    auto next = [&]() -> std::string {
      if (has_eq) {
        return value;
      }
      if (i + 1 >= argc) {
        std::cerr << "tributary-agent: missing value for " << arg << "\n" << kUsage;
        std::exit(2);
      }
      return argv[++i];
    };
    auto duration = [&]() {
      const std::string text = next();
      auto d = parseDuration(text);
      if (!d) {
        std::cerr << "tributary-agent: " << arg << ": `" << text
                  << "` is not a duration (e.g. 500ms, 30s, 5m)\n";
        std::exit(2);
      }
      return *d;
    };
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (arg == "--name") {
      options.name = next();
    } else if (arg == "--node-name") {
      options.node_name = next();
    } else if (arg == "--lease-namespace") {
      options.lease_namespace = next();
    } else if (arg == "--namespace") {
      watch_namespaces = next();
    } else if (arg == "--label") {
      const std::string label = next();
      const auto eq = label.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::cerr << "tributary-agent: --label " << label << ": expected KEY=VALUE\n";
        return 2;
      }
      options.labels[label.substr(0, eq)] = label.substr(eq + 1);
    } else if (arg == "--capacity") {
      options.capacity = std::atoi(next().c_str());
    } else if (arg == "--database-url") {
      database_url = next();
    } else if (arg == "--database-password-file") {
      database_password_file = next();
    } else if (arg == "--database-ca-file") {
      database_ca_file = next();
    } else if (arg == "--redis-username") {
      redis_username = next();
    } else if (arg == "--redis-address") {
      redis_address = next();
    } else if (arg == "--redis-password-file") {
      redis_password_file = next();
    } else if (arg == "--redis-tls") {
      redis_tls = next();
    } else if (arg == "--redis-tls-ca-file") {
      redis_tls_options.ca_file = next();
    } else if (arg == "--redis-tls-server-name") {
      redis_tls_options.server_name = next();
    } else if (arg == "--redis-tls-cert-file") {
      redis_tls_options.cert_file = next();
    } else if (arg == "--redis-tls-key-file") {
      redis_tls_options.key_file = next();
    } else if (arg == "--cache-dir") {
      cache_dir = next();
    } else if (arg == "--local-root") {
      local_roots.emplace_back(next());
    } else if (arg == "--secret-dir") {
      secret_dir = next();
    } else if (arg == "--metrics-bind-address") {
      metrics_addr = next();
    } else if (arg == "--health-probe-bind-address") {
      probe_addr = next();
    } else if (arg == "--drain-timeout") {
      drain_timeout = duration();
    } else if (arg == "--lease-duration") {
      options.lease_duration = duration();
    } else if (arg == "--progress-interval") {
      options.progress_interval = duration();
    } else if (arg == "--lock-ttl") {
      options.lock_options.ttl = duration();
    } else if (arg == "--lock-wait") {
      options.lock_options.wait = duration();
    } else if (arg == "--start-timeout") {
      options.start_timeout = duration();
    } else if (arg == "--sandbox" || arg == "--connector-user" || arg == "--sandbox-read-only") {
      if (absl::Status s = options.sandbox.set(arg, next()); !s.ok()) {
        std::cerr << "tributary-agent: " << s.message() << "\n";
        return 2;
      }
    } else if (arg == "--kubeconfig") {
      kubeconfig = next();
    } else if (arg == "--log-level") {
      level = next();
    } else {
      std::cerr << "tributary-agent: unknown flag " << arg << "\n" << kUsage;
      return 2;
    }
  }
  if (redis_tls != "" && redis_tls != "on" && redis_tls != "off" && redis_tls != "true" &&
      redis_tls != "false") {
    std::cerr << "tributary-agent: --redis-tls " << redis_tls << ": expected on or off\n";
    return 2;
  }
  const bool redis_tls_implied =
      !redis_tls_options.ca_file.empty() || !redis_tls_options.server_name.empty() ||
      !redis_tls_options.cert_file.empty() || !redis_tls_options.key_file.empty();
  const bool use_redis_tls =
      redis_tls == "on" || redis_tls == "true" || (redis_tls.empty() && redis_tls_implied);
  const auto parsed_level = log::parseLevel(level);
  if (!parsed_level) {
    std::cerr << "tributary-agent: bad --log-level " << level << "\n";
    return 2;
  }
  if (options.name.empty()) {
    options.name = hostName();
  }
  log::Logger log("tributary-agent", log::makeJsonLineSink(2, *parsed_level));
  options.logger = log;
  auto fatal = [&](std::string_view what, const absl::Status& status) {
    log.error(what, {{"error", status.message()}});
    return 1;
  };
  if (!protected_process) {
    log.warn(
        "cannot make the agent non-dumpable (PR_SET_DUMPABLE): a connector of the same uid "
        "could read its memory and environment");
  }
  for (const std::string& warning : options.sandbox.warnings()) {
    log.warn(warning);
  }
  // What connectors of another user leave outside their process group becomes ours to kill.
  if (options.sandbox.connectorUser() && !sandbox::adoptOrphans()) {
    log.warn(
        "cannot become a child subreaper: processes a connector leaves outside its process "
        "group outlive its run");
  }
  auto parsed_namespaces = kube::parseNamespaceList(watch_namespaces);
  if (!parsed_namespaces.ok()) {
    return fatal("bad --namespace", parsed_namespaces.status());
  }
  options.watch_namespaces = std::move(*parsed_namespaces);
  if (database_url.empty()) {
    return fatal("no database",
                 absl::InvalidArgumentError("set --database-url or TRIBUTARY_DATABASE_URL"));
  }

  // Signals go to a dedicated thread (blocked everywhere else: set before any thread starts).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A connector that dies mid-write must not kill the agent.
  signal(SIGPIPE, SIG_IGN);

  // The private directories of connector hosts and runs (sockets, credential files) live in
  // one directory of this agent, emptied at start: a previous process killed mid-run leaves
  // nothing behind for long.
  const std::filesystem::path temp = std::filesystem::path(cache_dir) / "tmp";
  std::error_code ec;
  std::filesystem::remove_all(temp, ec);
  std::filesystem::create_directories(temp, ec);
  if (ec) {
    return fatal(cat("cannot create ", temp.string()), absl::InternalError(ec.message()));
  }
  // Connectors running as --connector-user reach their own directories in it, but cannot list it.
  std::filesystem::permissions(temp,
                               options.sandbox.connectorUser()
                                   ? std::filesystem::perms::owner_all |
                                         std::filesystem::perms::group_exec |
                                         std::filesystem::perms::others_exec
                                   : std::filesystem::perms::owner_all,
                               ec);
  ::setenv("TMPDIR", temp.c_str(), 1);
  ::unsetenv("XDG_RUNTIME_DIR");

  // Passwords: libpq reads PGPASSWORD itself, so the password never enters a DSN we could log.
  auto db_password = secretValue(database_password_file, "TRIBUTARY_DATABASE_PASSWORD");
  if (!db_password.ok()) {
    return fatal("cannot read the database password", db_password.status());
  }
  if (!db_password->empty()) {
    ::setenv("PGPASSWORD", db_password->c_str(), 1);
  }
  ::unsetenv("TRIBUTARY_DATABASE_PASSWORD");
  // libpq's own variables: the URL's sslmode/sslrootcert still win.
  if (!database_ca_file.empty()) {
    if (::access(database_ca_file.c_str(), R_OK) != 0) {
      return fatal("cannot read --database-ca-file",
                   absl::NotFoundError(cat(database_ca_file, ": ", std::strerror(errno))));
    }
    ::setenv("PGSSLROOTCERT", database_ca_file.c_str(), 1);
    ::setenv("PGSSLMODE", "verify-full", 0);
  }
  auto redis_password = secretValue(redis_password_file, "TRIBUTARY_REDIS_PASSWORD");
  if (!redis_password.ok()) {
    return fatal("cannot read the Redis password", redis_password.status());
  }
  ::unsetenv("TRIBUTARY_REDIS_PASSWORD");

  kube::LoadOptions load;
  load.kubeconfig = kubeconfig;
  auto config = kube::loadConfig(load);
  if (!config.ok()) {
    return fatal("cannot load the Kubernetes config", config.status());
  }
  auto registry = std::make_shared<metrics::Registry>();
  metrics::addProcessMetrics(*registry);
  kube::ClientOptions client_options;
  client_options.on_request = kube::restClientMetrics(*registry, config->server);
  auto client = kube::Client::create(*config, client_options);
  if (!client.ok()) {
    return fatal("cannot create the Kubernetes client", client.status());
  }
  options.client = *client;
  options.registry = registry;

  store::StoreOptions store_options;
  store_options.dsn = database_url;
  store_options.logger = log.named("store");
  auto store = store::Store::open(store_options);
  if (!store.ok()) {
    return fatal("cannot use the database (see --database-url)", store.status());
  }
  options.store = std::shared_ptr<store::Store>(std::move(*store));

  installer::Options install_options;
  install_options.cache_dir = cache_dir;
  install_options.local_roots = local_roots;
  install_options.logger = log.named("installer");
  if (!secret_dir.empty()) {
    install_options.secrets = std::make_shared<installer::DirectorySecretResolver>(secret_dir);
  }
  auto installer = installer::Installer::create(install_options);
  if (!installer.ok()) {
    return fatal(cat("cannot use the connector cache ", cache_dir), installer.status());
  }
  options.installer = std::shared_ptr<installer::Installer>(std::move(*installer));

  locks::RedisLockOptions redis;
  const auto colon = redis_address.rfind(':');
  redis.host = colon == std::string::npos ? redis_address : redis_address.substr(0, colon);
  redis.port = colon == std::string::npos ? 6379 : std::atoi(redis_address.c_str() + colon + 1);
  redis.password = *redis_password;
  redis.username = redis_username;
  std::shared_ptr<agent::RedisTlsTunnel> tunnel;
  if (use_redis_tls) {
    redis_tls_options.host = redis.host;
    redis_tls_options.port = redis.port;
    redis_tls_options.dir = temp / "redis-tls";
    redis_tls_options.logger = log.named("redis-tls");
    auto started = agent::RedisTlsTunnel::start(redis_tls_options);
    if (!started.ok()) {
      return fatal("cannot start the Redis TLS tunnel (see --redis-tls-*)", started.status());
    }
    tunnel = *std::move(started);
    redis.unix_socket = tunnel->socketPath();
    redis.describe_transport = [tunnel] { return tunnel->lastFailure(); };
  }
  options.lock = std::shared_ptr<locks::SourceLock>(locks::makeRedisLock(redis));
  // A wrong password or certificate stops the agent now, as the database's do; an outage only
  // delays runs (each waits for the lock). What looks like a TLS setting is tried twice more:
  // a Redis restarting can close a connection the same way.
  absl::Status probed = options.lock->probe();
  for (int attempt = 1;
       !probed.ok() && tunnel && tunnel->lastFailureIsConfiguration() && attempt < 3; ++attempt) {
    std::this_thread::sleep_for(1s);
    probed = options.lock->probe();
  }
  if (!probed.ok()) {
    if (absl::IsUnauthenticated(probed) || (tunnel && tunnel->lastFailureIsConfiguration())) {
      return fatal("cannot use Redis (see --redis-*)", probed);
    }
    log.warn("Redis is not reachable yet: runs wait for it", {{"error", probed.message()}});
  }

  auto created = agent::Agent::create(options);
  if (!created.ok()) {
    return fatal("bad agent settings", created.status());
  }
  agent::Agent& agent = **created;

  auto servers = metrics::serveAll(
      {metrics_addr, probe_addr},
      metrics::operationsHandler(
          registry, [&] { return agent.ready(); }, "lease not held or runs not synced"));
  if (!servers.ok()) {
    log.error("cannot serve", {{"error", servers.status().message()}});
    return 1;
  }
  for (const auto& server : *servers) {
    log.info("serving", {{"port", server->port()}});
  }
  if (absl::Status st = agent.start(); !st.ok()) {
    return fatal("cannot start", st);
  }

  int sig = 0;
  sigwait(&set, &sig);
  log.info("signal received: draining",
           {{"signal", sig},
            {"drain_timeout_seconds", static_cast<double>(drain_timeout.count()) / 1000.0}});
  agent.drain();
  if (!agent.waitIdle(drain_timeout)) {
    log.warn("drain timeout passed: cancelling the remaining runs",
             {{"active", agent.activeRuns()}});
  }
  agent.stop();
  for (auto& s : *servers) {
    s->stop();
  }
  log.info("stopped");
  return 0;
}
