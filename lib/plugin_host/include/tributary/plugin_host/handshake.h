#pragma once

#include "absl/status/statusor.h"

#include <string>
#include <string_view>
#include <vector>

namespace tributary::plugin_host {

/// The go-plugin handshake settings shared by host and plugin. c1's are the defaults.
struct HandshakeConfig {
  std::string cookie_key = "BASIC_PLUGIN";
  std::string cookie_value = "hello";
  std::vector<int> protocol_versions = {1};
};

/// A parsed handshake line: `CORE|APPVER|NETWORK|ADDRESS|PROTOCOL|SERVERCERT[|MUX]`.
struct HandshakeInfo {
  int core_version = 0;
  int app_version = 0;
  std::string network;          ///< "unix" or "tcp".
  std::string address;          ///< Socket path or host:port.
  std::string protocol;         ///< Always "grpc" once validated.
  std::string server_cert_der;  ///< Empty unless the plugin runs AutoMTLS.

  /// The gRPC target for this address (`unix:/path` or `ipv4:127.0.0.1:port`).
  [[nodiscard]] std::string grpcTarget() const;
};

/// Parses and validates one handshake line the way every go-plugin host v1.0–v1.8 accepts it
/// (6 or 7 fields, trailing whitespace/CR tolerated, certificate in unpadded base64 DER).
/// Errors name the offending field and quote the line (truncated).
absl::StatusOr<HandshakeInfo> parseHandshake(std::string_view line,
                                             const std::vector<int>& supported_versions);

}  // namespace tributary::plugin_host
