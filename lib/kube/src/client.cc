#include "tributary/kube/client.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

#include "absl/strings/cord.h"
#include "util.h"

#include <algorithm>
#include <ctime>
#include <iomanip>
#include <random>
#include <sstream>
#include <thread>

namespace tributary::kube {
namespace {

constexpr absl::string_view kPayloadUrl = "type.tributary.dev/kube.HttpStatus";

const Json& field(const Json& object, std::string_view name) {
  static const Json kNull;
  if (!object.is_object()) {
    return kNull;
  }
  const auto it = object.find(name);
  return it == object.end() ? kNull : *it;
}

std::string stringField(const Json& object, std::string_view name) {
  const Json& v = field(object, name);
  return v.is_string() ? v.get<std::string>() : std::string();
}

absl::StatusCode codeFor(int http, std::string_view reason) {
  switch (http) {
    case 400:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 409:
      return reason == "AlreadyExists" ? absl::StatusCode::kAlreadyExists
                                       : absl::StatusCode::kAborted;
    case 410:
      return absl::StatusCode::kOutOfRange;
    case 422:
      return absl::StatusCode::kInvalidArgument;
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 504:
      return absl::StatusCode::kDeadlineExceeded;
    default:
      break;
  }
  if (http >= 500) {
    return absl::StatusCode::kUnavailable;
  }
  return absl::StatusCode::kUnknown;
}

std::string describeTarget(std::string_view verb, const ResourceType& type, std::string_view ns,
                           std::string_view name) {
  std::string target = strings::cat(verb, " ", type.qualifiedName());
  if (type.namespaced && !ns.empty()) {
    target += strings::cat(" ", ns, "/", name.empty() ? "*" : name);
  } else if (!name.empty()) {
    target += strings::cat(" ", name);
  }
  return target;
}

// Builds an error from a non-2xx response: the Kubernetes Status message, its reason and the HTTP
// code (as a payload).
absl::Status statusFromResponse(std::string_view target, int http, std::string_view body) {
  std::string message;
  std::string reason;
  const Json parsed = Json::parse(body, nullptr, false);
  if (!parsed.is_discarded() && parsed.is_object() && stringField(parsed, "kind") == "Status") {
    message = stringField(parsed, "message");
    reason = stringField(parsed, "reason");
  } else if (!body.empty()) {
    message = std::string(body.substr(0, 300));
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) {
      message.pop_back();
    }
  }
  if (message.empty()) {
    message = "no message";
  }
  absl::Status status(codeFor(http, reason),
                      strings::cat(target, ": ", message, " (HTTP ", http,
                                   reason.empty() ? "" : strings::cat(" ", reason), ")"));
  status.SetPayload(kPayloadUrl, absl::Cord(strings::cat(http, "|", reason)));
  return status;
}

}  // namespace

std::string ResourceType::apiVersion() const {
  return group.empty() ? version : strings::cat(group, "/", version);
}

std::string ResourceType::qualifiedName() const {
  return group.empty() ? resource : strings::cat(resource, ".", group);
}

namespace resources {
const ResourceType& connector() {
  static const ResourceType t{"tributary.dev", "v1alpha1", "connectors", "Connector", true};
  return t;
}
const ResourceType& syncJob() {
  static const ResourceType t{"tributary.dev", "v1alpha1", "syncjobs", "SyncJob", true};
  return t;
}
const ResourceType& syncRun() {
  static const ResourceType t{"tributary.dev", "v1alpha1", "syncruns", "SyncRun", true};
  return t;
}
const ResourceType& lease() {
  static const ResourceType t{"coordination.k8s.io", "v1", "leases", "Lease", true};
  return t;
}
const ResourceType& event() {
  static const ResourceType t{"", "v1", "events", "Event", true};
  return t;
}
const ResourceType& secret() {
  static const ResourceType t{"", "v1", "secrets", "Secret", true};
  return t;
}
const ResourceType& configMap() {
  static const ResourceType t{"", "v1", "configmaps", "ConfigMap", true};
  return t;
}
const ResourceType& namespace_() {
  static const ResourceType t{"", "v1", "namespaces", "Namespace", false};
  return t;
}
}  // namespace resources

