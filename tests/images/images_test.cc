// The images, built by the test with the same Dockerfile a user builds (docker/build.sh with the
// binaries of this build tree), on a Debian base made without a registry (debootstrap), by
// Debian's dockerd (scripts/docker-daemon.sh). Then each image is inspected and run.

#include "tributary/testing/spawn.h"
#include "tributary/testing/temp_dir.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace tributary::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

const char* const kSocket = "unix:///run/tributary-docker.sock";

harness::CommandResult run(const std::vector<std::string>& argv,
                           std::chrono::minutes timeout = std::chrono::minutes(5)) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string_view(*e).rfind("DOCKER_HOST=", 0) != 0) {
      env.emplace_back(*e);
    }
  }
  env.push_back(std::string("DOCKER_HOST=") + kSocket);
  static int n = 0;
  return harness::runCommand(
      argv, env, TRIBUTARY_SOURCE_DIR,
      "/tmp/tributary-images-" + std::to_string(::getpid()) + "-" + std::to_string(n++), "",
      timeout);
}

harness::CommandResult docker(std::vector<std::string> args) {
  args.insert(args.begin(), "/usr/bin/docker");
  return run(args);
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
    s.pop_back();
  }
  return s;
}

class Images : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string root = TRIBUTARY_SOURCE_DIR;
    // A daemon this test starts, it stops (the host is left as it was found).
    started_daemon_ = !docker({"version"}).ok();
    auto started = run({"/bin/bash", root + "/scripts/docker-daemon.sh", "start"});
    ASSERT_TRUE(started.ok()) << started.error << "\n" << started.output;
    auto base = run({"/bin/bash", root + "/scripts/docker-daemon.sh", "base-image"},
                    std::chrono::minutes(15));
    ASSERT_TRUE(base.ok()) << base.error << "\n" << base.output;
    base_ = trimmed(base.output.substr(base.output.find_last_of('\n', base.output.size() - 2) + 1));
    // Kept in the build tree: the one-node cluster test (tests/cluster) imports these tarballs.
    std::error_code ec;
    fs::remove_all(out_, ec);
    fs::create_directories(out_);
    built_ = run({"/bin/bash", root + "/docker/build.sh", "--prebuilt", TRIBUTARY_BUILD_DIR,
                  "--base", base_, "--tag", "test", "--out", out_.string()},
                 std::chrono::minutes(40));
  }
  static void TearDownTestSuite() {
    if (started_daemon_) {
      static_cast<void>(run(
          {"/bin/bash", std::string(TRIBUTARY_SOURCE_DIR) + "/scripts/docker-daemon.sh", "stop"}));
    }
  }

  // One test process builds once and checks everything (each ctest test is its own process).
  void checkEveryImageBuildsWithinItsSizeBudget();
  void checkNonRootLabelledAndDescribedByAnSbom();
  void checkBinariesRunWithoutAShellAndTheAgentHasItsToolchains();
  void checkQuickstartPostgresAndRedisStartWithTheirPasswordFiles();

  static inline bool started_daemon_ = false;
  static inline std::string base_;
  static inline const fs::path out_ = TRIBUTARY_IMAGES_DIR;
  static inline harness::CommandResult built_;
};

void Images::checkEveryImageBuildsWithinItsSizeBudget() {
  EXPECT_TRUE(built_.ok()) << built_.error << "\n" << built_.output;
  for (const char* image :
       {"tributary-controller", "tributary-agent", "tributary-agent-slim", "tributary",
        "tributary-quickstart-postgres", "tributary-quickstart-redis"}) {
    EXPECT_THAT(built_.output, HasSubstr(std::string(image) + ":test")) << image;
    EXPECT_TRUE(fs::exists(out_ / (std::string(image) + ".tar"))) << image;
  }
  EXPECT_THAT(built_.output, ::testing::Not(HasSubstr("OVER BUDGET")));
  std::cout << built_.output;  // the sizes, for the record
}

