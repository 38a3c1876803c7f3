#include "callback_server.h"

#include "tributary/common/strings.h"

#include <google/protobuf/arena.h>
#include <grpcpp/support/server_interceptor.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace tributary::plugin_host {
namespace {

grpc::Status toGrpc(const absl::Status& status) {
  return {static_cast<grpc::StatusCode>(status.code()), static_cast<std::string>(status.message())};
}

}  // namespace

// Pages are parsed into pooled protobuf arenas: a 1 000-object page is thousands of small strings,
// and heap allocation dominated the host's CPU profile before this.
class PageArenaAllocator final : public grpc::MessageAllocator<proto::SyncResponse, proto::Empty> {
 public:
  PageArenaAllocator() = default;
  PageArenaAllocator(const PageArenaAllocator&) = delete;
  PageArenaAllocator& operator=(const PageArenaAllocator&) = delete;
  PageArenaAllocator(PageArenaAllocator&&) = delete;
  PageArenaAllocator& operator=(PageArenaAllocator&&) = delete;
  ~PageArenaAllocator() override {
    for (Holder* holder : free_) {
      delete holder;
    }
  }

  grpc::MessageHolder<proto::SyncResponse, proto::Empty>* AllocateMessages() override {
    {
      const std::lock_guard lock(mu_);
      if (!free_.empty()) {
        Holder* holder = free_.back();
        free_.pop_back();
        holder->prepare();
        return holder;
      }
    }
    auto* holder = new Holder(*this);
    holder->prepare();
    return holder;
  }

 private:
  static constexpr std::size_t kInitialBlock = 512U * 1024U;
  static constexpr std::size_t kPoolSize = 4;

  class Holder final : public grpc::MessageHolder<proto::SyncResponse, proto::Empty> {
   public:
    explicit Holder(PageArenaAllocator& owner)
        : owner_(owner), block_(new char[kInitialBlock]), arena_(arenaOptions(block_.get())) {}
    void prepare() {
      set_request(google::protobuf::Arena::CreateMessage<proto::SyncResponse>(&arena_));
      set_response(google::protobuf::Arena::CreateMessage<proto::Empty>(&arena_));
    }
    void Release() override {
      arena_.Reset();  // Keeps the initial block; frees the rest.
      owner_.recycle(this);
    }

   private:
    static google::protobuf::ArenaOptions arenaOptions(char* block) {
      google::protobuf::ArenaOptions options;
      options.initial_block = block;
      options.initial_block_size = kInitialBlock;
      options.max_block_size = 4U << 20U;
      return options;
    }
    PageArenaAllocator& owner_;
    std::unique_ptr<char[]> block_;
    google::protobuf::Arena arena_;
  };

  void recycle(Holder* holder) {
    {
      const std::lock_guard lock(mu_);
      if (free_.size() < kPoolSize) {
        free_.push_back(holder);
        return;
      }
    }
    delete holder;
  }

  std::mutex mu_;
  std::vector<Holder*> free_;  // Guarded by mu_.
};

constexpr std::string_view kServicePrefix = "/proto.CallbackHandler/";
constexpr std::string_view kUpsertMethod = "/proto.CallbackHandler/Upsert";
constexpr std::string_view kCleanMethod = "/proto.CallbackHandler/Clean";

// What a refused call means, in words a connector author can act on. gRPC itself answers calls
// that never reach our handlers with UNIMPLEMENTED and no message: a method or service the server
// does not have, or (for our own methods) a request that did not parse.
grpc::Status explainRefusal(std::string_view method, const grpc::Status& sent) {
  if (sent.error_code() != grpc::StatusCode::UNIMPLEMENTED || !sent.error_message().empty()) {
    return sent;
  }
  if (method == kUpsertMethod || method == kCleanMethod) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            strings::cat("the connector's ", method,
                         " request could not be parsed (not a valid protobuf message of the "
                         "connector protocol, or a string field that is not valid UTF-8); it was "
                         "refused and nothing of it was stored")};
  }
  if (method.starts_with(kServicePrefix)) {
    return {grpc::StatusCode::UNIMPLEMENTED,
            strings::cat("the connector called ", method,
                         ", which this protocol does not have (proto.CallbackHandler has Upsert "
                         "and Clean): it was probably built against an older connector protocol")};
  }
  return {grpc::StatusCode::UNIMPLEMENTED,
          strings::cat("the connector called ", method,
                       ", a service the callback server does not serve (it serves "
                       "proto.CallbackHandler with Upsert and Clean): it was probably built "
                       "against another connector protocol")};
}

