// End-to-end tests of the `tributary` CLI: the real binary against real PostgreSQL (the harness's
// private server, or the CLI's own local one) and real connectors (tests/connectors, the SDK
// examples).

#include "cli_test_support.h"
#include "libpq-fe.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <ostream>
#include <string>
#include <thread>

namespace tributary::cli_test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kCli = TRIBUTARY_CLI;

std::string lastLine(const std::string& text) {
  std::string t = text;
  while (!t.empty() && t.back() == '\n') {
    t.pop_back();
  }
  const auto nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

nlohmann::json parseLast(const Result& r) {
  auto j = nlohmann::json::parse(lastLine(r.out), nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.all();
  return j;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dsn_ = databaseForTest("cli_");
    ASSERT_FALSE(dsn_.empty());
  }

  void TearDown() override {
    // A test that started the CLI's own PostgreSQL never leaves it running.
    std::error_code ec;
    if (std::filesystem::exists(dir_.path() + "/state/tributary/postgres/data/postmaster.pid",
                                ec)) {
      const Result stopped = tributary({"db", "stop"});
      EXPECT_EQ(stopped.exit_code, 0) << stopped.all();
    }
  }

  std::map<std::string, std::string> env() const {
    return {{"XDG_STATE_HOME", dir_.path() + "/state"},
            {"XDG_CACHE_HOME", dir_.path() + "/cache"},
            {"XDG_CONFIG_HOME", dir_.path() + "/config"},
            {"DATABASE_URL", ""}};
  }

  Result tributary(const std::vector<std::string>& args,
                   std::map<std::string, std::string> extra = {}) const {
    auto e = env();
    for (auto& [k, v] : extra) {
      e[k] = v;
    }
    return run(kCli, args, e);
  }

  // A c1 connector JSON for the C++ test connector (tests/connectors/README.md) in `mode`.
  std::string c1Json(const std::string& name, const std::string& mode = "") const {
    nlohmann::json spec = {{"name", name},
                           {"description", "test connector"},
                           {"source", "Local"},
                           {"uri", TRIBUTARY_CPP_CONNECTOR},
                           {"command", "./test_connector_cpp"}};
    if (!mode.empty()) {
      spec["env"] = {{"TEST_CONNECTOR_MODE", mode}};
    }
    return dir_.write(name + ".json", spec.dump(2));
  }

  // `tributary run --connector` with the test connector; --json summary.
  Result runTestConnector(const std::string& name, const std::string& options,
                          std::vector<std::string> extra = {}, const std::string& mode = "") {
    std::vector<std::string> args = {"run",       "--connector", c1Json(name, mode),
                                     "--options", options,       "--database-url",
                                     dsn_,        "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return tributary(args);
  }

  // One value from the database.
  std::string scalar(const std::string& sql) const {
    PGconn* conn = PQconnectdb(dsn_.c_str());
    EXPECT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
    PGresult* r = PQexec(conn, sql.c_str());
    std::string out;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
      out = PQgetvalue(r, 0, 0);
    } else {
      ADD_FAILURE() << sql << ": " << PQerrorMessage(conn);
    }
    PQclear(r);
    PQfinish(conn);
    return out;
  }

  std::string manifests(const std::string& name, const std::string& body) const {
    return dir_.write(name, body);
  }

  std::string connectorManifest(const std::string& name, const std::string& mode = "") const {
    std::string yaml =
        "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: " + name +
        "\nspec:\n  source: Local\n  uri: " + TRIBUTARY_CPP_CONNECTOR +
        "\n  command: ./test_connector_cpp\n";
    if (!mode.empty()) {
      yaml += "  env:\n    TEST_CONNECTOR_MODE: " + mode + "\n";
    }
    return yaml;
  }

  TempDir dir_;
  std::string dsn_;
};

// ---- run: first run, identical re-run, changes, deletion policies ----

TEST_F(CliTest, FirstRunThenIdenticalRerunRewritesNothing) {
  const Result first = runTestConnector("docs", R"({"pages":3,"page_size":10})");
  ASSERT_EQ(first.exit_code, 0) << first.all();
  const auto s1 = parseLast(first);
  EXPECT_EQ(s1["ok"], true);
  EXPECT_EQ(s1["pages"], 3);
  EXPECT_EQ(s1["objects_inserted"], 30);
  EXPECT_EQ(s1["objects_unchanged"], 0);
  EXPECT_EQ(s1["sync_job"], "docs");
  EXPECT_EQ(s1["connector_metadata_json"]["objects"], 30);

  const Result second = runTestConnector("docs", R"({"pages":3,"page_size":10})");
  ASSERT_EQ(second.exit_code, 0) << second.all();
  const auto s2 = parseLast(second);
  EXPECT_EQ(s2["objects_unchanged"], 30);
  EXPECT_EQ(s2["objects_upserted"], 0);
  EXPECT_EQ(s2["objects_marked"], 0);
  EXPECT_GT(s2["run_id"].get<int>(), s1["run_id"].get<int>());
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.live_objects WHERE sync_job = 'docs'"), "30");
}

TEST_F(CliTest, TextSummaryNamesTheCounts) {
  const Result r = tributary({"run", "--connector", c1Json("text"), "--options",
                              R"({"pages":2,"page_size":5})", "--database-url", dsn_});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_THAT(r.out, HasSubstr("synced default/text with connector text"));
  EXPECT_THAT(r.out, HasSubstr("10 received: 10 upserted (10 new, 0 changed), 0 unchanged"));
  EXPECT_THAT(r.out, HasSubstr("0 soft-deleted (deletionPolicy Mark)"));
  EXPECT_THAT(r.out, HasSubstr(R"(metadata {"pages":2,"objects":10,"connector":"cpp"})"));
  // Not a terminal: progress as JSON log lines on stderr.
  EXPECT_THAT(r.err, HasSubstr(R"("msg":"installing connector text)"));
}

TEST_F(CliTest, AddedChangedAndRemovedObjectsUnderMark) {
  ASSERT_EQ(runTestConnector("mark", R"({"pages":2})").exit_code, 0);
  // Page 2 is new; pages 0-1 change (padding changes their metadata).
  const Result grow = runTestConnector("mark", R"({"pages":3,"object_bytes":200})");
  ASSERT_EQ(grow.exit_code, 0) << grow.all();
  const auto g = parseLast(grow);
  EXPECT_EQ(g["objects_inserted"], 10);
  EXPECT_EQ(g["objects_updated"], 20);
  EXPECT_EQ(g["objects_unchanged"], 0);
  // Only page 0 remains (unchanged): 20 objects soft-deleted.
  const Result shrink =
      runTestConnector("mark", R"({"pages":1,"object_bytes":200})", {"--confirm-deletion"});
  ASSERT_EQ(shrink.exit_code, 0) << shrink.all();
  const auto s = parseLast(shrink);
  EXPECT_EQ(s["objects_unchanged"], 10);
  EXPECT_EQ(s["objects_marked"], 20);
  EXPECT_EQ(s["deletion_policy"], "Mark");
  const Result deleted = tributary(
      {"objects", "mark", "--state", "deleted", "--limit", "0", "--json", "--database-url", dsn_});
  ASSERT_EQ(deleted.exit_code, 0) << deleted.all();
  EXPECT_EQ(std::count(deleted.out.begin(), deleted.out.end(), '\n'), 20);
  EXPECT_THAT(deleted.out, HasSubstr(R"("remote_id":"obj-2-9")"));
  EXPECT_THAT(deleted.out, HasSubstr(R"("state":"deleted")"));
  // Listed again: revived.
  const Result back = runTestConnector("mark", R"({"pages":3,"object_bytes":200})");
  ASSERT_EQ(back.exit_code, 0) << back.all();
  EXPECT_EQ(parseLast(back)["objects_revived"], 20);
}

TEST_F(CliTest, KeepLeavesMissingObjectsLive) {
  ASSERT_EQ(runTestConnector("keep", R"({"pages":2})").exit_code, 0);
  const Result r = runTestConnector("keep", R"({"pages":1})", {"--deletion-policy", "Keep"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(parseLast(r)["objects_missing"], 10);
  EXPECT_EQ(parseLast(r)["objects_marked"], 0);
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.live_objects WHERE sync_job = 'keep'"), "20");
  const Result missing =
      tributary({"objects", "default/keep", "--state", "missing", "--database-url", dsn_});
  ASSERT_EQ(missing.exit_code, 0) << missing.all();
  EXPECT_THAT(missing.out, HasSubstr("obj-1-0"));
  EXPECT_THAT(missing.out, HasSubstr("10 missing objects of default/keep"));
}

TEST_F(CliTest, ObjectsDeletedShowsWhenEachWasDeleted) {
  ASSERT_EQ(runTestConnector("gone", R"({"pages":4})").exit_code, 0);
  const Result shrink = runTestConnector("gone", R"({"pages":3})");
  ASSERT_EQ(shrink.exit_code, 0) << shrink.all();
  ASSERT_EQ(parseLast(shrink)["objects_marked"], 10);
  const std::string deleted_at =
      scalar(R"(SELECT to_char(deleted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') )"
             "FROM tributary.object_versions WHERE sync_job = 'gone' AND remote_id = 'obj-3-0'");
  ASSERT_FALSE(deleted_at.empty());
  const Result table = tributary({"objects", "gone", "--state", "deleted", "--database-url", dsn_});
  ASSERT_EQ(table.exit_code, 0) << table.all();
  EXPECT_THAT(table.out, HasSubstr("DELETED_AT"));
  const auto row = table.out.find("obj-3-0 ");
  ASSERT_NE(row, std::string::npos) << table.out;
  const std::string line = table.out.substr(row, table.out.find('\n', row) - row);
  EXPECT_THAT(line, HasSubstr("deleted"));
  EXPECT_THAT(line, HasSubstr(deleted_at)) << table.out;
  EXPECT_THAT(table.out, HasSubstr("10 deleted objects of default/gone"));
  // Live objects were never deleted: no such column.
  const Result live = tributary({"objects", "gone", "--database-url", dsn_});
  ASSERT_EQ(live.exit_code, 0) << live.all();
  EXPECT_THAT(live.out, Not(HasSubstr("DELETED_AT")));
}

TEST_F(CliTest, RunWithAConnectorListSaysItIsAList) {
  const std::string list =
      dir_.write("connectors.json",
                 R"([{"name":"s3","source":"Local","uri":"/opt/s3","command":"./s3"},)"
                 R"({"name":"gdrive","source":"Local","uri":"/opt/gdrive","command":"./gdrive"}])");
  const Result r = tributary({"run", "--connector", list, "--database-url", dsn_});
  EXPECT_EQ(r.exit_code, 3) << r.all();
  EXPECT_THAT(r.err, HasSubstr(list + " is a list of 2 connectors (s3, gdrive) like c1's "
                                      "connectors.json, but --connector takes one connector"))
      << r.all();
  EXPECT_THAT(r.err, HasSubstr("`tributary connector import " + list + " > connectors.yaml`"));
  EXPECT_THAT(r.err, Not(HasSubstr("must be a JSON object")));
  // Any other problem of the file names it once.
  const std::string bad = dir_.write("bad.json", R"({"name":"x"})");
  const Result b = tributary({"run", "--connector", bad, "--database-url", dsn_});
  EXPECT_EQ(b.exit_code, 3) << b.all();
  EXPECT_EQ(b.err.find(bad), b.err.rfind(bad)) << b.err;
}

TEST_F(CliTest, DeleteRemovesRowsThroughManifests) {
  const std::string file = manifests(
      "delete.yaml", connectorManifest("files") +
                         "---\napiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n"
                         "  name: files-sync\n  namespace: team-a\nspec:\n  connectorRef:\n"
                         "    name: files\n  options:\n    pages: 2\n  deletionPolicy: Delete\n");
  const std::string smaller =
      manifests("delete2.yaml",
                "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: files\n"
                "  namespace: team-a\nspec:\n  source: Local\n  uri: " TRIBUTARY_CPP_CONNECTOR
                "\n  command: ./test_connector_cpp\n---\napiVersion: tributary.dev/v1alpha1\n"
                "kind: SyncJob\nmetadata:\n  name: files-sync\n  namespace: team-a\nspec:\n"
                "  connectorRef: {name: files}\n  options: {pages: 1}\n  deletionPolicy: Delete\n");
  // The first file's Connector has no namespace: --namespace puts both in team-a.
  Result r =
      tributary({"run", "-f", file, "--namespace", "team-a", "--database-url", dsn_, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(parseLast(r)["namespace"], "team-a");
  EXPECT_EQ(parseLast(r)["objects_inserted"], 20);
  r = tributary({"run", "-f", smaller, "--database-url", dsn_, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(parseLast(r)["objects_deleted"], 10);
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.object_versions WHERE namespace = 'team-a'"),
            "10");
  const Result listed = tributary(
      {"objects", "files-sync", "--prefix", "obj-0-", "--limit", "3", "--database-url", dsn_});
  ASSERT_EQ(listed.exit_code, 0) << listed.all();
  EXPECT_THAT(listed.out, HasSubstr("obj-0-0"));
  EXPECT_THAT(listed.out, HasSubstr("showing 3 of 10 live objects of team-a/files-sync"));
}

TEST_F(CliTest, CleanRestartsTheListing) {
  // Mode clean: pages, then Clean; nothing listed after the Clean protects the earlier objects.
  ASSERT_EQ(runTestConnector("clean", R"({"pages":2})").exit_code, 0);
  const Result r = runTestConnector("cleaning", R"({"pages":2})", {"--name", "clean"}, "clean");
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(parseLast(r)["cleans"], 1);
}

TEST_F(CliTest, SecretOptionsFromSecretManifestAndNeverPrinted) {
  const std::string file = manifests(
      "secret.yaml",
      connectorManifest("conn") +
          "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: conn-options\nstringData:\n"
          "  options.json: '{\"pages\":1,\"token\":\"s3cr3t-t0ken\"}'\n---\n"
          "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: secret-job\n"
          "spec:\n  connectorRef:\n    name: conn\n  optionsFrom:\n    secretKeyRef:\n"
          "      name: conn-options\n      key: options.json\n");
  const Result r = tributary({"run", "-f", file, "--database-url", dsn_});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_THAT(r.out, HasSubstr("10 received"));
  EXPECT_THAT(r.all(), Not(HasSubstr("s3cr3t")));
}

TEST_F(CliTest, SecretOptionsFromEnvironmentOrClearError) {
  const std::string file = manifests(
      "envsecret.yaml",
      connectorManifest("conn") +
          "---\napiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: env-job\n"
          "spec:\n  connectorRef:\n    name: conn\n  optionsFrom:\n    secretKeyRef:\n"
          "      name: my-secret\n      key: options.json\n");
  const Result missing = tributary({"run", "-f", file, "--database-url", dsn_});
  EXPECT_EQ(missing.exit_code, 3) << missing.all();
  EXPECT_THAT(missing.err, HasSubstr("secret `my-secret` key `options.json` not found"));
  EXPECT_THAT(missing.err, HasSubstr("TRIBUTARY_SECRET_MY_SECRET_OPTIONS_JSON"));
  const Result r = tributary({"run", "-f", file, "--database-url", dsn_},
                             {{"TRIBUTARY_SECRET_MY_SECRET_OPTIONS_JSON", R"({"pages":2})"}});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_THAT(r.out, HasSubstr("20 received"));
}

// ---- the filesystem connector over a real directory, with each deletion policy ----

class FilesystemTreeTest : public CliTest, public ::testing::WithParamInterface<std::string> {
 protected:
  // The filesystem connector's Connector and SyncJob `tree` over `root`.
  std::string treeManifests(const std::string& root, const std::string& policy) const {
    return manifests(
        "fs.yaml",
        "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: files\nspec:\n"
        "  source: Local\n  uri: " TRIBUTARY_FILESYSTEM_CONNECTOR
        "\n  command: ./tributary-connector-filesystem\n---\n"
        "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: tree\nspec:\n"
        "  connectorRef: {name: files}\n  options:\n    root: " +
            root + "\n    hash: sha256\n  deletionPolicy: " + policy + "\n");
  }
  Result sync(const std::string& root) {
    return tributary(
        {"run", "-f", treeManifests(root, GetParam()), "--database-url", dsn_, "--json"});
  }
};

TEST_P(FilesystemTreeTest, AddedModifiedAndRemovedFiles) {
  const TempDir tree;
  tree.write("a.txt", "hello");
  tree.write("b.txt", "bye");
  tree.write("sub/c.txt", "deep");
  Result r = sync(tree.path());
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(parseLast(r)["objects_inserted"], 4);  // a.txt, b.txt, sub, sub/c.txt
  r = sync(tree.path());
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(parseLast(r)["objects_unchanged"], 4);
  EXPECT_EQ(parseLast(r)["objects_upserted"], 0);

  tree.write("a.txt", "hello, world");
  tree.write("d.txt", "new");
  std::filesystem::remove(tree.path() + "/b.txt");
  r = sync(tree.path());
  ASSERT_EQ(r.exit_code, 0) << r.all();
  const auto s = parseLast(r);
  EXPECT_EQ(s["objects_inserted"], 1);
  EXPECT_EQ(s["objects_updated"], 1);
  EXPECT_EQ(s["objects_unchanged"], 2);
  const std::string policy = GetParam();
  EXPECT_EQ(s["objects_missing"], policy == "Keep" ? 1 : 0);
  EXPECT_EQ(s["objects_marked"], policy == "Mark" ? 1 : 0);
  EXPECT_EQ(s["objects_deleted"], policy == "Delete" ? 1 : 0);
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.live_objects WHERE sync_job = 'tree'"),
            policy == "Keep" ? "5" : "4");
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.object_versions WHERE sync_job = 'tree'"),
            policy == "Delete" ? "4" : "5");
  EXPECT_EQ(scalar("SELECT metadata_json->>'size' FROM tributary.live_objects "
                   "WHERE sync_job = 'tree' AND remote_id = 'a.txt'"),
            "12");
  const Result all = tributary({"objects", "tree", "--state", "all", "--database-url", dsn_});
  ASSERT_EQ(all.exit_code, 0) << all.all();
  EXPECT_THAT(all.out, HasSubstr("sub/c.txt"));
}

INSTANTIATE_TEST_SUITE_P(Policies, FilesystemTreeTest, ::testing::Values("Keep", "Mark", "Delete"));

// The connector sandbox: a tree the connector was not given is refused with the way out, and
// the run stores nothing; given with --sandbox-read-only, it syncs; with --sandbox off, it is read
// too (warned). The tests' default TRIBUTARY_SANDBOX_READ_ONLY (the temporary directories) is
// removed here. The parameter is --sandbox's value for the last run.
class SandboxedTreeTest : public FilesystemTreeTest {};

TEST_P(SandboxedTreeTest, ATreeOutsideTheSandboxIsRefusedUntilGiven) {
  const TempDir tree;
  tree.write("a.txt", "hello");
  const std::string file = treeManifests(tree.path(), "Mark");
  const std::map<std::string, std::string> no_default = {{"TRIBUTARY_SANDBOX_READ_ONLY", ""}};
  Result r = tributary({"run", "-f", file, "--database-url", dsn_, "--json"}, no_default);
  EXPECT_EQ(r.exit_code, 1) << r.all();
  const auto failed = parseLast(r);
  EXPECT_THAT(failed["error"].get<std::string>(), HasSubstr("ermission denied")) << r.all();
  EXPECT_THAT(failed["error"].get<std::string>(), HasSubstr("--sandbox-read-only")) << r.all();
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.live_objects WHERE sync_job = 'tree'"), "0");

  r = tributary(
      {"run", "-f", file, "--database-url", dsn_, "--json", "--sandbox-read-only", tree.path()},
      no_default);
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(parseLast(r)["objects_inserted"], 1);
  // Off, it is read too (and the warning says so).
  r = tributary({"run", "-f", file, "--database-url", dsn_, "--json", "--sandbox", GetParam()},
                no_default);
  if (GetParam() == "off") {
    ASSERT_EQ(r.exit_code, 0) << r.all();
    EXPECT_THAT(r.err, HasSubstr("the connector sandbox is off")) << r.all();
  } else {
    EXPECT_EQ(r.exit_code, 1) << r.all();
  }
}

INSTANTIATE_TEST_SUITE_P(Sandbox, SandboxedTreeTest, ::testing::Values("on", "off"));

// ---- broken connectors: a clear message, exit 1, the run recorded failed ----

struct BrokenCase {
  std::string mode;
  std::vector<std::string> flags;
  std::string message;
};

void PrintTo(const BrokenCase& c, std::ostream* os) { *os << c.mode; }

class BrokenConnectorTest : public CliTest, public ::testing::WithParamInterface<BrokenCase> {};

TEST_P(BrokenConnectorTest, FailsClearlyAndStoresNothingAsSuccess) {
  const BrokenCase& c = GetParam();
  // A good run first, so a wrongly successful run would show up as deletions.
  ASSERT_EQ(runTestConnector("broken", R"({"pages":2})").exit_code, 0);
  const Result r = runTestConnector(
      "broken-" + c.mode, R"({"pages":2})",
      [&] {
        auto f = c.flags;
        f.insert(f.end(), {"--name", "broken"});
        return f;
      }(),
      c.mode);
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_THAT(r.err, HasSubstr(c.message));
  EXPECT_EQ(parseLast(r)["ok"], false);
  EXPECT_LT(r.seconds, 30);
  EXPECT_EQ(scalar("SELECT last_outcome FROM tributary.sync_jobs WHERE sync_job = 'broken'"),
            "failed");
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.live_objects WHERE sync_job = 'broken'"), "20");
}

INSTANTIATE_TEST_SUITE_P(
    Modes, BrokenConnectorTest,
    ::testing::Values(
        BrokenCase{"exit_before_handshake", {}, "exited with status 3 before the handshake"},
        BrokenCase{"text_before_handshake", {}, "unrecognized handshake line"},
        BrokenCase{"never_handshake", {"--start-timeout", "2"}, "printed no handshake within"},
        BrokenCase{"crash_mid_sync", {}, "during Sync after 1 pages"},
        BrokenCase{"hang_in_sync", {"--timeout", "2"}, "did not finish within 2000 ms"},
        BrokenCase{"sync_error", {}, "upstream said no"},
        BrokenCase{"invalid_utf8", {}, "upsert failed"}),
    [](const ::testing::TestParamInfo<BrokenCase>& param_info) { return param_info.param.mode; });

// ---- a doubtful run never deletes: refused callback calls, the deletion guard ----

class DoubtfulRunTest : public CliTest {
 protected:
  // A c1 connector JSON for a Go test connector (go-plugin `version`, e.g. "v1_6") in `mode`.
  std::string goJson(const std::string& name, const std::string& version,
                     const std::string& mode) const {
    nlohmann::json spec = {{"name", name},
                           {"source", "Local"},
                           {"uri", TRIBUTARY_GO_BIN_DIR "/connector-go-" + version},
                           {"command", "./connector-go-" + version}};
    if (!mode.empty()) {
      spec["env"] = {{"TEST_CONNECTOR_MODE", mode}};
    }
    return dir_.write(name + ".json", spec.dump(2));
  }
  Result runGo(const std::string& job, const std::string& version, const std::string& mode,
               const std::string& options, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"run",
                                     "--connector",
                                     goJson(job + mode, version, mode),
                                     "--name",
                                     job,
                                     "--options",
                                     options,
                                     "--database-url",
                                     dsn_,
                                     "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return tributary(args);
  }
  // remote_id → state of every stored object of `job`, as one line.
  std::string states(const std::string& job) const {
    return scalar(
        "SELECT coalesce(string_agg(remote_id || '=' || state, ' ' ORDER BY remote_id), "
        "'') FROM tributary.object_versions WHERE sync_job = '" +
        job + "'");
  }
  static std::string allPresent(int pages, int page_size) {
    std::vector<std::string> ids;
    for (int p = 0; p < pages; ++p) {
      for (int i = 0; i < page_size; ++i) {
        ids.push_back("obj-" + std::to_string(p) + "-" + std::to_string(i) + "=present");
      }
    }
    std::sort(ids.begin(), ids.end());
    std::string out;
    for (const auto& id : ids) {
      out += (out.empty() ? "" : " ") + id;
    }
    return out;
  }
};

// The data-loss defect: a connector of an older callback protocol calls a method we do not have,
// ignores the UNIMPLEMENTED answers and returns OK with zero pages. That used to be a successful
// run, and the deletion policy then removed every object of the SyncJob.
TEST_F(DoubtfulRunTest, AConnectorOfAnOlderCallbackProtocolNeverDeletes) {
  for (const std::string version : {"v1_6", "v1_8"}) {
    for (const std::string policy : {"Mark", "Delete"}) {
      const std::string job = "legacy-" + version.substr(3) + "-" + policy;
      SCOPED_TRACE(job);
      const std::string options = R"({"pages":3,"page_size":4})";
      Result full = runGo(job, version, "", options, {"--deletion-policy", policy});
      ASSERT_EQ(full.exit_code, 0) << full.all();
      ASSERT_EQ(states(job), allPresent(3, 4));
      // Even with the deletion guard confirmed: the run itself must fail.
      Result legacy = runGo(job, version, "legacy_callback_method", options,
                            {"--deletion-policy", policy, "--confirm-deletion"});
      EXPECT_EQ(legacy.exit_code, 1) << legacy.all();
      EXPECT_THAT(legacy.err,
                  HasSubstr("the connector called /proto.CallbackHandler/Callback, which this "
                            "protocol does not have"));
      EXPECT_THAT(legacy.err,
                  HasSubstr("it was probably built against an older connector protocol"));
      EXPECT_THAT(legacy.err, HasSubstr("nothing was deleted"));
      EXPECT_THAT(legacy.err, HasSubstr("callback call refused"))  // logged as it happened
          << legacy.all();
      EXPECT_EQ(states(job), allPresent(3, 4)) << "objects were lost";
      EXPECT_EQ(scalar("SELECT outcome || ',' || objects_marked || ',' || objects_deleted FROM "
                       "tributary.sync_runs WHERE sync_job = '" +
                       job + "' ORDER BY run_id DESC LIMIT 1"),
                "failed,0,0");
    }
  }
}

// A connector that lists nothing after a full listing: the run succeeds, deletes nothing, and
// says what it held back and how to confirm.
TEST_F(DoubtfulRunTest, AnEmptyListingAfterAFullOneIsHeldBackUntilConfirmed) {
  ASSERT_EQ(runGo("empty", "v1_6", "", R"({"pages":3,"page_size":4})").exit_code, 0);
  Result empty = runGo("empty", "v1_6", "", R"({"pages":0})");
  ASSERT_EQ(empty.exit_code, 0) << empty.all();
  const auto e = parseLast(empty);
  EXPECT_EQ(e["deletion_guarded"], true);
  EXPECT_EQ(e["deletion_applied"], false);
  EXPECT_EQ(e["objects_guarded"], 12);
  EXPECT_EQ(e["objects_marked"], 0);
  EXPECT_THAT(e["note"].get<std::string>(),
              HasSubstr("12 of the source's 12 live objects (100.0 %), every one of them, "
                        "listing none"));
  EXPECT_EQ(states("empty"), allPresent(3, 4));
  // The text summary says it and how to go on.
  Result text = tributary({"run", "--connector", goJson("empty", "v1_6", ""), "--options",
                           R"({"pages":0})", "--database-url", dsn_});
  ASSERT_EQ(text.exit_code, 0) << text.all();
  EXPECT_THAT(text.out, HasSubstr("0 soft-deleted (deletionPolicy Mark) — not applied: deletion "
                                  "guard: this run would have soft-deleted 12"));
  EXPECT_THAT(text.out, HasSubstr("run again with --confirm-deletion to apply it"));
  EXPECT_EQ(states("empty"), allPresent(3, 4));
  // Confirmed: the source is emptied (soft-deleted).
  Result confirmed = runGo("empty", "v1_6", "", R"({"pages":0})", {"--confirm-deletion"});
  ASSERT_EQ(confirmed.exit_code, 0) << confirmed.all();
  EXPECT_EQ(parseLast(confirmed)["objects_marked"], 12);
  EXPECT_EQ(scalar("SELECT count(*) FROM tributary.object_versions WHERE sync_job = 'empty' AND "
                   "state = 'deleted'"),
            "12");
}

TEST_F(DoubtfulRunTest, SixtyPercentVanishedIsHeldBackThenConfirmed) {
  ASSERT_EQ(runGo("sixty", "v1_8", "", R"({"pages":5,"page_size":2})").exit_code, 0);
  Result held = runGo("sixty", "v1_8", "", R"({"pages":2,"page_size":2})");
  ASSERT_EQ(held.exit_code, 0) << held.all();
  EXPECT_EQ(parseLast(held)["deletion_guarded"], true);
  EXPECT_EQ(parseLast(held)["objects_guarded"], 6);
  EXPECT_EQ(states("sixty"), allPresent(5, 2));
  Result confirmed =
      runGo("sixty", "v1_8", "", R"({"pages":2,"page_size":2})", {"--confirm-deletion"});
  ASSERT_EQ(confirmed.exit_code, 0) << confirmed.all();
  EXPECT_EQ(parseLast(confirmed)["deletion_guarded"], false);
  EXPECT_EQ(parseLast(confirmed)["objects_marked"], 6);
  EXPECT_EQ(states("sixty"),
            "obj-0-0=present obj-0-1=present obj-1-0=present obj-1-1=present obj-2-0=deleted "
            "obj-2-1=deleted obj-3-0=deleted obj-3-1=deleted obj-4-0=deleted obj-4-1=deleted");
  // The guard's threshold from the flag: 60 % allowed at --max-delete-percent 60.
  ASSERT_EQ(runGo("sixty-flag", "v1_8", "", R"({"pages":5,"page_size":2})").exit_code, 0);
  Result allowed = runGo("sixty-flag", "v1_8", "", R"({"pages":2,"page_size":2})",
                         {"--max-delete-percent", "60"});
  ASSERT_EQ(allowed.exit_code, 0) << allowed.all();
  EXPECT_EQ(parseLast(allowed)["objects_marked"], 6);
  EXPECT_EQ(runGo("x", "v1_8", "", "{}", {"--max-delete-percent", "101"}).exit_code, 2);
}

TEST_F(DoubtfulRunTest, SyncJobDeletionGuardSetsTheThreshold) {
  const std::string connector =
      "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: go\nspec:\n"
      "  source: Local\n  uri: " TRIBUTARY_GO_BIN_DIR
      "/connector-go-v1_6\n"
      "  command: ./connector-go-v1_6\n";
  auto job = [&](int pages, const std::string& guard) {
    return manifests("job" + std::to_string(pages) + ".yaml",
                     connector +
                         "---\napiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n"
                         "  name: guarded\nspec:\n  connectorRef: {name: go}\n  options: {pages: " +
                         std::to_string(pages) + ", page_size: 2}\n" + guard);
  };
  ASSERT_EQ(tributary({"run", "-f", job(5, ""), "--database-url", dsn_}).exit_code, 0);
  Result held = tributary({"run", "-f", job(1, "  deletionGuard: {maxDeletePercent: 70}\n"),
                           "--database-url", dsn_, "--json"});
  ASSERT_EQ(held.exit_code, 0) << held.all();
  EXPECT_EQ(parseLast(held)["deletion_guarded"], true) << "80 % is over 70 %";
  Result applied = tributary({"run", "-f", job(2, "  deletionGuard: {maxDeletePercent: 70}\n"),
                              "--database-url", dsn_, "--json"});
  ASSERT_EQ(applied.exit_code, 0) << applied.all();
  EXPECT_EQ(parseLast(applied)["objects_marked"], 6) << "60 % is within 70 %";
  Result bad = tributary(
      {"run", "-f", job(2, "  deletionGuard: {maxDeletePercent: 150}\n"), "--database-url", dsn_});
  EXPECT_EQ(bad.exit_code, 3) << bad.all();
  EXPECT_THAT(bad.err, HasSubstr("spec.deletionGuard.maxDeletePercent: must be between 0 and 100, "
                                 "got 150"));
}

// ---- bad manifests: each with its message, exit 3, nothing run ----

struct ManifestCase {
  std::string name;
  std::string yaml;
  std::string message;
};

void PrintTo(const ManifestCase& c, std::ostream* os) { *os << c.name; }

class BadManifestTest : public CliTest, public ::testing::WithParamInterface<ManifestCase> {};

TEST_P(BadManifestTest, IsRejectedWithItsMessage) {
  const std::string file = manifests("bad.yaml", GetParam().yaml);
  const Result r =
      tributary({"run", "-f", file, "--database-url", "postgresql://nowhere.invalid/x"});
  EXPECT_EQ(r.exit_code, 3) << r.all();
  EXPECT_THAT(r.err, HasSubstr(GetParam().message)) << r.all();
}

const std::string kConn =
    "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: c\nspec:\n"
    "  source: Local\n  uri: /opt/c\n  command: ./c\n---\n";
const std::string kJobHead =
    "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: j\nspec:\n";

INSTANTIATE_TEST_SUITE_P(
    Cases, BadManifestTest,
    ::testing::Values(
        ManifestCase{"unknown_kind",
                     "apiVersion: tributary.dev/v1alpha1\nkind: Synk\nmetadata:\n  name: x\n",
                     "bad.yaml: document 1 (Synk default/x): kind: unknown kind `Synk`"},
        ManifestCase{"missing_connector",
                     kJobHead + "  connectorRef:\n    name: nope\n  options: {}\n",
                     "document 1 (SyncJob default/j): spec.connectorRef.name: no Connector "
                     "`nope` in namespace default"},
        ManifestCase{"bad_deletion_policy",
                     kConn + kJobHead +
                         "  connectorRef: {name: c}\n  options: {}\n  deletionPolicy: Sometimes\n",
                     "document 2 (SyncJob default/j): spec.deletionPolicy: must be one of Keep, "
                     "Mark, Delete, got `Sometimes`"},
        ManifestCase{"options_and_options_from",
                     kConn + kJobHead +
                         "  connectorRef: {name: c}\n  options: {}\n  optionsFrom:\n"
                         "    secretKeyRef: {name: s, key: k}\n",
                     "spec: exactly one of spec.options and spec.optionsFrom must be set, both"},
        ManifestCase{"no_options", kConn + kJobHead + "  connectorRef: {name: c}\n",
                     "exactly one of spec.options and spec.optionsFrom must be set (use "
                     "`options: {}` for none)"},
        ManifestCase{"options_not_a_mapping",
                     kConn + kJobHead + "  connectorRef: {name: c}\n  options: '{\"a\":1}'\n",
                     "spec.options: must be a mapping (a JSON object)"},
        ManifestCase{"missing_command",
                     "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: c\n"
                     "spec:\n  source: Local\n  uri: /opt/c\n",
                     "document 1 (Connector default/c): spec.command: required field is missing"},
        ManifestCase{"bad_source",
                     "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: c\n"
                     "spec:\n  source: FTP\n  uri: /opt/c\n  command: ./c\n",
                     "spec.source: must be one of VCS, HTTP, Local, got `FTP`"},
        ManifestCase{"snake_case_field",
                     "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: c\n"
                     "spec:\n  source: Local\n  uri: /opt/c\n  command: ./c\n"
                     "  install_command: make\n",
                     "spec.install_command: unknown field (manifests use camelCase: "
                     "installCommand)"},
        ManifestCase{"ref_on_local",
                     "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: c\n"
                     "spec:\n  source: Local\n  uri: /opt/c\n  ref: main\n  command: ./c\n",
                     "(Connector default/c): spec: "},
        ManifestCase{"bad_name",
                     "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n"
                     "  name: My_Conn\nspec:\n  source: Local\n  uri: /opt/c\n  command: ./c\n",
                     "metadata.name: `My_Conn` is not a valid name"},
        ManifestCase{"wrong_api_version",
                     "apiVersion: tributary.dev/v1\nkind: Connector\nmetadata:\n  name: c\n"
                     "spec:\n  source: Local\n  uri: /opt/c\n  command: ./c\n",
                     "apiVersion: expected tributary.dev/v1alpha1 for kind Connector, got "
                     "`tributary.dev/v1`"},
        ManifestCase{"invalid_yaml", "kind: Connector\nspec: [unclosed\n",
                     "bad.yaml:3:1: invalid YAML"},
        ManifestCase{"syncrun",
                     "apiVersion: tributary.dev/v1alpha1\nkind: SyncRun\nmetadata:\n"
                     "  name: r\n",
                     "SyncRun objects are created by the controller"},
        ManifestCase{"negative_deadline",
                     kConn + kJobHead +
                         "  connectorRef: {name: c}\n  options: {}\n  activeDeadlineSeconds: 0\n",
                     "spec.activeDeadlineSeconds: must be at least 1, got 0"}),
    [](const ::testing::TestParamInfo<ManifestCase>& param_info) { return param_info.param.name; });

TEST_F(CliTest, SeveralSyncJobsNeedSyncjobFlag) {
  const std::string file =
      manifests("two.yaml", kConn + kJobHead + "  connectorRef: {name: c}\n  options: {}\n---\n" +
                                "apiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n"
                                "  name: k\nspec:\n  connectorRef: {name: c}\n  options: {}\n");
  const Result r = tributary({"run", "-f", file});
  EXPECT_EQ(r.exit_code, 3) << r.all();
  EXPECT_THAT(r.err, HasSubstr("choose one with --syncjob (default/j, default/k)"));
  const Result unknown = tributary({"run", "-f", file, "--syncjob", "zzz"});
  EXPECT_EQ(unknown.exit_code, 3) << unknown.all();
  EXPECT_THAT(unknown.err, HasSubstr("no SyncJob `zzz` in the given files"));
}

TEST_F(CliTest, UsageErrors) {
  EXPECT_EQ(tributary({"run"}).exit_code, 2);
  EXPECT_THAT(tributary({"run", "--bogus"}).err, HasSubstr("unknown option `--bogus`"));
  const Result r = tributary({"run", "--connector", "x.json", "--timeout", "soon"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--timeout takes a positive number of seconds, got `soon`"));
  EXPECT_EQ(tributary({"objects"}).exit_code, 2);
  EXPECT_EQ(tributary({"frobnicate"}).exit_code, 2);
}

// ---- the database ----

TEST_F(CliTest, UnreachableDatabaseFailsClearlyInBoundedTime) {
  const Result r = tributary({"run", "--connector", c1Json("unreach"), "--database-url",
                              "postgresql://postgres@127.0.0.1:1/x", "--database-timeout", "2"});
  EXPECT_EQ(r.exit_code, 4) << r.all();
  EXPECT_THAT(r.err, HasSubstr("cannot use the database postgresql://postgres@127.0.0.1:1/x"));
  EXPECT_LT(r.seconds, 15);
  const Result objects =
      tributary({"objects", "x", "--database-url", "postgresql://postgres@127.0.0.1:1/x"});
  EXPECT_EQ(objects.exit_code, 4) << objects.all();
  EXPECT_THAT(objects.err, HasSubstr("cannot connect to postgresql://postgres@127.0.0.1:1/x"));
}

TEST_F(CliTest, PasswordsAreNotPrinted) {
  const Result r = tributary({"run", "--connector", c1Json("pw"), "--database-url",
                              "postgresql://postgres:hunter2@127.0.0.1:1/x", "--database-timeout",
                              "1", "--json"});
  EXPECT_EQ(r.exit_code, 4) << r.all();
  EXPECT_THAT(r.all(), Not(HasSubstr("hunter2")));
  EXPECT_THAT(r.err, HasSubstr("postgres:***@127.0.0.1:1"));
}

TEST_F(CliTest, PrivateDatabaseIsStartedReusedAndStopped) {
  // No --database-url and no DATABASE_URL: the CLI's own PostgreSQL under XDG_STATE_HOME.
  const std::string c1 = c1Json("local");
  const Result first =
      tributary({"run", "--connector", c1, "--options", R"({"pages":1})", "--json"});
  ASSERT_EQ(first.exit_code, 0) << first.all();
  const auto s1 = parseLast(first);
  EXPECT_THAT(s1["database"].get<std::string>(),
              HasSubstr("?host=" + dir_.path() + "/state/tributary/postgres"));
  const Result status1 = tributary({"db", "status", "--json"});
  ASSERT_EQ(status1.exit_code, 0) << status1.all();
  const auto st1 = parseLast(status1);
  EXPECT_EQ(st1["running"], true);

  const Result second =
      tributary({"run", "--connector", c1, "--options", R"({"pages":1})", "--json"});
  ASSERT_EQ(second.exit_code, 0) << second.all();
  EXPECT_EQ(parseLast(second)["objects_unchanged"], 10);  // Same server, same data.
  EXPECT_EQ(parseLast(tributary({"db", "status", "--json"}))["pid"], st1["pid"]);

  const Result url = tributary({"db", "url"});
  ASSERT_EQ(url.exit_code, 0) << url.all();
  EXPECT_EQ(lastLine(url.out), s1["database"].get<std::string>());
  PGconn* conn = PQconnectdb(lastLine(url.out).c_str());
  EXPECT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  PQfinish(conn);
  const Result listed = tributary({"objects", "local"});
  EXPECT_EQ(listed.exit_code, 0) << listed.all();
  EXPECT_THAT(listed.out, HasSubstr("10 live objects of default/local"));

  const Result stop = tributary({"db", "stop"});
  ASSERT_EQ(stop.exit_code, 0) << stop.all();
  EXPECT_EQ(parseLast(tributary({"db", "status", "--json"}))["running"], false);
  EXPECT_EQ(tributary({"db", "stop"}).exit_code, 0);  // Idempotent.
}

TEST_F(CliTest, ConcurrentFirstStartsShareOneServer) {
  const std::string c1 = c1Json("race");
  std::vector<std::thread> threads;
  std::vector<Result> results(3);
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      results[static_cast<std::size_t>(i)] =
          tributary({"run", "--connector", c1, "--options", R"({"pages":1})", "--name",
                     "race-" + std::to_string(i), "--json"});
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  for (const auto& r : results) {
    EXPECT_EQ(r.exit_code, 0) << r.all();
  }
  EXPECT_EQ(tributary({"db", "stop"}).exit_code, 0);
}

// ---- connector import ----

TEST_F(CliTest, ImportPrintsAConnectorManifestThatRuns) {
  const std::string c1 = dir_.write("s3.json", nlohmann::json{{"name", "Test_Conn"},
                                                              {"description", "a test"},
                                                              {"source", "Local"},
                                                              {"uri", TRIBUTARY_CPP_CONNECTOR},
                                                              {"install_command", ""},
                                                              {"update_command", ""},
                                                              {"command", "./test_connector_cpp"}}
                                                   .dump());
  const Result r = tributary({"connector", "import", c1});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_THAT(r.out, HasSubstr("apiVersion: tributary.dev/v1alpha1\nkind: Connector\n"));
  EXPECT_THAT(r.out, HasSubstr("name: test-conn"));
  EXPECT_THAT(r.out, HasSubstr("source: Local"));
  EXPECT_THAT(r.out, HasSubstr(R"(command: "./test_connector_cpp")"));
  EXPECT_THAT(r.out, Not(HasSubstr("installCommand")));
  const std::string file =
      dir_.write("imported.yaml", r.out +
                                      "---\napiVersion: tributary.dev/v1alpha1\nkind: SyncJob\n"
                                      "metadata:\n  name: imported\nspec:\n  connectorRef:\n"
                                      "    name: test-conn\n  options: {pages: 1}\n");
  const Result ran = tributary({"run", "-f", file, "--database-url", dsn_, "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.all();
  EXPECT_EQ(parseLast(ran)["objects_inserted"], 10);

  const Result bad = tributary({"connector", "import", dir_.write("bad.json", R"({"name":"x"})")});
  EXPECT_EQ(bad.exit_code, 3) << bad.all();
  EXPECT_THAT(bad.err, HasSubstr("missing required field"));
}

// ---- connector test: the conformance kit ----

nlohmann::json checkResult(const nlohmann::json& report, const std::string& name) {
  for (const auto& c : report["checks"]) {
    if (c["name"] == name) {
      return c;
    }
  }
  return nullptr;
}

TEST_F(CliTest, ConformancePassesForTheCppExample) {
  const Result r = tributary({"connector", "test", "--command", TRIBUTARY_HELLO_CPP});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_THAT(r.out, HasSubstr("9 of 9 checks passed"));
  EXPECT_THAT(r.out, HasSubstr("PASS  failing_upsert"));
}

TEST_F(CliTest, ConformancePassesForTheGoExample) {
  const Result r = tributary({"connector", "test", "--command", TRIBUTARY_GO_BIN_DIR "/hello-go",
                              "--options", R"({"names":["Ada"]})", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(parseLast(r)["ok"], true) << r.all();
}

TEST_F(CliTest, ConformancePassesForTheGoExampleWithAutoMtls) {
  const Result r = tributary(
      {"connector", "test", "--automtls", "--command", TRIBUTARY_GO_BIN_DIR "/hello-go", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_THAT(checkResult(parseLast(r), "handshake")["detail"].get<std::string>(),
              HasSubstr("AutoMTLS certificate"));
}

TEST_F(CliTest, ConformancePassesForThePythonExample) {
  const Result r =
      tributary({"connector", "test", "--command",
                 TRIBUTARY_PYTHON " " TRIBUTARY_SOURCE_DIR "/sdk/python/examples/hello.py",
                 "--options", R"({"name":"Py","pages":2})", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(parseLast(r)["ok"], true) << r.all();
}

TEST_F(CliTest, ConformanceOfAnInstalledC1Connector) {
  const Result r = tributary({"connector", "test", c1Json("installed"), "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_THAT(parseLast(r)["connector"].get<std::string>(), HasSubstr("installed (Local"));
}

TEST_F(CliTest, ConformanceOfAManifestUsesItsSyncJobOptions) {
  const std::string file = manifests(
      "conn.yaml", connectorManifest("conn") +
                       "---\napiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n"
                       "  name: job\nspec:\n  connectorRef: {name: conn}\n"
                       "  options: {pages: 1, page_size: 7}\n");
  const Result r = tributary({"connector", "test", file, "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(checkResult(parseLast(r), "pages")["detail"], "1 page(s), 7 object(s)") << r.all();
}

TEST_F(CliTest, ConformanceOfADirectoryWithConnectorJson) {
  const TempDir dir;
  std::filesystem::copy_file(TRIBUTARY_CPP_CONNECTOR, dir.path() + "/connector");
  dir.write("connector.json",
            R"({"name":"here","source":"Local","uri":"/unused",)"
            R"("command":"./connector","env":{"TEST_CONNECTOR_MODE":"sync_error"}})");
  const Result r = tributary({"connector", "test", dir.path(), "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_EQ(checkResult(parseLast(r), "sync")["result"], "fail") << r.all();
  EXPECT_EQ(tributary({"connector", "test", dir.path() + "/nothing-here"}).exit_code, 3);
}

struct ConformanceCase {
  std::string mode;
  std::string command;
  std::vector<std::string> flags;
  std::string failing_check;
  std::string detail;
};

// The C++ and Python SDKs point fd 1 at stderr after the handshake, so only a Go connector can
// still flood stdout.
const std::string kCppConnector = TRIBUTARY_CPP_CONNECTOR;
const std::string kGoConnector = TRIBUTARY_GO_BIN_DIR "/connector-go-v1_8";
const std::string kPythonConnector =
    TRIBUTARY_PYTHON " " TRIBUTARY_SOURCE_DIR "/tests/connectors/python/test_connector.py";

std::string caseName(const ConformanceCase& c) {
  return c.mode + (c.command == kGoConnector       ? "_go"
                   : c.command == kPythonConnector ? "_python"
                                                   : "_cpp");
}

void PrintTo(const ConformanceCase& c, std::ostream* os) { *os << caseName(c); }

class ConformanceFailureTest : public CliTest,
                               public ::testing::WithParamInterface<ConformanceCase> {};

TEST_P(ConformanceFailureTest, NamesTheFailingCheck) {
  const ConformanceCase& c = GetParam();
  std::vector<std::string> args = {"connector", "test",  "--command",
                                   c.command,   "--env", "TEST_CONNECTOR_MODE=" + c.mode,
                                   "--json"};
  args.insert(args.end(), c.flags.begin(), c.flags.end());
  const Result r = tributary(args);
  EXPECT_EQ(r.exit_code, 1) << r.all();
  const auto report = parseLast(r);
  EXPECT_EQ(report["ok"], false);
  const auto check = checkResult(report, c.failing_check);
  EXPECT_EQ(check["result"], "fail") << report.dump(2);
  EXPECT_THAT(check["detail"].get<std::string>(), HasSubstr(c.detail)) << report.dump(2);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, ConformanceFailureTest,
    ::testing::Values(
        ConformanceCase{
            "exit_before_handshake", kCppConnector, {}, "handshake", "before the handshake"},
        ConformanceCase{
            "text_before_handshake", kCppConnector, {}, "handshake", "unrecognized handshake line"},
        ConformanceCase{"never_handshake",
                        kCppConnector,
                        {"--start-timeout", "2"},
                        "handshake",
                        "printed no handshake within 2000 ms"},
        ConformanceCase{
            "crash_mid_sync", kCppConnector, {}, "sync", "exited with status 2 during Sync"},
        ConformanceCase{
            "hang_in_sync", kCppConnector, {"--timeout", "2"}, "sync", "did not finish within"},
        ConformanceCase{"sync_error", kCppConnector, {}, "sync", "upstream said no"},
        ConformanceCase{
            "never_dial", kCppConnector, {}, "broker_callback", "without calling the callback"},
        ConformanceCase{
            "flood_output", kGoConnector, {}, "stdout_silence", "written to stdout after"},
        ConformanceCase{"ignore_upsert_errors",
                        kCppConnector,
                        {},
                        "failing_upsert",
                        "reported success although"},
        ConformanceCase{"invalid_utf8", kCppConnector, {}, "sync", "upsert failed"},
        ConformanceCase{"ignore_upsert_errors",
                        kGoConnector,
                        {},
                        "failing_upsert",
                        "reported success although"},
        ConformanceCase{"never_dial", kGoConnector, {}, "broker_callback", "without calling"},
        ConformanceCase{"legacy_callback_method",
                        kGoConnector,
                        {},
                        "broker_callback",
                        "the first: /proto.CallbackHandler/Callback: the connector called "
                        "/proto.CallbackHandler/Callback, which this protocol does not have"},
        ConformanceCase{"legacy_callback_method",
                        kPythonConnector,
                        {},
                        "broker_callback",
                        "older connector protocol"},
        ConformanceCase{"unknown_service",
                        kGoConnector,
                        {},
                        "broker_callback",
                        "/proto.Callbacks/Upsert, a service the callback server does not serve"},
        ConformanceCase{"crash_mid_sync", kPythonConnector, {}, "sync", "during Sync"},
        ConformanceCase{"ignore_upsert_errors",
                        kPythonConnector,
                        {},
                        "failing_upsert",
                        "reported success although"}),
    [](const ::testing::TestParamInfo<ConformanceCase>& param_info) {
      return caseName(param_info.param);
    });

TEST_F(CliTest, ConformanceTextReportNamesEachCheck) {
  const Result r = tributary({"connector", "test", "--command", TRIBUTARY_CPP_CONNECTOR, "--env",
                              "TEST_CONNECTOR_MODE=ignore_upsert_errors"});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_THAT(r.out, HasSubstr("PASS  handshake"));
  EXPECT_THAT(r.out, HasSubstr("FAIL  failing_upsert"));
  EXPECT_THAT(r.out, HasSubstr("8 of 9 checks passed — the connector does not conform"));
}

}  // namespace
}  // namespace tributary::cli_test
