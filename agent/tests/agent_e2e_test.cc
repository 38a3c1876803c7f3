// The operator end to end on real parts: kube-apiserver v1.34 + etcd (the harness), the
// tributary-controller binary, tributary-agent binaries, PostgreSQL and Redis (the harness),
// real connectors (filesystem, Go go-plugin v1.6.3, Python SDK), and kubectl for what a user does.

#include "e2e_fixture.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>

namespace tributary::e2e {
namespace {

// 1. kubectl apply of a Connector and a run-once SyncJob: the run succeeds, PostgreSQL holds
// exactly the tree, kubectl shows the result, /metrics passes promtool.
TEST_F(AgentE2E, RunOnceSyncJobLandsTheExactTreeInPostgres) {
  const fs::path data = dir_ / "data";
  for (int d = 0; d < 3; ++d) {
    fs::create_directories(data / ("dir" + std::to_string(d)));
    for (int f = 0; f < 5; ++f) {
      std::ofstream(data / ("dir" + std::to_string(d)) / ("file" + std::to_string(f))) << d << f;
    }
  }
  startController();
  Process& agent = startAgent("node-a");
  apply(
      "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: files\nspec:\n"
      "  source: Local\n  uri: " +
      (dir_ / "fs").string() + "\n  command: ./connector\n---\n" +
      syncJob("tree", "files", "{\"root\": \"" + data.string() + "\"}"));
  const Json run = waitForRun("tree", "Succeeded");
  ASSERT_FALSE(run.is_null()) << kubectl({"get", "sr", "-o", "yaml"}).output;
  EXPECT_EQ(run["status"]["agent"], "node-a");
  EXPECT_EQ(run["status"]["objects"]["upserted"], 18);  // 3 directories + 15 files
  EXPECT_EQ(run["status"]["objects"]["deleted"], 0);
  EXPECT_GT(run["status"].value("fencingToken", 0), 0);
  EXPECT_FALSE(run["status"].value("connectorMetadata", "").empty());
  EXPECT_EQ(liveCount("tree"), "18");
  EXPECT_EQ(scalar("SELECT string_agg(remote_id, ',' ORDER BY remote_id) FROM "
                   "tributary.live_objects WHERE namespace = '" +
                   ns_ + "' AND sync_job = 'tree' AND remote_id LIKE 'dir1/%'"),
            "dir1/file0,dir1/file1,dir1/file2,dir1/file3,dir1/file4");
  const auto shown = kubectl({"get", "sj,sr"});
  EXPECT_EQ(shown.exit_code, 0) << shown.output;
  EXPECT_NE(shown.output.find("Succeeded"), std::string::npos) << shown.output;
  EXPECT_NE(shown.output.find("node-a"), std::string::npos) << shown.output;

  const std::string metrics = harness::httpGetLoopback(agent.metrics_port, "/metrics");
  EXPECT_TRUE(harness::promtoolCheckMetrics(metrics).ok()) << metrics;
  for (const char* name :
       {"tributary_sync_runs_total{result=\"succeeded\"} 1", "tributary_sync_pages_total ",
        "tributary_sync_objects_total{outcome=\"inserted\"} 18",
        "tributary_connector_install_duration_seconds_count 1",
        "tributary_lock_wait_seconds_count 1", "tributary_db_write_duration_seconds_count",
        "tributary_sync_run_duration_seconds_count{result=\"succeeded\"} 1", "process_open_fds "}) {
    EXPECT_NE(metrics.find(name), std::string::npos) << name << "\n" << metrics;
  }
}

// 2. A second run of the same job (Python SDK connector) finds every object unchanged and
// rewrites nothing.
TEST_F(AgentE2E, SecondRunReportsEveryObjectUnchanged) {
  startController();
  startAgent("node-a");
  apply(
      "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: py\nspec:\n"
      "  source: Local\n  uri: " +
      (dir_ / "py").string() + "\n  command: ./run\n---\n" +
      syncJob("hourly", "py", "{\"pages\": 4, \"page_size\": 25}",
              "  schedule: \"0 0 1 1 *\"\n  successfulRunsHistoryLimit: 5\n"));
  auto runNow = [&](const std::string& value) {
    const auto r =
        kubectl({"annotate", "--overwrite", "syncjob/hourly", "tributary.dev/run-now=" + value});
    ASSERT_EQ(r.exit_code, 0) << r.output;
  };
  runNow("first");
  ASSERT_FALSE(waitForRun("hourly", "Succeeded").is_null());
  const std::string changed_before = scalar("SELECT max(last_changed) FROM tributary.objects");
  runNow("second");
  ASSERT_TRUE(waitFor(
      [&] {
        int succeeded = 0;
        for (const Json& r : runsOf("hourly")) {
          succeeded += phase(r) == "Succeeded" ? 1 : 0;
        }
        return succeeded == 2;
      },
      90s));
  Json second;
  for (const Json& r : runsOf("hourly")) {
    if (r["spec"]["trigger"] == "Manual" &&
        r["metadata"]["creationTimestamp"] >=
            (second.is_null() ? Json("") : second["metadata"]["creationTimestamp"])) {
      second = r;
    }
  }
  ASSERT_FALSE(second.is_null());
  EXPECT_EQ(second["status"]["objects"]["unchanged"], 100) << second.dump(2);
  EXPECT_EQ(second["status"]["objects"]["upserted"], 0) << second.dump(2);
  EXPECT_EQ(liveCount("hourly"), "100");
  EXPECT_EQ(scalar("SELECT max(last_changed) FROM tributary.objects"), changed_before);
  EXPECT_EQ(scalar("SELECT objects_unchanged FROM tributary.sync_runs WHERE namespace = '" + ns_ +
                   "' ORDER BY run_id DESC LIMIT 1"),
            "100");
}

// 3. Options from a Secret: the value reaches the connector and appears in no log, status or
// event.
TEST_F(AgentE2E, OptionsFromASecretNeverShowUp) {
  const std::string marker = "hunter2-" + std::to_string(::getpid()) + "-tok";
  startController();
  Process& agent = startAgent("node-a");
  apply(
      "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sync-options\nstringData:\n"
      "  options.json: '{\"pages\": 2, \"page_size\": 10, \"token\": \"" +
      marker + "\"}'\n---\n" + goConnector("go") +
      "---\napiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: secret-job\n"
      "spec:\n  connectorRef:\n    name: go\n  optionsFrom:\n    secretKeyRef:\n"
      "      name: sync-options\n      key: options.json\n");
  const Json run = waitForRun("secret-job", "Succeeded");
  ASSERT_FALSE(run.is_null()) << kubectl({"get", "sr", "-o", "yaml"}).output;
  EXPECT_EQ(liveCount("secret-job"), "20");
  const std::string everything = readFile(agent.log) + readFile(controller_.log) +
                                 kubectl({"get", "sr,sj,connectors", "-o", "yaml"}).output +
                                 kubectl({"get", "events", "-o", "yaml"}).output +
                                 kubectl({"describe", "sr"}).output;
  EXPECT_EQ(everything.find(marker), std::string::npos);
  EXPECT_NE(readFile(agent.log).find("run ended"), std::string::npos);  // the log is there
}

// 3b. A connector that prints what it was handed from Secrets (options, an env value) in a log
// line and in its panic: every copy is redacted from the agent's log, the
// SyncRun, its Events, /metrics and the store's run record, and the crash still reads as one.
TEST_F(AgentE2E, SecretsAConnectorPrintsAreRedactedEverywhere) {
  const std::string token = "tok-" + std::to_string(::getpid()) + "-opt";
  const std::string password = "pw-" + std::to_string(::getpid()) + "-env";
  startController();
  Process& agent = startAgent("node-a");
  apply(
      "apiVersion: v1\nkind: Secret\nmetadata:\n  name: leak\nstringData:\n"
      "  options.json: '{\"pages\": 2, \"page_size\": 10, \"token\": \"" +
      token + "\"}'\n  password: " + password + "\n---\n" + goConnector("leaky", "leak_secrets") +
      "    - name: LEAK_VALUE\n      valueFrom:\n        secretKeyRef:\n          name: leak\n"
      "          key: password\n"
      "---\napiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: leak-job\n"
      "spec:\n  connectorRef:\n    name: leaky\n  optionsFrom:\n    secretKeyRef:\n"
      "      name: leak\n      key: options.json\n  backoffLimit: 0\n");
  const Json run = waitForRun("leak-job", "Failed");
  ASSERT_FALSE(run.is_null()) << kubectl({"get", "sr", "-o", "yaml"}).output;
  const std::string message = run.value("/status/message"_json_pointer, std::string());
  EXPECT_NE(message.find("cannot authenticate with token [redacted]"), std::string::npos)
      << message;
  const std::string log = readFile(agent.log);
  EXPECT_NE(log.find("connecting with token [redacted]"), std::string::npos) << tail(agent.log);
  const std::string everything =
      log + readFile(controller_.log) + kubectl({"get", "sr,sj,connectors", "-o", "yaml"}).output +
      kubectl({"get", "events", "-o", "yaml"}).output + kubectl({"describe", "sr"}).output +
      harness::httpGetLoopback(agent.metrics_port, "/metrics") +
      scalar("SELECT string_agg(coalesce(error, ''), ' | ') FROM tributary.sync_runs");
  for (const std::string& secret : {token, password}) {
    EXPECT_EQ(everything.find(secret), std::string::npos) << secret;
  }
}

// 3c. Transport security: PostgreSQL only over TLS with a password (sslmode=verify-full against
// a generated CA), Redis only over TLS with a client certificate (the agent's stunnel) and an ACL
// user (the default user off). A wrong CA, a name the certificate does not carry, a missing client
// certificate and a wrong password, for either server, and a CA file stunnel cannot use, each
// stop the agent with a message that says what to fix; the right ones sync, also after the
// tunnel is killed, and neither password shows up anywhere.
TEST_F(AgentE2E, VerifiedTlsAndPasswordsToPostgresAndRedis) {
  const std::string db_password = "pg-" + std::to_string(::getpid()) + "-secret";
  const std::string redis_password = "redis-" + std::to_string(::getpid()) + "-secret";
  harness::PostgresOptions pg_options;
  pg_options.tls = true;
  pg_options.password = db_password;
  harness::PostgresServer pg(pg_options);
  ASSERT_TRUE(pg.start().ok());
  ASSERT_TRUE(pg.createDatabase("agent_tls").ok());
  dsn_ = pg.socketDsn("agent_tls");  // the test's own queries
  harness::RedisOptions redis_options;
  redis_options.tls = true;
  redis_options.args = {
      "--user", "default", "off",  "--user", "tributary", "on", ">" + redis_password,
      "~*",     "&*",      "+@all"};
  harness::RedisServer redis(redis_options);
  ASSERT_TRUE(redis.start().ok()) << redis.logTail();
  std::ofstream(dir_ / "db-password") << db_password << "\n";
  std::ofstream(dir_ / "redis-password") << redis_password;
  std::ofstream(dir_ / "wrong-password") << "not-the-password";
  std::ofstream(dir_ / "not-a-ca.pem") << "not a certificate\n";
  const harness::TlsFiles tls = pg.tlsFiles();
  const harness::TlsFiles redis_tls = redis.tlsFiles();
  const std::string port = std::to_string(pg.port());
  const std::string url = "postgresql://postgres@127.0.0.1:" + port + "/agent_tls";
  const std::vector<std::string> client_cert = {"--redis-tls-cert-file=" + redis_tls.client_cert,
                                                "--redis-tls-key-file=" + redis_tls.client_key};
  // The right settings, then each refusal changes one thing.
  struct Settings {
    std::string database_url;
    std::string database_ca;
    std::string database_password_file;
    std::string redis_ca;
    std::string redis_password_file;
    std::vector<std::string> redis_tls;  // --redis-tls-* beyond the CA
  };
  const Settings right{url, tls.ca, "db-password", redis_tls.ca, "redis-password", client_cert};
  auto secure = [&](const Settings& settings) {
    AgentFlags flags;
    flags.database_url = settings.database_url;
    flags.redis_address = "127.0.0.1:" + std::to_string(redis.port());
    flags.extra = {"--database-ca-file=" + settings.database_ca,
                   "--database-password-file=" + (dir_ / settings.database_password_file).string(),
                   "--redis-username=tributary",
                   "--redis-password-file=" + (dir_ / settings.redis_password_file).string(),
                   "--redis-tls-ca-file=" + settings.redis_ca};
    flags.extra.insert(flags.extra.end(), settings.redis_tls.begin(), settings.redis_tls.end());
    return flags;
  };
  auto changed = [&](const std::function<void(Settings&)>& change) {
    Settings settings = right;
    change(settings);
    return secure(settings);
  };
  struct Refusal {
    AgentFlags flags;
    std::string expected;
  };
  const std::vector<Refusal> refusals = {
      {changed([&](Settings& s) { s.database_ca = tls.other_ca; }), "give the CA that signed it"},
      {changed([&](Settings& s) {
         s.database_url =
             "postgresql://postgres@db.invalid:" + port + "/agent_tls?hostaddr=127.0.0.1";
       }),
       "does not match host name"},
      {changed([&](Settings& s) { s.database_password_file = "wrong-password"; }),
       "check the user and the password"},
      {changed([&](Settings& s) { s.redis_ca = redis_tls.other_ca; }),
       "does not verify: check --redis-tls-ca-file"},
      {changed(
           [&](Settings& s) { s.redis_tls.push_back("--redis-tls-server-name=redis.invalid"); }),
       "set --redis-tls-server-name"},
      {changed([&](Settings& s) { s.redis_ca = (dir_ / "not-a-ca.pem").string(); }),
       "stunnel did not come up (exited with status 1): No trusted certificates found"},
      {changed([&](Settings& s) { s.redis_tls.clear(); }),
       "set --redis-tls-cert-file and --redis-tls-key-file"},
      {changed([&](Settings& s) { s.redis_password_file = "wrong-password"; }),
       "check the Redis user and password"}};
  std::string outputs;
  for (const Refusal& refusal : refusals) {
    const std::vector<std::string> args = agentArgs("refused", refusal.flags, 0);
    const auto started = std::chrono::steady_clock::now();
    const harness::CommandResult r = harness::runCommand(
        args, {"PATH=/usr/bin:/bin"}, dir_.string(), (dir_ / "refused").string(), "", 60s);
    EXPECT_EQ(r.exit_code, 1) << r.output << r.error;
    EXPECT_NE(r.output.find(refusal.expected), std::string::npos) << r.output;
    // Not retried for a minute: waiting does not fix a certificate or a password.
    EXPECT_LT(std::chrono::steady_clock::now() - started, 20s) << r.output;
    outputs += r.output;
  }

  startController();
  Process& agent = startAgent("node-a", secure(right));
  apply(goConnector("go") + "---\n" +
        syncJob("tls-job", "go", "{\"pages\": 3, \"page_size\": 10}"));
  const Json run = waitForRun("tls-job", "Succeeded");
  ASSERT_FALSE(run.is_null()) << kubectl({"get", "sr", "-o", "yaml"}).output << tail(agent.log);
  EXPECT_EQ(liveCount("tls-job"), "30");
  // pg_hba rejects every TCP session without TLS, and Redis has no plain port: these rows came
  // over verified TLS, under a lock taken over TLS.
  EXPECT_EQ(scalar("SELECT count(*) > 0 FROM tributary.sync_runs WHERE outcome = 'succeeded'"),
            "t");
  EXPECT_GE(std::stoi(scalar("SELECT max(fence_token) FROM tributary.sync_runs")), 1);

  // The tunnel dies: the agent starts it again and the next run takes its lock through it.
  const std::string tunnel_pid =
      harness::runCommand({"/usr/bin/pgrep", "-P", std::to_string(agent.pid), "stunnel"},
                          {"PATH=/usr/bin:/bin"}, dir_.string(), (dir_ / "pgrep").string(), "", 10s)
          .output;
  ASSERT_FALSE(tunnel_pid.empty()) << "no stunnel child of the agent";
  ASSERT_EQ(::kill(std::stoi(tunnel_pid), SIGKILL), 0);
  EXPECT_TRUE(
      waitFor([&] { return readFile(agent.log).find("restarting it") != std::string::npos; }, 10s))
      << tail(agent.log);
  apply(syncJob("tls-job-2", "go", "{\"pages\": 2, \"page_size\": 10}"));
  ASSERT_FALSE(waitForRun("tls-job-2", "Succeeded").is_null()) << tail(agent.log);
  EXPECT_EQ(liveCount("tls-job-2"), "20");

  const std::string everything = outputs + readFile(agent.log) + readFile(controller_.log) +
                                 kubectl({"get", "sr,sj,connectors", "-o", "yaml"}).output +
                                 kubectl({"get", "events", "-o", "yaml"}).output +
                                 harness::httpGetLoopback(agent.metrics_port, "/metrics");
  for (const std::string& secret : {db_password, redis_password}) {
    EXPECT_EQ(everything.find(secret), std::string::npos) << secret;
  }
  agent.stop(SIGTERM, 20s);  // before its servers go
}

// 4. agentSelector and capacity across two agents: runs of different sources in parallel, never
// more than the capacity on one agent, none on an agent the selector excludes.
TEST_F(AgentE2E, AgentSelectorAndCapacityAreRespected) {
  startController();
  startAgent("node-a", withLabel(4, "a"));
  const Process& node_b = startAgent("node-b", withLabel(2, "b"));
  std::string yaml = goConnector("slow");
  for (int i = 0; i < 3; ++i) {
    yaml += "---\n" + syncJob("job" + std::to_string(i), "slow",
                              "{\"pages\": 8, \"page_size\": 5, \"page_delay_ms\": 250}",
                              "  agentSelector:\n    matchLabels:\n      zone: b\n");
  }
  apply(yaml);
  int max_running = 0;
  std::set<std::string> agents_seen;
  const bool all_done = waitFor(
      [&] {
        int running = 0;
        int succeeded = 0;
        for (int i = 0; i < 3; ++i) {
          for (const Json& r : runsOf("job" + std::to_string(i))) {
            const std::string p = phase(r);
            running += p == "Running" || p == "Bound" ? 1 : 0;
            succeeded += p == "Succeeded" ? 1 : 0;
            if (r["status"].contains("agent")) {
              agents_seen.insert(r["status"]["agent"].get<std::string>());
            }
          }
        }
        max_running = std::max(max_running, running);
        return succeeded == 3;
      },
      120s);
  ASSERT_TRUE(all_done) << kubectl({"get", "sr", "-o", "wide"}).output;
  EXPECT_EQ(max_running, 2);  // in parallel, and never beyond node-b's capacity
  EXPECT_EQ(agents_seen, std::set<std::string>{"node-b"});
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(liveCount("job" + std::to_string(i)), "40");
  }
  // Concurrent runs of one connector installed it once (one cache per agent).
  const std::string metrics = harness::httpGetLoopback(node_b.metrics_port, "/metrics");
  EXPECT_NE(metrics.find("tributary_connector_install_duration_seconds_count 1\n"),
            std::string::npos)
      << metrics;
  // Runs of one source never overlap in the store.
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.sync_runs a JOIN tributary.sync_runs b "
                   "ON a.source_id = b.source_id AND a.run_id < b.run_id AND "
                   "b.started_at < coalesce(a.finished_at, 'infinity')"),
            "0");
}

