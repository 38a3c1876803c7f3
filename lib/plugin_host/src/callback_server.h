#pragma once

#include "tributary/common/log.h"
#include "tributary/plugin_host/plugin_host.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "connector.grpc.pb.h"

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace tributary::plugin_host {

/// `proto.CallbackHandler` served to the connector for one Sync on its own unix socket.
/// Pages are handed to the PageSink one at a time; after close() every call is refused.
///
/// Every call the server answers with an error is a refusal and is counted, whatever it was: a
/// page or Clean the sink refused, an oversized or late page, a request that does not parse, or a
/// method or service this protocol does not have (a connector built against another revision of
/// the callback protocol). A Sync with any refusal is not a success, even if the connector
/// ignored the error and returned OK: what it meant to send did not arrive.
class CallbackServer {
 public:
  struct Stats {
    SyncResult counts;                 ///< Accepted calls only.
    std::uint64_t refused_pages = 0;   ///< Upsert calls answered with an error.
    std::uint64_t refused_cleans = 0;  ///< Clean calls answered with an error.
    std::uint64_t refused_other = 0;   ///< Calls of methods the server does not have.
    std::optional<RefusedCall> first_refusal;
    [[nodiscard]] std::uint64_t refused() const {
      return refused_pages + refused_cleans + refused_other;
    }
  };

  static absl::StatusOr<std::unique_ptr<CallbackServer>> start(
      const std::filesystem::path& socket_path,
      const std::shared_ptr<grpc::ServerCredentials>& credentials, std::size_t max_page_bytes,
      PageSink& sink, log::Logger logger);
  ~CallbackServer();
  CallbackServer(const CallbackServer&) = delete;
  CallbackServer& operator=(const CallbackServer&) = delete;

  /// Refuses further calls, stops the server and removes the socket. Idempotent.
  void close();
  [[nodiscard]] Stats stats() const;

  /// The gRPC service (public only for the file's interceptor).
  class Service;

 private:
  CallbackServer(std::filesystem::path socket_path, std::unique_ptr<Service> service);

  std::filesystem::path socket_path_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace tributary::plugin_host
