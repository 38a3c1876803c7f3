#include "tributary/plugin_host/handshake.h"

#include "tributary/mtls/mtls.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tributary::plugin_host {
namespace {

using ::testing::HasSubstr;

const std::vector<int> kV1 = {1};

TEST(ParseHandshake, GoPluginSixFieldsWithTrailingBar) {
  auto info = parseHandshake("1|1|unix|/tmp/plugin705686738|grpc|\n", kV1);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->core_version, 1);
  EXPECT_EQ(info->app_version, 1);
  EXPECT_EQ(info->network, "unix");
  EXPECT_EQ(info->address, "/tmp/plugin705686738");
  EXPECT_EQ(info->protocol, "grpc");
  EXPECT_TRUE(info->server_cert_der.empty());
  EXPECT_EQ(info->grpcTarget(), "unix:/tmp/plugin705686738");
}

TEST(ParseHandshake, FiveFieldsCrLfAndTcp) {
  auto info = parseHandshake("1|1|tcp|127.0.0.1:10000|grpc\r\n", kV1);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->grpcTarget(), "127.0.0.1:10000");
}

TEST(ParseHandshake, SeventhMultiplexFieldIsIgnored) {
  EXPECT_TRUE(parseHandshake("1|1|unix|/tmp/p|grpc||true", kV1).ok());
}

TEST(ParseHandshake, NegotiatedVersionMustBeSupported) {
  auto info = parseHandshake("1|5|unix|/tmp/p|grpc|", {5, 6});
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->app_version, 5);
  auto bad = parseHandshake("1|2|unix|/tmp/p|grpc|", kV1);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("incompatible connector protocol version \"2\"; this host supports [1]"));
}

TEST(ParseHandshake, RejectsWhatGoHostsReject) {
  for (const char* line :
       {"", "hello from the connector", "1|1|unix", "2|1|unix|/p|grpc|", "x|1|unix|/p|grpc|",
        "1|1|pipe|/p|grpc|", "1|1|unix||grpc|", "1|1|unix|/p", "1|1|unix|/p|netrpc|"}) {
    auto info = parseHandshake(line, kV1);
    EXPECT_FALSE(info.ok()) << line;
    EXPECT_EQ(info.status().code(), absl::StatusCode::kFailedPrecondition) << line;
  }
}

TEST(ParseHandshake, LongLinesAreQuotedTruncated) {
  const std::string junk(5000, 'x');
  auto info = parseHandshake(junk, kV1);
  ASSERT_FALSE(info.ok());
  EXPECT_LT(info.status().message().size(), 600U);
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("(5000 bytes)"));
}

TEST(ParseHandshake, DecodesUnpaddedAndPaddedCertificates) {
  auto cert = mtls::generateSelfSigned();
  ASSERT_TRUE(cert.ok());
  const std::string unpadded = mtls::base64RawEncode(cert->cert_der);
  auto info = parseHandshake("1|1|unix|/tmp/p|grpc|" + unpadded, kV1);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->server_cert_der, cert->cert_der);
  std::string padded = unpadded;
  while (padded.size() % 4 != 0) {
    padded.push_back('=');
  }
  auto info2 = parseHandshake("1|1|unix|/tmp/p|grpc|" + padded, kV1);
  ASSERT_TRUE(info2.ok()) << info2.status();
  EXPECT_EQ(info2->server_cert_der, cert->cert_der);
}

TEST(ParseHandshake, ShortCertificateFieldIsIgnoredLikeGo) {
  auto info = parseHandshake("1|1|unix|/tmp/p|grpc|notacert", kV1);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->server_cert_der.empty());
}

TEST(ParseHandshake, GarbageCertificateIsAnError) {
  auto info = parseHandshake("1|1|unix|/tmp/p|grpc|" + std::string(80, '%'), kV1);
  ASSERT_FALSE(info.ok());
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("AutoMTLS certificate"));
}

}  // namespace
}  // namespace tributary::plugin_host
