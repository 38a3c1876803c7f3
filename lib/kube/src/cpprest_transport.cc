// The cpprestsdk (Boost.Asio) implementation of Transport. The only file of lib/kube that includes
// cpprestsdk.

#include "tributary/common/strings.h"
#include "tributary/kube/transport.h"

#include "util.h"

#include <cpprest/http_client.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pplx/threadpool.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <mutex>
#include <vector>

namespace tributary::kube {
namespace {

namespace http = web::http;
namespace client = web::http::client;

struct Tls {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
};

// Replaces the context's trust store with `pem`'s certificates (kubeconfig CA only, like
// client-go) and installs the client certificate. Throws on bad PEM (boost::system::system_error
// or std::runtime_error).
void configureSsl(boost::asio::ssl::context& ctx, const Tls& tls) {
  if (!tls.ca_pem.empty()) {
    BIO* bio = BIO_new_mem_buf(tls.ca_pem.data(), static_cast<int>(tls.ca_pem.size()));
    if (bio == nullptr) {
      throw std::runtime_error("out of memory");
    }
    X509_STORE* store = X509_STORE_new();
    int added = 0;
    while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
      X509_STORE_add_cert(store, cert);
      X509_free(cert);
      ++added;
    }
    BIO_free(bio);
    ERR_clear_error();
    if (added == 0) {
      X509_STORE_free(store);
      throw std::runtime_error("the certificate authority holds no PEM certificate");
    }
    SSL_CTX_set_cert_store(ctx.native_handle(), store);  // takes ownership
  }
  if (!tls.cert_pem.empty()) {
    ctx.use_certificate_chain(boost::asio::buffer(tls.cert_pem.data(), tls.cert_pem.size()));
    ctx.use_private_key(boost::asio::buffer(tls.key_pem.data(), tls.key_pem.size()),
                        boost::asio::ssl::context::pem);
    if (SSL_CTX_check_private_key(ctx.native_handle()) != 1) {
      ERR_clear_error();
      throw std::runtime_error("the client key does not match the client certificate");
    }
  }
}

std::string lower(std::string_view s) { return strings::toLower(s); }

absl::Status transportError(const std::exception& e, std::string_view what, bool timed_out_hint) {
  std::string message = e.what();
  bool timed_out = timed_out_hint;
  if (const auto* he = dynamic_cast<const http::http_exception*>(&e); he != nullptr) {
    if (he->error_code() == std::errc::timed_out) {
      timed_out = true;
    }
  }
  if (message.find("timed out") != std::string::npos) {
    timed_out = true;
  }
  if (timed_out) {
    return absl::DeadlineExceededError(
        strings::cat(what, ": no data from the server in time (", message, ")"));
  }
  return absl::UnavailableError(strings::cat(what, ": ", message));
}

class CppRestTransport final : public Transport {
 public:
  CppRestTransport(const Config& config, Tls tls)
      : tls_(std::move(tls)),
        insecure_(config.insecure_skip_tls_verify),
        tls_server_name_(config.tls_server_name),
        default_timeout_(config.request_timeout) {
    // server may carry a path prefix (https://host/prefix): keep scheme://authority as the base.
    const std::string& server = config.server;
    const auto scheme_end = server.find("://");
    const auto path_start =
        scheme_end == std::string::npos ? std::string::npos : server.find('/', scheme_end + 3);
    base_ = path_start == std::string::npos ? server : server.substr(0, path_start);
    prefix_ = path_start == std::string::npos ? std::string() : server.substr(path_start);
    shared_ =
        std::make_unique<client::http_client>(web::uri(base_), clientConfig(default_timeout_));
  }

  absl::StatusOr<HttpResponse> request(const HttpRequest& request, std::stop_token stop) override {
    const std::string what = strings::cat(request.method, " ", request.path);
    pplx::cancellation_token_source cts;
    std::stop_callback on_stop(stop, [&cts] { cts.cancel(); });
    try {
      client::http_client* http_client = clientFor(request.timeout);
      http::http_response response;
      for (int attempt = 1;; ++attempt) {
        try {
          response = http_client->request(build(request), cts.get_token()).get();
          break;
        } catch (const http::http_exception& e) {
          // A pooled keep-alive connection that the server closed (e.g. an API server restart)
          // fails while the request is written: the server never saw it, so sending it again on
          // a fresh connection is safe for every method. Each failure uses up one dead pooled
          // connection, and after a restart every pooled connection is dead: allow several.
          if (attempt >= 10 || stop.stop_requested() ||
              std::string_view(e.what()).find("Failed to write request") ==
                  std::string_view::npos) {
            throw;
          }
        }
      }
      HttpResponse out;
      out.status = response.status_code();
      for (const auto& [name, value] : response.headers()) {
        out.headers.emplace_back(name, value);
      }
      out.body = response.extract_utf8string(true).get();
      return out;
    } catch (const pplx::task_canceled&) {
      return absl::CancelledError(strings::cat(what, " cancelled"));
    } catch (const std::exception& e) {
      if (stop.stop_requested()) {
        return absl::CancelledError(strings::cat(what, " cancelled"));
      }
      return transportError(e, what, false);
    }
  }

