// HTTP sources against a loopback server (fixture_server.py): files, archives, redirects, errors,
// timeouts, size limits, checksums, archive bombs and hostile archives, credentials.

#include "tributary/installer/installer.h"

#include "test_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tributary::installer {
namespace {

namespace fs = std::filesystem;
using testing::ArchiveEntry;
using testing::ArchiveFormat;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using testing::TempDir;
using Type = ArchiveEntry::Type;

constexpr const char* kToken = "bearer-7a6b5c4d3e";

class HttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_files = new TempDir();
    const fs::path f = shared_files->path();
    testing::writeFile(f / "conn.sh", "#!/bin/sh\necho downloaded\n");
    const std::vector<ArchiveEntry> tree = {
        {"bin/", Type::Dir, "", "", 0755},
        {"bin/conn", Type::File, "#!/bin/sh\necho from-archive\n", "", 0755},
        {"lib/data.txt", Type::File, "data", "", 0644},
        {"current", Type::Symlink, "", "bin/conn", 0777}};
    testing::makeArchive(f / "conn.tar.gz", ArchiveFormat::TarGz, tree);
    testing::makeArchive(f / "conn.zip", ArchiveFormat::Zip, tree);
    fs::copy_file(f / "conn.tar.gz", f / "conn.tgz");
    testing::makeArchive(f / "evil.tar.gz", ArchiveFormat::TarGz,
                         {{"bin/conn", Type::File, "x", "", 0755},
                          {"bin/escape", Type::Symlink, "", "../../../../etc/passwd", 0777}});
    testing::makeArchive(f / "traversal.zip", ArchiveFormat::Zip,
                         {{"../../outside.txt", Type::File, "x", "", 0644}});
    testing::makeBombTarGz(f / "bomb.tar.gz", 64ULL << 20U);
    shared_server = new testing::FixtureServer(f, f, kToken);
  }
  static void TearDownTestSuite() {
    delete shared_server;
    delete shared_files;
  }

  void SetUp() override {
    ASSERT_TRUE(shared_server->ok()) << "fixture server did not start";
    cache_ = tmp_.path() / "cache";
  }

  std::unique_ptr<Installer> make(Options options) {
    auto installer = Installer::create(std::move(options));
    EXPECT_TRUE(installer.ok()) << installer.status();
    return installer.ok() ? *std::move(installer) : nullptr;
  }
  Options options() { return testing::testOptions(cache_, sink_); }
  std::unique_ptr<Installer> make() { return make(options()); }

  static ConnectorSpec spec(const std::string& path, const std::string& command = "./conn.sh") {
    ConnectorSpec s;
    s.name = "http-conn";
    s.source = Source::Http;
    s.uri = shared_server->url(path);
    s.command = command;
    return s;
  }

  static std::string sha256Of(const fs::path& p) {
    return testing::shOk("sha256sum " + testing::quote(p.string()) + " | cut -d' ' -f1")
        .substr(0, 64);
  }

  void expectFailsCleanly(const absl::StatusOr<Installation>& inst, absl::StatusCode code,
                          const std::string& message) {
    ASSERT_FALSE(inst.ok());
    EXPECT_EQ(inst.status().code(), code) << inst.status();
    EXPECT_THAT(std::string(inst.status().message()), HasSubstr(message)) << inst.status();
    EXPECT_THAT(testing::listTree(cache_ / "connectors"), IsEmpty());
    EXPECT_THAT(testing::listTree(cache_ / "staging"), IsEmpty());
    EXPECT_THAT(testing::listTree(cache_ / "trash"), IsEmpty());
  }

  static TempDir* shared_files;
  static testing::FixtureServer* shared_server;
  TempDir tmp_;
  fs::path cache_;
  std::shared_ptr<testing::CapturingSink> sink_ = std::make_shared<testing::CapturingSink>();
};

TempDir* HttpTest::shared_files = nullptr;
testing::FixtureServer* HttpTest::shared_server = nullptr;