// 5. A connector that fails: retried with backoff, then BackoffLimitExceeded; the connector's own
// error text reaches `kubectl describe sr`.
TEST_F(AgentE2E, FailingConnectorIsRetriedThenFailsWithItsOwnMessage) {
  startController();
  startAgent("node-a");
  apply(goConnector("broken", "sync_error") + "---\n" +
        syncJob("doomed", "broken", "{}", "  backoffLimit: 1\n"));
  const Json run = waitForRun("doomed", "Failed", 120s);
  ASSERT_FALSE(run.is_null()) << kubectl({"get", "sr", "-o", "yaml"}).output;
  EXPECT_EQ(run["status"]["reason"], "BackoffLimitExceeded");
  EXPECT_EQ(run["status"]["attempt"], 2);
  const auto described = kubectl({"describe", "sr", kube::nameOf(run)});
  EXPECT_NE(described.output.find("upstream said no"), std::string::npos) << described.output;
  EXPECT_NE(described.output.find("ConnectorFailed"), std::string::npos) << described.output;
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.sync_runs WHERE namespace = '" + ns_ +
                   "' AND outcome = 'failed'"),
            "2");
}

// 6. concurrencyPolicy Replace: the running sync is cancelled, its connector is gone and it
// writes nothing after the cancel.
TEST_F(AgentE2E, ReplaceCancelsTheRunningSync) {
  startController();
  Process& agent = startAgent("node-a", withDrainTimeout("1s"));
  apply(goConnector("slow") + "---\n" +
        syncJob("replaced", "slow", "{\"pages\": 400, \"page_size\": 5, \"page_delay_ms\": 100}",
                "  concurrencyPolicy: Replace\n  schedule: \"0 0 1 1 *\"\n"));
  ASSERT_EQ(kubectl({"annotate", "syncjob/replaced", "tributary.dev/run-now=one"}).exit_code, 0);
  ASSERT_TRUE(waitFor(
      [&] {
        const Json r = waitForRun("replaced", "Running", 30s);
        return !r.is_null() && r["status"].value("pages", 0) >= 3;
      },
      60s));
  const std::set<pid_t> first = childrenOf(agent.pid, "connector");
  ASSERT_FALSE(first.empty());
  const std::string first_run =
      scalar("SELECT min(run_id) FROM tributary.sync_runs WHERE namespace = '" + ns_ + "'");
  ASSERT_EQ(kubectl({"annotate", "--overwrite", "syncjob/replaced", "tributary.dev/run-now=two"})
                .exit_code,
            0);
  EXPECT_TRUE(waitFor(
      [&] {
        for (pid_t pid : first) {
          if (::kill(pid, 0) == 0 && childrenOf(agent.pid, "connector").contains(pid)) {
            return false;
          }
        }
        return true;
      },
      20s))
      << "the cancelled run's connector is still alive";
  ASSERT_TRUE(waitFor(
      [&] {
        return scalar("SELECT outcome FROM tributary.sync_runs WHERE run_id = " + first_run) ==
               "failed";
      },
      20s));
  const std::string query =
      "SELECT pages || '/' || (SELECT count(*) FROM tributary.objects "
      "WHERE first_run = " +
      first_run + ") FROM tributary.sync_runs WHERE run_id = " + first_run;
  const std::string at_cancel = scalar(query);
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(scalar(query), at_cancel) << "the cancelled run wrote after its cancel";
}

