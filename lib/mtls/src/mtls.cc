#include "tributary/mtls/mtls.h"

#include "absl/status/status.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <array>
#include <climits>
#include <cstdint>
#include <memory>
#include <string>

namespace tributary::mtls {
namespace {

// RAII for OpenSSL handles: every handle type gets a unique_ptr with its own free function.
template <auto FreeFn>
struct OpenSslDeleter {
  template <typename T>
  void operator()(T* handle) const {
    FreeFn(handle);
  }
};

using BioPtr = std::unique_ptr<BIO, OpenSslDeleter<BIO_free_all>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpenSslDeleter<BN_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OpenSslDeleter<EVP_PKEY_free>>;
using EvpPkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, OpenSslDeleter<EVP_PKEY_CTX_free>>;
using X509Ptr = std::unique_ptr<X509, OpenSslDeleter<X509_free>>;
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, OpenSslDeleter<X509_EXTENSION_free>>;

// go-plugin: NotAfter = NotBefore + 262980 h, i.e. 10957 days and 12 hours after now - 30 s.
constexpr int kNotBeforeSkewSeconds = -30;
constexpr int kValidityDays = 10957;
constexpr long kValidityExtraSeconds = 12L * 3600L - 30L;

// Drains the thread's OpenSSL error queue into one status with `what` as context.
absl::Status openSslError(std::string_view what) {
  std::string message(what);
  bool first = true;
  while (const unsigned long code = ERR_get_error()) {
    std::array<char, 256> buf{};
    ERR_error_string_n(code, buf.data(), buf.size());
    message += first ? ": " : "; ";
    message += buf.data();
    first = false;
  }
  return absl::InternalError(message);
}

absl::StatusOr<std::string> bioContents(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  if (len < 0 || (len > 0 && data == nullptr)) {
    return openSslError("reading memory BIO");
  }
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> certToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return openSslError("encoding certificate as PEM");
  }
  return bioContents(bio.get());
}

absl::StatusOr<std::string> certToDer(X509* cert) {
  const int len = i2d_X509(cert, nullptr);
  if (len <= 0) {
    return openSslError("encoding certificate as DER");
  }
  std::string der(static_cast<size_t>(len), '\0');
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_X509(cert, &out) != len) {
    return openSslError("encoding certificate as DER");
  }
  return der;
}

absl::StatusOr<EvpPkeyPtr> generateP521Key() {
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_group_name(ctx.get(), "P-521") != 1) {
    return openSslError("setting up P-521 key generation");
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_generate(ctx.get(), &raw) != 1) {
    return openSslError("generating P-521 key");
  }
  return EvpPkeyPtr(raw);
}

// A random serial in [1, 2^128), like Go's rand.Int(rand.Reader, 1<<128) (zero is re-drawn:
// RFC 5280 wants a positive serial).
absl::Status setRandomSerial(X509* cert) {
  std::array<unsigned char, 16> bytes{};
  BignumPtr bn;
  do {
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
      return openSslError("drawing a random serial number");
    }
    bn.reset(BN_bin2bn(bytes.data(), static_cast<int>(bytes.size()), nullptr));
    if (!bn) {
      return openSslError("building the serial number");
    }
  } while (BN_is_zero(bn.get()));
  ASN1_INTEGER* serial = X509_get_serialNumber(cert);  // Owned by the certificate.
  if (BN_to_ASN1_INTEGER(bn.get(), serial) == nullptr) {
    return openSslError("setting the serial number");
  }
  return absl::OkStatus();
}

absl::Status addExtension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  X509ExtensionPtr ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return openSslError(std::string("adding extension ") + OBJ_nid2sn(nid));
  }
  return absl::OkStatus();
}

absl::Status addNameEntry(X509_NAME* name, const char* field, const char* value) {
  if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(value), -1, -1, 0) != 1) {
    return openSslError(std::string("adding subject field ") + field);
  }
  return absl::OkStatus();
}

