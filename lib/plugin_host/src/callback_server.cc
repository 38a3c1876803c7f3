#include "tributary/common/strings.h"
#include "callback_server.h"

#include <system_error>


namespace tributary::plugin_host {
namespace {

grpc::Status toGrpc(const absl::Status& status) {
  return {static_cast<grpc::StatusCode>(status.code()), std::string(status.message())};
}

}  // namespace

class CallbackServer::Service final : public proto::CallbackHandler::Service {
 public:
  Service(std::size_t max_page_bytes, PageSink& sink, log::Logger logger)
      : max_page_bytes_(max_page_bytes), sink_(sink), logger_(std::move(logger)) {}

  grpc::Status Upsert(grpc::ServerContext* /*context*/, const proto::SyncResponse* request,
                      proto::Empty* /*response*/) override {
    const std::lock_guard lock(mu_);
    const std::size_t size = request->ByteSizeLong();
    if (closed_) {
      ++stats_.rejected_pages;
      logger_.warn("connector sent a page after its Sync returned; page refused",
                   {{"objects", request->response_size()}});
      return {grpc::StatusCode::FAILED_PRECONDITION,
              "Sync has already returned; pages sent after Sync are not accepted"};
    }
    if (size > max_page_bytes_) {
      ++stats_.rejected_pages;
      const absl::Status error = absl::ResourceExhaustedError(strings::cat(
          "page ", stats_.counts.pages + stats_.rejected_pages, " is ", size,
          " bytes, over the host's page limit of ", max_page_bytes_,
          " bytes; send smaller pages (or raise maxPageBytes)"));
      recordError(error);
      return toGrpc(error);
    }
    const absl::Status result = sink_.onPage(*request);
    if (!result.ok()) {
      ++stats_.rejected_pages;
      recordError(result);
      return toGrpc(result);
    }
    ++stats_.counts.pages;
    stats_.counts.objects += static_cast<std::uint64_t>(request->response_size());
    stats_.counts.bytes += size;
    return grpc::Status::OK;
  }

  grpc::Status Clean(grpc::ServerContext* /*context*/, const proto::Empty* /*request*/,
                     proto::Empty* /*response*/) override {
    const std::lock_guard lock(mu_);
    if (closed_) {
      return {grpc::StatusCode::FAILED_PRECONDITION,
              "Sync has already returned; Clean after Sync is not accepted"};
    }
    const absl::Status result = sink_.onClean();
    if (!result.ok()) {
      recordError(result);
      return toGrpc(result);
    }
    ++stats_.counts.cleans;
    return grpc::Status::OK;
  }

  void close() {
    const std::lock_guard lock(mu_);
    closed_ = true;
  }

  Stats stats() const {
    const std::lock_guard lock(mu_);
    return stats_;
  }

 private:
  void recordError(const absl::Status& error) {
    if (stats_.first_error.ok()) {
      stats_.first_error = error;
    }
  }

  const std::size_t max_page_bytes_;
  PageSink& sink_;
  log::Logger logger_;
  mutable std::mutex mu_;
  bool closed_ = false;  // Guarded by mu_.
  Stats stats_;          // Guarded by mu_.
};

CallbackServer::CallbackServer(std::filesystem::path socket_path, std::unique_ptr<Service> service)
    : socket_path_(std::move(socket_path)), service_(std::move(service)) {}

absl::StatusOr<std::unique_ptr<CallbackServer>> CallbackServer::start(
    const std::filesystem::path& socket_path,
    const std::shared_ptr<grpc::ServerCredentials>& credentials, std::size_t max_page_bytes,
    PageSink& sink, log::Logger logger) {
  std::unique_ptr<CallbackServer> server(new CallbackServer(
      socket_path, std::make_unique<Service>(max_page_bytes, sink, std::move(logger))));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(strings::cat("unix:", socket_path.string()), credentials);
  builder.RegisterService(server->service_.get());
  // gRPC enforces a hard ceiling well above the page limit; pages between the two reach the
  // service and get our explicit, counted error instead of a transport-level one.
  const std::size_t hard_limit =
      std::min<std::size_t>(max_page_bytes * 2 + (1U << 20U), std::size_t{INT32_MAX});
  builder.SetMaxReceiveMessageSize(static_cast<int>(hard_limit));
  builder.SetMaxSendMessageSize(-1);
  server->server_ = builder.BuildAndStart();
  if (!server->server_) {
    return absl::UnavailableError(strings::cat("cannot serve the connector callback on ",
                                               socket_path.string()));
  }
  return server;
}

CallbackServer::~CallbackServer() { close(); }

void CallbackServer::close() {
  if (!server_) {
    return;
  }
  service_->close();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_->Wait();
  server_.reset();
  std::error_code ignored;
  std::filesystem::remove(socket_path_, ignored);
}

CallbackServer::Stats CallbackServer::stats() const { return service_->stats(); }

}  // namespace tributary::plugin_host