// 7. SIGTERM of an agent mid-sync: drained (here: the drain timeout passes), reported, Lease
// released; the run completes on the other agent with exact counts.
TEST_F(AgentE2E, SigtermDrainsAndTheRunCompletesElsewhere) {
  startController();
  Process& a = startAgent("node-a", withDrainTimeout("1s"));
  apply(goConnector("slow") + "---\n" +
        syncJob("moving", "slow", "{\"pages\": 40, \"page_size\": 10, \"page_delay_ms\": 100}"));
  const Json running = waitForRun("moving", "Running", 60s);
  ASSERT_FALSE(running.is_null());
  startAgent("node-b");
  ASSERT_TRUE(waitFor(
      [&] { return waitForRun("moving", "Running", 1s)["status"].value("pages", 0) >= 2; }));
  EXPECT_EQ(a.stop(SIGTERM, 30s), 0) << tail(a.log);
  const auto released = lease("node-a");
  ASSERT_TRUE(released.has_value());
  EXPECT_TRUE((*released)["spec"].value("holderIdentity", Json()).is_null()) << released->dump(2);
  EXPECT_EQ((*released)["metadata"]["annotations"]["tributary.dev/capacity"], "0");
  const Json done = waitForRun("moving", "Succeeded", 120s);
  ASSERT_FALSE(done.is_null()) << kubectl({"get", "sr", "-o", "yaml"}).output;
  EXPECT_EQ(done["status"]["agent"], "node-b");
  EXPECT_EQ(done["status"]["attempt"], 2);
  EXPECT_EQ(liveCount("moving"), "400");
  EXPECT_NE(kubectl({"get", "events"}).output.find("AgentStopping"), std::string::npos);
}

