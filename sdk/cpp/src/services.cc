#include "services.h"

#include "absl/time/time.h"

#include <exception>
#include <utility>

namespace tributary::sdk::internal {
namespace {

// Calls made after sync() returned get a deadline: the host has usually gone away by then.
constexpr auto kLateCallDeadline = std::chrono::seconds(10);
// How often an open StreamStdio looks at its call's cancellation.
constexpr auto kStdioPollInterval = std::chrono::milliseconds(100);

absl::Status fromGrpc(const grpc::Status& status, std::string_view context) {
  std::string message(context);
  message += ": ";
  message += status.error_message();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), message);
}

grpc::Status toGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace

void ShutdownSignal::request() {
  absl::MutexLock lock(&mu_);
  requested_ = true;
}

void ShutdownSignal::wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&requested_));
}

bool ShutdownSignal::waitFor(std::chrono::milliseconds timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&requested_), absl::FromChrono(timeout));
}

grpc::Status ControllerService::Shutdown(grpc::ServerContext* /*context*/,
                                         const plugin::Empty* /*request*/,
                                         plugin::Empty* /*response*/) {
  log(LogLevel::Debug, "shutdown requested by the host");
  signal_.request();
  return grpc::Status::OK;
}

grpc::Status StdioService::StreamStdio(grpc::ServerContext* context,
                                       const google::protobuf::Empty* /*request*/,
                                       grpc::ServerWriter<plugin::StdioData>* /*writer*/) {
  while (!context->IsCancelled()) {
    if (signal_.waitFor(kStdioPollInterval)) {
      break;
    }
  }
  return grpc::Status::OK;
}

CallbackImpl::CallbackImpl(std::shared_ptr<Broker> broker, uint32_t broker_id,
                           const grpc::ServerContext* sync_context)
    : broker_(std::move(broker)), broker_id_(broker_id), sync_context_(sync_context) {}

absl::Status CallbackImpl::upsert(const std::vector<proto::DataObject>& objects) {
  proto::SyncResponse page;
  page.mutable_response()->Reserve(static_cast<int>(objects.size()));
  for (const auto& object : objects) {
    *page.add_response() = object;
  }
  return upsert(page);
}

absl::Status CallbackImpl::upsert(const proto::SyncResponse& page) {
  const uint64_t number = pages_sent_.fetch_add(1) + 1;
  // Context for errors, built only when there is one.
  const auto failed = [&](absl::StatusCode code, absl::string_view detail) {
    return absl::Status(code, "CallbackHandler.Upsert of page " + std::to_string(number) + " (" +
                                  std::to_string(page.response_size()) + " objects, " +
                                  std::to_string(page.ByteSizeLong()) + " bytes) on broker id " +
                                  std::to_string(broker_id_) + " failed: " + std::string(detail));
  };
  if (auto status = checkNotCancelled(); !status.ok()) {
    return failed(status.code(), status.message());
  }
  auto stub_or = stub();
  if (!stub_or.ok()) {
    return failed(stub_or.status().code(), stub_or.status().message());
  }
  grpc::ClientContext context;
  prepare(context);
  proto::Empty reply;
  const grpc::Status status = (*stub_or)->Upsert(&context, page, &reply);
  if (!status.ok()) {
    return failed(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }
  return absl::OkStatus();
}

absl::Status CallbackImpl::clean() {
  const std::string what =
      "CallbackHandler.Clean on broker id " + std::to_string(broker_id_) + " failed";
  if (auto status = checkNotCancelled(); !status.ok()) {
    return absl::Status(status.code(), what + ": " + std::string(status.message()));
  }
  auto stub_or = stub();
  if (!stub_or.ok()) {
    return absl::Status(stub_or.status().code(),
                        what + ": " + std::string(stub_or.status().message()));
  }
  grpc::ClientContext context;
  prepare(context);
  proto::Empty request;
  proto::Empty reply;
  const grpc::Status status = (*stub_or)->Clean(&context, request, &reply);
  if (!status.ok()) {
    return fromGrpc(status, what);
  }
  return absl::OkStatus();
}

bool CallbackImpl::cancelled() const {
  absl::MutexLock lock(&context_mu_);
  return finished_ || (sync_context_ != nullptr && sync_context_->IsCancelled());
}

std::shared_ptr<Callback> CallbackImpl::share() { return shared_from_this(); }

void CallbackImpl::finish() {
  {
    absl::MutexLock lock(&context_mu_);
    finished_ = true;
    sync_context_ = nullptr;
  }
  // Close the connection now (in-flight calls on other threads keep their own stub reference).
  absl::MutexLock lock(&dial_mu_);
  stub_.reset();
}

absl::Status CallbackImpl::checkNotCancelled() const {
  absl::MutexLock lock(&context_mu_);
  if (!finished_ && sync_context_ != nullptr && sync_context_->IsCancelled()) {
    return absl::CancelledError("the host cancelled the Sync call");
  }
  return absl::OkStatus();
}

void CallbackImpl::prepare(grpc::ClientContext& context) const {
  absl::MutexLock lock(&context_mu_);
  if (finished_) {
    context.set_deadline(std::chrono::system_clock::now() + kLateCallDeadline);
  }
}

absl::StatusOr<std::shared_ptr<proto::CallbackHandler::Stub>> CallbackImpl::stub() {
  absl::MutexLock lock(&dial_mu_);
  if (stub_) {
    return stub_;
  }
  if (!conn_info_.has_value()) {
    bool finished = false;
    {
      absl::MutexLock context_lock(&context_mu_);
      finished = finished_;
    }
    if (finished) {
      return absl::FailedPreconditionError(
          "sync already returned and the callback was never dialed");
    }
    auto info = broker_->take(broker_id_);
    if (!info.ok()) {
      return info.status();
    }
    conn_info_ = *std::move(info);
    log(LogLevel::Debug, "dialing the host's callback service",
        {{"id", std::to_string(broker_id_)},
         {"network", conn_info_->network()},
         {"address", conn_info_->address()}});
  }
  auto channel = broker_->channelFor(*conn_info_);
  if (!channel.ok()) {
    return channel.status();
  }
  stub_ = proto::CallbackHandler::NewStub(*channel);
  return stub_;
}

grpc::Status ConnectorService::Sync(grpc::ServerContext* context, const proto::SyncRequest* request,
                                    proto::EndSync* response) {
  const auto started = std::chrono::steady_clock::now();
  const std::string id = std::to_string(request->callback_handler_server());
  log(LogLevel::Debug, "sync started", {{"callback_broker_id", id}});
  auto callback =
      std::make_shared<CallbackImpl>(broker_, request->callback_handler_server(), context);
  absl::StatusOr<std::string> result;
  // Exceptions never cross into gRPC: a throwing connector fails its Sync call instead.
  try {
    result = connector_.sync(request->options(), *callback);
  } catch (const std::exception& e) {
    result = absl::InternalError(std::string("connector threw an exception: ") + e.what());
  } catch (...) {
    result = absl::InternalError("connector threw a non-standard exception");
  }
  callback->finish();
  const auto elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - started)
                              .count();
  if (!result.ok()) {
    log(LogLevel::Error, "sync failed",
        {{"error", result.status().ToString()},
         {"pages", std::to_string(callback->pagesSent())},
         {"duration_ms", std::to_string(elapsed_ms)}});
    return toGrpc(result.status());
  }
  log(LogLevel::Info, "sync finished",
      {{"pages", std::to_string(callback->pagesSent())},
       {"duration_ms", std::to_string(elapsed_ms)}});
  response->set_metadata(*std::move(result));
  return grpc::Status::OK;
}

}  // namespace tributary::sdk::internal
