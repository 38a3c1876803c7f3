// The git connector run through the real plugin host against real repositories.
#include "git_connector.h"

#include "tributary/common/strings.h"
#include "tributary/connectors/testing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <set>

namespace tributary::connectors::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string command() { return GIT_CONNECTOR; }

// Runs `git <args>` in `dir`; returns trimmed stdout. Fails the test on a non-zero exit.
std::string git(const fs::path& dir, const std::string& args) {
  const std::string cmd =
      strings::cat("cd ", quote(dir.string()),
                   " && GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent git -c user.name=Test -c "
                   "user.email=t@example.com"
                   " -c init.defaultBranch=main -c commit.gpgsign=false -c tag.gpgsign=false ",
                   args, " 2>&1");
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen failed";
    return "";
  }
  std::string out;
  char buf[4096];
  while (const std::size_t n = std::fread(buf, 1, sizeof(buf), pipe)) {
    out.append(buf, n);
  }
  const int status = ::pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd << "\n" << out;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) {
    out.pop_back();
  }
  return out;
}

struct TestRepo {
  TempDir tmp;
  fs::path dir = tmp.path() / "repo";
  std::string first_commit;
  std::string second_commit;
  std::string dev_commit;

  TestRepo() {
    fs::create_directories(dir);
    git(dir, "init -q");
    writeFile(dir / "a.txt", "version 1\n");
    writeFile(dir / "src" / "main.c", "int main(void) { return 0; }\n");
    writeFile(dir / "src" / "deep" / "x.h", "");
    writeFile(dir / "run.sh", "#!/bin/sh\n");
    ::chmod((dir / "run.sh").c_str(), 0755);
    writeFile(dir / "日本語 file.md", "unicode\n");
    fs::create_symlink("a.txt", dir / "link");
    git(dir, "add -A");
    git(dir, "commit -q -m first");
    first_commit = git(dir, "rev-parse HEAD");
    git(dir, "tag -a v1 -m 'release 1'");
    git(dir, "tag light");
    git(dir, "checkout -q -b dev");
    writeFile(dir / "dev-only.txt", "dev\n");
    git(dir, "add -A");
    git(dir, "commit -q -m dev");
    dev_commit = git(dir, "rev-parse HEAD");
    git(dir, "checkout -q main");
    writeFile(dir / "a.txt", "version 2, longer\n");
    git(dir, "commit -q -am second");
    second_commit = git(dir, "rev-parse HEAD");
  }

  std::string options(const std::string& extra = "") const {
    return strings::cat("{\"repository\":", quote(dir.string()), extra.empty() ? "" : ",", extra,
                        "}");
  }
};

SyncRun expectSuccess(const std::string& options) {
  SyncRun run = runConnector(command(), options);
  EXPECT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_EQ(run.exit.exit_code, 0) << run.exit.describe();
  return run;
}