// 8. kill -9 of an agent mid-sync: its Lease expires, the run is retried on the other agent
// (after the dead agent's source lock expired), final counts exact, no duplicates, no
// acknowledged page lost.
TEST_F(AgentE2E, KilledAgentsRunIsRetriedElsewhereWithoutLoss) {
  startController();
  Process& a = startAgent("node-a");
  apply(goConnector("slow") + "---\n" +
        syncJob("survivor", "slow", "{\"pages\": 30, \"page_size\": 10, \"page_delay_ms\": 100}"));
  ASSERT_FALSE(waitForRun("survivor", "Running", 60s).is_null());
  startAgent("node-b");
  ASSERT_TRUE(waitFor(
      [&] { return waitForRun("survivor", "Running", 1s)["status"].value("pages", 0) >= 3; }));
  const std::string acknowledged = scalar("SELECT count(*) FROM tributary.objects");
  ::kill(-a.pid, SIGKILL);  // the agent and its connector, as a node dying would
  a.stop(SIGKILL);
  const Json done = waitForRun("survivor", "Succeeded", 120s);
  ASSERT_FALSE(done.is_null()) << kubectl({"get", "sr", "-o", "yaml"}).output;
  EXPECT_EQ(done["status"]["agent"], "node-b");
  EXPECT_EQ(done["status"]["attempt"], 2);
  EXPECT_GE(std::stoi(acknowledged), 30);
  EXPECT_EQ(liveCount("survivor"), "300");
  EXPECT_EQ(scalar("SELECT count(*) - count(DISTINCT remote_id) FROM tributary.objects"), "0");
  EXPECT_NE(kubectl({"get", "events"}).output.find("AgentLost"), std::string::npos);
}

