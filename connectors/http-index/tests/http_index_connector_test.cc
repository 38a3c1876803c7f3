// The Python http-index connector run through the real C++ plugin host against a local HTTP
// server (python's http.server, tests/fixture_server.py).
#include "tributary/common/strings.h"
#include "tributary/connectors/testing.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <set>
#include <signal.h>
#include <unistd.h>

namespace tributary::connectors::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string command() { return strings::cat(TRIBUTARY_PYTHON, " ", HTTP_INDEX_CONNECTOR); }

// The fixture server on a free loopback port, serving `dir`; killed at the end of the test.
class FixtureServer {
 public:
  explicit FixtureServer(const fs::path& dir) {
    int fds[2];
    if (::pipe(fds) != 0) {
      ADD_FAILURE() << "pipe failed";
      return;
    }
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::close(fds[1]);
      ::execl(TRIBUTARY_PYTHON, TRIBUTARY_PYTHON, HTTP_FIXTURE_SERVER, dir.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(fds[1]);
    FILE* out = ::fdopen(fds[0], "r");
    int port = 0;
    if (out == nullptr || std::fscanf(out, "PORT %d", &port) != 1) {
      ADD_FAILURE() << "the fixture server did not start";
    }
    if (out != nullptr) {
      std::fclose(out);
    }
    port_ = port;
  }
  ~FixtureServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  FixtureServer(const FixtureServer&) = delete;
  FixtureServer& operator=(const FixtureServer&) = delete;

  [[nodiscard]] std::string url(const std::string& path = "/") const {
    return strings::cat("http://127.0.0.1:", port_, path);
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

// A loopback port nobody listens on.
int closedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::set<std::string> idSet(const SyncRun& run) {
  const auto ids = run.remoteIds();
  return {ids.begin(), ids.end()};
}

std::string urlOptions(const std::string& url, const std::string& extra = "") {
  return strings::cat("{\"url\":", quote(url), extra.empty() ? "" : ",", extra, "}");
}

SyncRun expectSuccess(const std::string& options, const RunOptions& run_options = {}) {
  SyncRun run = runConnector(command(), options, run_options);
  EXPECT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_EQ(run.exit.exit_code, 0) << run.exit.describe();
  return run;
}

std::string expectFailure(const std::string& options) {
  const SyncRun run = runConnector(command(), options);
  EXPECT_FALSE(run.result.ok());
  EXPECT_TRUE(run.objects.empty());
  return std::string(run.result.status().message());
}

class HttpIndex : public ::testing::Test {
 protected:
  HttpIndex() {
    writeFile(tmp_.path() / "a.txt", "hello\n");
    writeFile(tmp_.path() / "with space.txt", "x");
    writeFile(tmp_.path() / "日本.txt", "unicode");
    writeFile(tmp_.path() / "sub" / "b.txt", "bb");
    writeFile(tmp_.path() / "sub" / "deeper" / "c.txt", "ccc");
    server_ = std::make_unique<FixtureServer>(tmp_.path());
  }
  TempDir tmp_;
  std::unique_ptr<FixtureServer> server_;
};

TEST_F(HttpIndex, ListsAnHtmlIndexOfPythonHttpServer) {
  const SyncRun run = expectSuccess(urlOptions(server_->url()));
  const std::string base = server_->url();
  EXPECT_EQ(idSet(run),
            (std::set<std::string>{base + "a.txt", base + "sub/", base + "with%20space.txt",
                                   base + "%E6%97%A5%E6%9C%AC.txt"}));
  const auto objects = run.byId();
  const Object& spaced = objects.at(base + "with%20space.txt");
  EXPECT_EQ(spaced.resource_name, "with space.txt");
  EXPECT_EQ(spaced.uri, spaced.remote_id);
  EXPECT_EQ(spaced.metadata["type"], "file");
  EXPECT_FALSE(spaced.metadata.contains("size")) << "HEAD is opt-in";
  EXPECT_EQ(objects.at(base + "%E6%97%A5%E6%9C%AC.txt").resource_name, "日本.txt");
  EXPECT_EQ(objects.at(base + "sub/").metadata["type"], "directory");
  EXPECT_EQ(objects.at(base + "sub/").resource_name, "sub");
  const auto summary = run.endSync();
  EXPECT_EQ(summary["objects"], 4);
  EXPECT_EQ(summary["files"], 3);
  EXPECT_EQ(summary["directories"], 1);
}

TEST_F(HttpIndex, RecursesIntoSubdirectoriesAndStaysStable) {
  const std::string base = server_->url();
  const std::string options = urlOptions(base, R"("recursive":true,"directories":false)");
  const SyncRun run = expectSuccess(options);
  const std::set<std::string> ids = idSet(run);
  EXPECT_TRUE(ids.contains(base + "sub/b.txt"));
  EXPECT_TRUE(ids.contains(base + "sub/deeper/c.txt"));
  EXPECT_FALSE(ids.contains(base + "sub/"));
  EXPECT_EQ(ids.size(), 5U);
  EXPECT_EQ(run.endSync()["listings_fetched"], 3);
  const SyncRun again = expectSuccess(options);
  EXPECT_EQ(again.remoteIds(), run.remoteIds());

  const SyncRun shallow = expectSuccess(urlOptions(base, R"("recursive":true,"max_depth":2)"));
  const std::set<std::string> shallow_ids = idSet(shallow);
  EXPECT_TRUE(shallow_ids.contains(base + "sub/deeper/"));
  EXPECT_FALSE(shallow_ids.contains(base + "sub/deeper/c.txt"));
}

TEST_F(HttpIndex, HeadAddsSizeDateAndType) {
  const SyncRun run = expectSuccess(urlOptions(server_->url(), R"("head":true)"));
  const auto objects = run.byId();
  const Object& a = objects.at(server_->url("/a.txt"));
  EXPECT_EQ(a.metadata["size"], 6);
  EXPECT_EQ(a.metadata["content_type"], "text/plain");
  EXPECT_THAT(a.metadata["last_modified"].get<std::string>(),
              ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z"));

  const SyncRun refused = expectSuccess(urlOptions(server_->url("/no-head/"), R"("head":true)"));
  ASSERT_EQ(refused.objects.size(), 1U);
  EXPECT_EQ(refused.objects[0].metadata["head_status"], 405);
}

TEST_F(HttpIndex, ReadsJsonListings) {
  const std::string base = server_->url();
  const SyncRun nginx = expectSuccess(urlOptions(server_->url("/listing.json")));
  const auto n = nginx.byId();
  ASSERT_EQ(n.size(), 3U);
  EXPECT_EQ(n.at(base + "a.txt").metadata["size"], 12);
  EXPECT_EQ(n.at(base + "a.txt").metadata["last_modified"], "2021-01-02T03:04:05Z");
  EXPECT_EQ(n.at(base + "sub/").metadata["type"], "directory");
  EXPECT_EQ(n.at(base + "with%20space.bin").resource_name, "with space.bin");

  const SyncRun caddy = expectSuccess(urlOptions(server_->url("/caddy.json")));
  const auto c = caddy.byId();
  EXPECT_EQ(c.at(base + "x.tar.gz").metadata["size"], 99);
  EXPECT_EQ(c.at(base + "x.tar.gz").metadata["last_modified"], "2021-01-02T03:04:05Z");
  EXPECT_EQ(c.at(base + "d/").metadata["type"], "directory");

  const SyncRun names = expectSuccess(urlOptions(server_->url("/names.json")));
  EXPECT_EQ(names.remoteIds(),
            (std::vector<std::string>{base + "one", base + "two/", "https://elsewhere.example/x"}));

  EXPECT_THAT(expectFailure(urlOptions(server_->url("/bad.json"))), HasSubstr("is not valid JSON"));
}

TEST_F(HttpIndex, HttpErrorsFailTheSync) {
  EXPECT_THAT(expectFailure(urlOptions(server_->url("/missing/"))),
              HasSubstr("GET " + server_->url("/missing/") + " returned HTTP 404"));
  EXPECT_THAT(expectFailure(urlOptions(server_->url("/slow/"), R"("timeout":0.5)")),
              HasSubstr("timed out after 0.5 s"));
  // A sub-directory that cannot be listed would make the listing partial: fail.
  EXPECT_THAT(expectFailure(urlOptions(server_->url("/broken-sub/"), R"("recursive":true)")),
              HasSubstr("while listing a sub-directory"));
  EXPECT_THAT(expectFailure(urlOptions(strings::cat("http://127.0.0.1:", closedPort(), "/"))),
              HasSubstr("cannot reach http://127.0.0.1:"));
}

TEST_F(HttpIndex, RefusedPageFailsTheSync) {
  RunOptions run_options;
  run_options.fail_from_page = 1;
  const SyncRun run =
      runConnector(command(), urlOptions(server_->url(), R"("page_size":1)"), run_options);
  ASSERT_FALSE(run.result.ok());
  EXPECT_EQ(run.result.status().code(), absl::StatusCode::kUnavailable) << run.result.status();
  EXPECT_THAT(std::string(run.result.status().message()), HasSubstr("database is down"));
  EXPECT_EQ(run.pages, 1);
  EXPECT_EQ(run.exit.exit_code, 0) << run.exit.describe();
}

TEST(HttpIndexOptions, BadOptionsAreRefusedWithClearMessages) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "\"url\" is required"},
      {"nope", "not valid JSON"},
      {"[]", "expected a JSON object, got []"},
      {R"({"url":"ftp://example.com/"})", "must be an absolute http:// or https:// URL"},
      {R"({"url":"/relative"})", "must be an absolute http:// or https:// URL"},
      {R"({"url":"http://x/","format":"xml"})", "\"format\" must be one of"},
      {R"({"url":"http://x/","timeout":0})", "\"timeout\" must be a number of seconds"},
      {R"({"url":"http://x/","timeout":"5"})", "\"timeout\" must be a number of seconds"},
      {R"({"url":"http://x/","page_size":0})", "\"page_size\" must be an integer from 1"},
      {R"({"url":"http://x/","recursive":"yes"})", "\"recursive\" must be true or false"},
      {R"({"url":"http://x/","headers":{"Authorization":5}})", "bad entry: \"Authorization\""},
      {R"({"url":"http://x/","depth":3})", "unknown option \"depth\" (known options: url,"},
  };
  std::vector<std::string> options;
  for (const auto& c : cases) {
    options.push_back(c.first);
  }
  const std::vector<SyncRun> runs = runConnectorSyncs(command(), options);  // One process.
  ASSERT_EQ(runs.size(), cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].first);
    ASSERT_FALSE(runs[i].result.ok());
    const std::string message(runs[i].result.status().message());
    EXPECT_THAT(message, HasSubstr("http-index: invalid options: "));
    EXPECT_THAT(message, HasSubstr(cases[i].second));
  }
}

}  // namespace
}  // namespace tributary::connectors::testing