// Callback-API service. gRPC threads must not block, so page work (a database transaction, for
// the agent) runs on one worker thread per Sync, which also keeps pages strictly in order.
class CallbackServer::Service final : public proto::CallbackHandler::CallbackService {
 public:
  Service(std::size_t max_page_bytes, PageSink& sink, log::Logger logger)
      : max_page_bytes_(max_page_bytes),
        sink_(sink),
        logger_(std::move(logger)),
        worker_([this] { runWorker(); }) {
    SetMessageAllocatorFor_Upsert(&allocator_);
  }
  ~Service() override { stopWorker(); }
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  grpc::ServerUnaryReactor* Upsert(grpc::CallbackServerContext* context,
                                   const proto::SyncResponse* request,
                                   proto::Empty* /*response*/) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    post([this, reactor, request] { reactor->Finish(upsert(*request)); });
    return reactor;
  }

  grpc::ServerUnaryReactor* Clean(grpc::CallbackServerContext* context,
                                  const proto::Empty* /*request*/,
                                  proto::Empty* /*response*/) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    post([this, reactor] { reactor->Finish(clean()); });
    return reactor;
  }

  /// Refuses every later call; calls already queued are still answered.
  void close() {
    const std::lock_guard lock(mu_);
    closed_ = true;
  }

  /// Once the server has stopped: no more calls can arrive.
  void stopWorker() {
    {
      const std::lock_guard lock(queue_mu_);
      stopping_ = true;
    }
    queue_cv_.notify_all();
    if (worker_.joinable()) {
      worker_.join();
    }
  }

  Stats stats() const {
    const std::lock_guard lock(mu_);
    return stats_;
  }

  /// Every error status the server sends, whichever part of gRPC produced it (RefusalInterceptor).
  /// Returns the status to send instead: the same one, or one that says what went wrong.
  grpc::Status refused(std::string_view method, const grpc::Status& sent) {
    grpc::Status explained = explainRefusal(method, sent);
    const std::lock_guard lock(mu_);
    std::uint64_t& counter = method == kUpsertMethod  ? stats_.refused_pages
                             : method == kCleanMethod ? stats_.refused_cleans
                                                      : stats_.refused_other;
    ++counter;
    if (!stats_.first_refusal) {
      stats_.first_refusal = RefusedCall{
          std::string(method), absl::Status(static_cast<absl::StatusCode>(explained.error_code()),
                                            explained.error_message())};
    }
    // Every refusal is a lost call: say so, but a connector that retries a refused call in a
    // loop must not flood the log.
    if (stats_.refused() <= kLoggedRefusals) {
      logger_.warn("callback call refused",
                   {{"method", std::string(method)},
                    {"code", absl::StatusCodeToString(
                                 static_cast<absl::StatusCode>(explained.error_code()))},
                    {"error", explained.error_message()}});
    } else if (stats_.refused() == kLoggedRefusals + 1) {
      logger_.warn("further refused callback calls are counted but not logged");
    }
    return explained;
  }

 private:
  static constexpr std::uint64_t kLoggedRefusals = 10;

  void post(std::function<void()> work) {
    {
      const std::lock_guard lock(queue_mu_);
      queue_.push_back(std::move(work));
    }
    queue_cv_.notify_one();
  }

  void runWorker() {
    while (true) {
      std::function<void()> work;
      {
        std::unique_lock lock(queue_mu_);
        queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) {
          return;
        }
        work = std::move(queue_.front());
        queue_.pop_front();
      }
      work();
    }
  }

  // Runs on the worker thread only, so pages reach the sink one at a time and in order; mu_ is
  // not held while the sink works (stats() must not wait for a transaction).
  grpc::Status upsert(const proto::SyncResponse& request) {
    std::uint64_t page_number = 0;
    {
      const std::lock_guard lock(mu_);
      if (closed_) {
        return toGrpc(absl::FailedPreconditionError(
            "a page arrived after Sync returned and was refused; a connector must finish sending "
            "pages before returning from Sync"));
      }
      page_number = stats_.counts.pages + stats_.refused_pages + 1;
    }
    const std::size_t size = request.ByteSizeLong();
    if (size > max_page_bytes_) {
      return toGrpc(absl::ResourceExhaustedError(
          strings::cat("page ", page_number, " is ", size, " bytes, over the host's page limit of ",
                       max_page_bytes_, " bytes; send smaller pages (or raise maxPageBytes)")));
    }
    if (absl::Status result = sink_.onPage(request); !result.ok()) {
      return toGrpc(result);
    }
    const std::lock_guard lock(mu_);
    ++stats_.counts.pages;
    stats_.counts.objects += static_cast<std::uint64_t>(request.response_size());
    stats_.counts.bytes += size;
    return grpc::Status::OK;
  }

  grpc::Status clean() {
    {
      const std::lock_guard lock(mu_);
      if (closed_) {
        return {grpc::StatusCode::FAILED_PRECONDITION,
                "Sync has already returned; Clean after Sync is not accepted"};
      }
    }
    if (absl::Status result = sink_.onClean(); !result.ok()) {
      return toGrpc(result);
    }
    const std::lock_guard lock(mu_);
    ++stats_.counts.cleans;
    return grpc::Status::OK;
  }

  const std::size_t max_page_bytes_;
  PageSink& sink_;
  log::Logger logger_;
  PageArenaAllocator allocator_;

  mutable std::mutex mu_;
  bool closed_ = false;  // Guarded by mu_.
  Stats stats_;          // Guarded by mu_.

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::function<void()>> queue_;  // Guarded by queue_mu_.
  bool stopping_ = false;                    // Guarded by queue_mu_.
  std::thread worker_;                       // Last: starts after everything it uses exists.
};