// 9. 200 consecutive runs on one agent: file descriptors, threads, child processes and temp
// files stay flat.
TEST_F(AgentE2E, TwoHundredRunsLeaveNothingBehind) {
  startController();
  Process& agent = startAgent("node-a");
  apply(goConnector("go") + "---\n" +
        syncJob("again", "go", "{\"pages\": 1, \"page_size\": 5}",
                "  schedule: \"0 0 1 1 *\"\n  successfulRunsHistoryLimit: 1\n"));
  const fs::path proc = fs::path("/proc") / std::to_string(agent.pid);
  auto threads = [&] {
    const std::string status = readFile(proc / "status");
    const auto at = status.find("Threads:");
    return at == std::string::npos ? -1 : std::stoi(status.substr(at + 8));
  };
  const fs::path tmp = dir_ / "cache-node-a" / "tmp";  // the agent's TMPDIR
  struct Sample {
    int fds, threads, children, temp;
  };
  auto sample = [&] {
    return Sample{countEntries(proc / "fd"), threads(),
                  static_cast<int>(childrenOf(agent.pid).size()), countEntries(tmp)};
  };
  auto runOnce = [&](int i) {
    ASSERT_EQ(kubectl({"annotate", "--overwrite", "syncjob/again",
                       "tributary.dev/run-now=r" + std::to_string(i)})
                  .exit_code,
              0);
    ASSERT_TRUE(waitFor(
        [&] {
          return scalar("SELECT count(*) FROM tributary.sync_runs WHERE namespace = '" + ns_ +
                        "' AND outcome = 'succeeded'") == std::to_string(i + 1);
        },
        60s))
        << "run " << i;
  };
  for (int i = 0; i < 20; ++i) {
    runOnce(i);
  }
  std::this_thread::sleep_for(2s);  // the last run's threads end
  const Sample warm = sample();
  for (int i = 20; i < 200; ++i) {
    runOnce(i);
    if (HasFatalFailure()) {
      return;
    }
  }
  std::this_thread::sleep_for(2s);
  const Sample end = sample();
  std::cout << "after 20 runs → after 200: fds " << warm.fds << " → " << end.fds << ", threads "
            << warm.threads << " → " << end.threads << ", children " << warm.children << " → "
            << end.children << ", temp entries " << warm.temp << " → " << end.temp << "\n";
  EXPECT_LE(end.fds, warm.fds + 3) << "fds " << warm.fds << " → " << end.fds;
  EXPECT_LE(end.threads, warm.threads + 3) << "threads " << warm.threads << " → " << end.threads;
  EXPECT_EQ(end.children, 0);
  EXPECT_LE(end.temp, warm.temp + 2) << "temp entries " << warm.temp << " → " << end.temp;
}

