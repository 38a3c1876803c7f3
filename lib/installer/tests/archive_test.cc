#include "archive_extract.h"
#include "test_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

namespace tributary::installer {
namespace {

using internal::ArchiveKind;
using internal::archiveKindOf;
using internal::extractArchive;
using testing::ArchiveEntry;
using testing::ArchiveFormat;
using ::testing::HasSubstr;
using testing::TempDir;
using Type = ArchiveEntry::Type;

TEST(ArchiveTest, KindFromFileName) {
  EXPECT_EQ(archiveKindOf("c.tar.gz"), ArchiveKind::TarGz);
  EXPECT_EQ(archiveKindOf("C.TGZ"), ArchiveKind::TarGz);
  EXPECT_EQ(archiveKindOf("c.zip"), ArchiveKind::Zip);
  EXPECT_EQ(archiveKindOf("c.tar"), ArchiveKind::Tar);
  EXPECT_EQ(archiveKindOf("c.tar.xz"), ArchiveKind::TarXz);
  EXPECT_EQ(archiveKindOf("connector"), ArchiveKind::None);
  EXPECT_EQ(archiveKindOf("x.gz"), ArchiveKind::None);
}

class ArchiveFormatTest : public ::testing::TestWithParam<ArchiveFormat> {
 protected:
  std::filesystem::path archive() const {
    return tmp_.path() / (GetParam() == ArchiveFormat::Zip ? "a.zip" : "a.tar.gz");
  }
  ArchiveKind kind() const {
    return GetParam() == ArchiveFormat::Zip ? ArchiveKind::Zip : ArchiveKind::TarGz;
  }
  std::filesystem::path dest() {
    auto d = tmp_.path() / "dest";
    std::filesystem::create_directories(d);
    return d;
  }
  absl::StatusOr<internal::ExtractStats> extract(const std::vector<ArchiveEntry>& entries,
                                                 internal::ExtractLimits limits = {}) {
    testing::makeArchive(archive(), GetParam(), entries);
    return extractArchive(archive(), kind(), dest(), limits);
  }

  TempDir tmp_;
};

TEST_P(ArchiveFormatTest, ExtractsFilesDirsAndInTreeLinks) {
  auto stats = extract({{"bin/", Type::Dir, "", "", 0755},
                        {"bin/conn", Type::File, "#!/bin/sh\necho hi\n", "", 04755},
                        {"README", Type::File, "read me", "", 0644},
                        {"bin/link", Type::Symlink, "", "conn", 0777},
                        {"docs/up", Type::Symlink, "", "../README", 0777}});
  ASSERT_TRUE(stats.ok()) << stats.status();
  const auto d = tmp_.path() / "dest";
  EXPECT_EQ(testing::readFile(d / "README"), "read me");
  struct stat st {};
  ASSERT_EQ(::stat((d / "bin/conn").c_str(), &st), 0);
  EXPECT_TRUE((st.st_mode & S_IXUSR) != 0U);
  EXPECT_EQ(st.st_mode & S_ISUID, 0U) << "set-uid must be dropped";
  EXPECT_TRUE(std::filesystem::is_symlink(d / "bin/link"));
  EXPECT_EQ(std::filesystem::read_symlink(d / "bin/link"), "conn");
  EXPECT_EQ(testing::readFile(d / "docs/up"), "read me");
}

TEST_P(ArchiveFormatTest, RejectsSymlinkPointingOutside) {
  for (const char* target : {"../../etc/passwd", "/etc/passwd", ".."}) {
    std::filesystem::remove_all(tmp_.path() / "dest");
    auto stats = extract({{"evil", Type::Symlink, "", target, 0777}});
    ASSERT_FALSE(stats.ok()) << target;
    EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(stats.status().message()), HasSubstr("points outside"));
  }
}

TEST_P(ArchiveFormatTest, RejectsSymlinkChainEscape) {
  // a -> sub/deep/.. resolves lexically inside, but sub/deep is itself a link to ".." of
  // a shallower directory: only the physical check catches it.
  auto stats = extract({{"sub/", Type::Dir, "", "", 0755},
                        {"sub/deep", Type::Symlink, "", ".", 0777},
                        {"a", Type::Symlink, "", "sub/deep/../..", 0777}});
  ASSERT_FALSE(stats.ok());
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr("points outside"));
}

