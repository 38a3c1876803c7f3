#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "plugin/grpc_broker.grpc.pb.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

/// The plugin side of go-plugin's GRPCBroker (§5.4): the host offers services (tributary/c1: the
/// CallbackHandler of one Sync) by sending ConnInfo{id, network, address} down the StartStream
/// stream; the plugin dials them by id.
namespace tributary::sdk::internal {

/// Client TLS for broker dials under AutoMTLS: trust only the host's certificate, present ours,
/// verify the name `localhost` (go-plugin §10.2).
struct BrokerTls {
  std::string host_cert_pem;
  std::string cert_pem;
  std::string key_pem;
};

/// ConnInfos received from the host, by service id, and dialing them.
///
/// Thread-safe. Owned through shared_ptr by the StartStream service and by every callback, so a
/// callback used after serve() returned still finds a valid (closed) broker.
class Broker {
 public:
  Broker(std::optional<BrokerTls> tls, std::chrono::milliseconds dial_timeout);

  /// Stores a ConnInfo from the host (the latest one for an id wins).
  void put(const plugin::ConnInfo& info);

  /// Waits up to the dial timeout for the ConnInfo with this id and removes it from the table (ids
  /// are single-use, as in go-plugin). Fails early once the broker is closed.
  absl::StatusOr<plugin::ConnInfo> take(uint32_t id);

  /// A channel to the service a ConnInfo describes: unlimited message sizes, and under AutoMTLS
  /// the same TLS identity as the main connection with target name `localhost`.
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channelFor(const plugin::ConnInfo& info) const;

  /// Called when the plugin shuts down: pending and later `take` calls fail.
  void close();

 private:
  const std::optional<BrokerTls> tls_;
  const std::chrono::milliseconds dial_timeout_;
  absl::Mutex mu_;
  std::map<uint32_t, plugin::ConnInfo> infos_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

/// `plugin.GRPCBroker/StartStream`: reads ConnInfos into the Broker until the host ends the stream
/// or the server shuts down. The plugin offers no services of its own, so it never writes.
class BrokerService final : public plugin::GRPCBroker::Service {
 public:
  explicit BrokerService(std::shared_ptr<Broker> broker) : broker_(std::move(broker)) {}

  grpc::Status StartStream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<plugin::ConnInfo, plugin::ConnInfo>* stream) override;

 private:
  std::shared_ptr<Broker> broker_;
};

}  // namespace tributary::sdk::internal
