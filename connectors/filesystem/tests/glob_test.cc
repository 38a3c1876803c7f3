#include "glob.h"

#include <gtest/gtest.h>

namespace tributary::connectors::filesystem {
namespace {

bool match(const char* pattern, const char* path, bool dir = false) {
  auto glob = Glob::compile(pattern);
  EXPECT_TRUE(glob.ok()) << glob.status();
  return glob.ok() && glob->matches(path, dir);
}

TEST(Glob, NameWithoutSlashMatchesAtAnyDepth) {
  EXPECT_TRUE(match("*.log", "a.log"));
  EXPECT_TRUE(match("*.log", "x/y/a.log"));
  EXPECT_FALSE(match("*.log", "x/a.log/b"));
  EXPECT_TRUE(match("a?c", "dir/abc"));
  EXPECT_FALSE(match("a?c", "dir/ac"));
}

TEST(Glob, SlashAnchorsAtTheRoot) {
  EXPECT_TRUE(match("src/*.cc", "src/a.cc"));
  EXPECT_FALSE(match("src/*.cc", "lib/src/a.cc"));
  EXPECT_FALSE(match("src/*.cc", "src/x/a.cc"));
  EXPECT_TRUE(match("/build", "build"));
  EXPECT_FALSE(match("/build", "x/build"));
}

TEST(Glob, DoubleStarSpansDirectories) {
  EXPECT_TRUE(match("src/**/*.cc", "src/a.cc"));
  EXPECT_TRUE(match("src/**/*.cc", "src/x/y/a.cc"));
  EXPECT_TRUE(match("**/test", "a/b/test"));
  EXPECT_TRUE(match("**/test", "test"));
  EXPECT_TRUE(match("docs/**", "docs/a/b"));
  EXPECT_FALSE(match("docs/**", "src/a"));
}

TEST(Glob, TrailingSlashMatchesDirectoriesOnly) {
  EXPECT_TRUE(match("cache/", "x/cache", true));
  EXPECT_FALSE(match("cache/", "x/cache", false));
}

TEST(Glob, ClassesEscapesAndUnicode) {
  EXPECT_TRUE(match("[abc].txt", "b.txt"));
  EXPECT_FALSE(match("[!abc].txt", "b.txt"));
  EXPECT_TRUE(match("[a-c]x", "bx"));
  EXPECT_TRUE(match("[]]", "]"));
  EXPECT_TRUE(match("\\*", "*"));
  EXPECT_FALSE(match("\\*", "a"));
  EXPECT_TRUE(match("?.txt", "é.txt"));  // '?' is one character, not one byte.
  EXPECT_TRUE(match("日本*", "日本語.md"));
}

TEST(Glob, InvalidPatternsAreRefused) {
  for (const char* bad : {"", "/", "[abc", "a\\", "a//b"}) {
    EXPECT_FALSE(Glob::compile(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace tributary::connectors::filesystem
