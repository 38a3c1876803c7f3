#include "broker.h"

#include "tributary/common/strings.h"

namespace tributary::plugin_host {

HostBroker::HostBroker(const std::shared_ptr<grpc::Channel>& channel, log::Logger logger)
    : logger_(std::move(logger)), stub_(plugin::GRPCBroker::NewStub(channel)) {
  stream_ = stub_->StartStream(&context_);
  reader_ = std::thread([this] { readLoop(); });
}

HostBroker::~HostBroker() { close(); }

void HostBroker::readLoop() {
  plugin::ConnInfo info;
  while (stream_->Read(&info)) {
    logger_.debug("connector offered a broker service (unused)",
                  {{"service_id", info.service_id()}, {"network", info.network()}});
  }
  const std::lock_guard lock(write_mu_);
  ended_ = true;
  stream_->WritesDone();
  const grpc::Status status = stream_->Finish();
  if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
    logger_.debug("broker stream ended",
                  {{"code", status.error_code()}, {"error", status.error_message()}});
  }
}

absl::Status HostBroker::offer(std::uint32_t id, const std::string& network,
                               const std::string& address) {
  plugin::ConnInfo info;
  info.set_service_id(id);
  info.set_network(network);
  info.set_address(address);
  const std::lock_guard lock(write_mu_);
  if (ended_ || !stream_->Write(info)) {
    return absl::UnavailableError(strings::cat(
        "the go-plugin broker stream to the connector is closed; cannot offer callback service ",
        id, " (did the connector exit?)"));
  }
  return absl::OkStatus();
}

void HostBroker::close() {
  if (!reader_.joinable()) {
    return;
  }
  context_.TryCancel();
  reader_.join();
}

}  // namespace tributary::plugin_host
