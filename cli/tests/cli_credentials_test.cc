// End to end: how a connector gets its credentials through `tributary run` — the real binary,
// the harness's PostgreSQL, and a real Python connector (cli/tests/env_connector.py) that stores
// one object per environment variable it was started with (the SHA-256 of the value, never the
// value) and describes the files its variables point at.

#include "cli_test_support.h"
#include "libpq-fe.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace tributary::cli_test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kCli = TRIBUTARY_CLI;

std::string sha256(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr);
  std::string out;
  char hex[3];
  for (unsigned int i = 0; i < size; ++i) {
    std::snprintf(hex, sizeof(hex), "%02x", digest[i]);
    out += hex;
  }
  return out;
}

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos;
       pos = text.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

std::string readAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

class CredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dsn_ = databaseForTest("cred_");
    ASSERT_FALSE(dsn_.empty());
    // The connector: a Local directory with the script and a launcher that uses the SDK's venv;
    // its installCommand appends a line to install.log, so every (re)install is counted.
    connector_dir_ = dir_.path() + "/connector";
    std::filesystem::create_directories(connector_dir_);
    std::filesystem::copy_file(std::string(TRIBUTARY_SOURCE_DIR) + "/cli/tests/env_connector.py",
                               connector_dir_ + "/env_connector.py");
    const std::string launcher = connector_dir_ + "/run.sh";
    std::ofstream(launcher) << "#!/bin/sh\nexec " TRIBUTARY_PYTHON " ./env_connector.py\n";
    ::chmod(launcher.c_str(), 0755);
    install_log_ = dir_.path() + "/install.log";
  }

  Result tributary(const std::vector<std::string>& args,
                   const std::map<std::string, std::string>& extra = {}) const {
    std::map<std::string, std::string> e = {{"XDG_STATE_HOME", dir_.path() + "/state"},
                                            {"XDG_CACHE_HOME", dir_.path() + "/cache"},
                                            {"XDG_CONFIG_HOME", dir_.path() + "/config"},
                                            {"XDG_RUNTIME_DIR", ""},
                                            {"DATABASE_URL", ""}};
    for (const auto& [k, v] : extra) {
      e[k] = v;
    }
    return run(kCli, args, e);
  }

  // A Connector (spec lines after `command`), a SyncJob `creds` and any further documents.
  std::string manifests(const std::string& spec_tail, const std::string& more = "",
                        const std::string& options = "{}") const {
    return dir_.write(
        "manifests.yaml",
        "apiVersion: tributary.dev/v1alpha1\nkind: Connector\nmetadata:\n  name: env\nspec:\n"
        "  source: Local\n  uri: " +
            connector_dir_ + "\n  installCommand: echo installed >> " + install_log_ +
            "\n  command: ./run.sh\n" + spec_tail +
            "---\napiVersion: tributary.dev/v1alpha1\nkind: SyncJob\nmetadata:\n  name: creds\n"
            "spec:\n  connectorRef: {name: env}\n  deletionPolicy: Delete\n  options: " +
            options + "\n" + more);
  }

  Result sync(const std::string& file, std::vector<std::string> extra_args = {},
              const std::map<std::string, std::string>& env = {}) const {
    std::vector<std::string> args = {"run", "-f", file, "--database-url", dsn_, "--json"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    return tributary(args, env);
  }

  // The metadata of the object `remote_id` of the last run (null when absent).
  nlohmann::json object(const std::string& remote_id) const {
    PGconn* conn = PQconnectdb(dsn_.c_str());
    EXPECT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
    const char* params[] = {remote_id.c_str()};
    PGresult* r = PQexecParams(conn,
                               "SELECT metadata_json::text FROM tributary.live_objects "
                               "WHERE sync_job = 'creds' AND remote_id = $1",
                               1, nullptr, params, nullptr, nullptr, 0);
    nlohmann::json out;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
      out = nlohmann::json::parse(PQgetvalue(r, 0, 0));
    } else if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      ADD_FAILURE() << PQerrorMessage(conn);
    }
    PQclear(r);
    PQfinish(conn);
    return out;
  }

  // The SHA-256 the connector saw for variable `name`, or "" when it did not have it.
  std::string seen(const std::string& name) const {
    const nlohmann::json meta = object("env/" + name);
    return meta.is_object() ? meta.value("sha256", "") : std::string();
  }

  TempDir dir_;
  std::string dsn_;
  std::string connector_dir_;
  std::string install_log_;
};