// --- errors -----------------------------------------------------------------------------------

int httpCode(const absl::Status& status) {
  const auto payload = status.GetPayload(kPayloadUrl);
  if (!payload) {
    return 0;
  }
  const std::string text(*payload);
  return std::atoi(text.c_str());
}

std::string statusReason(const absl::Status& status) {
  const auto payload = status.GetPayload(kPayloadUrl);
  if (!payload) {
    return {};
  }
  const std::string text(*payload);
  const auto bar = text.find('|');
  return bar == std::string::npos ? std::string() : text.substr(bar + 1);
}

bool isConflict(const absl::Status& status) {
  return httpCode(status) == 409 && status.code() == absl::StatusCode::kAborted;
}
bool isNotFound(const absl::Status& status) { return absl::IsNotFound(status); }
bool isAlreadyExists(const absl::Status& status) { return absl::IsAlreadyExists(status); }
bool isGone(const absl::Status& status) {
  return httpCode(status) == 410 || statusReason(status) == "Expired" ||
         statusReason(status) == "Gone";
}

// --- accessors --------------------------------------------------------------------------------

std::string nameOf(const Json& object) { return stringField(field(object, "metadata"), "name"); }
std::string namespaceOf(const Json& object) {
  return stringField(field(object, "metadata"), "namespace");
}
std::string uidOf(const Json& object) { return stringField(field(object, "metadata"), "uid"); }
std::string resourceVersionOf(const Json& object) {
  return stringField(field(object, "metadata"), "resourceVersion");
}
std::int64_t generationOf(const Json& object) {
  const Json& g = field(field(object, "metadata"), "generation");
  return g.is_number_integer() ? g.get<std::int64_t>() : 0;
}
std::string makeKey(std::string_view ns, std::string_view name) {
  return ns.empty() ? std::string(name) : strings::cat(ns, "/", name);
}
std::string keyOf(const Json& object) { return makeKey(namespaceOf(object), nameOf(object)); }
std::pair<std::string, std::string> splitKey(std::string_view key) {
  const auto slash = key.find('/');
  if (slash == std::string_view::npos) {
    return {std::string(), std::string(key)};
  }
  return {std::string(key.substr(0, slash)), std::string(key.substr(slash + 1))};
}

const Json* findCondition(const Json& conditions, std::string_view type) {
  if (!conditions.is_array()) {
    return nullptr;
  }
  for (const Json& c : conditions) {
    if (stringField(c, "type") == type) {
      return &c;
    }
  }
  return nullptr;
}

bool setCondition(Json& conditions, std::string_view type, std::string_view status,
                  std::string_view reason, std::string_view message,
                  std::int64_t observed_generation, std::chrono::system_clock::time_point now) {
  if (!conditions.is_array()) {
    conditions = Json::array();
  }
  for (Json& c : conditions) {
    if (stringField(c, "type") != type) {
      continue;
    }
    bool changed = false;
    if (stringField(c, "status") != status) {
      c["status"] = status;
      c["lastTransitionTime"] = formatTime(now);
      changed = true;
    }
    if (stringField(c, "reason") != reason) {
      c["reason"] = reason;
      changed = true;
    }
    if (stringField(c, "message") != message) {
      c["message"] = message;
      changed = true;
    }
    const Json& og = field(c, "observedGeneration");
    if (!og.is_number_integer() || og.get<std::int64_t>() != observed_generation) {
      c["observedGeneration"] = observed_generation;
      changed = true;
    }
    return changed;
  }
  conditions.push_back(Json{{"type", type},
                            {"status", status},
                            {"reason", reason},
                            {"message", message},
                            {"observedGeneration", observed_generation},
                            {"lastTransitionTime", formatTime(now)}});
  return true;
}

