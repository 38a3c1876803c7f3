#pragma once

#include "tributary/common/log.h"

#include "absl/status/status.h"
#include "plugin/grpc_broker.grpc.pb.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

namespace tributary::plugin_host {

/// The host end of go-plugin's broker stream (`plugin.GRPCBroker/StartStream`, §5). Opened once
/// per plugin connection and kept for its lifetime; offers host-served services to the plugin by
/// sending ConnInfo. ConnInfos the plugin offers are logged (connectors offer none).
/// Thread-safe.
class HostBroker {
 public:
  HostBroker(const std::shared_ptr<grpc::Channel>& channel, log::Logger logger);
  ~HostBroker();
  HostBroker(const HostBroker&) = delete;
  HostBroker& operator=(const HostBroker&) = delete;

  /// A fresh service id (1, 2, …; never reused on this connection).
  std::uint32_t nextId() { return ++last_id_; }

  /// Tells the plugin where service `id` listens. Fails once the stream has ended.
  absl::Status offer(std::uint32_t id, const std::string& network, const std::string& address);

  /// Cancels the stream and waits for the reader. Idempotent.
  void close();

 private:
  void readLoop();

  log::Logger logger_;
  std::unique_ptr<plugin::GRPCBroker::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<plugin::ConnInfo, plugin::ConnInfo>> stream_;
  std::mutex write_mu_;
  bool ended_ = false;  // Guarded by write_mu_.
  std::atomic<std::uint32_t> last_id_{0};
  std::thread reader_;
};

}  // namespace tributary::plugin_host