TEST_F(HttpTest, DownloadsAFileKeepingItsName) {
  auto inst = make()->install(spec("/files/conn.sh"));
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_THAT(testing::listTree(inst->root), ElementsAre("conn.sh"));
  EXPECT_EQ(testing::shOk("./conn.sh", inst->root), "downloaded\n");
  const std::string sha = sha256Of(shared_files->path() / "conn.sh");
  EXPECT_EQ(inst->sha256, sha);
  EXPECT_EQ(inst->revision, sha.substr(0, 16));
}

TEST_F(HttpTest, VerifiesSha256) {
  ConnectorSpec s = spec("/files/conn.sh");
  s.sha256 = sha256Of(shared_files->path() / "conn.sh");
  auto ok = make()->install(s);
  ASSERT_TRUE(ok.ok()) << ok.status();
  ok = absl::UnknownError("released");

  TempDir other;
  cache_ = other.path() / "cache";
  s.sha256 = std::string(64, '0');
  expectFailsCleanly(make()->install(s), absl::StatusCode::kDataLoss, "checksum mismatch");
}

TEST_F(HttpTest, UnpacksArchives) {
  auto installer = make();
  for (const char* file : {"/files/conn.tar.gz", "/files/conn.tgz", "/files/conn.zip"}) {
    auto inst = installer->install(spec(file, "./bin/conn"));
    ASSERT_TRUE(inst.ok()) << file << ": " << inst.status();
    EXPECT_THAT(testing::listTree(inst->root),
                ElementsAre("bin", "bin/conn", "current", "lib", "lib/data.txt"))
        << file;
    EXPECT_EQ(testing::shOk("./bin/conn", inst->root), "from-archive\n");
    EXPECT_EQ(testing::shOk("./current", inst->root), "from-archive\n");
  }
}

TEST_F(HttpTest, FollowsRedirects) {
  auto inst = make()->install(spec("/redirect/3/conn.sh"));
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_THAT(testing::listTree(inst->root), ElementsAre("conn.sh"));
  EXPECT_THAT(sink_->all(), HasSubstr("\"redirects\":3"));
}

TEST_F(HttpTest, RedirectLoop) {
  expectFailsCleanly(make()->install(spec("/loop")), absl::StatusCode::kInvalidArgument,
                     "too many redirects");
}

TEST_F(HttpTest, HttpErrors) {
  expectFailsCleanly(make()->install(spec("/files/missing.sh")), absl::StatusCode::kNotFound,
                     "HTTP 404");
  expectFailsCleanly(make()->install(spec("/status/503")), absl::StatusCode::kUnavailable,
                     "HTTP 503");
  expectFailsCleanly(make()->install(spec("/status/403")), absl::StatusCode::kPermissionDenied,
                     "HTTP 403");
  ConnectorSpec unreachable = spec("/x");
  unreachable.uri = "http://127.0.0.1:1/conn.sh";
  expectFailsCleanly(make()->install(unreachable), absl::StatusCode::kUnavailable,
                     "cannot download");
}

TEST_F(HttpTest, SlowServerTimesOut) {
  Options o = options();
  o.http_idle_timeout = std::chrono::seconds(1);
  auto installer = make(std::move(o));
  const auto start = std::chrono::steady_clock::now();
  expectFailsCleanly(installer->install(spec("/stall/conn.tar.gz", "./bin/conn")),
                     absl::StatusCode::kDeadlineExceeded, "timed out");
  expectFailsCleanly(installer->install(spec("/slowstart")), absl::StatusCode::kDeadlineExceeded,
                     "timed out");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));

  // The overall deadline, independent of the idle timeout.
  Options total = options();
  total.http_idle_timeout = std::chrono::seconds(30);
  total.fetch_timeout = std::chrono::seconds(1);
  const auto start2 = std::chrono::steady_clock::now();
  expectFailsCleanly(make(std::move(total))->install(spec("/stall/conn.tar.gz", "./bin/conn")),
                     absl::StatusCode::kDeadlineExceeded, "did not finish");
  EXPECT_LT(std::chrono::steady_clock::now() - start2, std::chrono::seconds(10));
}