std::string_view watchEventTypeName(WatchEvent::Type type) {
  switch (type) {
    case WatchEvent::Type::Added:
      return "ADDED";
    case WatchEvent::Type::Modified:
      return "MODIFIED";
    case WatchEvent::Type::Deleted:
      return "DELETED";
    case WatchEvent::Type::Bookmark:
      return "BOOKMARK";
    case WatchEvent::Type::Error:
      return "ERROR";
  }
  return "?";
}

// --- Client -----------------------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<Client>> Client::create(Config config, ClientOptions options) {
  if (config.server.empty()) {
    return absl::InvalidArgumentError("kube client: the config has no server");
  }
  if (options.transport == nullptr) {
    TRIBUTARY_ASSIGN_OR_RETURN(options.transport, makeCppRestTransport(config));
  }
  return std::shared_ptr<Client>(new Client(std::move(config), std::move(options)));
}

Client::Client(Config config, ClientOptions options)
    : config_(std::move(config)),
      transport_(std::move(options.transport)),
      on_request_(std::move(options.on_request)) {}

Client::~Client() = default;

std::string Client::path(const ResourceType& type, std::string_view ns, std::string_view name,
                         std::string_view subresource) {
  std::string out = type.group.empty() ? strings::cat("/api/", type.version)
                                       : strings::cat("/apis/", type.group, "/", type.version);
  if (type.namespaced && !ns.empty()) {
    out += strings::cat("/namespaces/", internal::urlEncode(ns));
  }
  out += strings::cat("/", type.resource);
  if (!name.empty()) {
    out += strings::cat("/", internal::urlEncode(name));
  }
  if (!subresource.empty()) {
    out += strings::cat("/", subresource);
  }
  return out;
}

void Client::report(std::string_view method, std::string_view code) const {
  if (on_request_) {
    on_request_(method, code);
  }
}

absl::Status Client::addAuth(HttpRequest& request, bool force_reload) {
  request.headers.emplace_back("User-Agent", config_.user_agent);
  std::string token;
  if (!config_.token_file.empty()) {
    std::lock_guard lock(token_mu_);
    const auto now = std::chrono::steady_clock::now();
    if (force_reload || cached_token_.empty() ||
        now - token_read_at_ >= config_.token_file_refresh) {
      auto content = internal::readFile(config_.token_file);
      if (content.ok()) {
        cached_token_ = std::string(strings::trim(*content));
        token_read_at_ = now;
      } else if (cached_token_.empty()) {
        return absl::Status(content.status().code(),
                            strings::cat("bearer token file: ", content.status().message()));
      }
      // else: keep the previous token (client-go does the same on a failed re-read).
    }
    token = cached_token_;
  } else {
    token = config_.bearer_token;
  }
  if (!token.empty()) {
    request.headers.emplace_back("Authorization", strings::cat("Bearer ", token));
  }
  return absl::OkStatus();
}

absl::StatusOr<HttpResponse> Client::raw(HttpRequest request, std::stop_token stop) {
  HttpRequest first = request;
  TRIBUTARY_RETURN_IF_ERROR(addAuth(first, false));
  auto response = transport_->request(first, stop);
  if (!response.ok()) {
    report(request.method, "<error>");
    return response;
  }
  if (response->status == 401 && !config_.token_file.empty()) {
    // The token may have rotated: read the file again and retry once.
    TRIBUTARY_RETURN_IF_ERROR(addAuth(request, true));
    response = transport_->request(request, stop);
    if (!response.ok()) {
      report(request.method, "<error>");
      return response;
    }
  }
  report(request.method, std::to_string(response->status));
  return response;
}

absl::StatusOr<Json> Client::send(std::string_view verb, const ResourceType& type,
                                  std::string_view ns, std::string_view name, HttpRequest request,
                                  std::stop_token stop) {
  request.headers.emplace_back("Accept", "application/json");
  TRIBUTARY_ASSIGN_OR_RETURN(HttpResponse response, raw(std::move(request), std::move(stop)));
  const std::string target = describeTarget(verb, type, ns, name);
  if (response.status < 200 || response.status >= 300) {
    return statusFromResponse(target, response.status, response.body);
  }
  if (response.body.empty()) {
    return Json();
  }
  Json parsed = Json::parse(response.body, nullptr, false);
  if (parsed.is_discarded()) {
    return absl::InternalError(strings::cat(target, ": the server answered with invalid JSON"));
  }
  return parsed;
}

