#include "tributary/plugin_host/handshake.h"

#include "tributary/common/strings.h"
#include "tributary/mtls/mtls.h"

#include <algorithm>
#include <charconv>

namespace tributary::plugin_host {
namespace {

constexpr int kCoreProtocolVersion = 1;
// go-plugin only looks at the certificate field when it is longer than this.
constexpr std::size_t kMinCertFieldLength = 50;
constexpr std::size_t kQuotedLineLimit = 200;

std::string quoted(std::string_view line) {
  if (line.size() > kQuotedLineLimit) {
    return strings::cat("\"", line.substr(0, kQuotedLineLimit), "…\" (", line.size(), " bytes)");
  }
  return strings::cat("\"", line, "\"");
}

bool parseInt(std::string_view text, int& out) {
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

}  // namespace

std::string HandshakeInfo::grpcTarget() const {
  if (network == "unix") {
    return strings::cat("unix:", address);
  }
  return address;
}

absl::StatusOr<HandshakeInfo> parseHandshake(std::string_view raw_line,
                                             const std::vector<int>& supported_versions) {
  const std::string_view line = strings::trim(raw_line);
  const std::vector<std::string_view> fields = strings::split(line, '|');
  if (line.empty() || fields.size() < 4) {
    return absl::FailedPreconditionError(strings::cat(
        "unrecognized handshake line from connector: ", quoted(line),
        "; a go-plugin connector must print `1|<version>|unix|<socket>|grpc|` as the first line "
        "on stdout and nothing before it"));
  }
  HandshakeInfo info;
  if (!parseInt(fields[0], info.core_version) || info.core_version != kCoreProtocolVersion) {
    return absl::FailedPreconditionError(
        strings::cat("incompatible go-plugin core protocol version ", quoted(fields[0]),
                     " in handshake ", quoted(line), "; only version 1 exists"));
  }
  if (!parseInt(fields[1], info.app_version) ||
      std::find(supported_versions.begin(), supported_versions.end(), info.app_version) ==
          supported_versions.end()) {
    return absl::FailedPreconditionError(strings::cat("incompatible connector protocol version ",
                                                      quoted(fields[1]), "; this host supports [",
                                                      strings::join(supported_versions, ","), "]"));
  }
  info.network = std::string(fields[2]);
  if (info.network != "unix" && info.network != "tcp") {
    return absl::FailedPreconditionError(strings::cat("unknown address type ", quoted(info.network),
                                                      " in handshake; expected unix or tcp"));
  }
  info.address = std::string(fields[3]);
  if (info.address.empty()) {
    return absl::FailedPreconditionError(strings::cat("empty address in handshake ", quoted(line)));
  }
  info.protocol = fields.size() > 4 ? std::string(fields[4]) : "netrpc";
  if (info.protocol != "grpc") {
    return absl::FailedPreconditionError(
        strings::cat("connector speaks go-plugin protocol ", quoted(info.protocol),
                     "; only grpc is supported (build it with a GRPCPlugin)"));
  }
  if (fields.size() > 5 && fields[5].size() > kMinCertFieldLength) {
    auto der = mtls::base64Decode(fields[5]);
    if (!der.ok()) {
      return absl::FailedPreconditionError(strings::cat(
          "cannot decode the connector's AutoMTLS certificate: ", der.status().message()));
    }
    info.server_cert_der = *std::move(der);
  }
  // A 7th field (multiplexing) is only meaningful if we asked for it, which we never do.
  return info;
}

}  // namespace tributary::plugin_host