void Images::checkNonRootLabelledAndDescribedByAnSbom() {
  for (const char* image :
       {"tributary-controller", "tributary-agent", "tributary-agent-slim", "tributary",
        "tributary-quickstart-postgres", "tributary-quickstart-redis"}) {
    const auto inspected = docker({"image", "inspect", std::string(image) + ":test"});
    ASSERT_TRUE(inspected.ok()) << inspected.output;
    const Json config = Json::parse(inspected.output)[0]["Config"];
    EXPECT_EQ(config["User"], "65532:65532") << image;
    const Json& labels = config["Labels"];
    for (const char* label :
         {"org.opencontainers.image.title", "org.opencontainers.image.version",
          "org.opencontainers.image.revision", "org.opencontainers.image.created",
          "org.opencontainers.image.source", "org.opencontainers.image.licenses"}) {
      EXPECT_TRUE(labels.contains(label)) << image << " " << label;
    }
    EXPECT_EQ(labels["org.opencontainers.image.title"], image);
    EXPECT_EQ(labels["org.opencontainers.image.base.name"], base_);
    const Json sbom = Json::parse(readFile(out_ / (std::string(image) + ".spdx.json")));
    EXPECT_EQ(sbom["spdxVersion"], "SPDX-2.3");
    std::map<std::string, std::string> packages;
    for (const Json& p : sbom["packages"]) {
      packages[p["name"]] = p["versionInfo"];
    }
    EXPECT_TRUE(packages.contains("libc6")) << image;
    EXPECT_GT(packages.size(), 50U) << image;
    if (std::string(image) == "tributary-agent") {
      EXPECT_TRUE(packages.contains("tributary-agent"));
      EXPECT_TRUE(packages.contains("go-toolchain"));
      EXPECT_TRUE(packages.contains("tributary_connector"));
      EXPECT_TRUE(packages.contains("git"));
    }
    if (std::string(image) == "tributary-controller") {
      EXPECT_TRUE(packages.contains("tributary-controller"));
      EXPECT_FALSE(packages.contains("git")) << "the controller image carries no toolchain";
    }
  }
  // SOURCE_DATE_EPOCH (the last commit's time by default) is the created label.
  const auto created = docker({"image", "inspect", "-f",
                               "{{index .Config.Labels \"org.opencontainers.image.created\"}}",
                               "tributary-controller:test"});
  const auto commit_time =
      run({"/usr/bin/git", "-C", TRIBUTARY_SOURCE_DIR, "log", "-1", "--format=%ct"});
  ASSERT_TRUE(commit_time.ok()) << commit_time.output;
  const std::time_t epoch = std::stoll(commit_time.output);
  std::tm utc{};
  gmtime_r(&epoch, &utc);
  char expected[32];
  std::strftime(expected, sizeof(expected), "%Y-%m-%dT%H:%M:%SZ", &utc);
  EXPECT_EQ(trimmed(created.output), expected);
}

void Images::checkBinariesRunWithoutAShellAndTheAgentHasItsToolchains() {
  const auto controller = docker(
      {"run", "--rm", "--network=none", "--read-only", "tributary-controller:test", "--help"});
  EXPECT_TRUE(controller.ok()) << controller.output;
  EXPECT_THAT(controller.output, HasSubstr("--leader-elect"));
  const auto cli = docker({"run", "--rm", "--network=none", "tributary:test", "status", "--help"});
  EXPECT_TRUE(cli.ok()) << cli.output;
  EXPECT_THAT(cli.output, HasSubstr("tributary status"));
  const auto slim =
      docker({"run", "--rm", "--network=none", "tributary-agent-slim:test", "--help"});
  EXPECT_TRUE(slim.ok()) << slim.output;
  // VCS sources: the agents and the CLI find their libgit2 helper next to themselves (it answers
  // an empty request with a JSON error).
  for (const char* image :
       {"tributary-agent:test", "tributary-agent-slim:test", "tributary:test"}) {
    const auto helper = docker(
        {"run", "--rm", "--network=none", "--entrypoint", "/usr/bin/tributary-git-helper", image});
    EXPECT_THAT(helper.output, HasSubstr("the request is not a JSON object")) << image;
  }
  // Redis over TLS: the full agent carries the stunnel it runs as its tunnel (the cluster test
  // takes its locks through it); the slim one does not (docker/README.md).
  const auto stunnel = docker({"run", "--rm", "--network=none", "--entrypoint", "/usr/bin/stunnel4",
                               "tributary-agent:test", "-version"});
  EXPECT_THAT(stunnel.output, HasSubstr("stunnel 5."));
  // The full agent: Go >= 1.24 (a go-plugin connector builds), git, Python with venv and the SDK.
  const auto go = docker(
      {"run", "--rm", "--network=none", "--entrypoint", "go", "tributary-agent:test", "version"});
  EXPECT_THAT(go.output, ::testing::MatchesRegex(
                             R"(go version go1\.(2[4-9]|[3-9][0-9])\.[0-9]+ linux/amd64\s*)"));
  const auto tools = docker({"run", "--rm", "--network=none", "--entrypoint", "/bin/sh",
                             "tributary-agent:test", "-c",
                             "git --version && python3 -m venv /tmp/v && /tmp/v/bin/pip download "
                             "--no-deps --no-index -d /tmp/w tributary-connector && ls /tmp/w"});
  EXPECT_TRUE(tools.ok()) << tools.output;
  EXPECT_THAT(tools.output, HasSubstr("tributary_connector-"));
}