// activeDeadlineSeconds: the controller fails the run (DeadlineExceeded, no retry) and the agent
// kills the connector and records the store run failed, deleting nothing.
TEST_F(AgentE2E, ActiveDeadlineStopsTheConnector) {
  startController();
  Process& agent = startAgent("node-a");
  apply(goConnector("slow") + "---\n" +
        syncJob("bounded", "slow", "{\"pages\": 200, \"page_size\": 5, \"page_delay_ms\": 100}",
                "  activeDeadlineSeconds: 3\n"));
  const Json run = waitForRun("bounded", "Failed", 60s);
  ASSERT_FALSE(run.is_null()) << kubectl({"get", "sr", "-o", "yaml"}).output;
  EXPECT_EQ(run["status"]["reason"], "DeadlineExceeded");
  EXPECT_EQ(run["status"]["attempt"], 1);
  EXPECT_TRUE(waitFor([&] { return childrenOf(agent.pid, "connector").empty(); }, 20s));
  EXPECT_TRUE(waitFor(
      [&] {
        return scalar("SELECT outcome FROM tributary.sync_runs WHERE namespace = '" + ns_ + "'") ==
               "failed";
      },
      20s));
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.objects WHERE deleted_at IS NOT NULL"), "0");
}

// An agent killed mid-sync and started again under the same name: the run it left Running is
// reported (AgentRestarted) and retried; the agent's old private directories are gone.
TEST_F(AgentE2E, RestartedAgentReportsTheRunItLost) {
  startController();
  Process& first = startAgent("node-a");
  apply(goConnector("slow") + "---\n" +
        syncJob("resumed", "slow", "{\"pages\": 30, \"page_size\": 10, \"page_delay_ms\": 50}"));
  ASSERT_TRUE(waitFor(
      [&] { return waitForRun("resumed", "Running", 1s)["status"].value("pages", 0) >= 2; }));
  ::kill(first.pid, SIGKILL);
  first.stop(SIGKILL);
  const fs::path temp = dir_ / "cache-node-a" / "tmp";
  ASSERT_GT(countEntries(temp), 0) << "the killed host left no private directory to sweep";
  startAgent("node-a");
  EXPECT_TRUE(waitFor([&] { return countEntries(temp) <= 1; }, 20s));
  const Json done = waitForRun("resumed", "Succeeded", 120s);
  ASSERT_FALSE(done.is_null()) << kubectl({"get", "sr", "-o", "yaml"}).output;
  EXPECT_EQ(done["status"]["attempt"], 2);
  EXPECT_EQ(liveCount("resumed"), "300");
  EXPECT_NE(kubectl({"get", "events"}).output.find("AgentRestarted"), std::string::npos)
      << kubectl({"get", "events"}).output;
}

