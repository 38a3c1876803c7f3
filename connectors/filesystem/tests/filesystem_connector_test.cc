// The filesystem connector run through the real plugin host over real temporary trees.
#include "tributary/common/strings.h"
#include "tributary/connectors/testing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <set>
#include <unistd.h>

namespace tributary::connectors::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string command() { return FILESYSTEM_CONNECTOR; }

// A command under which permission bits are enforced even when the tests run as root: root
// without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (the connector still owns its sockets).
std::optional<std::string> unprivilegedCommand() {
  if (::geteuid() != 0) {
    return command();
  }
  // setpriv needs CAP_SETPCAP to drop capabilities from the bounding set (absent in some
  // containers): probe once.
  static const bool usable =
      ::access("/usr/bin/setpriv", X_OK) == 0 &&
      std::system("/usr/bin/setpriv --bounding-set -dac_override,-dac_read_search true") == 0;
  if (!usable) {
    return std::nullopt;
  }
  return strings::cat("/usr/bin/setpriv --bounding-set -dac_override,-dac_read_search ", command());
}

std::string rootOptions(const fs::path& root, const std::string& extra = "") {
  return strings::cat("{\"root\":", quote(root.string()), extra.empty() ? "" : ",", extra, "}");
}

void setMtime(const fs::path& path, time_t seconds, long nanos) {
  const struct timespec times[2] = {{seconds, nanos}, {seconds, nanos}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << path;
}

SyncRun expectSuccess(const std::string& options, const RunOptions& run_options = {}) {
  SyncRun run = runConnector(command(), options, run_options);
  EXPECT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_EQ(run.exit.exit_code, 0) << run.exit.describe();
  return run;
}

TEST(FilesystemConnector, ListsATreeWithMetadata) {
  TempDir tmp;
  const fs::path root = tmp.path() / "tree";
  writeFile(root / "a.txt", "hello\n");
  writeFile(root / "sub dir" / "b.bin", std::string(1000, 'x'));
  writeFile(root / "sub dir" / "deeper" / "c", "");
  writeFile(root / "日本語 é.md", "unicode");
  writeFile(root / "line\nbreak", "newline in the name");
  writeFile(root / "100%.txt", "percent");
  fs::create_directories(root / "empty");
  fs::create_symlink("a.txt", root / "link-in");
  writeFile(tmp.path() / "outside.txt", "outside");
  fs::create_symlink(tmp.path() / "outside.txt", root / "link-out");
  fs::create_symlink("missing", root / "dangling");
  ASSERT_EQ(::chmod((root / "a.txt").c_str(), 0640), 0);
  setMtime(root / "a.txt", 1612325106, 123456789);  // 2021-02-03T04:05:06.123456789Z
  ASSERT_EQ(::mkfifo((root / "pipe").c_str(), 0600), 0);

  const SyncRun run = expectSuccess(rootOptions(root));
  const std::vector<std::string> expected = {
      "100%.txt",   "a.txt", "dangling", "empty",         "line\nbreak",    "link-in",
      "link-out",   "pipe",  "sub dir",  "sub dir/b.bin", "sub dir/deeper", "sub dir/deeper/c",
      "日本語 é.md"};
  EXPECT_EQ(run.remoteIds(), expected);  // Sorted, pre-order: stable across runs.

  const auto objects = run.byId();
  const Object& a = objects.at("a.txt");
  EXPECT_EQ(a.resource_name, "a.txt");
  EXPECT_EQ(a.uri, "file://" + (root / "a.txt").string());
  EXPECT_EQ(a.metadata["type"], "file");
  EXPECT_EQ(a.metadata["size"], 6);
  EXPECT_EQ(a.metadata["mode"], "0640");
  EXPECT_EQ(a.metadata["mtime"], "2021-02-03T04:05:06.123456789Z");
  EXPECT_EQ(a.metadata["uid"], ::geteuid());
  EXPECT_FALSE(a.metadata.contains("sha256")) << "hashing is opt-in";

  const Object& deep = objects.at("sub dir/deeper/c");
  EXPECT_EQ(deep.resource_name, "c");
  EXPECT_EQ(deep.uri, "file://" + tributary::strings::cat(root.string(), "/sub%20dir/deeper/c"));
  EXPECT_EQ(deep.metadata["size"], 0);
  EXPECT_EQ(objects.at("sub dir").metadata["type"], "dir");
  EXPECT_FALSE(objects.at("sub dir").metadata.contains("size"));
  EXPECT_EQ(objects.at("empty").metadata["type"], "dir");
  EXPECT_EQ(objects.at("pipe").metadata["type"], "fifo");
  EXPECT_THAT(objects.at("100%.txt").uri, ::testing::EndsWith("/100%25.txt"));
  EXPECT_THAT(objects.at("line\nbreak").uri, ::testing::EndsWith("/line%0Abreak"));
  EXPECT_THAT(objects.at("日本語 é.md").uri,
              ::testing::EndsWith("/%E6%97%A5%E6%9C%AC%E8%AA%9E%20%C3%A9.md"));
  EXPECT_EQ(objects.at("日本語 é.md").resource_name, "日本語 é.md");

  // Symlinks are not followed by default: listed as links, with their target.
  EXPECT_EQ(objects.at("link-in").metadata["type"], "symlink");
  EXPECT_EQ(objects.at("link-in").metadata["target"], "a.txt");
  EXPECT_EQ(objects.at("link-out").metadata["target"], (tmp.path() / "outside.txt").string());
  EXPECT_EQ(objects.at("dangling").metadata["type"], "symlink");
  EXPECT_FALSE(objects.at("dangling").metadata.contains("broken"));

  const auto summary = run.endSync();
  EXPECT_EQ(summary["objects"], expected.size());
  EXPECT_EQ(summary["files"], 6);
  EXPECT_EQ(summary["directories"], 3);
  EXPECT_EQ(summary["symlinks"], 3);
  EXPECT_EQ(summary["other"], 1);
  EXPECT_EQ(summary["bytes"], 6 + 1000 + 7 + 19 + 7);
  EXPECT_EQ(summary["root"], root.string());
}

TEST(FilesystemConnector, RemoteIdsAndMetadataAreStableAcrossRuns) {
  TempDir tmp;
  for (int i = 0; i < 50; ++i) {
    writeFile(tmp.path() / strings::cat("d", i % 5) / strings::cat("f", i), strings::cat(i));
  }
  const std::string options = rootOptions(tmp.path(), R"("hash":"sha256","page_size":7)");
  const SyncRun first = expectSuccess(options);
  const SyncRun second = expectSuccess(options);  // Reading the files (atime) changes nothing.
  ASSERT_EQ(first.objects.size(), 55U);
  ASSERT_EQ(first.objects.size(), second.objects.size());
  for (std::size_t i = 0; i < first.objects.size(); ++i) {
    EXPECT_EQ(first.objects[i].remote_id, second.objects[i].remote_id);
    EXPECT_EQ(first.objects[i].metadata_text, second.objects[i].metadata_text);
  }
  // Renaming the root's parent path would change uris, never remote ids: ids are relative.
  for (const auto& o : first.objects) {
    EXPECT_FALSE(o.remote_id.starts_with("/")) << o.remote_id;
    EXPECT_EQ(o.remote_id.find(tmp.path().string()), std::string::npos);
  }
}

TEST(FilesystemConnector, HashesContentOnlyWhenAsked) {
  TempDir tmp;
  writeFile(tmp.path() / "hello", "hello\n");
  writeFile(tmp.path() / "empty", "");
  fs::create_directories(tmp.path() / "dir");
  const SyncRun run = expectSuccess(rootOptions(tmp.path(), R"("hash":"sha256")"));
  const auto objects = run.byId();
  EXPECT_EQ(objects.at("hello").metadata["sha256"],
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
  EXPECT_EQ(objects.at("empty").metadata["sha256"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_FALSE(objects.at("dir").metadata.contains("sha256"));
  const SyncRun none = expectSuccess(rootOptions(tmp.path(), R"("hash":"none")"));
  EXPECT_FALSE(none.byId().at("hello").metadata.contains("sha256"));
}

TEST(FilesystemConnector, FollowsSymlinksWhenAskedAndStopsAtLoops) {
  TempDir tmp;
  const fs::path root = tmp.path() / "root";
  writeFile(root / "real" / "file", "12345");
  writeFile(tmp.path() / "elsewhere" / "x", "outside");
  fs::create_directory_symlink("real", root / "alias");
  fs::create_directory_symlink(tmp.path() / "elsewhere", root / "out");
  fs::create_directory_symlink("..", root / "real" / "up");  // A loop back to the root.
  fs::create_symlink("nowhere", root / "dangling");
  fs::create_symlink("real/file", root / "file-link");

  const SyncRun run = expectSuccess(rootOptions(root, R"("follow_symlinks":true)"));
  const auto objects = run.byId();
  std::set<std::string> ids;
  for (const auto& o : run.objects) {
    ids.insert(o.remote_id);
  }
  EXPECT_TRUE(ids.contains("alias/file"));
  EXPECT_TRUE(ids.contains("out/x"));
  EXPECT_EQ(objects.at("alias").metadata["type"], "dir");
  EXPECT_EQ(objects.at("alias").metadata["target"], "real");
  EXPECT_EQ(objects.at("file-link").metadata["type"], "file");
  EXPECT_EQ(objects.at("file-link").metadata["size"], 5);
  EXPECT_EQ(objects.at("dangling").metadata["type"], "symlink");
  EXPECT_EQ(objects.at("dangling").metadata["broken"], true);
  EXPECT_EQ(objects.at("real/up").metadata["loop"], true);
  EXPECT_FALSE(ids.contains("real/up/real")) << "the loop must not be descended";
  EXPECT_EQ(objects.at("alias/up").metadata["loop"], true);
}

TEST(FilesystemConnector, IncludeExcludeAndMaxDepth) {
  TempDir tmp;
  writeFile(tmp.path() / "README.md", "");
  writeFile(tmp.path() / "src" / "a.cc", "");
  writeFile(tmp.path() / "src" / "deep" / "b.cc", "");
  writeFile(tmp.path() / "src" / "deep" / "b.h", "");
  writeFile(tmp.path() / "node_modules" / "x" / "y.cc", "");
  writeFile(tmp.path() / "src" / "node_modules" / "z.cc", "");
  writeFile(tmp.path() / "debug.log", "");

  const SyncRun cc = expectSuccess(
      rootOptions(tmp.path(), R"("include":["src/**/*.cc"],"exclude":["node_modules/"])"));
  EXPECT_EQ(cc.remoteIds(), (std::vector<std::string>{"src/a.cc", "src/deep/b.cc"}));
  EXPECT_EQ(cc.endSync()["excluded"], 2);

  const SyncRun no_logs = expectSuccess(rootOptions(tmp.path(), R"("exclude":"*.log")"));
  for (const auto& id : no_logs.remoteIds()) {
    EXPECT_FALSE(id.ends_with(".log")) << id;
  }
  EXPECT_EQ(no_logs.objects.size(), 11U);

  const SyncRun shallow = expectSuccess(rootOptions(tmp.path(), R"("max_depth":1)"));
  EXPECT_EQ(shallow.remoteIds(),
            (std::vector<std::string>{"README.md", "debug.log", "node_modules", "src"}));
}

TEST(FilesystemConnector, EmptyRootSucceedsWithNoObjects) {
  TempDir tmp;
  const SyncRun run = expectSuccess(rootOptions(tmp.path().string() + "/"));
  EXPECT_TRUE(run.objects.empty());
  EXPECT_EQ(run.endSync()["objects"], 0);
  EXPECT_EQ(run.endSync()["root"], tmp.path().string()) << "trailing '/' is dropped";
}

TEST(FilesystemConnector, TenThousandFilesArriveInPages) {
  TempDir tmp;
  for (int d = 0; d < 10; ++d) {
    const fs::path dir = tmp.path() / strings::cat("dir", d);
    fs::create_directories(dir);
    for (int f = 0; f < 1000; ++f) {
      const int fd = ::open((dir / strings::cat("file", f)).c_str(), O_CREAT | O_WRONLY, 0644);
      ASSERT_GE(fd, 0);
      ::close(fd);
    }
  }
  const SyncRun run = expectSuccess(rootOptions(tmp.path(), R"("page_size":1000)"));
  ASSERT_EQ(run.objects.size(), 10010U);
  EXPECT_EQ(run.pages, 11);
  for (std::size_t i = 0; i + 1 < run.page_sizes.size(); ++i) {
    EXPECT_EQ(run.page_sizes[i], 1000U);
  }
  const auto ids = run.remoteIds();
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size());
  EXPECT_EQ(run.result->pages, 11U);
  EXPECT_EQ(run.endSync()["pages"], 11);
}

TEST(FilesystemConnector, RefusedPageFailsTheSync) {
  TempDir tmp;
  for (int i = 0; i < 30; ++i) {
    writeFile(tmp.path() / strings::cat("f", i), "");
  }
  RunOptions run_options;
  run_options.fail_from_page = 1;
  const SyncRun run =
      runConnector(command(), rootOptions(tmp.path(), R"("page_size":10)"), run_options);
  ASSERT_FALSE(run.result.ok());
  EXPECT_EQ(run.result.status().code(), absl::StatusCode::kUnavailable) << run.result.status();
  EXPECT_THAT(std::string(run.result.status().message()), HasSubstr("database is down"));
  EXPECT_EQ(run.pages, 1) << "the connector must stop at the first refused page";
  EXPECT_EQ(run.exit.exit_code, 0) << run.exit.describe();
}

TEST(FilesystemConnector, UnreadableDirectoryFailsTheSyncByDefault) {
  const auto cmd = unprivilegedCommand();
  if (!cmd) {
    GTEST_SKIP() << "running as root without setpriv: permissions cannot be tested";
  }
  TempDir tmp;
  writeFile(tmp.path() / "ok.txt", "");
  writeFile(tmp.path() / "locked" / "secret.txt", "");
  writeFile(tmp.path() / "z-after" / "later.txt", "");
  ASSERT_EQ(::chmod((tmp.path() / "locked").c_str(), 0), 0);

  const SyncRun failed = runConnector(*cmd, rootOptions(tmp.path()));
  ASSERT_FALSE(failed.result.ok());
  EXPECT_EQ(failed.result.status().code(), absl::StatusCode::kPermissionDenied);
  const std::string message(failed.result.status().message());
  EXPECT_THAT(message, HasSubstr("cannot read the directory"));
  EXPECT_THAT(message, HasSubstr((tmp.path() / "locked").string()));
  EXPECT_THAT(message, HasSubstr("\"on_error\": \"skip\""));

  const SyncRun skipped = runConnector(*cmd, rootOptions(tmp.path(), R"("on_error":"skip")"));
  ASSERT_TRUE(skipped.result.ok()) << skipped.result.status();
  EXPECT_EQ(skipped.remoteIds(),
            (std::vector<std::string>{"locked", "ok.txt", "z-after", "z-after/later.txt"}));
  EXPECT_EQ(skipped.byId().at("locked").metadata["unreadable"], true);
  EXPECT_EQ(skipped.endSync()["skipped"]["permission_denied"], 1);
  EXPECT_THAT(skipped.endSync()["skipped_examples"][0].get<std::string>(), HasSubstr("locked"));
}

TEST(FilesystemConnector, UnreadableFileFailsOnlyWhenHashing) {
  const auto cmd = unprivilegedCommand();
  if (!cmd) {
    GTEST_SKIP() << "running as root without setpriv: permissions cannot be tested";
  }
  TempDir tmp;
  writeFile(tmp.path() / "secret", "x");
  ASSERT_EQ(::chmod((tmp.path() / "secret").c_str(), 0), 0);
  const SyncRun listed = runConnector(*cmd, rootOptions(tmp.path()));
  ASSERT_TRUE(listed.result.ok()) << listed.result.status();
  EXPECT_EQ(listed.remoteIds(), std::vector<std::string>{"secret"});

  const SyncRun hashed = runConnector(*cmd, rootOptions(tmp.path(), R"("hash":"sha256")"));
  ASSERT_FALSE(hashed.result.ok());
  EXPECT_THAT(std::string(hashed.result.status().message()), HasSubstr("cannot read the file"));

  const SyncRun skipped =
      runConnector(*cmd, rootOptions(tmp.path(), R"("hash":"sha256","on_error":"skip")"));
  ASSERT_TRUE(skipped.result.ok()) << skipped.result.status();
  EXPECT_EQ(skipped.byId().at("secret").metadata["unreadable"], true);
  EXPECT_FALSE(skipped.byId().at("secret").metadata.contains("sha256"));
}

TEST(FilesystemConnector, UnreadableRootIsAClearError) {
  const auto cmd = unprivilegedCommand();
  if (!cmd) {
    GTEST_SKIP() << "running as root without setpriv: permissions cannot be tested";
  }
  TempDir tmp;
  fs::create_directories(tmp.path() / "root");
  ASSERT_EQ(::chmod((tmp.path() / "root").c_str(), 0), 0);
  const SyncRun run = runConnector(*cmd, rootOptions(tmp.path() / "root"));
  ASSERT_FALSE(run.result.ok());
  EXPECT_EQ(run.result.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(run.result.status().message()), HasSubstr("is not readable"));
}

TEST(FilesystemConnector, NonUtf8NamesFailOrAreSkipped) {
  TempDir tmp;
  writeFile(tmp.path() / "good", "");
  writeFile(tmp.path() / "bad\xff\xfename", "");
  const SyncRun failed = runConnector(command(), rootOptions(tmp.path()));
  ASSERT_FALSE(failed.result.ok());
  EXPECT_EQ(failed.result.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(failed.result.status().message());
  EXPECT_THAT(message, HasSubstr("bad\\xFF\\xFEname"));
  EXPECT_THAT(message, HasSubstr("not valid UTF-8"));
  EXPECT_THAT(message, HasSubstr("\"non_utf8_names\": \"skip\""));

  const SyncRun skipped = expectSuccess(rootOptions(tmp.path(), R"("non_utf8_names":"skip")"));
  EXPECT_EQ(skipped.remoteIds(), std::vector<std::string>{"good"});
  EXPECT_EQ(skipped.endSync()["skipped"]["non_utf8_names"], 1);
}

TEST(FilesystemConnector, BadOptionsAreRefusedWithClearMessages) {
  TempDir tmp;
  writeFile(tmp.path() / "file", "");
  const std::string root = quote(tmp.path().string());
  const std::string file = quote((tmp.path() / "file").string());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not json", "not valid JSON"},
      {"[1]", "expected a JSON object, got [1]"},
      {"", "\"root\" is required"},
      {"{}", "\"root\" is required"},
      {R"({"root":"relative/path"})", "\"root\" must be an absolute path"},
      {R"({"root":42})", "\"root\" must be a string, got 42"},
      {R"({"root":"/does/not/exist"})", "root \"/does/not/exist\" does not exist"},
      {"{\"root\":" + file + "}", "is not a directory"},
      {"{\"root\":" + root + ",\"bogus\":1}", "unknown option \"bogus\" (known options: root,"},
      {"{\"root\":" + root + ",\"page_size\":0}", "\"page_size\" must be an integer from 1 to"},
      {"{\"root\":" + root + ",\"page_size\":\"10\"}", "\"page_size\" must be an integer"},
      {"{\"root\":" + root + ",\"hash\":\"md5\"}",
       "\"hash\" must be one of \"none\", \"sha256\", got \"md5\""},
      {"{\"root\":" + root + ",\"follow_symlinks\":\"yes\"}",
       "\"follow_symlinks\" must be true or false"},
      {"{\"root\":" + root + ",\"include\":[1]}", "\"include\" must be an array of non-empty"},
      {"{\"root\":" + root + ",\"exclude\":[\"[ab\"]}", "unterminated character class"},
      {"{\"root\":" + root + ",\"max_depth\":0}", "\"max_depth\" must be an integer from 1"},
      {"{\"root\":" + root + ",\"on_error\":\"ignore\"}", "\"on_error\" must be one of"},
      {"{\"root\":" + root + ",\"non_utf8_names\":\"escape\"}", "\"non_utf8_names\" must be"},
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
    EXPECT_THAT(message, HasSubstr("filesystem: "));
    EXPECT_TRUE(runs[i].objects.empty());
  }
}

}  // namespace
}  // namespace tributary::connectors::testing