TEST(GitConnector, ListsFilesAtHeadWithBlobIds) {
  TestRepo repo;
  const SyncRun run = expectSuccess(repo.options());
  EXPECT_EQ(run.remoteIds(), (std::vector<std::string>{"a.txt", "link", "run.sh", "src/deep/x.h",
                                                       "src/main.c", "日本語 file.md"}));
  const auto objects = run.byId();
  const Object& a = objects.at("a.txt");
  EXPECT_EQ(a.resource_name, "a.txt");
  EXPECT_EQ(a.metadata["blob"], git(repo.dir, "rev-parse HEAD:a.txt"));
  EXPECT_EQ(a.metadata["mode"], "100644");
  EXPECT_EQ(a.metadata["type"], "file");
  EXPECT_EQ(a.metadata["size"], 18);
  EXPECT_FALSE(a.metadata.contains("commit")) << "commit_per_object is off by default";
  EXPECT_EQ(a.uri, "file://" + repo.dir.string() + "#HEAD:a.txt");
  EXPECT_EQ(objects.at("run.sh").metadata["type"], "executable");
  EXPECT_EQ(objects.at("run.sh").metadata["mode"], "100755");
  EXPECT_EQ(objects.at("link").metadata["type"], "symlink");
  EXPECT_EQ(objects.at("link").metadata["mode"], "120000");
  EXPECT_EQ(objects.at("link").metadata["target"], "a.txt");
  EXPECT_EQ(objects.at("src/deep/x.h").resource_name, "x.h");
  EXPECT_EQ(objects.at("src/deep/x.h").metadata["blob"],
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");  // The empty blob.
  EXPECT_THAT(objects.at("日本語 file.md").uri,
              ::testing::EndsWith("#HEAD:%E6%97%A5%E6%9C%AC%E8%AA%9E%20file.md"));

  const auto summary = run.endSync();
  EXPECT_EQ(summary["commit"], repo.second_commit);
  EXPECT_EQ(summary["ref"], "HEAD");
  EXPECT_EQ(summary["objects"], 6);
  EXPECT_EQ(summary["files"], 4);
  EXPECT_EQ(summary["executables"], 1);
  EXPECT_EQ(summary["symlinks"], 1);
}

TEST(GitConnector, ResolvesBranchesTagsAndCommits) {
  TestRepo repo;
  const std::string old_blob =
      git(repo.dir, strings::cat("rev-parse ", repo.first_commit, ":a.txt"));
  for (const std::string& ref :
       std::vector<std::string>{"v1", "light", "refs/tags/v1", repo.first_commit,
                                repo.first_commit.substr(0, 10), "main~1"}) {
    SCOPED_TRACE(ref);
    const SyncRun run = expectSuccess(repo.options("\"ref\":" + quote(ref)));
    EXPECT_EQ(run.endSync()["commit"], repo.first_commit);
    EXPECT_EQ(run.byId().at("a.txt").metadata["blob"], old_blob);
  }
  const SyncRun dev = expectSuccess(repo.options(R"("ref":"dev")"));
  EXPECT_EQ(dev.endSync()["commit"], repo.dev_commit);
  EXPECT_TRUE(dev.byId().contains("dev-only.txt"));
  const SyncRun main = expectSuccess(repo.options(R"("ref":"main","commit_per_object":true)"));
  EXPECT_FALSE(main.byId().contains("dev-only.txt"));
  EXPECT_EQ(main.byId().at("a.txt").metadata["commit"], repo.second_commit);
  EXPECT_THAT(main.byId().at("a.txt").uri, ::testing::EndsWith("#main:a.txt"));
}

TEST(GitConnector, UnchangedFilesKeepIdenticalObjectsAcrossCommits) {
  TestRepo repo;
  const SyncRun before = expectSuccess(repo.options());
  writeFile(repo.dir / "new.txt", "new\n");
  git(repo.dir, "add new.txt");
  git(repo.dir, "commit -q -m third");
  const SyncRun after = expectSuccess(repo.options());
  const auto b = before.byId();
  const auto a = after.byId();
  EXPECT_EQ(a.size(), b.size() + 1);
  for (const auto& [id, object] : b) {
    EXPECT_EQ(a.at(id).metadata_text, object.metadata_text) << id;
    EXPECT_EQ(a.at(id).uri, object.uri) << id;
  }
}

TEST(GitConnector, PathSelectsASubtreeOrAFile) {
  TestRepo repo;
  const SyncRun src = expectSuccess(repo.options(R"("path":"/src/")"));
  EXPECT_EQ(src.remoteIds(), (std::vector<std::string>{"src/deep/x.h", "src/main.c"}));
  EXPECT_EQ(src.endSync()["path"], "src");
  const SyncRun file = expectSuccess(repo.options(R"("path":"src/main.c")"));
  EXPECT_EQ(file.remoteIds(), std::vector<std::string>{"src/main.c"});
  const SyncRun missing = runConnector(command(), repo.options(R"("path":"docs")"));
  ASSERT_FALSE(missing.result.ok());
  EXPECT_EQ(missing.result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.result.status().message()),
              HasSubstr("path \"docs\" does not exist at ref \"HEAD\""));
}

TEST(GitConnector, UnknownRefNamesTheKnownOnes) {
  TestRepo repo;
  const SyncRun run = runConnector(command(), repo.options(R"("ref":"nope")"));
  ASSERT_FALSE(run.result.ok());
  EXPECT_EQ(run.result.status().code(), absl::StatusCode::kNotFound);
  const std::string message(run.result.status().message());
  EXPECT_THAT(message, HasSubstr("ref \"nope\" not found"));
  EXPECT_THAT(message, HasSubstr("branches: dev, main"));
  EXPECT_THAT(message, HasSubstr("tags: light, v1"));
  EXPECT_TRUE(run.objects.empty());
}