// A cordoned node takes no new runs (capacity 0 on its Lease); uncordoned, it runs them.
TEST_F(AgentE2E, CordonedNodeTakesNoNewRuns) {
  const std::string node = "node-" + ns_;
  ASSERT_EQ(KubeApiServer::shared()
                .runKubectl({"apply", "-f", "-"},
                            "apiVersion: v1\nkind: Node\nmetadata:\n  name: " + node +
                                "\nspec:\n  unschedulable: true\n")
                .exit_code,
            0);
  startController();
  AgentFlags flags;
  flags.node_name = node;
  startAgent("node-a", flags);
  ASSERT_TRUE(waitFor(
      [&] {
        const auto l = lease("node-a");
        return l && (*l)["metadata"]["annotations"]["tributary.dev/capacity"] == "0";
      },
      20s));
  apply(goConnector("go") + "---\n" + syncJob("waits", "go", "{\"pages\": 1}"));
  std::this_thread::sleep_for(4s);
  const auto runs = runsOf("waits");
  ASSERT_EQ(runs.size(), 1U);
  EXPECT_EQ(phase(runs[0]), "Pending") << runs[0].dump(2);
  ASSERT_EQ(KubeApiServer::shared()
                .runKubectl({"patch", "node", node, "--type=merge", "-p",
                             R"({"spec":{"unschedulable":false}})"})
                .exit_code,
            0);
  EXPECT_FALSE(waitForRun("waits", "Succeeded", 60s).is_null())
      << kubectl({"get", "sr", "-o", "yaml"}).output;
  static_cast<void>(KubeApiServer::shared().runKubectl({"delete", "node", node}));
}

