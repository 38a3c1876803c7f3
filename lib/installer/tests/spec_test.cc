#include "tributary/installer/spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tributary::installer {
namespace {

using ::testing::HasSubstr;

// c1's own pkg/connector/s3/connector.json, byte for byte.
constexpr const char* kC1S3 = R"({
  "name": "s3",
  "description": "A simple connector to fetch data from S3 buckets",
  "source": "VCS",
  "uri": "https://github.com/pidanou/c1-core",
  "install_command": "go build -o s3 pkg/connector/s3/s3.go && chmod +x s3",
  "update_command": "",
  "command": "./s3"
})";

TEST(SpecTest, AcceptsC1ConnectorJsonAsIs) {
  auto spec = parseConnectorJson(kC1S3);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "s3");
  EXPECT_EQ(spec->source, Source::Vcs);
  EXPECT_EQ(spec->uri, "https://github.com/pidanou/c1-core");
  EXPECT_EQ(spec->install_command, "go build -o s3 pkg/connector/s3/s3.go && chmod +x s3");
  EXPECT_EQ(spec->update_command, "");
  EXPECT_EQ(spec->command, "./s3");
  EXPECT_TRUE(spec->ref.empty());
}

TEST(SpecTest, AcceptsC1ConnectorList) {
  const std::string list = std::string("[") + kC1S3 + R"(, {"name": "gdrive-adc", "source": "VCS",
      "uri": "https://github.com/pidanou/c1-core", "install_command": "go build -o gdrive x.go",
      "update_command": "", "command": "./gdrive"}])";
  auto specs = parseConnectorListJson(list);
  ASSERT_TRUE(specs.ok()) << specs.status();
  ASSERT_EQ(specs->size(), 2U);
  EXPECT_EQ((*specs)[1].name, "gdrive-adc");
}

TEST(SpecTest, ExtensionsAndCamelCase) {
  auto spec = parseConnectorJson(R"({"name": "x", "source": "http", "uri": "https://h/x.tgz",
      "sha256": "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
      "installCommand": "make", "updateCommand": "make update", "command": "./x",
      "env": {"A": "1"}, "secretRef": "tok", "unknown_field": 42})");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->source, Source::Http);
  EXPECT_EQ(spec->install_command, "make");
  EXPECT_EQ(spec->update_command, "make update");
  EXPECT_EQ(spec->env.at("A"), "1");
  EXPECT_EQ(spec->secret_ref, "tok");
  // Round trip.
  auto again = parseConnectorJson(toJson(*spec));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(specHash(*again), specHash(*spec));
}

struct BadCase {
  const char* json;
  const char* message;
};

class BadSpecTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadSpecTest, ClearError) {
  auto spec = parseConnectorJson(GetParam().json);
  ASSERT_FALSE(spec.ok()) << GetParam().json;
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadSpecTest,
    ::testing::Values(
        BadCase{"not json", "not valid JSON"}, BadCase{"[]", "must be a JSON object"},
        BadCase{R"({"source": "VCS", "uri": "/r", "command": "./x"})",
                "missing required field 'name'"},
        BadCase{R"({"name": "x", "uri": "/r", "command": "./x"})",
                "missing required field 'source'"},
        BadCase{R"({"name": "x", "source": "VCS", "command": "./x"})",
                "missing required field 'uri'"},
        BadCase{R"({"name": "x", "source": "VCS", "uri": "/r"})",
                "missing required field 'command'"},
        BadCase{R"({"name": "x", "source": "FTP", "uri": "/r", "command": "./x"})",
                "unknown source 'FTP'"},
        BadCase{R"({"name": "../etc", "source": "VCS", "uri": "/r", "command": "./x"})",
                "field 'name'"},
        BadCase{R"({"name": "/abs", "source": "VCS", "uri": "/r", "command": "./x"})",
                "field 'name'"},
        BadCase{R"({"name": "a/b", "source": "VCS", "uri": "/r", "command": "./x"})",
                "field 'name'"},
        BadCase{R"({"name": "..", "source": "VCS", "uri": "/r", "command": "./x"})",
                "field 'name'"},
        BadCase{R"({"name": 5, "source": "VCS", "uri": "/r", "command": "./x"})",
                "'name' must be a string"},
        BadCase{R"({"name": "x", "source": "HTTP", "uri": "ftp://h/x", "command": "./x"})",
                "http:// or https://"},
        BadCase{R"({"name": "x", "source": "VCS", "uri": "svn://h/x", "command": "./x"})",
                "unsupported URL scheme"},
        BadCase{R"({"name": "x", "source": "VCS", "uri": "relative/path", "command": "./x"})",
                "absolute path"},
        BadCase{R"({"name": "x", "source": "Local", "uri": "rel/dir", "command": "./x"})",
                "absolute path"},
        BadCase{
            R"({"name": "x", "source": "HTTP", "uri": "https://h/x", "ref": "main", "command": "./x"})",
            "'ref' applies to source VCS only"},
        BadCase{R"({"name": "x", "source": "VCS", "uri": "/r", "sha256": "00", "command": "./x"})",
                "'sha256' applies to source HTTP only"},
        BadCase{
            R"({"name": "x", "source": "HTTP", "uri": "https://h/x", "sha256": "xyz", "command": "./x"})",
            "64 hexadecimal"},
        BadCase{R"({"name": "x", "source": "VCS", "uri": "/r", "ref": "a..b", "command": "./x"})",
                "not a valid git ref"},
        BadCase{
            R"({"name": "x", "source": "VCS", "uri": "/r", "ref": "--upload-pack=x", "command": "./x"})",
            "not a valid git ref"},
        BadCase{
            R"({"name": "x", "source": "VCS", "uri": "/r", "env": {"A=B": "1"}, "command": "./x"})",
            "invalid env variable name"},
        BadCase{R"({"name": "x", "source": "VCS", "uri": "/r", "env": ["x"], "command": "./x"})",
                "'env' must be an object"},
        BadCase{
            R"({"name": "x", "source": "VCS", "uri": "/r", "secret_ref": "../s", "command": "./x"})",
            "secret_ref"}));

TEST(SpecTest, HashCoversWhatIsInstalledOnly) {
  auto base = parseConnectorJson(kC1S3);
  ASSERT_TRUE(base.ok());
  const std::string h = specHash(*base);
  EXPECT_EQ(h.size(), 16U);
  ConnectorSpec s = *base;
  s.command = "./other";
  s.description = "changed";
  s.update_command = "git pull";
  s.secret_ref = "tok";
  EXPECT_EQ(specHash(s), h);
  for (auto change :
       {+[](ConnectorSpec& c) { c.uri += "x"; }, +[](ConnectorSpec& c) { c.ref = "v1"; },
        +[](ConnectorSpec& c) { c.install_command += " -v"; },
        +[](ConnectorSpec& c) { c.env["X"] = "1"; }}) {
    ConnectorSpec changed = *base;
    change(changed);
    EXPECT_NE(specHash(changed), h);
  }
}

TEST(SpecTest, RedactsCredentialsInUris) {
  EXPECT_EQ(redactUri("https://user:pa55@host/repo.git"), "https://user:***@host/repo.git");
  EXPECT_EQ(redactUri("https://ghp_token@host/repo.git"), "https://***@host/repo.git");
  EXPECT_EQ(redactUri("ssh://git@host/repo.git"), "ssh://git@host/repo.git");
  EXPECT_EQ(redactUri("https://host/a@b"), "https://host/a@b");
  EXPECT_EQ(redactUri("/local/path"), "/local/path");
}

}  // namespace
}  // namespace tributary::installer