TEST(GitConnector, RefToABlobIsNotACommit) {
  TestRepo repo;
  const SyncRun run = runConnector(command(), repo.options(R"("ref":"HEAD:a.txt")"));
  ASSERT_FALSE(run.result.ok());
  EXPECT_THAT(std::string(run.result.status().message()), HasSubstr("names a blob, not a commit"));
}

TEST(GitConnector, ClonesUrlsIntoATemporaryDirectory) {
  TestRepo repo;
  git(repo.tmp.path(), "clone -q --bare repo bare.git");
  const SyncRun local = expectSuccess(repo.options());
  for (const fs::path& source : {repo.dir, repo.tmp.path() / "bare.git"}) {
    SCOPED_TRACE(source);
    const SyncRun cloned =
        expectSuccess(strings::cat("{\"repository\":", quote("file://" + source.string()), "}"));
    EXPECT_EQ(cloned.remoteIds(), local.remoteIds());
    EXPECT_EQ(cloned.endSync()["commit"], repo.second_commit) << "HEAD is the remote's HEAD";
    EXPECT_EQ(cloned.endSync()["repository"], "file://" + source.string());
    const SyncRun tag = expectSuccess(
        strings::cat("{\"repository\":", quote("file://" + source.string()), ",\"ref\":\"v1\"}"));
    EXPECT_EQ(tag.endSync()["commit"], repo.first_commit);
  }
  // A bare repository also opens in place.
  const SyncRun bare = expectSuccess(strings::cat(
      "{\"repository\":", quote((repo.tmp.path() / "bare.git").string()), ",\"ref\":\"dev\"}"));
  EXPECT_EQ(bare.endSync()["commit"], repo.dev_commit);
}

TEST(GitConnector, UnreachableUrlIsAClearError) {
  TempDir tmp;
  const SyncRun run = runConnector(
      command(),
      strings::cat("{\"repository\":", quote("file://" + (tmp.path() / "none").string()), "}"));
  ASSERT_FALSE(run.result.ok());
  EXPECT_EQ(run.result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(run.result.status().message()), HasSubstr("cannot fetch"));
}

TEST(GitConnector, SubmodulesAreListedWithTheirCommit) {
  TestRepo repo;
  const std::string sub = std::string(40, 'a');
  git(repo.dir, strings::cat("update-index --add --cacheinfo 160000,", sub, ",vendor/lib"));
  git(repo.dir, "commit -q -m submodule");
  const SyncRun run = expectSuccess(repo.options());
  const auto objects = run.byId();
  const Object& lib = objects.at("vendor/lib");
  EXPECT_EQ(lib.metadata["type"], "submodule");
  EXPECT_EQ(lib.metadata["submodule_commit"], sub);
  EXPECT_FALSE(lib.metadata.contains("blob"));
  EXPECT_EQ(run.endSync()["submodules"], 1);
}

TEST(GitConnector, ManyFilesArriveInPagesAndARefusedPageFailsTheSync) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "big";
  for (int d = 0; d < 3; ++d) {
    for (int f = 0; f < 400; ++f) {
      writeFile(dir / strings::cat("d", d) / strings::cat("f", f), strings::cat(d, "/", f));
    }
  }
  git(dir, "init -q");
  git(dir, "add -A");
  git(dir, "commit -q -m many");
  const std::string options =
      strings::cat("{\"repository\":", quote(dir.string()), ",\"page_size\":500}");
  const SyncRun run = expectSuccess(options);
  EXPECT_EQ(run.objects.size(), 1200U);
  EXPECT_EQ(run.page_sizes, (std::vector<std::size_t>{500, 500, 200}));

  RunOptions failing;
  failing.fail_from_page = 1;
  const SyncRun refused = runConnector(command(), options, failing);
  ASSERT_FALSE(refused.result.ok());
  EXPECT_EQ(refused.result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(refused.result.status().message()), HasSubstr("database is down"));
  EXPECT_EQ(refused.pages, 1);
}