namespace {

// Sees the status of every call the server answers, including those gRPC answers itself before
// any handler runs (unknown methods and services, requests that do not parse), so that none of
// them can go unnoticed.
class RefusalInterceptor final : public grpc::experimental::Interceptor {
 public:
  RefusalInterceptor(std::string method, CallbackServer::Service& service)
      : method_(std::move(method)), service_(service) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status sent = methods->GetSendStatus();
      if (!sent.ok()) {
        methods->ModifySendStatus(service_.refused(method_, sent));
      }
    }
    methods->Proceed();
  }

 private:
  std::string method_;
  CallbackServer::Service& service_;
};

class RefusalInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RefusalInterceptorFactory(CallbackServer::Service& service) : service_(service) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RefusalInterceptor(info->method() == nullptr ? "" : info->method(), service_);
  }

 private:
  CallbackServer::Service& service_;
};

}  // namespace

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
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RefusalInterceptorFactory>(*server->service_));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // gRPC enforces a hard ceiling well above the page limit; pages between the two reach the
  // service and get our explicit, counted error instead of a transport-level one.
  // No transport-level ceiling below gRPC's own 2 GiB: a page refused by gRPC itself would never
  // reach upsert(), so it could not fail the Sync, and a connector that ignores Upsert errors
  // would lose it silently. Every page is measured and refused (and counted) in upsert().
  builder.SetMaxReceiveMessageSize(INT32_MAX);
  builder.SetMaxSendMessageSize(-1);
  server->server_ = builder.BuildAndStart();
  if (!server->server_) {
    return absl::UnavailableError(
        strings::cat("cannot serve the connector callback on ", socket_path.string()));
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
  service_->stopWorker();
  std::error_code ignored;
  std::filesystem::remove(socket_path_, ignored);
}

CallbackServer::Stats CallbackServer::stats() const { return service_->stats(); }

}  // namespace tributary::plugin_host