// The connector sandbox against a hostile connector (the Go test connector's mode hostile) on a
// real agent, beside a victim run holding a credential file. Every probe is refused; a fork
// bomb and a disk fill are stopped by the Connector's limits and reported; garbage on stdout, a
// child lingering after Shutdown and one escaping into a session of its own are contained; the
// victim's rows are exact; the agent keeps serving; nothing is left behind; no secret value shows
// up in anything the runs produced. Root only (CI runs as root): connectors then run as 65534 (the
// default), a uid of their own, which is what makes the process limit theirs alone.
TEST_F(AgentE2E, HostileConnectorIsRefusedAndContained) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root (connectors switch to uid 65534); CI runs it as root";
  }
  // Secrets the agent holds: a database password, a ServiceAccount token, a VCS credential of
  // --secret-dir. Their modes (0644) would let anyone read them: only the sandbox is in the way.
  const std::string db_password = "db-password-8Xk2mQ";
  const std::string sa_token = "sa-token-Q7v1zR";
  const std::string vcs_secret = "vcs-secret-W4p0nT";
  const std::string victim_key = "victim-key-J3m9cL";
  fs::create_directories(dir_ / "secrets" / "git");
  fs::create_directories(dir_ / "serviceaccount");
  std::ofstream(dir_ / "secrets" / "db-password") << db_password;
  std::ofstream(dir_ / "serviceaccount" / "token") << sa_token;
  std::ofstream(dir_ / "secrets" / "git" / "password") << vcs_secret;
  startController();
  AgentFlags flags;
  flags.sandbox_read_only = "";  // only the system's paths and the connector's own
  flags.extra = {"--database-password-file=" + (dir_ / "secrets" / "db-password").string(),
                 "--secret-dir=" + (dir_ / "secrets").string()};
  Process& agent = startAgent("node-a", flags);
  const fs::path agent_tmp = dir_ / "cache-node-a" / "tmp";

  // The victim: a slow run whose Connector gets a credential file from a Secret.
  apply(
      "apiVersion: v1\nkind: Secret\nmetadata:\n  name: victim-creds\nstringData:\n"
      "  api-key: " +
      victim_key + "\n---\n" + goConnector("victim") +
      "  files:\n    - secretRef:\n        name: victim-creds\n      items:\n"
      "        - key: api-key\n          path: api-key\n          env: API_KEY_FILE\n---\n" +
      syncJob("victim", "victim", R"({"pages": 40, "page_size": 25, "page_delay_ms": 150})"));
  fs::path victim_file;
  ASSERT_TRUE(waitFor(
      [&] {
        std::error_code ec;
        for (auto it = fs::directory_iterator(agent_tmp, ec); !ec && it != fs::directory_iterator();
             it.increment(ec)) {
          if (fs::exists(it->path() / "api-key")) {
            victim_file = it->path() / "api-key";
            return true;
          }
        }
        return false;
      },
      60s))
      << "the victim's credential file never appeared under " << agent_tmp << "\n"
      << tail(agent.log);

  // The probes, while the victim runs.
  const std::string hostile =
      "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: hostile\nspec:\n"
      "  source: Local\n  uri: " +
      (dir_ / "go").string() +
      "\n  command: ./connector\n"
      "  env:\n    - name: TEST_CONNECTOR_MODE\n      value: hostile\n"
      "  limits:\n    processes: 64\n    fileSize: 64Mi\n";
  const Json paths = {(dir_ / "secrets" / "db-password").string(),
                      (dir_ / "serviceaccount" / "token").string(),
                      (dir_ / "secrets" / "git" / "password").string(), victim_file.string(),
                      KubeApiServer::shared().kubeconfigPath()};
  apply(hostile + "---\n" +
        syncJob("probes", "hostile", Json{{"paths", paths}}.dump(), "  backoffLimit: 0\n"));
  ASSERT_FALSE(waitForRun("probes", "Succeeded", 90s).is_null())
      << kubectl({"describe", "sr"}).output << tail(agent.log);
  const std::string probes = scalar(
      "SELECT string_agg(remote_id || ' => ' || (metadata::jsonb->>'outcome'), E'\\n' ORDER BY "
      "remote_id) FROM tributary.live_objects WHERE namespace = '" +
      ns_ + "' AND sync_job = 'probes'");
  std::cout << "hostile probes:\n" << probes << "\n";
  int refused = 0;
  std::istringstream lines(probes);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_NE(line.find(" => refused: "), std::string::npos) << "not refused: " << line;
    ++refused;
  }
  EXPECT_EQ(refused, 10 + static_cast<int>(paths.size())) << probes;
  EXPECT_TRUE(agent.alive()) << "the agent died of the probes\n" << tail(agent.log);

  // The victim finished untouched while the probes ran.
  ASSERT_FALSE(waitForRun("victim", "Succeeded", 120s).is_null())
      << kubectl({"describe", "sr"}).output;
  EXPECT_EQ(liveCount("victim"), "1000");

  // Attacks on the limits: stopped and reported (fork bomb, disk fill), or contained (stdout
  // garbage, a child holding the pipes past Shutdown, the same in a session of its own).
  const std::vector<std::pair<std::string, std::string>> attacks = {
      {"fork_bomb", "fork bomb stopped after"},
      {"fill_disk", "disk fill stopped after 64 MiB"},
      {"stdout", ""},
      {"linger", ""},
      {"escape", ""}};
  for (const auto& [attack, failure] : attacks) {
    const std::string job = "attack-" + std::string(attack == "fork_bomb"   ? "fork"
                                                    : attack == "fill_disk" ? "disk"
                                                                            : attack);
    apply(syncJob(job, "hostile", Json{{"attack", attack}}.dump(), "  backoffLimit: 0\n"));
    const Json run = waitForRun(job, failure.empty() ? "Succeeded" : "Failed", 120s);
    ASSERT_FALSE(run.is_null()) << attack << "\n"
                                << kubectl({"describe", "sr"}).output << tail(agent.log);
    if (!failure.empty()) {
      const auto described = kubectl({"describe", "sr", kube::nameOf(run)});
      EXPECT_NE(described.output.find(failure), std::string::npos) << described.output;
    }
    // Nothing of the attack outlives its run: no process, no directory.
    EXPECT_TRUE(waitFor([&] { return childrenOf(agent.pid).empty(); }, 15s))
        << attack << ": the agent still has children";
    EXPECT_TRUE(waitFor([&] { return countEntries(agent_tmp) == 0; }, 15s))
        << attack << ": " << countEntries(agent_tmp) << " entries left in " << agent_tmp;
    EXPECT_TRUE(agent.alive()) << attack << " killed the agent\n" << tail(agent.log);
    if (attack == "escape") {  // The process group's kill missed it; the sweep did not.
      EXPECT_NE(readFile(agent.log).find("killed processes the connector left outside its "
                                         "process group"),
                std::string::npos)
          << tail(agent.log);
    }
  }
  // The attacks' processes anywhere on the machine: uid 65534 with the attacks' exact command
  // lines (other tests running in parallel start sleeps of their own).
  auto sleepers = [] {
    const std::string bomb = std::string(
        "/bin/sleep\0"
        "300\0",
        15);
    const std::string lingering = "trap '' TERM INT; sleep 300";
    int n = 0;
    std::error_code ec;
    for (auto it = fs::directory_iterator("/proc", ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      struct stat st {};
      if (::stat(it->path().c_str(), &st) != 0 || st.st_uid != 65534) {
        continue;
      }
      const std::string cmdline = readFile(it->path() / "cmdline");
      n += cmdline == bomb || cmdline.find(lingering) != std::string::npos ||
           cmdline == std::string(
                          "sleep\0"
                          "300\0",
                          10);
    }
    return n;
  };
  EXPECT_TRUE(waitFor([&] { return sleepers() == 0; }, 15s))
      << sleepers() << " processes of the attacks outlived their runs";

  // The agent still serves: a normal run after all of it.
  apply(goConnector("after") + "---\n" + syncJob("after", "after", R"({"pages": 2})"));
  EXPECT_FALSE(waitForRun("after", "Succeeded", 90s).is_null())
      << kubectl({"describe", "sr"}).output;
  EXPECT_EQ(liveCount("after"), "20");

  // No secret value in the logs, statuses, events or metrics of any of it.
  const std::string produced =
      readFile(agent.log) + readFile(controller_.log) +
      harness::httpGetLoopback(agent.metrics_port, "/metrics") +
      kubectl({"get", "syncruns,syncjobs,connectors", "-o", "yaml"}).output +
      kubectl({"get", "events", "-o", "yaml"}).output;
  for (const std::string& secret : {db_password, sa_token, vcs_secret, victim_key}) {
    EXPECT_EQ(produced.find(secret), std::string::npos) << "secret " << secret << " leaked";
  }
}

}  // namespace
}  // namespace tributary::e2e