TEST_F(HttpTest, SizeLimit) {
  Options o = options();
  o.max_download_bytes = 1U << 20U;
  auto installer = make(std::move(o));
  expectFailsCleanly(installer->install(spec("/stream/5000000/big.bin")),
                     absl::StatusCode::kResourceExhausted, "size limit");
  expectFailsCleanly(installer->install(spec("/biglen/huge.bin")),
                     absl::StatusCode::kResourceExhausted, "over the size limit");
}

TEST_F(HttpTest, ArchiveBombOverTheLimit) {
  Options o = options();
  o.max_unpacked_bytes = 8U << 20U;
  expectFailsCleanly(make(std::move(o))->install(spec("/files/bomb.tar.gz", "./zeros.bin")),
                     absl::StatusCode::kResourceExhausted, "archive bomb");
}

TEST_F(HttpTest, HostileArchives) {
  auto installer = make();
  expectFailsCleanly(installer->install(spec("/files/evil.tar.gz", "./bin/conn")),
                     absl::StatusCode::kInvalidArgument, "points outside");
  expectFailsCleanly(installer->install(spec("/files/traversal.zip", "./x")),
                     absl::StatusCode::kInvalidArgument, "'..'");
  EXPECT_FALSE(fs::exists(cache_.parent_path() / "outside.txt"));
}

TEST_F(HttpTest, FailingInstallCommandAndMissingCommand) {
  ConnectorSpec s = spec("/files/conn.tar.gz", "./bin/conn");
  s.install_command = "echo checking; test -f no-such-file";
  expectFailsCleanly(make()->install(s), absl::StatusCode::kFailedPrecondition,
                     "exited with code 1");
  expectFailsCleanly(make()->install(spec("/files/conn.tar.gz", "./bin/other")),
                     absl::StatusCode::kNotFound, "not found in the connector directory");
}

TEST_F(HttpTest, BearerTokenFromSecretNeverCrossesOrigins) {
  Credentials creds;
  creds.token = kToken;
  Options o = options();
  o.secrets = std::make_shared<StaticSecretResolver>(
      std::map<std::string, Credentials, std::less<>>{{"dl", creds}});
  auto installer = make(std::move(o));
  expectFailsCleanly(installer->install(spec("/auth/conn.sh")), absl::StatusCode::kPermissionDenied,
                     "HTTP 401");
  ConnectorSpec s = spec("/auth/conn.sh");
  s.secret_ref = "dl";
  auto inst = installer->install(s);
  ASSERT_TRUE(inst.ok()) << inst.status();
  inst = absl::UnknownError("released");
  // A redirect to another origin (localhost vs 127.0.0.1) must not carry the token: the
  // server answers 400 if it does.
  ConnectorSpec cross = spec("/cross/conn.sh");
  cross.name = "http-conn-cross";
  cross.secret_ref = "dl";
  auto crossed = installer->install(cross);
  ASSERT_TRUE(crossed.ok()) << crossed.status();
  EXPECT_THAT(sink_->all(), Not(HasSubstr(kToken)));
}

TEST_F(HttpTest, UpdateDownloadsAgainAndMakesANewVersionOnlyOnChange) {
  TempDir served;
  auto installer = make();
  ConnectorSpec s = spec("/files/conn.sh");
  auto v1 = installer->install(s);
  ASSERT_TRUE(v1.ok()) << v1.status();
  auto same = installer->update(s);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->version, v1->version);
  EXPECT_FALSE(same->installed_now);
  // Change the file on the server.
  const fs::path f = shared_files->path() / "conn.sh";
  testing::writeFile(f, "#!/bin/sh\necho newer\n");
  auto v2 = installer->update(s);
  testing::writeFile(f, "#!/bin/sh\necho downloaded\n");
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_NE(v2->version, v1->version);
  EXPECT_EQ(testing::shOk("./conn.sh", v2->root), "newer\n");
  EXPECT_EQ(testing::shOk("./conn.sh", v1->root), "downloaded\n");
}

}  // namespace
}  // namespace tributary::installer