const std::string kAwsSecret =
    "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: aws\nstringData:\n"
    "  access-key-id: AKIA-VALUE-ONE\n  secret-access-key: wJalr-SECRET-VALUE-ONE\n";

TEST_F(CredentialsTest, ValueValueFromEnvFromAndFileReachTheConnectorOnly) {
  // Three places: a Secret manifest (aws), --secret-dir (extra), a variable (gcp).
  const std::string secret_dir = dir_.path() + "/secrets";
  dir_.write("secrets/extra/ENDPOINT", "https://s3.example.test:9000");
  dir_.write("secrets/extra/REGION", "eu-central-9");
  const std::string key_json = R"({"type":"service_account","private_key":"PRIVATE-KEY-VALUE"})";
  const std::string file = manifests(
      "  env:\n"
      "    - name: PLAIN_SETTING\n      value: plain-value\n"
      "    - name: AWS_ACCESS_KEY_ID\n      valueFrom:\n        secretKeyRef: {name: aws, key: "
      "access-key-id}\n"
      "    - name: AWS_SECRET_ACCESS_KEY\n      valueFrom:\n        secretKeyRef: {name: aws, "
      "key: secret-access-key}\n"
      "    - name: OPTIONAL_MISSING\n      valueFrom:\n        secretKeyRef: {name: nothere, key: "
      "k, optional: true}\n"
      "  envFrom:\n    - secretRef: {name: extra}\n      prefix: EXTRA_\n"
      "  files:\n    - secretRef: {name: gcp}\n      items:\n        - key: key.json\n"
      "          path: gcp/key.json\n          env: GOOGLE_APPLICATION_CREDENTIALS\n",
      kAwsSecret, R"({"files": ["GOOGLE_APPLICATION_CREDENTIALS"]})");
  const Result r =
      sync(file, {"--secret-dir", secret_dir}, {{"TRIBUTARY_SECRET_GCP_KEY_JSON", key_json}});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(seen("PLAIN_SETTING"), sha256("plain-value"));
  EXPECT_EQ(seen("AWS_ACCESS_KEY_ID"), sha256("AKIA-VALUE-ONE"));
  EXPECT_EQ(seen("AWS_SECRET_ACCESS_KEY"), sha256("wJalr-SECRET-VALUE-ONE"));
  EXPECT_EQ(seen("EXTRA_ENDPOINT"), sha256("https://s3.example.test:9000"));
  EXPECT_EQ(seen("EXTRA_REGION"), sha256("eu-central-9"));
  EXPECT_EQ(seen("OPTIONAL_MISSING"), "");
  // The CLI's own secret variables are not passed on.
  EXPECT_EQ(seen("TRIBUTARY_SECRET_GCP_KEY_JSON"), "");

  const nlohmann::json key = object("file/GOOGLE_APPLICATION_CREDENTIALS");
  ASSERT_TRUE(key.is_object()) << r.all();
  EXPECT_EQ(key["sha256"], sha256(key_json));
  EXPECT_EQ(key["mode"], "0600");
  EXPECT_EQ(key["dir_mode"], "0700");
  const std::filesystem::path path = key["path"].get<std::string>();
  EXPECT_EQ(path.filename(), "key.json");
  EXPECT_EQ(path.parent_path().filename(), "gcp");
  // Removed after the run, with the run's private directory.
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path.parent_path().parent_path()));

  // No value from a Secret anywhere in the CLI's output (stdout and the stderr log lines).
  for (const std::string& value : {std::string("AKIA-VALUE-ONE"), std::string("SECRET-VALUE-ONE"),
                                   std::string("PRIVATE-KEY-VALUE"), std::string("eu-central-9"),
                                   std::string("s3.example.test")}) {
    EXPECT_THAT(r.all(), Not(HasSubstr(value))) << value;
  }
}

