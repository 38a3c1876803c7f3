#include "tributary/mtls/mtls.h"

#include "gtest/gtest.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <array>
#include <ctime>
#include <memory>
#include <set>
#include <string>

namespace tributary::mtls {
namespace {

template <auto FreeFn>
struct Deleter {
  template <typename T>
  void operator()(T* handle) const {
    FreeFn(handle);
  }
};
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES_free>>;
using BasicConstraintsPtr = std::unique_ptr<BASIC_CONSTRAINTS, Deleter<BASIC_CONSTRAINTS_free>>;

X509Ptr parseDer(const std::string& der) {
  const auto* in = reinterpret_cast<const unsigned char*>(der.data());
  return X509Ptr(d2i_X509(nullptr, &in, static_cast<long>(der.size())));
}

X509Ptr parsePem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

EvpPkeyPtr parseKeyPem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return EvpPkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

std::string nameEntry(X509_NAME* name, int nid) {
  std::array<char, 256> buf{};
  const int len = X509_NAME_get_text_by_NID(name, nid, buf.data(), static_cast<int>(buf.size()));
  return len < 0 ? std::string() : std::string(buf.data(), static_cast<size_t>(len));
}

class GeneratedCertTest : public testing::Test {
 protected:
  void SetUp() override {
    auto generated = generateSelfSigned();
    ASSERT_TRUE(generated.ok()) << generated.status();
    cert_ = *std::move(generated);
    x509_ = parseDer(cert_.cert_der);
    ASSERT_NE(x509_, nullptr);
  }

  Certificate cert_;
  X509Ptr x509_;
};

TEST_F(GeneratedCertTest, KeyIsP521AndSignatureIsEcdsaSha512) {
  EVP_PKEY* pub = X509_get0_pubkey(x509_.get());
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(EVP_PKEY_get_base_id(pub), EVP_PKEY_EC);
  std::array<char, 64> group{};
  size_t group_len = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(pub, group.data(), group.size(), &group_len), 1);
  EXPECT_EQ(std::string(group.data(), group_len), "secp521r1");
  EXPECT_EQ(X509_get_signature_nid(x509_.get()), NID_ecdsa_with_SHA512);
  // Self-signed: the certificate's own key verifies its signature.
  EXPECT_EQ(X509_verify(x509_.get(), pub), 1);
}

TEST_F(GeneratedCertTest, SubjectIssuerAndSan) {
  EXPECT_EQ(nameEntry(X509_get_subject_name(x509_.get()), NID_commonName), "localhost");
  EXPECT_EQ(nameEntry(X509_get_subject_name(x509_.get()), NID_organizationName), "HashiCorp");
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(x509_.get()), X509_get_issuer_name(x509_.get())),
            0);
  EXPECT_EQ(X509_check_host(x509_.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(x509_.get(), "unused", 0, 0, nullptr), 1);

  GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(x509_.get(), NID_subject_alt_name, nullptr, nullptr)));
  ASSERT_NE(names, nullptr);
  ASSERT_EQ(sk_GENERAL_NAME_num(names.get()), 1);
  const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), 0);
  ASSERT_EQ(name->type, GEN_DNS);
  const ASN1_STRING* dns = name->d.dNSName;
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                        static_cast<size_t>(ASN1_STRING_length(dns))),
            "localhost");
}

