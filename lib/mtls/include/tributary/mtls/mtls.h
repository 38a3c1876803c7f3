#pragma once

#include "absl/status/statusor.h"

#include <string>
#include <string_view>

/// AutoMTLS helpers shared by the plugin host and the C++ connector SDK (go-plugin §10).
namespace tributary::mtls {

/// A freshly generated self-signed certificate and its private key.
struct Certificate {
  std::string cert_pem;  ///< PEM "CERTIFICATE" block.
  std::string key_pem;   ///< PEM private key (PKCS#8). Never logged, never leaves the process.
  std::string cert_der;  ///< DER bytes of the certificate.
};

/// Generates what go-plugin's generateCert does: ECDSA P-521, self-signed (ecdsa-with-SHA512),
/// CN=localhost O=HashiCorp, SAN DNS:localhost, KeyUsage digitalSignature|keyEncipherment|
/// keyAgreement|certSign, ExtKeyUsage serverAuth+clientAuth, BasicConstraints CA:TRUE,
/// valid from now-30s for ~30 years, random 128-bit serial. Thread-safe.
absl::StatusOr<Certificate> generateSelfSigned();

/// Standard base64 without padding (Go base64.RawStdEncoding).
std::string base64RawEncode(std::string_view bytes);

/// Standard base64 decode that accepts input with or without '=' padding. Error on bad input.
absl::StatusOr<std::string> base64Decode(std::string_view text);

/// Parses one DER certificate and returns it as PEM. Error if it is not a valid X.509 certificate.
absl::StatusOr<std::string> derToPem(std::string_view der);

}  // namespace tributary::mtls