TEST(GitConnector, NonUtf8PathsFailOrAreSkipped) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "r";
  writeFile(dir / "ok", "");
  writeFile(dir / "bad\xff", "");
  git(dir, "init -q");
  git(dir, "add -A");
  git(dir, "commit -q -m bytes");
  const std::string base = strings::cat("{\"repository\":", quote(dir.string()));
  const SyncRun failed = runConnector(command(), base + "}");
  ASSERT_FALSE(failed.result.ok());
  EXPECT_THAT(std::string(failed.result.status().message()), HasSubstr("bad\\xFF"));
  const SyncRun skipped = expectSuccess(base + R"(,"non_utf8_names":"skip"})");
  EXPECT_EQ(skipped.remoteIds(), std::vector<std::string>{"ok"});
  EXPECT_EQ(skipped.endSync()["skipped"]["non_utf8_names"], 1);
}

TEST(GitConnector, RepositoryErrorsAreClear) {
  TestRepo repo;
  const auto message = [](const std::string& options) {
    const SyncRun run = runConnector(command(), options);
    EXPECT_FALSE(run.result.ok());
    return std::string(run.result.status().message());
  };
  EXPECT_THAT(message(R"({"repository":"/does/not/exist"})"),
              HasSubstr("repository \"/does/not/exist\" does not exist"));
  EXPECT_THAT(message(strings::cat("{\"repository\":", quote(repo.tmp.path().string()), "}")),
              HasSubstr("is not a git repository"));
  EXPECT_THAT(message(strings::cat("{\"repository\":", quote((repo.dir / "src").string()), "}")),
              HasSubstr("select the subdirectory with \"path\""));
  const fs::path empty = repo.tmp.path() / "empty";
  fs::create_directories(empty);
  git(empty, "init -q");
  EXPECT_THAT(message(strings::cat("{\"repository\":", quote(empty.string()), "}")),
              HasSubstr("has no commits yet"));
}

TEST(GitConnector, BadOptionsAreRefusedWithClearMessages) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "\"repository\" is required"},
      {"{", "not valid JSON"},
      {R"({"repository":"relative"})", "must be an absolute path or a URL"},
      {R"({"repository":"/r","ref":""})", "\"ref\" must not be empty"},
      {R"({"repository":"/r","ref":5})", "\"ref\" must be a string, got 5"},
      {R"({"repository":"/r","path":"a/../b"})", "\"path\" must be a plain path"},
      {R"({"repository":"/r","page_size":-1})", "\"page_size\" must be an integer from 1"},
      {R"({"repository":"/r","branch":"main"})", "unknown option \"branch\""},
      {R"({"repository":"/r","commit_per_object":1})", "must be true or false"},
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
    EXPECT_THAT(message, HasSubstr(cases[i].second));
    EXPECT_EQ(runs[i].result.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(GitRepositoryUrl, PathsUrlsAndPasswords) {
  using git::isUrl;
  using git::repositoryUrl;
  EXPECT_FALSE(isUrl("/srv/repo"));
  EXPECT_TRUE(isUrl("file:///srv/repo"));
  EXPECT_TRUE(isUrl("https://example.com/r.git"));
  EXPECT_TRUE(isUrl("git@example.com:org/r.git"));
  EXPECT_FALSE(isUrl("relative/dir:x"));
  EXPECT_EQ(repositoryUrl("/srv/my repo"), "file:///srv/my%20repo");
  EXPECT_EQ(repositoryUrl("https://user:secret@example.com/r.git"), "https://example.com/r.git");
  EXPECT_EQ(repositoryUrl("https://token@example.com/r.git"), "https://example.com/r.git");
  EXPECT_EQ(repositoryUrl("ssh://git:pw@example.com/r.git"), "ssh://git@example.com/r.git");
  EXPECT_EQ(repositoryUrl("ssh://git@example.com/r.git"), "ssh://git@example.com/r.git");
  EXPECT_EQ(repositoryUrl("git@example.com:org/r.git"), "git@example.com:org/r.git");
}

}  // namespace
}  // namespace tributary::connectors::testing