absl::StatusOr<Json> Client::get(const ResourceType& type, std::string_view ns,
                                 std::string_view name) {
  HttpRequest request;
  request.method = "GET";
  request.path = path(type, ns, name);
  return send("get", type, ns, name, std::move(request));
}

absl::StatusOr<ListResult> Client::list(const ResourceType& type, std::string_view ns,
                                        const ListOptions& options) {
  HttpRequest request;
  request.method = "GET";
  request.path = path(type, ns);
  if (!options.label_selector.empty()) {
    request.query.emplace_back("labelSelector", options.label_selector);
  }
  if (!options.field_selector.empty()) {
    request.query.emplace_back("fieldSelector", options.field_selector);
  }
  if (options.limit > 0) {
    request.query.emplace_back("limit", std::to_string(options.limit));
  }
  if (!options.continue_token.empty()) {
    request.query.emplace_back("continue", options.continue_token);
  }
  if (!options.resource_version.empty()) {
    request.query.emplace_back("resourceVersion", options.resource_version);
  }
  TRIBUTARY_ASSIGN_OR_RETURN(Json body, send("list", type, ns, "", std::move(request)));
  ListResult result;
  const Json& meta = field(body, "metadata");
  result.resource_version = stringField(meta, "resourceVersion");
  result.continue_token = stringField(meta, "continue");
  const Json& items = field(body, "items");
  if (items.is_array()) {
    result.items.reserve(items.size());
    for (const Json& item : items) {
      Json copy = item;
      // Items of a list carry no apiVersion/kind; fill them so objects look like GET results.
      if (!copy.contains("apiVersion")) {
        copy["apiVersion"] = type.apiVersion();
      }
      if (!copy.contains("kind")) {
        copy["kind"] = type.kind;
      }
      result.items.push_back(std::move(copy));
    }
  }
  return result;
}

absl::StatusOr<ListResult> Client::listAll(const ResourceType& type, std::string_view ns,
                                           ListOptions options) {
  if (options.limit <= 0) {
    options.limit = 500;
  }
  const ListOptions first = options;
  ListResult all;
  bool restarted = false;
  while (true) {
    auto page = list(type, ns, options);
    if (!page.ok()) {
      if (isGone(page.status()) && !options.continue_token.empty() && !restarted) {
        // The continue token expired (etcd compaction): start over with a fresh snapshot.
        restarted = true;
        options = first;
        all = ListResult();
        continue;
      }
      return page.status();
    }
    for (Json& item : page->items) {
      all.items.push_back(std::move(item));
    }
    if (all.resource_version.empty() || options.continue_token.empty()) {
      all.resource_version = page->resource_version;
    }
    if (page->continue_token.empty()) {
      return all;
    }
    options.continue_token = page->continue_token;
  }
}

absl::StatusOr<Json> Client::create(const ResourceType& type, std::string_view ns, Json object) {
  if (!object.is_object()) {
    return absl::InvalidArgumentError(
        strings::cat("create ", type.qualifiedName(), ": the object must be a JSON object"));
  }
  std::string target_ns(ns);
  if (target_ns.empty()) {
    target_ns = namespaceOf(object);
  }
  if (target_ns.empty() && type.namespaced) {
    target_ns = config_.default_namespace;
  }
  if (!object.contains("apiVersion")) {
    object["apiVersion"] = type.apiVersion();
  }
  if (!object.contains("kind")) {
    object["kind"] = type.kind;
  }
  HttpRequest request;
  request.method = "POST";
  request.path = path(type, target_ns);
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = object.dump();
  const std::string name = nameOf(object);
  return send("create", type, target_ns, name.empty() ? "(generateName)" : name,
              std::move(request));
}