TEST_F(CredentialsTest, EnvFileAndEnvFlagOverrideTheManifestInOrder) {
  const std::string file = manifests(
      "  env:\n    - {name: A, value: manifest}\n    - {name: B, value: manifest}\n"
      "    - {name: C, value: manifest}\n    - {name: D, value: manifest}\n"
      "  envFrom:\n    - secretRef: {name: base}\n",
      "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: base\nstringData:\n"
      "  A: envfrom\n  E: envfrom\n");
  const std::string env_file = dir_.write(
      "vars.env", "# lines like docker's --env-file\n\nB=file\nC=file\n  F=file=with=equals\n");
  const Result r = sync(file, {"--env-file", env_file, "--env", "C=flag", "--env", "COPIED"},
                        {{"COPIED", "copied-from-cli-env"}});
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(seen("A"), sha256("manifest"));  // spec.env wins over envFrom.
  EXPECT_EQ(seen("B"), sha256("file"));      // --env-file over spec.env.
  EXPECT_EQ(seen("C"), sha256("flag"));      // --env over --env-file.
  EXPECT_EQ(seen("D"), sha256("manifest"));
  EXPECT_EQ(seen("E"), sha256("envfrom"));
  EXPECT_EQ(seen("F"), sha256("file=with=equals"));
  EXPECT_EQ(seen("COPIED"), sha256("copied-from-cli-env"));  // `--env NAME` copies it.

  const Result bad = sync(file, {"--env", "1X=y"});
  EXPECT_EQ(bad.exit_code, 2) << bad.all();
  EXPECT_THAT(bad.err, HasSubstr("`1X` is not an environment variable name"));
  const Result bad_file = sync(file, {"--env-file", dir_.write("bad.env", "OK=1\nnot ok=2\n")});
  EXPECT_EQ(bad_file.exit_code, 3) << bad_file.all();
  EXPECT_THAT(bad_file.err, HasSubstr("bad.env:2: `not ok` is not an environment variable name"));
}

TEST_F(CredentialsTest, MissingSecretFailsNamingTheFieldAndThePlaces) {
  const std::string file = manifests(
      "  env:\n    - name: AWS_SECRET_ACCESS_KEY\n      valueFrom:\n        secretKeyRef: {name: "
      "aws, key: secret-access-key}\n");
  const Result r = sync(file, {"--secret-dir", dir_.path() + "/secrets"});
  EXPECT_EQ(r.exit_code, 3) << r.all();
  EXPECT_THAT(r.err, HasSubstr("manifests.yaml: document 1 (Connector default/env): "
                               "spec.env[0].valueFrom.secretKeyRef: secret `aws` key "
                               "`secret-access-key` not found"));
  EXPECT_THAT(r.err, HasSubstr("a v1 Secret default/aws in the -f files"));
  EXPECT_THAT(r.err, HasSubstr(dir_.path() + "/secrets/aws/secret-access-key (--secret-dir)"));
  EXPECT_THAT(r.err, HasSubstr("TRIBUTARY_SECRET_AWS_SECRET_ACCESS_KEY"));
  EXPECT_FALSE(std::filesystem::exists(install_log_)) << "nothing installed or run";

  const std::string files = manifests(
      "  files:\n    - secretRef: {name: gcp}\n      items: [{key: key.json, env: KEY_FILE}]\n");
  const Result f = sync(files);
  EXPECT_EQ(f.exit_code, 3) << f.all();
  EXPECT_THAT(f.err,
              HasSubstr("spec.files[0].items[0].key: secret `gcp` key `key.json` not found"));
}

