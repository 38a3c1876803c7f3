#include "broker.h"

#include "tributary/sdk/connector.h"

#include "absl/time/time.h"

namespace tributary::sdk::internal {

Broker::Broker(std::optional<BrokerTls> tls, std::chrono::milliseconds dial_timeout)
    : tls_(std::move(tls)), dial_timeout_(dial_timeout) {}

void Broker::put(const plugin::ConnInfo& info) {
  absl::MutexLock lock(&mu_);
  infos_[info.service_id()] = info;
}

absl::StatusOr<plugin::ConnInfo> Broker::take(uint32_t id) {
  absl::MutexLock lock(&mu_);
  const auto ready = [this, id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || infos_.count(id) > 0;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), absl::FromChrono(dial_timeout_));
  const auto it = infos_.find(id);
  if (it != infos_.end()) {
    plugin::ConnInfo info = std::move(it->second);
    infos_.erase(it);
    return info;
  }
  if (closed_) {
    return absl::UnavailableError("broker closed: the plugin is shutting down");
  }
  return absl::DeadlineExceededError(
      "timeout waiting for connection info for broker id " + std::to_string(id) + " after " +
      std::to_string(dial_timeout_.count()) + " ms (the host never offered that service)");
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Broker::channelFor(
    const plugin::ConnInfo& info) const {
  std::string target;
  if (info.network() == "unix") {
    target = "unix:" + info.address();
  } else if (info.network() == "tcp") {
    target = info.address();
  } else {
    return absl::InvalidArgumentError("broker id " + std::to_string(info.service_id()) +
                                      ": unknown address type '" + info.network() + "'");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // A private subchannel pool: a broker connection is never shared with another channel.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (tls_.has_value()) {
    grpc::SslCredentialsOptions opts;
    opts.pem_root_certs = tls_->host_cert_pem;
    opts.pem_private_key = tls_->key_pem;
    opts.pem_cert_chain = tls_->cert_pem;
    creds = grpc::SslCredentials(opts);
    args.SetSslTargetNameOverride("localhost");
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  auto channel = grpc::CreateCustomChannel(target, creds, args);
  if (!channel) {
    return absl::InternalError("creating a channel to " + target);
  }
  return channel;
}

void Broker::close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

grpc::Status BrokerService::StartStream(
    grpc::ServerContext* /*context*/,
    grpc::ServerReaderWriter<plugin::ConnInfo, plugin::ConnInfo>* stream) {
  log(LogLevel::Debug, "broker stream opened");
  plugin::ConnInfo info;
  while (stream->Read(&info)) {
    if (info.has_knock() && info.knock().knock()) {
      // Multiplexed brokers are never negotiated (we do not print the 7th handshake field).
      log(LogLevel::Warn, "ignoring a multiplexed-broker knock",
          {{"id", std::to_string(info.service_id())}});
      continue;
    }
    log(LogLevel::Debug, "broker connection info received",
        {{"id", std::to_string(info.service_id())},
         {"network", info.network()},
         {"address", info.address()}});
    broker_->put(info);
  }
  log(LogLevel::Debug, "broker stream closed");
  return grpc::Status::OK;
}

}  // namespace tributary::sdk::internal