absl::StatusOr<Json> Client::update(const ResourceType& type, Json object) {
  const std::string name = nameOf(object);
  if (name.empty()) {
    return absl::InvalidArgumentError(
        strings::cat("update ", type.qualifiedName(), ": metadata.name is required"));
  }
  std::string ns = namespaceOf(object);
  if (ns.empty() && type.namespaced) {
    ns = config_.default_namespace;
  }
  HttpRequest request;
  request.method = "PUT";
  request.path = path(type, ns, name);
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = object.dump();
  return send("update", type, ns, name, std::move(request));
}

absl::StatusOr<Json> Client::updateStatus(const ResourceType& type, Json object) {
  const std::string name = nameOf(object);
  if (name.empty()) {
    return absl::InvalidArgumentError(
        strings::cat("update status of ", type.qualifiedName(), ": metadata.name is required"));
  }
  std::string ns = namespaceOf(object);
  if (ns.empty() && type.namespaced) {
    ns = config_.default_namespace;
  }
  HttpRequest request;
  request.method = "PUT";
  request.path = path(type, ns, name, "status");
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = object.dump();
  return send("update status", type, ns, name, std::move(request));
}

absl::StatusOr<Json> Client::patch(const ResourceType& type, std::string_view ns,
                                   std::string_view name, PatchType patch_type, const Json& patch,
                                   const PatchOptions& options) {
  HttpRequest request;
  request.method = "PATCH";
  request.path = path(type, ns, name, options.subresource);
  std::string content_type;
  switch (patch_type) {
    case PatchType::Merge:
      content_type = "application/merge-patch+json";
      break;
    case PatchType::JsonPatch:
      content_type = "application/json-patch+json";
      break;
    case PatchType::StrategicMerge:
      content_type = "application/strategic-merge-patch+json";
      break;
    case PatchType::Apply:
      content_type = "application/apply-patch+yaml";
      if (options.field_manager.empty()) {
        return absl::InvalidArgumentError(strings::cat(
            "server-side apply of ", type.qualifiedName(), " ", name, " needs a field manager"));
      }
      if (options.force) {
        request.query.emplace_back("force", "true");
      }
      break;
  }
  if (!options.field_manager.empty()) {
    request.query.emplace_back("fieldManager", options.field_manager);
  }
  request.headers.emplace_back("Content-Type", content_type);
  request.body = patch.dump();
  return send(options.subresource.empty() ? "patch" : strings::cat("patch ", options.subresource),
              type, ns, name, std::move(request));
}

absl::Status Client::remove(const ResourceType& type, std::string_view ns, std::string_view name,
                            const DeleteOptions& options) {
  HttpRequest request;
  request.method = "DELETE";
  request.path = path(type, ns, name);
  Json body = {{"apiVersion", "v1"}, {"kind", "DeleteOptions"}};
  if (!options.uid.empty() || !options.resource_version.empty()) {
    Json pre = Json::object();
    if (!options.uid.empty()) {
      pre["uid"] = options.uid;
    }
    if (!options.resource_version.empty()) {
      pre["resourceVersion"] = options.resource_version;
    }
    body["preconditions"] = pre;
  }
  if (!options.propagation_policy.empty()) {
    body["propagationPolicy"] = options.propagation_policy;
  }
  if (options.grace_period_seconds) {
    body["gracePeriodSeconds"] = *options.grace_period_seconds;
  }
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = body.dump();
  auto result = send("delete", type, ns, name, std::move(request));
  return result.status();
}