TEST_F(GeneratedCertTest, UsagesAndCa) {
  const uint32_t eku = X509_get_extended_key_usage(x509_.get());
  EXPECT_NE(eku & XKU_SSL_SERVER, 0U);
  EXPECT_NE(eku & XKU_SSL_CLIENT, 0U);
  const uint32_t ku = X509_get_key_usage(x509_.get());
  EXPECT_NE(ku & KU_DIGITAL_SIGNATURE, 0U);
  EXPECT_NE(ku & KU_KEY_ENCIPHERMENT, 0U);
  EXPECT_NE(ku & KU_KEY_AGREEMENT, 0U);
  EXPECT_NE(ku & KU_KEY_CERT_SIGN, 0U);
  EXPECT_EQ(X509_check_ca(x509_.get()), 1);

  int critical = -1;
  BasicConstraintsPtr bc(static_cast<BASIC_CONSTRAINTS*>(
      X509_get_ext_d2i(x509_.get(), NID_basic_constraints, &critical, nullptr)));
  ASSERT_NE(bc, nullptr);
  EXPECT_NE(bc->ca, 0);
  EXPECT_EQ(critical, 1);
  EXPECT_EQ(X509_check_purpose(x509_.get(), X509_PURPOSE_SSL_SERVER, 0), 1);
  EXPECT_EQ(X509_check_purpose(x509_.get(), X509_PURPOSE_SSL_CLIENT, 0), 1);
}

TEST_F(GeneratedCertTest, ValidityAndSerial) {
  const time_t now = time(nullptr);
  // NotBefore is 30 s in the past (allow a few seconds for the test run).
  int day = 0;
  int sec = 0;
  ASSERT_EQ(ASN1_TIME_diff(&day, &sec, nullptr, X509_get0_notBefore(x509_.get())), 1);
  const long before = static_cast<long>(day) * 86400 + sec;
  EXPECT_LE(before, -25);
  EXPECT_GE(before, -40);
  // NotAfter is 262980 hours after NotBefore.
  ASSERT_EQ(
      ASN1_TIME_diff(&day, &sec, X509_get0_notBefore(x509_.get()), X509_get0_notAfter(x509_.get())),
      1);
  EXPECT_EQ(static_cast<long>(day) * 86400 + sec, 262980L * 3600L);
  EXPECT_EQ(X509_cmp_time(X509_get0_notBefore(x509_.get()), nullptr), -1);
  (void)now;

  const ASN1_INTEGER* serial = X509_get0_serialNumber(x509_.get());
  EXPECT_GT(ASN1_STRING_length(serial), 0);
  EXPECT_LE(ASN1_STRING_length(serial), 16);
  EXPECT_NE(ASN1_STRING_type(serial), V_ASN1_NEG_INTEGER);
  EXPECT_EQ(X509_get_version(x509_.get()), X509_VERSION_3);
}

TEST_F(GeneratedCertTest, PemDerAndKeyAgree) {
  X509Ptr from_pem = parsePem(cert_.cert_pem);
  ASSERT_NE(from_pem, nullptr);
  EXPECT_EQ(X509_cmp(from_pem.get(), x509_.get()), 0);
  EXPECT_EQ(cert_.key_pem.rfind("-----BEGIN PRIVATE KEY-----", 0), 0U) << "not PKCS#8";
  EvpPkeyPtr key = parseKeyPem(cert_.key_pem);
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(X509_check_private_key(x509_.get(), key.get()), 1);

  auto pem = derToPem(cert_.cert_der);
  ASSERT_TRUE(pem.ok()) << pem.status();
  EXPECT_EQ(*pem, cert_.cert_pem);
}

TEST(GenerateSelfSignedTest, EachCallIsFresh) {
  std::set<std::string> serials;
  std::set<std::string> keys;
  for (int i = 0; i < 3; ++i) {
    auto cert = generateSelfSigned();
    ASSERT_TRUE(cert.ok()) << cert.status();
    X509Ptr x509 = parseDer(cert->cert_der);
    ASSERT_NE(x509, nullptr);
    const ASN1_INTEGER* serial = X509_get0_serialNumber(x509.get());
    serials.emplace(reinterpret_cast<const char*>(ASN1_STRING_get0_data(serial)),
                    static_cast<size_t>(ASN1_STRING_length(serial)));
    keys.insert(cert->key_pem);
  }
  EXPECT_EQ(serials.size(), 3U);
  EXPECT_EQ(keys.size(), 3U);
}