TEST_F(CredentialsTest, ChangingACredentialDoesNotReinstall) {
  auto spec = [&](const std::string& plain, const std::string& key_value) {
    return manifests("  env:\n    - {name: PLAIN_SETTING, value: " + plain +
                         "}\n    - name: AWS_ACCESS_KEY_ID\n      valueFrom:\n        "
                         "secretKeyRef: {name: aws, key: access-key-id}\n",
                     "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: aws\nstringData:\n"
                     "  access-key-id: " +
                         key_value + "\n");
  };
  const Result first = sync(spec("one", "KEY-VALUE-ONE"));
  ASSERT_EQ(first.exit_code, 0) << first.all();
  const std::string version = nlohmann::json::parse(first.out)["connector_version"];
  EXPECT_EQ(readAll(install_log_), "installed\n");
  EXPECT_EQ(seen("AWS_ACCESS_KEY_ID"), sha256("KEY-VALUE-ONE"));

  // Another credential, another --env: the same installed version, no install command run.
  const Result second = sync(spec("one", "KEY-VALUE-TWO"), {"--env", "EXTRA=1"});
  ASSERT_EQ(second.exit_code, 0) << second.all();
  EXPECT_EQ(nlohmann::json::parse(second.out)["connector_version"], version);
  EXPECT_EQ(readAll(install_log_), "installed\n");
  EXPECT_EQ(seen("AWS_ACCESS_KEY_ID"), sha256("KEY-VALUE-TWO"));

  // A plain value is part of the install (install commands see it): it reinstalls.
  const Result third = sync(spec("two", "KEY-VALUE-TWO"));
  ASSERT_EQ(third.exit_code, 0) << third.all();
  EXPECT_NE(nlohmann::json::parse(third.out)["connector_version"], version);
  EXPECT_EQ(readAll(install_log_), "installed\ninstalled\n");
  for (const Result* r : {&first, &second, &third}) {
    EXPECT_THAT(r->all(), Not(HasSubstr("KEY-VALUE-")));
  }
}

TEST_F(CredentialsTest, DroppedCredentialLikeVariablesAreNamedOnceWithoutValues) {
  const std::string file = manifests("");
  const std::map<std::string, std::string> host = {{"AWS_SECRET_ACCESS_KEY", "HOST-AWS-VALUE"},
                                                   {"MY_SERVICE_TOKEN", "HOST-TOKEN-VALUE"},
                                                   {"HARMLESS_SETTING", "plain"}};
  const Result r = sync(file, {}, host);
  ASSERT_EQ(r.exit_code, 0) << r.all();
  EXPECT_EQ(seen("AWS_SECRET_ACCESS_KEY"), "");
  EXPECT_EQ(seen("MY_SERVICE_TOKEN"), "");
  EXPECT_EQ(count(r.err, "that look like credentials to connectors"), 1U) << r.err;
  std::string line;
  std::istringstream lines(r.err);
  while (std::getline(lines, line) && line.find("look like credentials") == std::string::npos) {
  }
  const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
  ASSERT_TRUE(record.is_object()) << line;
  EXPECT_EQ(record["level"], "info") << line;
  EXPECT_THAT(record["variables"].dump(), HasSubstr("\"AWS_SECRET_ACCESS_KEY\""));
  EXPECT_THAT(record["variables"].dump(), HasSubstr("\"MY_SERVICE_TOKEN\""));
  EXPECT_THAT(record["variables"].dump(), Not(HasSubstr("HARMLESS_SETTING")));
  EXPECT_THAT(line, HasSubstr("--env NAME"));
  EXPECT_THAT(r.all(), Not(HasSubstr("HOST-AWS-VALUE")));
  EXPECT_THAT(r.all(), Not(HasSubstr("HOST-TOKEN-VALUE")));

  // Passed explicitly (`--env NAME` copies it): the connector has it, and it is not named.
  const Result passed = sync(file, {"--env", "AWS_SECRET_ACCESS_KEY"}, host);
  ASSERT_EQ(passed.exit_code, 0) << passed.all();
  EXPECT_EQ(seen("AWS_SECRET_ACCESS_KEY"), sha256("HOST-AWS-VALUE"));
  EXPECT_THAT(passed.err, Not(HasSubstr("\"AWS_SECRET_ACCESS_KEY\"")));
  EXPECT_THAT(passed.all(), Not(HasSubstr("HOST-AWS-VALUE")));
}

}  // namespace
}  // namespace tributary::cli_test
