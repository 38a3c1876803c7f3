#include "tributary/kube/leader_election.h"

#include "tributary/common/strings.h"

#include <cmath>
#include <condition_variable>
#include <random>
#include <thread>

namespace tributary::kube {
namespace {

using Clock = std::chrono::steady_clock;

std::int64_t seconds(std::chrono::milliseconds d) {
  return std::max<std::int64_t>(
      1, static_cast<std::int64_t>(std::ceil(static_cast<double>(d.count()) / 1000.0)));
}

std::string str(const Json& object, const char* field) {
  if (!object.is_object()) {
    return {};
  }
  const auto it = object.find(field);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::int64_t num(const Json& object, const char* field) {
  if (!object.is_object()) {
    return 0;
  }
  const auto it = object.find(field);
  return it != object.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
}

}  // namespace

LeaseRecord leaseRecordFrom(const Json& lease) {
  LeaseRecord record;
  const Json spec = lease.is_object() && lease.contains("spec") ? lease["spec"] : Json::object();
  record.holder_identity = str(spec, "holderIdentity");
  record.lease_duration_seconds = num(spec, "leaseDurationSeconds");
  record.acquire_time = str(spec, "acquireTime");
  record.renew_time = str(spec, "renewTime");
  record.lease_transitions = num(spec, "leaseTransitions");
  return record;
}

absl::StatusOr<std::unique_ptr<LeaderElector>> LeaderElector::create(std::shared_ptr<Client> client,
                                                                     LeaderElectionConfig config) {
  if (client == nullptr) {
    return absl::InvalidArgumentError("leader election: no client");
  }
  if (config.lease_name.empty() || config.identity.empty()) {
    return absl::InvalidArgumentError("leader election: lease name and identity are required");
  }
  if (config.lease_namespace.empty()) {
    config.lease_namespace = client->defaultNamespace();
  }
  if (config.lease_duration <= config.renew_deadline) {
    return absl::InvalidArgumentError(
        "leader election: leaseDuration must be greater than renewDeadline");
  }
  if (static_cast<double>(config.renew_deadline.count()) <=
      1.2 * static_cast<double>(config.retry_period.count())) {
    return absl::InvalidArgumentError(
        "leader election: renewDeadline must be greater than 1.2 × retryPeriod");
  }
  if (config.retry_period.count() <= 0) {
    return absl::InvalidArgumentError("leader election: retryPeriod must be positive");
  }
  return std::unique_ptr<LeaderElector>(new LeaderElector(std::move(client), std::move(config)));
}

LeaderElector::LeaderElector(std::shared_ptr<Client> client, LeaderElectionConfig config)
    : client_(std::move(client)),
      config_(std::move(config)),
      log_((config_.logger ? *config_.logger : log::Logger("kube.leader_election"))
               .with({{"lease", strings::cat(config_.lease_namespace, "/", config_.lease_name)},
                      {"identity", config_.identity}})) {}

LeaderElector::~LeaderElector() = default;

std::string LeaderElector::leader() const {
  std::lock_guard lock(mu_);
  return observed_.holder_identity;
}

bool LeaderElector::sleepFor(std::chrono::milliseconds d, const std::stop_token& stop) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  cv.wait_for(lock, stop, d, [] { return false; });
  return !stop.stop_requested();
}

void LeaderElector::observe(const LeaseRecord& record, const std::string& raw) {
  std::string new_leader;
  {
    std::lock_guard lock(mu_);
    if (raw != observed_raw_) {
      observed_raw_ = raw;
      observed_ = record;
      observed_time_ = Clock::now();
    }
    if (record.holder_identity != last_reported_leader_) {
      last_reported_leader_ = record.holder_identity;
      new_leader = record.holder_identity;
    }
  }
  if (!new_leader.empty()) {
    log_.info("new leader observed", {{"leader", new_leader}});
    if (config_.on_new_leader) {
      config_.on_new_leader(new_leader);
    }
  }
}

LeaderElector::Attempt LeaderElector::tryAcquireOrRenew() {
  const auto wall_now = std::chrono::system_clock::now();
  const std::string now_text = formatMicroTime(wall_now);
  // Never let one request outlive the renew deadline.
  const auto timeout = std::max(std::chrono::milliseconds(500), config_.renew_deadline / 2);
  const ResourceType& type = resources::lease();

  HttpRequest get;
  get.method = "GET";
  get.path = Client::path(type, config_.lease_namespace, config_.lease_name);
  get.timeout = timeout;
  auto lease = client_->send("get", type, config_.lease_namespace, config_.lease_name, get);
  if (!lease.ok() && isNotFound(lease.status())) {
    Json spec = {{"holderIdentity", config_.identity},
                 {"leaseDurationSeconds", seconds(config_.lease_duration)},
                 {"acquireTime", now_text},
                 {"renewTime", now_text},
                 {"leaseTransitions", 0}};
    Json object = {
        {"apiVersion", type.apiVersion()},
        {"kind", type.kind},
        {"metadata", {{"name", config_.lease_name}, {"namespace", config_.lease_namespace}}},
        {"spec", spec}};
    HttpRequest post;
    post.method = "POST";
    post.path = Client::path(type, config_.lease_namespace);
    post.headers.emplace_back("Content-Type", "application/json");
    post.body = object.dump();
    post.timeout = timeout;
    auto created =
        client_->send("create", type, config_.lease_namespace, config_.lease_name, std::move(post));
    if (!created.ok()) {
      log_.debug("cannot create the lease", {{"error", std::string(created.status().message())}});
      return Attempt::Failed;
    }
    observe(leaseRecordFrom(*created), (*created)["spec"].dump());
    return Attempt::Acquired;
  }
  if (!lease.ok()) {
    log_.warn("cannot read the lease", {{"error", std::string(lease.status().message())}});
    return Attempt::Failed;
  }
  const LeaseRecord old = leaseRecordFrom(*lease);
  observe(old, lease->contains("spec") ? (*lease)["spec"].dump() : std::string("{}"));
  {
    std::lock_guard lock(mu_);
    const auto valid_until = observed_time_ + std::chrono::seconds(old.lease_duration_seconds);
    if (!old.holder_identity.empty() && old.holder_identity != config_.identity &&
        valid_until > Clock::now()) {
      return Attempt::HeldByOther;
    }
  }
  const bool ours = old.holder_identity == config_.identity;
  Json spec =
      lease->contains("spec") && (*lease)["spec"].is_object() ? (*lease)["spec"] : Json::object();
  spec["holderIdentity"] = config_.identity;
  spec["leaseDurationSeconds"] = seconds(config_.lease_duration);
  spec["renewTime"] = now_text;
  spec["acquireTime"] = ours && !old.acquire_time.empty() ? old.acquire_time : now_text;
  spec["leaseTransitions"] = ours ? old.lease_transitions : old.lease_transitions + 1;
  Json updated = *lease;
  updated["spec"] = spec;
  HttpRequest put;
  put.method = "PUT";
  put.path = Client::path(type, config_.lease_namespace, config_.lease_name);
  put.headers.emplace_back("Content-Type", "application/json");
  put.body = updated.dump();  // carries metadata.resourceVersion: a concurrent writer → 409
  put.timeout = timeout;
  auto written =
      client_->send("update", type, config_.lease_namespace, config_.lease_name, std::move(put));
  if (!written.ok()) {
    log_.debug("cannot update the lease", {{"error", std::string(written.status().message())}});
    return Attempt::Failed;
  }
  observe(leaseRecordFrom(*written), (*written)["spec"].dump());
  return Attempt::Acquired;
}

void LeaderElector::release() {
  const ResourceType& type = resources::lease();
  auto lease = client_->get(type, config_.lease_namespace, config_.lease_name);
  if (!lease.ok()) {
    log_.warn("release: cannot read the lease", {{"error", std::string(lease.status().message())}});
    return;
  }
  const LeaseRecord old = leaseRecordFrom(*lease);
  if (old.holder_identity != config_.identity) {
    return;
  }
  const std::string now_text = formatMicroTime(std::chrono::system_clock::now());
  Json updated = *lease;
  Json spec = updated["spec"];
  spec.erase("holderIdentity");
  spec["leaseDurationSeconds"] = 1;
  spec["renewTime"] = now_text;
  spec["acquireTime"] = now_text;
  spec["leaseTransitions"] = old.lease_transitions;
  updated["spec"] = spec;
  auto written = client_->update(type, updated);
  if (!written.ok()) {
    log_.warn("release: cannot update the lease",
              {{"error", std::string(written.status().message())}});
    return;
  }
  log_.info("lease released");
}

absl::Status LeaderElector::run(std::stop_token stop) {
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> jitter(1.0, 1.2);
  if (config_.on_status) {
    config_.on_status(false);
  }
  log_.info("attempting to acquire the lease");
  while (!stop.stop_requested()) {
    if (tryAcquireOrRenew() == Attempt::Acquired) {
      break;
    }
    const auto wait = std::chrono::milliseconds(
        static_cast<std::int64_t>(static_cast<double>(config_.retry_period.count()) * jitter(rng)));
    if (!sleepFor(wait, stop)) {
      break;
    }
  }
  if (stop.stop_requested()) {
    return absl::OkStatus();
  }

  leading_.store(true);
  log_.info("acquired the lease; leading");
  if (config_.on_status) {
    config_.on_status(true);
  }
  std::stop_source leading;
  std::jthread leader_thread;
  if (config_.on_started_leading) {
    leader_thread =
        std::jthread([this, token = leading.get_token()] { config_.on_started_leading(token); });
  }

  auto last_renew = Clock::now();
  bool lost = false;
  std::string why;
  while (sleepFor(config_.retry_period, stop)) {
    const Attempt attempt = tryAcquireOrRenew();
    if (attempt == Attempt::Acquired) {
      last_renew = Clock::now();
      continue;
    }
    if (attempt == Attempt::HeldByOther) {
      lost = true;
      why = strings::cat("the lease is now held by ", leader());
      break;
    }
    if (Clock::now() - last_renew >= config_.renew_deadline) {
      lost = true;
      why = "could not renew the lease within the renew deadline";
      break;
    }
  }

  leading_.store(false);
  leading.request_stop();
  if (lost) {
    log_.warn("leadership lost", {{"reason", why}});
  } else {
    log_.info("stopping; leaving leadership");
  }
  if (config_.on_stopped_leading) {
    config_.on_stopped_leading();
  }
  if (config_.on_status) {
    config_.on_status(false);
  }
  if (leader_thread.joinable()) {
    leader_thread.join();
  }
  if (!lost && config_.release_on_cancel) {
    release();
  }
  if (lost) {
    return absl::AbortedError(strings::cat("leader election for ", config_.lease_namespace, "/",
                                           config_.lease_name, ": ", why));
  }
  return absl::OkStatus();
}

}  // namespace tributary::kube