absl::Status Client::watch(const ResourceType& type, std::string_view ns,
                           const WatchOptions& options,
                           const std::function<bool(WatchEvent&&)>& handler, std::stop_token stop) {
  HttpRequest request;
  request.method = "GET";
  request.path = path(type, ns);
  request.query.emplace_back("watch", "1");
  if (!options.resource_version.empty()) {
    request.query.emplace_back("resourceVersion", options.resource_version);
  }
  if (options.allow_bookmarks) {
    request.query.emplace_back("allowWatchBookmarks", "true");
  }
  if (options.timeout_seconds > 0) {
    request.query.emplace_back("timeoutSeconds", std::to_string(options.timeout_seconds));
  }
  if (!options.label_selector.empty()) {
    request.query.emplace_back("labelSelector", options.label_selector);
  }
  if (!options.field_selector.empty()) {
    request.query.emplace_back("fieldSelector", options.field_selector);
  }
  request.headers.emplace_back("Accept", "application/json");
  request.timeout = options.idle_timeout;
  if (request.timeout.count() <= 0) {
    request.timeout = options.timeout_seconds > 0
                          ? std::chrono::seconds(options.timeout_seconds + 30)
                          : std::chrono::milliseconds(std::chrono::minutes(5));
  }
  const std::string target = describeTarget("watch", type, ns, "");

  std::string pending;
  absl::Status parse_error;
  bool stopped_by_handler = false;
  const auto on_data = [&](std::string_view data) -> bool {
    pending.append(data);
    std::size_t start = 0;
    while (true) {
      const auto nl = pending.find('\n', start);
      if (nl == std::string::npos) {
        break;
      }
      const std::string_view line =
          strings::trim(std::string_view(pending).substr(start, nl - start));
      start = nl + 1;
      if (line.empty()) {
        continue;
      }
      Json parsed = Json::parse(line, nullptr, false);
      if (parsed.is_discarded() || !parsed.is_object()) {
        parse_error = absl::UnavailableError(
            strings::cat(target, ": malformed watch event (", line.substr(0, 120), ")"));
        return false;
      }
      const std::string type_name = stringField(parsed, "type");
      WatchEvent event;
      if (type_name == "ADDED") {
        event.type = WatchEvent::Type::Added;
      } else if (type_name == "MODIFIED") {
        event.type = WatchEvent::Type::Modified;
      } else if (type_name == "DELETED") {
        event.type = WatchEvent::Type::Deleted;
      } else if (type_name == "BOOKMARK") {
        event.type = WatchEvent::Type::Bookmark;
      } else if (type_name == "ERROR") {
        event.type = WatchEvent::Type::Error;
      } else {
        parse_error = absl::UnavailableError(
            strings::cat(target, ": unknown watch event type \"", type_name, "\""));
        return false;
      }
      auto obj = parsed.find("object");
      if (obj != parsed.end()) {
        event.object = std::move(*obj);
      }
      if (!handler(std::move(event))) {
        stopped_by_handler = true;
        return false;
      }
    }
    pending.erase(0, start);
    return true;
  };

  TRIBUTARY_RETURN_IF_ERROR(addAuth(request, false));
  auto result = transport_->stream(request, on_data, stop);
  if (!result.ok()) {
    report("WATCH", "<error>");
    return absl::Status(result.status().code(),
                        strings::cat(target, ": ", result.status().message()));
  }
  report("WATCH", std::to_string(result->status));
  if (result->status == 401 && !config_.token_file.empty()) {
    // Re-read a rotated token; the caller re-watches.
    HttpRequest dummy;
    (void)addAuth(dummy, true);
  }
  if (result->status < 200 || result->status >= 300) {
    return statusFromResponse(target, result->status, result->body);
  }
  if (!parse_error.ok()) {
    return parse_error;
  }
  (void)stopped_by_handler;
  return absl::OkStatus();
}

absl::Status retryOnConflict(const std::function<absl::Status()>& fn, int attempts) {
  thread_local std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> jitter_us(9000, 11000);
  absl::Status status;
  for (int i = 0; i < std::max(attempts, 1); ++i) {
    status = fn();
    if (!isConflict(status)) {
      return status;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(jitter_us(rng)));
  }
  return status;
}

// --- helpers ----------------------------------------------------------------------------------

