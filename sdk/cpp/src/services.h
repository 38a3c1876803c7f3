#pragma once

#include "tributary/sdk/connector.h"

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "broker.h"
#include "connector.grpc.pb.h"
#include "plugin/grpc_controller.grpc.pb.h"
#include "plugin/grpc_stdio.grpc.pb.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

/// The gRPC services a go-plugin plugin serves besides health and the broker (go-plugin §4).
namespace tributary::sdk::internal {

/// Set once by GRPCController.Shutdown; waited on by serve() and by open StreamStdio calls.
/// Thread-safe.
class ShutdownSignal {
 public:
  void request();
  /// Blocks until requested.
  void wait();
  /// Blocks until requested or `timeout` passed; returns whether it was requested.
  bool waitFor(std::chrono::milliseconds timeout);

 private:
  absl::Mutex mu_;
  bool requested_ ABSL_GUARDED_BY(mu_) = false;
};

/// `plugin.GRPCController/Shutdown`: replies, then lets serve() stop the server from its own thread
/// (go-plugin stops the server inside the handler, so the reply is often lost; ours arrives).
class ControllerService final : public plugin::GRPCController::Service {
 public:
  explicit ControllerService(ShutdownSignal& signal) : signal_(signal) {}
  grpc::Status Shutdown(grpc::ServerContext* context, const plugin::Empty* request,
                        plugin::Empty* response) override;

 private:
  ShutdownSignal& signal_;
};

/// `plugin.GRPCStdio/StreamStdio`: stays open, sending nothing, until the host cancels it or the
/// plugin shuts down. (fd 1 and fd 2 are real descriptors here; nothing needs forwarding.)
class StdioService final : public plugin::GRPCStdio::Service {
 public:
  explicit StdioService(ShutdownSignal& signal) : signal_(signal) {}
  grpc::Status StreamStdio(grpc::ServerContext* context, const google::protobuf::Empty* request,
                           grpc::ServerWriter<plugin::StdioData>* writer) override;

 private:
  ShutdownSignal& signal_;
};

/// The Callback given to Connector::sync for one Sync call. Dials the host's broker id lazily and
/// keeps the ConnInfo, so calls after sync() returned (on a shared handle) redial the same address.
class CallbackImpl final : public Callback, public std::enable_shared_from_this<CallbackImpl> {
 public:
  CallbackImpl(std::shared_ptr<Broker> broker, uint32_t broker_id,
               const grpc::ServerContext* sync_context);

  absl::Status upsert(const std::vector<proto::DataObject>& objects) override;
  absl::Status upsert(const proto::SyncResponse& page) override;
  absl::Status clean() override;
  [[nodiscard]] bool cancelled() const override;
  std::shared_ptr<Callback> share() override;

  /// Called when sync() returned: forgets the server context and closes the connection.
  void finish();

  [[nodiscard]] uint64_t pagesSent() const { return pages_sent_.load(); }

 private:
  absl::StatusOr<std::shared_ptr<proto::CallbackHandler::Stub>> stub();
  /// Fails with CANCELLED while the Sync call is live but cancelled by the host.
  absl::Status checkNotCancelled() const;
  void prepare(grpc::ClientContext& context) const;

  const std::shared_ptr<Broker> broker_;
  const uint32_t broker_id_;
  std::atomic<uint64_t> pages_sent_{0};

  mutable absl::Mutex context_mu_;
  const grpc::ServerContext* sync_context_ ABSL_GUARDED_BY(context_mu_);
  bool finished_ ABSL_GUARDED_BY(context_mu_) = false;

  absl::Mutex dial_mu_;  // Held while dialing, so concurrent first calls dial once.
  std::optional<plugin::ConnInfo> conn_info_ ABSL_GUARDED_BY(dial_mu_);
  std::shared_ptr<proto::CallbackHandler::Stub> stub_ ABSL_GUARDED_BY(dial_mu_);
};

/// `proto.Connector/Sync`: runs the user's Connector with a CallbackImpl.
class ConnectorService final : public proto::Connector::Service {
 public:
  ConnectorService(Connector& connector, std::shared_ptr<Broker> broker)
      : connector_(connector), broker_(std::move(broker)) {}

  grpc::Status Sync(grpc::ServerContext* context, const proto::SyncRequest* request,
                    proto::EndSync* response) override;

 private:
  Connector& connector_;
  std::shared_ptr<Broker> broker_;
};

}  // namespace tributary::sdk::internal