TEST(Base64Test, KnownVectors) {
  // RFC 4648 §10 vectors, without padding.
  EXPECT_EQ(base64RawEncode(""), "");
  EXPECT_EQ(base64RawEncode("f"), "Zg");
  EXPECT_EQ(base64RawEncode("fo"), "Zm8");
  EXPECT_EQ(base64RawEncode("foo"), "Zm9v");
  EXPECT_EQ(base64RawEncode("foob"), "Zm9vYg");
  EXPECT_EQ(base64RawEncode("fooba"), "Zm9vYmE");
  EXPECT_EQ(base64RawEncode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64RawEncode(std::string("\xfb\xff\xbf", 3)), "+/+/");
}

TEST(Base64Test, DecodesWithAndWithoutPadding) {
  const std::pair<const char*, const char*> cases[] = {
      {"Zg", "f"},
      {"Zg==", "f"},
      {"Zm8", "fo"},
      {"Zm8=", "fo"},
      {"Zm9v", "foo"},
      {"Zm9vYg", "foob"},
      {"Zm9vYg==", "foob"},
      {"Zm9vYmE", "fooba"},
      {"Zm9vYmE=", "fooba"},
      {"Zm9vYmFy", "foobar"},
      {"", ""},
  };
  for (const auto& [in, want] : cases) {
    auto got = base64Decode(in);
    ASSERT_TRUE(got.ok()) << in << ": " << got.status();
    EXPECT_EQ(*got, want) << in;
  }
  // Line breaks are ignored, as in Go.
  auto wrapped = base64Decode("Zm9v\r\nYmFy\n");
  ASSERT_TRUE(wrapped.ok());
  EXPECT_EQ(*wrapped, "foobar");
}

TEST(Base64Test, RoundTripsEveryLength) {
  std::string bytes;
  for (int len = 0; len < 70; ++len) {
    auto raw = base64RawEncode(bytes);
    EXPECT_EQ(raw.find('='), std::string::npos);
    auto decoded = base64Decode(raw);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, bytes);
    // The same text with standard padding decodes to the same bytes.
    std::string padded = raw;
    while (padded.size() % 4 != 0) {
      padded.push_back('=');
    }
    auto decoded_padded = base64Decode(padded);
    ASSERT_TRUE(decoded_padded.ok()) << padded << ": " << decoded_padded.status();
    EXPECT_EQ(*decoded_padded, bytes);
    bytes.push_back(static_cast<char>((len * 37 + 11) & 0xff));
  }
}

TEST(Base64Test, RoundTripsCertificateDer) {
  auto cert = generateSelfSigned();
  ASSERT_TRUE(cert.ok());
  const std::string field = base64RawEncode(cert->cert_der);
  EXPECT_GT(field.size(), 50U);  // Go hosts ignore a cert field of 50 chars or fewer.
  EXPECT_EQ(field.find_first_of("=|\n"), std::string::npos);
  auto der = base64Decode(field);
  ASSERT_TRUE(der.ok());
  EXPECT_EQ(*der, cert->cert_der);
}

TEST(Base64Test, RejectsBadInput) {
  for (const char* bad : {"Z", "Zm9vY", "Zm9v!", "Zm 9v", "Zg=", "Zg===", "Z===", "Zm=9", "=",
                          "Zm9vYmFy=", "-_-_", "Zg==Zg=="}) {
    auto got = base64Decode(bad);
    EXPECT_FALSE(got.ok()) << "accepted '" << bad << "'";
    if (!got.ok()) {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST(DerToPemTest, RejectsBadInput) {
  EXPECT_EQ(derToPem("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(derToPem("not a certificate").status().code(), absl::StatusCode::kInvalidArgument);
  auto cert = generateSelfSigned();
  ASSERT_TRUE(cert.ok());
  // Truncated and padded DER are both refused.
  EXPECT_FALSE(derToPem(cert->cert_der.substr(0, cert->cert_der.size() - 1)).ok());
  EXPECT_FALSE(derToPem(cert->cert_der + "x").ok());
  // A PEM text is not DER.
  EXPECT_FALSE(derToPem(cert->cert_pem).ok());
}

}  // namespace
}  // namespace tributary::mtls