absl::StatusOr<std::string> readSecretKey(Client& client, std::string_view ns,
                                          std::string_view name, std::string_view key) {
  TRIBUTARY_ASSIGN_OR_RETURN(Json secret, client.get(resources::secret(), ns, name));
  const Json& data = field(secret, "data");
  const Json& value = field(data, key);
  if (!value.is_string()) {
    std::vector<std::string> keys;
    if (data.is_object()) {
      for (const auto& [k, _] : data.items()) {
        keys.push_back(strings::cat("\"", k, "\""));
      }
    }
    absl::Status status = absl::NotFoundError(strings::cat(
        "secret ", ns, "/", name, " has no key \"", key,
        "\" (keys: ", keys.empty() ? std::string("none") : strings::join(keys, ", "), ")"));
    return status;
  }
  auto decoded = internal::base64Decode(value.get<std::string>());
  if (!decoded.ok()) {
    return absl::DataLossError(
        strings::cat("secret ", ns, "/", name, " key \"", key, "\" is not valid base64"));
  }
  return *std::move(decoded);
}

absl::StatusOr<std::map<std::string, std::string>> readSecretData(Client& client,
                                                                  std::string_view ns,
                                                                  std::string_view name) {
  TRIBUTARY_ASSIGN_OR_RETURN(Json secret, client.get(resources::secret(), ns, name));
  std::map<std::string, std::string> out;
  const Json& data = field(secret, "data");
  if (!data.is_object()) {
    return out;
  }
  for (const auto& [key, value] : data.items()) {
    auto decoded = value.is_string() ? internal::base64Decode(value.get<std::string>())
                                     : absl::StatusOr<std::string>(absl::DataLossError(""));
    if (!decoded.ok()) {
      return absl::DataLossError(
          strings::cat("secret ", ns, "/", name, " key \"", key, "\" is not valid base64"));
    }
    out.emplace(key, *std::move(decoded));
  }
  return out;
}

Json objectReference(const Json& object) {
  Json ref = Json::object();
  for (const char* f : {"apiVersion", "kind"}) {
    if (object.contains(f)) {
      ref[f] = object[f];
    }
  }
  const Json& meta = field(object, "metadata");
  for (const char* f : {"namespace", "name", "uid", "resourceVersion"}) {
    if (meta.contains(f)) {
      ref[f] = meta[f];
    }
  }
  return ref;
}

Json controllerOwnerReference(const Json& owner) {
  return Json{{"apiVersion", stringField(owner, "apiVersion")},
              {"kind", stringField(owner, "kind")},
              {"name", nameOf(owner)},
              {"uid", uidOf(owner)},
              {"controller", true},
              {"blockOwnerDeletion", true}};
}

EventRecorder::EventRecorder(std::shared_ptr<Client> client, std::string component,
                             std::string host, std::size_t max_queued)
    : client_(std::move(client)),
      component_(std::move(component)),
      host_(std::move(host)),
      max_queued_(max_queued),
      last_prune_(std::chrono::steady_clock::now()) {}

EventRecorder::~EventRecorder() {
  if (writer_.joinable()) {
    writer_.request_stop();
    writer_.join();
  }
}

void EventRecorder::setErrorHandler(
    std::function<void(std::string_view, const absl::Status&)> on_error) {
  std::lock_guard lock(mu_);
  on_error_ = std::move(on_error);
}

bool EventRecorder::post(const Json& object, std::string_view type, std::string_view reason,
                         std::string_view message) {
  std::lock_guard lock(mu_);
  if (posted_.size() >= max_queued_) {
    dropped_++;
    return false;
  }
  posted_.push_back(Posted{objectReference(object), std::string(type), std::string(reason),
                           std::string(message)});
  if (!writer_.joinable()) {
    writer_ = std::jthread([this](const std::stop_token& stop) { writerLoop(stop); });
  }
  posted_cv_.notify_one();
  return true;
}

