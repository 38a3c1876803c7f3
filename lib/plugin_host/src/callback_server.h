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
#include <string>

namespace tributary::plugin_host {

/// `proto.CallbackHandler` served to the connector for one Sync on its own unix socket.
/// Pages are handed to the PageSink one at a time; after close() every call is refused.
class CallbackServer {
 public:
  struct Stats {
    SyncResult counts;
    std::uint64_t rejected_pages = 0;  ///< Refused before reaching the sink (size, late).
    absl::Status first_error;          ///< First page error (sink or size), OK if none.
    std::uint64_t failed_cleans = 0;   ///< Clean calls the sink refused.
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

 private:
  class Service;
  CallbackServer(std::filesystem::path socket_path, std::unique_ptr<Service> service);

  std::filesystem::path socket_path_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace tributary::plugin_host