void Images::checkQuickstartPostgresAndRedisStartWithTheirPasswordFiles() {
  harness::TempDir secrets("quickstart");
  secrets.write("postgres-password", "pg-secret-1");
  secrets.write("redis-password", "redis-secret-1");
  fs::permissions(secrets.path(), fs::perms::all);
  for (const char* f : {"postgres-password", "redis-password"}) {
    fs::permissions(secrets.path() / f,
                    fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  }
  const std::string mount = "--volume=" + secrets.path().string() + ":/etc/quickstart:ro";
  const std::string pg_name = "tributary-test-pg-" + std::to_string(::getpid());
  const auto pg = docker({"run",
                          "-d",
                          "--rm",
                          "--name",
                          pg_name,
                          "--network=none",
                          "--read-only",
                          "--tmpfs=/var/lib/postgresql/data:uid=65532",
                          "--tmpfs=/run/postgresql:uid=65532",
                          "--tmpfs=/tmp",
                          mount,
                          "-e",
                          "POSTGRES_DB=tributary",
                          "-e",
                          "POSTGRES_USER=tributary",
                          "-e",
                          "POSTGRES_PASSWORD_FILE=/etc/quickstart/postgres-password",
                          "-e",
                          "PGDATA=/var/lib/postgresql/data/pgdata",
                          "tributary-quickstart-postgres:test"});
  ASSERT_TRUE(pg.ok()) << pg.output;
  bool answered = false;
  for (int i = 0; i < 60 && !answered; ++i) {
    const auto q =
        docker({"exec", "-e", "PGPASSWORD=pg-secret-1", pg_name, "psql", "-h", "127.0.0.1", "-U",
                "tributary", "-d", "tributary", "-Atc", "select 40+2"});
    answered = q.ok() && q.output.find("42") != std::string::npos;
    if (!answered) {
      std::this_thread::sleep_for(500ms);
    }
  }
  EXPECT_TRUE(answered) << docker({"logs", pg_name}).output;
  const auto wrong = docker({"exec", "-e", "PGPASSWORD=wrong", pg_name, "psql", "-h", "127.0.0.1",
                             "-U", "tributary", "-d", "tributary", "-Atc", "select 1"});
  EXPECT_THAT(wrong.output, HasSubstr("password authentication failed"));
  static_cast<void>(docker({"rm", "-f", pg_name}));

  const std::string redis_name = "tributary-test-redis-" + std::to_string(::getpid());
  const auto redis = docker({"run", "-d", "--rm", "--name", redis_name, "--network=none",
                             "--read-only", "--tmpfs=/data:uid=65532", mount, "-e",
                             "REDIS_PASSWORD_FILE=/etc/quickstart/redis-password",
                             "tributary-quickstart-redis:test"});
  ASSERT_TRUE(redis.ok()) << redis.output;
  bool pong = false;
  for (int i = 0; i < 40 && !pong; ++i) {
    const auto p = docker(
        {"exec", redis_name, "redis-cli", "--no-auth-warning", "-a", "redis-secret-1", "ping"});
    pong = p.output.find("PONG") != std::string::npos;
    if (!pong) {
      std::this_thread::sleep_for(250ms);
    }
  }
  EXPECT_TRUE(pong) << docker({"logs", redis_name}).output;
  const auto anonymous = docker({"exec", redis_name, "redis-cli", "ping"});
  EXPECT_THAT(anonymous.output, HasSubstr("NOAUTH"));
  static_cast<void>(docker({"rm", "-f", redis_name}));
}

TEST_F(Images, BuiltFromTheDockerfileRunAsNonRootAndDescribed) {
  {
    SCOPED_TRACE("build and size budgets");
    checkEveryImageBuildsWithinItsSizeBudget();
  }
  ASSERT_TRUE(built_.ok());
  {
    SCOPED_TRACE("user, labels, SBOM");
    checkNonRootLabelledAndDescribedByAnSbom();
  }
  {
    SCOPED_TRACE("binaries and toolchains");
    checkBinariesRunWithoutAShellAndTheAgentHasItsToolchains();
  }
  {
    SCOPED_TRACE("quickstart PostgreSQL and Redis");
    checkQuickstartPostgresAndRedisStartWithTheirPasswordFiles();
  }
}

}  // namespace
}  // namespace tributary::testing