void EventRecorder::writerLoop(const std::stop_token& stop) {
  std::unique_lock lock(mu_);
  while (true) {
    posted_cv_.wait(lock, stop, [this] { return !posted_.empty(); });
    if (stop.stop_requested()) {
      return;
    }
    std::vector<Posted> batch;
    batch.swap(posted_);
    writing_ = true;
    lock.unlock();
    for (const auto& p : batch) {
      if (stop.stop_requested()) {
        break;
      }
      const absl::Status st = write(p.reference, p.type, p.reason, p.message);
      if (!st.ok()) {
        std::function<void(std::string_view, const absl::Status&)> on_error;
        {
          std::lock_guard error_lock(mu_);
          on_error = on_error_;
        }
        if (on_error) {
          on_error(p.reason, st);
        }
      }
    }
    lock.lock();
    writing_ = false;
    idle_cv_.notify_all();
  }
}

bool EventRecorder::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [this] { return posted_.empty() && !writing_; });
}

absl::Status EventRecorder::record(const Json& object, std::string_view type,
                                   std::string_view reason, std::string_view message) {
  return write(objectReference(object), type, reason, message);
}

absl::Status EventRecorder::write(const Json& reference, std::string_view type,
                                  std::string_view reason, std::string_view message) {
  constexpr std::size_t kMaxMessage = 1024;
  std::string msg(message.substr(0, kMaxMessage));
  const std::string name = stringField(reference, "name");
  const std::string ns = stringField(reference, "namespace").empty()
                             ? std::string("default")
                             : stringField(reference, "namespace");
  const std::string dedup_key = strings::cat(stringField(reference, "uid"), "|", ns, "/", name, "|",
                                             type, "|", reason, "|", msg);
  const auto now_steady = std::chrono::steady_clock::now();
  const std::string now = formatTime(std::chrono::system_clock::now());

  std::optional<Seen> previous;
  {
    std::lock_guard lock(mu_);
    // Forget entries older than the aggregation window so the map stays bounded; a sweep per
    // minute keeps this O(1) per event on average.
    if (now_steady - last_prune_ > std::chrono::minutes(1)) {
      last_prune_ = now_steady;
      for (auto it = seen_.begin(); it != seen_.end();) {
        if (now_steady - it->second.last > std::chrono::minutes(10)) {
          it = seen_.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (auto it = seen_.find(dedup_key);
        it != seen_.end() && now_steady - it->second.last <= std::chrono::minutes(10)) {
      previous = it->second;
    }
  }
  if (previous) {
    const std::int64_t count = previous->count + 1;
    auto patched = client_->patch(resources::event(), previous->ns, previous->name,
                                  PatchType::Merge, Json{{"count", count}, {"lastTimestamp", now}});
    if (patched.ok()) {
      std::lock_guard lock(mu_);
      seen_[dedup_key] = Seen{previous->ns, previous->name, count, now_steady};
      return absl::OkStatus();
    }
    if (!isNotFound(patched.status())) {
      return patched.status();
    }
    // The event expired (TTL): create a new one.
  }
  const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  char suffix[32];
  std::snprintf(suffix, sizeof(suffix), "%llx%llx", static_cast<unsigned long long>(nanos),
                static_cast<unsigned long long>(sequence_.fetch_add(1)));
  // Event names are DNS subdomains (at most 253 characters) like "<object>.<unique hex>".
  std::string base = name.empty() ? std::string("object") : name.substr(0, 200);
  Json event = {{"apiVersion", "v1"},
                {"kind", "Event"},
                {"metadata", {{"name", strings::cat(base, ".", suffix)}, {"namespace", ns}}},
                {"involvedObject", reference},
                {"reason", reason},
                {"message", msg},
                {"type", type},
                {"source", {{"component", component_}}},
                {"reportingComponent", component_},
                {"reportingInstance", host_},
                {"firstTimestamp", now},
                {"lastTimestamp", now},
                {"count", 1}};
  if (!host_.empty()) {
    event["source"]["host"] = host_;
  }
  TRIBUTARY_ASSIGN_OR_RETURN(Json created, client_->create(resources::event(), ns, event));
  std::lock_guard lock(mu_);
  seen_[dedup_key] = Seen{ns, nameOf(created), 1, now_steady};
  return absl::OkStatus();
}

}  // namespace tributary::kube