  absl::StatusOr<StreamResult> stream(const HttpRequest& request,
                                      const std::function<bool(std::string_view)>& on_data,
                                      std::stop_token stop) override {
    const std::string what = strings::cat(request.method, " ", request.path);
    pplx::cancellation_token_source cts;
    std::stop_callback on_stop(stop, [&cts] { cts.cancel(); });
    const auto timeout = request.timeout.count() > 0 ? request.timeout : default_timeout_;
    try {
      // One client (one connection) per stream: the idle timeout is per client, and a watch
      // must not hold a pooled connection that ordinary requests wait for.
      client::http_client http_client(web::uri(base_), clientConfig(timeout));
      http::http_response response = http_client.request(build(request), cts.get_token()).get();
      StreamResult result;
      result.status = response.status_code();
      if (result.status < 200 || result.status >= 300) {
        result.body = response.extract_utf8string(true).get();
        return result;
      }
      auto body = response.body().streambuf();
      std::vector<std::uint8_t> buffer(1U << 16U);
      while (true) {
        // Wait for at least one byte (or the end), then take whatever else is already there.
        std::size_t n = body.getn(buffer.data(), 1).get();
        if (n == 0) {
          break;
        }
        const std::size_t more = body.in_avail();
        if (more > 0) {
          n += body.getn(buffer.data() + 1, std::min(more, buffer.size() - 1)).get();
        }
        if (!on_data(std::string_view(reinterpret_cast<const char*>(buffer.data()), n))) {
          cts.cancel();
          return result;
        }
        if (stop.stop_requested()) {
          return absl::CancelledError(strings::cat(what, " cancelled"));
        }
      }
      // The body ended: cleanly (end of chunked body) or with an error (connection lost, idle).
      response.content_ready().get();
      return result;
    } catch (const pplx::task_canceled&) {
      return absl::CancelledError(strings::cat(what, " cancelled"));
    } catch (const std::exception& e) {
      if (stop.stop_requested()) {
        return absl::CancelledError(strings::cat(what, " cancelled"));
      }
      return transportError(e, what, false);
    }
  }

 private:
  // The pooled client for requests with this idle timeout (one per distinct timeout, so that
  // e.g. leader election's short-timeout requests reuse their connections too).
  client::http_client* clientFor(std::chrono::milliseconds timeout) {
    if (timeout.count() <= 0 || timeout == default_timeout_) {
      return shared_.get();
    }
    std::lock_guard lock(clients_mu_);
    auto& slot = by_timeout_[timeout.count()];
    if (!slot) {
      slot = std::make_unique<client::http_client>(web::uri(base_), clientConfig(timeout));
    }
    return slot.get();
  }

  [[nodiscard]] client::http_client_config clientConfig(std::chrono::milliseconds timeout) const {
    client::http_client_config config;
    config.set_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
    config.set_validate_certificates(!insecure_);
    config.set_proxy(web::web_proxy(web::web_proxy::disabled));
    config.set_request_compressed_response(false);
    const Tls tls = tls_;
    config.set_ssl_context_callback(
        [tls](boost::asio::ssl::context& ctx) { configureSsl(ctx, tls); });
    return config;
  }

  [[nodiscard]] http::http_request build(const HttpRequest& request) const {
    http::http_request out(http::method(request.method));
    std::string uri = strings::cat(prefix_, request.path);
    char sep = '?';
    for (const auto& [key, value] : request.query) {
      uri.push_back(sep);
      sep = '&';
      uri.append(internal::urlEncode(key));
      uri.push_back('=');
      uri.append(internal::urlEncode(value));
    }
    out.set_request_uri(web::uri(uri));
    std::string content_type;
    for (const auto& [name, value] : request.headers) {
      if (lower(name) == "content-type") {
        content_type = value;
      } else {
        out.headers().add(name, value);
      }
    }
    if (!tls_server_name_.empty()) {
      // cpprestsdk takes the TLS name (SNI and verification) from the Host header.
      out.headers().add("Host", tls_server_name_);
    }
    if (!request.body.empty() || !content_type.empty()) {
      out.set_body(request.body, content_type.empty() ? "application/json" : content_type);
    }
    return out;
  }

  Tls tls_;
  bool insecure_;
  std::string tls_server_name_;
  std::chrono::milliseconds default_timeout_;
  std::string base_;
  std::string prefix_;
  std::unique_ptr<client::http_client> shared_;
  std::mutex clients_mu_;
  std::map<std::int64_t, std::unique_ptr<client::http_client>> by_timeout_;
};

}  // namespace

std::string HttpResponse::header(std::string_view name) const {
  const std::string wanted = lower(name);
  for (const auto& [key, value] : headers) {
    if (lower(key) == wanted) {
      return value;
    }
  }
  return {};
}

absl::Status setHttpIoThreads(std::size_t threads) {
  try {
    crossplat::threadpool::initialize_with_threads(threads);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(
        strings::cat("cannot size the HTTP I/O thread pool: ", e.what()));
  }
}

absl::StatusOr<std::shared_ptr<Transport>> makeCppRestTransport(const Config& config) {
  if (config.server.rfind("https://", 0) != 0 && config.server.rfind("http://", 0) != 0) {
    return absl::InvalidArgumentError(strings::cat("server \"", config.server, "\" (",
                                                   config.origin, ") must be an https:// URL"));
  }
  Tls tls{config.ca_pem, config.client_cert_pem, config.client_key_pem};
  // Check the PEM now, with a clear error, instead of failing every request's handshake.
  try {
    boost::asio::ssl::context probe(boost::asio::ssl::context::sslv23);
    configureSsl(probe, tls);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(strings::cat(
        "TLS material from ", config.origin.empty() ? std::string("the config") : config.origin,
        " is unusable (certificate authority, client certificate or key is not valid PEM, or "
        "the key does not match the certificate): ",
        e.what()));
  }
  try {
    return std::shared_ptr<Transport>(std::make_shared<CppRestTransport>(config, std::move(tls)));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        strings::cat("cannot use server \"", config.server, "\": ", e.what()));
  }
}

}  // namespace tributary::kube
