// Unit tests of the client-side page preparation (no database).

#include "page_encoding.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <string>

namespace tributary::store::internal {
namespace {

proto::DataObject obj(const std::string& id, const std::string& metadata = "{}") {
  proto::DataObject o;
  o.set_remote_id(id);
  o.set_metadata(metadata);
  return o;
}

TEST(ValidTextTest, AcceptsUtf8RejectsNulAndBrokenSequences) {
  std::size_t offset = 0;
  bool nul = false;
  EXPECT_TRUE(validText("plain ascii longer than eight bytes", &offset, &nul));
  EXPECT_TRUE(validText("\u00e9\u65e5\U0001F600 mixed", &offset, &nul));
  EXPECT_FALSE(validText(std::string("abcdefghij\0k", 12), &offset, &nul));
  EXPECT_TRUE(nul);
  EXPECT_EQ(offset, 10U);
  EXPECT_FALSE(validText("\xC3\x28", &offset, &nul));
  EXPECT_FALSE(nul);
  EXPECT_FALSE(validText("\xC0\xAF", &offset, &nul));          // overlong
  EXPECT_FALSE(validText("\xED\xA0\x80", &offset, &nul));      // surrogate
  EXPECT_FALSE(validText("\xF4\x90\x80\x80", &offset, &nul));  // > U+10FFFF
  EXPECT_FALSE(validText("ok\xE2\x82", &offset, &nul));        // truncated
  EXPECT_EQ(offset, 2U);
}

TEST(JsonbCompatibleTest, MatchesWhatJsonbAccepts) {
  EXPECT_TRUE(jsonbCompatible("{}"));
  EXPECT_TRUE(jsonbCompatible(" [1, -2.5e10, true, null, \"x\"] "));
  EXPECT_TRUE(jsonbCompatible("\"string\""));
  EXPECT_TRUE(jsonbCompatible("123"));
  EXPECT_TRUE(jsonbCompatible("{\"k\":\"\\u00e9\\ud83d\\ude00\"}"));
  EXPECT_FALSE(jsonbCompatible(""));
  EXPECT_FALSE(jsonbCompatible("   "));
  EXPECT_FALSE(jsonbCompatible("nope"));
  EXPECT_FALSE(jsonbCompatible("{\"a\":1,}"));
  EXPECT_FALSE(jsonbCompatible("{} {}"));
  EXPECT_FALSE(jsonbCompatible("{\"a\":\"\\u0000\"}"));
  EXPECT_FALSE(jsonbCompatible("{\"\\u0000\":1}"));
  EXPECT_FALSE(jsonbCompatible("[1e999999]"));
  EXPECT_TRUE(jsonbCompatible("[1e300]"));
  EXPECT_FALSE(jsonbCompatible("{\"a\":\"\\ud800\"}"));  // lone surrogate
  EXPECT_FALSE(jsonbCompatible("// comment\n{}"));
  for (const char* bad :
       {"01",      "-",           "1.",          ".5",          "1e",        "1e+",
        "[1,]",    "{\"a\" 1}",   "{\"a\":}",    "[1 2]",       "{,}",       "\"tab\there\"",
        "\"\\x\"", "\"open",      "[",           "]",           "{\"a\":1]", "tru",
        "nul",     "\"\\ud83d\"", "\"\\ude00\"", "\"\\u12G4\"", "1e1000000", "[1]x"}) {
    EXPECT_FALSE(jsonbCompatible(bad)) << bad;
  }
  for (const char* good : {"0", "-0.0e-0", "1E+05", "[[[]]]", "{\"a\":{\"b\":[1,{}]}}",
                           "\"\\\"\\/\\b\\f\\n\\r\\t\"", "1e0016000", "\"caf\u00e9\""}) {
    EXPECT_TRUE(jsonbCompatible(good)) << good;
  }
  std::string deep(1000, '[');
  deep += std::string(1000, ']');
  EXPECT_TRUE(jsonbCompatible(deep));
  deep.back() = '}';
  EXPECT_FALSE(jsonbCompatible(deep));
}

TEST(PreparePageTest, LastCopyWinsInPageOrder) {
  proto::SyncResponse page;
  *page.add_response() = obj("a", "1");
  *page.add_response() = obj("b", "2");
  *page.add_response() = obj("a", "3");
  *page.add_response() = obj("c", "4");
  *page.add_response() = obj("b", "5");
  auto prepared = preparePage(page, 100);
  ASSERT_TRUE(prepared.ok());
  ASSERT_EQ(prepared->objects.size(), 3U);
  EXPECT_EQ(prepared->duplicates, 2U);
  EXPECT_EQ(prepared->objects[0]->metadata(), "3");
  EXPECT_EQ(prepared->objects[1]->metadata(), "4");
  EXPECT_EQ(prepared->objects[2]->metadata(), "5");
}

TEST(PreparePageTest, RefusesWhatPostgresCannotStore) {
  proto::SyncResponse page;
  *page.add_response() = obj("good");
  *page.add_response() = obj("bad", std::string("x\0y", 3));
  auto prepared = preparePage(page, 100);
  ASSERT_FALSE(prepared.ok());
  EXPECT_THAT(std::string(prepared.status().message()),
              ::testing::HasSubstr("object #1 (remote_id \"bad\"): field metadata contains a NUL"));
  proto::SyncResponse long_id;
  *long_id.add_response() = obj(std::string(101, 'x'));
  EXPECT_FALSE(preparePage(long_id, 100).ok());
}

TEST(EncodeTest, EmptyAndNonEmptyArrays) {
  proto::SyncResponse page;
  auto empty = preparePage(page, 100);
  ASSERT_TRUE(empty.ok());
  ArrayParams arrays = encodeArrays(*empty);
  EXPECT_EQ(arrays.remote_ids.size(), 12U);  // ndim, flags, element type
  *page.add_response() = obj("ab");
  auto one = preparePage(page, 100);
  ASSERT_TRUE(one.ok());
  arrays = encodeArrays(*one);
  EXPECT_EQ(arrays.remote_ids.size(), 20U + 4U + 2U);
  EXPECT_EQ(arrays.remote_ids.substr(24), "ab");
  const std::string copy = encodeCopy(*one);
  EXPECT_EQ(copy.substr(0, 11), std::string("PGCOPY\n\377\r\n\0", 11));
}

}  // namespace
}  // namespace tributary::store::internal