TEST_P(ArchiveFormatTest, RejectsTraversalAndAbsolutePaths) {
  auto dotdot = extract({{"../escape.txt", Type::File, "x", "", 0644}});
  ASSERT_FALSE(dotdot.ok());
  EXPECT_THAT(std::string(dotdot.status().message()), HasSubstr("'..'"));
  EXPECT_FALSE(std::filesystem::exists(tmp_.path() / "escape.txt"));
  std::filesystem::remove_all(tmp_.path() / "dest");
  auto absolute = extract({{"/tmp/instest-abs.txt", Type::File, "x", "", 0644}});
  ASSERT_FALSE(absolute.ok());
  EXPECT_THAT(std::string(absolute.status().message()), HasSubstr("absolute path"));
  EXPECT_FALSE(std::filesystem::exists("/tmp/instest-abs.txt"));
}

TEST_P(ArchiveFormatTest, RejectsWritingThroughALink) {
  // An in-tree link to a directory, then a file "through" it pointing at the real parent.
  auto stats = extract({{"d/", Type::Dir, "", "", 0755},
                        {"link", Type::Symlink, "", "d", 0777},
                        {"link/../../x", Type::File, "x", "", 0644}});
  ASSERT_FALSE(stats.ok());
  EXPECT_FALSE(std::filesystem::exists(tmp_.path() / "x"));
}

TEST_P(ArchiveFormatTest, EntryLimit) {
  std::vector<ArchiveEntry> entries;
  entries.reserve(20);
  for (int i = 0; i < 20; ++i) {
    entries.push_back({"f" + std::to_string(i), Type::File, "x", "", 0644});
  }
  internal::ExtractLimits limits;
  limits.max_entries = 10;
  auto stats = extract(entries, limits);
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kResourceExhausted);
}

INSTANTIATE_TEST_SUITE_P(Formats, ArchiveFormatTest,
                         ::testing::Values(ArchiveFormat::TarGz, ArchiveFormat::Zip),
                         [](const auto& param_info) {
                           return param_info.param == ArchiveFormat::Zip ? std::string("Zip")
                                                                         : std::string("TarGz");
                         });

TEST(ArchiveTest, BombOverTheLimit) {
  TempDir tmp;
  const auto bomb = tmp.path() / "bomb.tar.gz";
  testing::makeBombTarGz(bomb, 64ULL << 20U);  // 64 MiB of zeros, ~64 KiB compressed
  EXPECT_LT(std::filesystem::file_size(bomb), 1U << 20U);
  std::filesystem::create_directories(tmp.path() / "dest");
  internal::ExtractLimits limits;
  limits.max_bytes = 8ULL << 20U;
  auto stats = extractArchive(bomb, ArchiveKind::TarGz, tmp.path() / "dest", limits);
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr("limit"));
}

TEST(ArchiveTest, LyingSizeHeaderStillCounted) {
  // A zip entry is streamed: the byte count is what is written, not what the header says.
  TempDir tmp;
  const auto path = tmp.path() / "a.tar.gz";
  testing::makeArchive(path, ArchiveFormat::TarGz,
                       {{"big", Type::File, std::string(3U << 20U, 'a'), "", 0644}});
  std::filesystem::create_directories(tmp.path() / "dest");
  internal::ExtractLimits limits;
  limits.max_bytes = 1U << 20U;
  auto stats = extractArchive(path, ArchiveKind::TarGz, tmp.path() / "dest", limits);
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(ArchiveTest, RejectsFifoAndCorruptArchives) {
  TempDir tmp;
  std::filesystem::create_directories(tmp.path() / "dest");
  const auto fifo = tmp.path() / "f.tar.gz";
  testing::makeArchive(fifo, ArchiveFormat::TarGz, {{"pipe", Type::Fifo, "", "", 0644}});
  auto stats = extractArchive(fifo, ArchiveKind::TarGz, tmp.path() / "dest", {});
  ASSERT_FALSE(stats.ok());
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr("FIFO"));

  const auto corrupt = tmp.path() / "c.tar.gz";
  testing::writeFile(corrupt, "this is not gzip");
  stats = extractArchive(corrupt, ArchiveKind::TarGz, tmp.path() / "dest", {});
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ArchiveTest, HardLinkOutsideRejected) {
  TempDir tmp;
  std::filesystem::create_directories(tmp.path() / "dest");
  const auto path = tmp.path() / "h.tar.gz";
  testing::makeArchive(path, ArchiveFormat::TarGz,
                       {{"h", Type::Hardlink, "", "../../etc/passwd", 0644}});
  auto stats = extractArchive(path, ArchiveKind::TarGz, tmp.path() / "dest", {});
  ASSERT_FALSE(stats.ok());
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr("'..'"));
}

}  // namespace
}  // namespace tributary::installer