absl::StatusOr<Certificate> generate() {
  auto key = generateP521Key();
  if (!key.ok()) {
    return key.status();
  }
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return openSslError("creating certificate");
  }
  if (auto status = setRandomSerial(cert.get()); !status.ok()) {
    return status;
  }
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), kNotBeforeSkewSeconds) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), kValidityDays, kValidityExtraSeconds,
                       nullptr) == nullptr) {
    return openSslError("setting validity");
  }
  // Go orders RDNs O before CN; the subject is also the issuer (self-signed).
  X509_NAME* name = X509_get_subject_name(cert.get());  // Owned by the certificate.
  if (auto status = addNameEntry(name, "O", "HashiCorp"); !status.ok()) {
    return status;
  }
  if (auto status = addNameEntry(name, "CN", "localhost"); !status.ok()) {
    return status;
  }
  if (X509_set_issuer_name(cert.get(), name) != 1 || X509_set_pubkey(cert.get(), key->get()) != 1) {
    return openSslError("setting issuer and public key");
  }

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  const struct {
    int nid;
    const char* value;
  } extensions[] = {
      {NID_basic_constraints, "critical,CA:TRUE"},
      {NID_key_usage, "critical,digitalSignature,keyEncipherment,keyAgreement,keyCertSign"},
      {NID_ext_key_usage, "clientAuth,serverAuth"},
      {NID_subject_key_identifier, "hash"},
      {NID_subject_alt_name, "DNS:localhost"},
  };
  for (const auto& ext : extensions) {
    if (auto status = addExtension(cert.get(), &ctx, ext.nid, ext.value); !status.ok()) {
      return status;
    }
  }
  if (X509_sign(cert.get(), key->get(), EVP_sha512()) <= 0) {
    return openSslError("signing certificate");
  }

  Certificate out;
  auto pem = certToPem(cert.get());
  if (!pem.ok()) {
    return pem.status();
  }
  out.cert_pem = *std::move(pem);
  auto der = certToDer(cert.get());
  if (!der.ok()) {
    return der.status();
  }
  out.cert_der = *std::move(der);

  BioPtr key_bio(BIO_new(BIO_s_mem()));
  // PEM_write_bio_PrivateKey without a cipher writes an unencrypted PKCS#8 "PRIVATE KEY" block.
  if (!key_bio || PEM_write_bio_PrivateKey(key_bio.get(), key->get(), nullptr, nullptr, 0, nullptr,
                                           nullptr) != 1) {
    return openSslError("encoding private key");
  }
  auto key_pem = bioContents(key_bio.get());
  if (!key_pem.ok()) {
    return key_pem.status();
  }
  out.key_pem = *std::move(key_pem);
  return out;
}

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Maps a base64 character to its 6-bit value, or -1.
int decodeChar(char c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '+') {
    return 62;
  }
  if (c == '/') {
    return 63;
  }
  return -1;
}

}  // namespace

absl::StatusOr<Certificate> generateSelfSigned() {
  // OpenSSL's error queue is per thread; start clean so errors reported are ours.
  ERR_clear_error();
  auto result = generate();
  ERR_clear_error();
  return result;
}

std::string base64RawEncode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                       static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                       static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 2]));
    out.push_back(kAlphabet[(v >> 18) & 0x3f]);
    out.push_back(kAlphabet[(v >> 12) & 0x3f]);
    out.push_back(kAlphabet[(v >> 6) & 0x3f]);
    out.push_back(kAlphabet[v & 0x3f]);
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) {
      v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    }
    out.push_back(kAlphabet[(v >> 18) & 0x3f]);
    out.push_back(kAlphabet[(v >> 12) & 0x3f]);
    if (rest == 2) {
      out.push_back(kAlphabet[(v >> 6) & 0x3f]);
    }
  }
  return out;
}

absl::StatusOr<std::string> base64Decode(std::string_view text) {
  // Like Go's decoder, line breaks are ignored; anything else outside the alphabet is an error.
  std::string clean;
  clean.reserve(text.size());
  for (const char c : text) {
    if (c != '\r' && c != '\n') {
      clean.push_back(c);
    }
  }
  // Strip padding, then check it was either absent or exactly what the length requires.
  size_t data_len = clean.size();
  size_t padding = 0;
  while (data_len > 0 && clean[data_len - 1] == '=') {
    --data_len;
    ++padding;
  }
  if (data_len % 4 == 1) {
    return absl::InvalidArgumentError("base64: invalid length " + std::to_string(clean.size()));
  }
  if (padding > 0 && (padding > 2 || (data_len + padding) % 4 != 0)) {
    return absl::InvalidArgumentError("base64: invalid padding");
  }
  std::string out;
  out.reserve(data_len / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < data_len; ++i) {
    const int v = decodeChar(clean[i]);
    if (v < 0) {
      return absl::InvalidArgumentError("base64: illegal character at input byte " +
                                        std::to_string(i));
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

absl::StatusOr<std::string> derToPem(std::string_view der) {
  if (der.empty() || der.size() > static_cast<size_t>(LONG_MAX)) {
    return absl::InvalidArgumentError("certificate DER is empty or too large");
  }
  ERR_clear_error();
  const auto* in = reinterpret_cast<const unsigned char*>(der.data());
  const auto* const end = in + der.size();
  X509Ptr cert(d2i_X509(nullptr, &in, static_cast<long>(der.size())));
  if (!cert) {
    auto status = openSslError("parsing DER certificate");
    return absl::InvalidArgumentError(status.message());
  }
  if (in != end) {
    return absl::InvalidArgumentError("trailing bytes after DER certificate");
  }
  auto pem = certToPem(cert.get());
  ERR_clear_error();
  return pem;
}

}  // namespace tributary::mtls
