#include "tributary/controller/controller.h"

#include "tributary/common/strings.h"
#include "tributary/kube/metrics.h"

#include "absl/status/status.h"

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <set>
#include <thread>
#include <utility>

namespace tributary::controller {

using kube::Json;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view kConnectorController = "connector";
constexpr std::string_view kSyncJobController = "syncjob";
constexpr std::string_view kSyncRunController = "syncrun";

Json at(const Json& j, const std::string& pointer) {
  const Json::json_pointer p(pointer);
  return j.contains(p) ? j.at(p) : Json();
}
std::string str(const Json& j, const std::string& pointer) {
  const Json v = at(j, pointer);
  return v.is_string() ? v.get<std::string>() : std::string();
}
std::optional<std::int64_t> integer(const Json& j, const std::string& pointer) {
  const Json v = at(j, pointer);
  if (v.is_number_integer()) {
    return v.get<std::int64_t>();
  }
  return std::nullopt;
}
std::optional<TimePoint> timeAt(const Json& j, const std::string& pointer) {
  const std::string s = str(j, pointer);
  if (s.empty()) {
    return std::nullopt;
  }
  return kube::parseTime(s);
}

std::string phaseOf(const Json& run) {
  const std::string p = str(run, "/status/phase");
  return p.empty() ? "Pending" : p;
}
bool finalPhase(std::string_view phase) { return phase == "Succeeded" || phase == "Failed"; }

bool selectorMatches(const Json& selector, const Json& labels) {
  if (!selector.is_object()) {
    return true;
  }
  const Json lbl = labels.is_object() ? labels : Json::object();
  if (selector.contains("matchLabels") && selector["matchLabels"].is_object()) {
    for (const auto& [k, v] : selector["matchLabels"].items()) {
      if (!lbl.contains(k) || lbl[k] != v) {
        return false;
      }
    }
  }
  if (selector.contains("matchExpressions") && selector["matchExpressions"].is_array()) {
    for (const auto& e : selector["matchExpressions"]) {
      const std::string key = e.value("key", "");
      const std::string op = e.value("operator", "");
      const bool has = lbl.contains(key);
      bool in = false;
      if (has && e.contains("values")) {
        for (const auto& v : e["values"]) {
          in = in || v == lbl[key];
        }
      }
      if ((op == "In" && !in) || (op == "NotIn" && in) || (op == "Exists" && !has) ||
          (op == "DoesNotExist" && has)) {
        return false;
      }
    }
  }
  return true;
}

std::uint64_t fnv64(std::string_view s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}

std::chrono::milliseconds until(TimePoint when, TimePoint now) {
  return std::max(std::chrono::milliseconds(1),
                  std::chrono::duration_cast<std::chrono::milliseconds>(when - now));
}

}  // namespace

struct Controller::Queues {
  std::unique_ptr<kube::WorkQueue> connectors;
  std::unique_ptr<kube::WorkQueue> jobs;
  std::unique_ptr<kube::WorkQueue> runs;
  std::vector<std::unique_ptr<kube::WorkerPool>> pools;  // destroyed before the queues
  std::jthread agent_monitor;                            // see Controller::startWorkers
  ~Queues() {
    if (agent_monitor.joinable()) {
      agent_monitor.request_stop();
      agent_monitor.join();
    }
    for (auto& p : pools) {
      p->stop();
    }
    pools.clear();
  }
};

Controller::Controller(ControllerOptions options)
    : options_(std::move(options)),
      log_(options_.logger.value_or(log::Logger(options_.component))),
      client_(options_.client),
      registry_(options_.registry ? options_.registry : std::make_shared<metrics::Registry>()),
      recorder_(options_.client, options_.component) {
  recorder_.setErrorHandler([log = log_](std::string_view reason, const absl::Status& st) {
    log.warn("cannot record event",
             {{"reason", std::string(reason)}, {"error", std::string(st.message())}});
  });
  auto informer = [&](const kube::ResourceType& type, std::vector<std::string> namespaces,
                      std::string selector) {
    kube::InformerOptions o;
    o.type = type;
    o.namespaces = std::move(namespaces);
    o.label_selector = std::move(selector);
    o.logger = log_;
    o.transform = kube::stripManagedFields;
    return std::make_unique<kube::Informer>(client_, std::move(o));
  };
  connectors_ = informer(kube::resources::connector(), options_.watch_namespaces, "");
  jobs_ = informer(kube::resources::syncJob(), options_.watch_namespaces, "");
  runs_ = informer(kube::resources::syncRun(), options_.watch_namespaces, "");
  leases_ = informer(kube::resources::lease(), {options_.agent_namespace},
                     strings::cat(kAgentLabel, "=true"));

  auto enqueue = [this](std::string_view which, const std::string& key) {
    std::shared_ptr<Queues> q;
    {
      std::lock_guard lock(mu_);
      q = queues_;
    }
    if (!q) {
      return;
    }
    if (which == kConnectorController) {
      q->connectors->add(key);
    } else if (which == kSyncJobController) {
      q->jobs->add(key);
    } else {
      q->runs->add(key);
    }
  };
  connectors_->addEventHandler(
      kube::EventHandler{[this, enqueue](const Json& o, bool) {
                           enqueue(kConnectorController, kube::keyOf(o));
                           enqueueJobsOfConnector(o);
                         },
                         [this, enqueue](const Json&, const Json& o) {
                           enqueue(kConnectorController, kube::keyOf(o));
                           enqueueJobsOfConnector(o);
                         },
                         [this](const Json& o, bool) { enqueueJobsOfConnector(o); }});
  jobs_->addEventHandler(kube::EventHandler{
      [this, enqueue](const Json& o, bool) {
        job_writes_.observe(kube::keyOf(o), &o);
        enqueue(kSyncJobController, kube::keyOf(o));
      },
      [this, enqueue](const Json&, const Json& o) {
        job_writes_.observe(kube::keyOf(o), &o);
        enqueue(kSyncJobController, kube::keyOf(o));
      },
      [this](const Json& o, bool) { job_writes_.observe(kube::keyOf(o), nullptr); }});
  runs_->addEventHandler(
      kube::EventHandler{[this](const Json& o, bool) { onRun(nullptr, &o); },
                         [this](const Json& old, const Json& o) { onRun(&old, &o); },
                         [this](const Json& o, bool) { onRun(&o, nullptr); }});
  leases_->addEventHandler(
      kube::EventHandler{[this](const Json&, bool) { enqueueRunsForAgents(); },
                         [this](const Json&, const Json&) { enqueueRunsForAgents(); },
                         [this](const Json&, bool) { enqueueRunsForAgents(); }});

  // controller-runtime's controller metrics, pre-initialised like controller-runtime does.
  auto& total = registry_->counter("controller_runtime_reconcile_total",
                                   "Total number of reconciliations per controller",
                                   {"controller", "result"});
  auto& errors =
      registry_->counter("controller_runtime_reconcile_errors_total",
                         "Total number of reconciliation errors per controller", {"controller"});
  auto& max_conc =
      registry_->gauge("controller_runtime_max_concurrent_reconciles",
                       "Maximum number of concurrent reconciles per controller", {"controller"});
  registry_->gauge("controller_runtime_active_workers",
                   "Number of currently used workers per controller", {"controller"});
  registry_->histogram(
      "controller_runtime_reconcile_time_seconds",
      "Length of time per reconciliation per controller", {"controller"},
      {0.005, 0.01, 0.025, 0.05, 0.1,  0.15, 0.2,  0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6,
       0.7,   0.8,  0.9,   1.0,  1.25, 1.5,  1.75, 2.0,  2.5, 3.0,  3.5, 4.0,  4.5, 5,
       6,     7,    8,     9,    10,   15,   20,   25,   30,  40,   50,  60});
  for (const auto c : {kConnectorController, kSyncJobController, kSyncRunController}) {
    for (const char* r : {"success", "error", "requeue", "requeue_after"}) {
      total.with({std::string(c), r});
    }
    errors.with({std::string(c)});
    max_conc.with({std::string(c)}).set(options_.workers);
  }
  registry_->counter("tributary_syncruns_created_total", "SyncRuns created, by trigger",
                     {"trigger"});
  registry_->counter("tributary_syncruns_bound_total", "SyncRuns bound to an agent", {});
  registry_->counter("tributary_syncruns_retried_total", "SyncRun attempts retried, by reason",
                     {"reason"});
  registry_->counter("tributary_syncruns_failed_total",
                     "SyncRuns failed by the controller, by reason", {"reason"});
  registry_->gauge("tributary_agents", "Agent Leases seen, by state", {"state"});
  registry_
      ->counter("tributary_events_dropped_total",
                "Events not written because too many were waiting (API server slow or away)", {})
      .with({});
  registry_->addCollectHook([this] {
    int live = 0;
    int expired = 0;
    const auto now = options_.clock();
    for (const auto& l : leases_->store().list()) {
      (api::parseAgentLease(*l, now).live ? live : expired)++;
    }
    auto& g = registry_->gauge("tributary_agents", "Agent Leases seen, by state", {"state"});
    g.with({"live"}).set(live);
    g.with({"expired"}).set(expired);
    collectRunGauges(now);
    std::shared_ptr<Queues> q;
    {
      std::lock_guard lock(mu_);
      q = queues_;
    }
    auto& active =
        registry_->gauge("controller_runtime_active_workers",
                         "Number of currently used workers per controller", {"controller"});
    const std::array<std::string_view, 3> names{kConnectorController, kSyncJobController,
                                                kSyncRunController};
    for (std::size_t i = 0; i < names.size(); ++i) {
      active.with({std::string(names[i])})
          .set(q && i < q->pools.size() ? q->pools[i]->activeWorkers() : 0);
    }
  });
}

// Gauges of the cached objects, computed at each scrape: SyncRuns by phase, active runs past
// their deadline (which the SyncRun reconciler should have failed: TributaryRunsOverdue), and
// each SyncJob's last result (one series per SyncJob, dropped with it).
void Controller::collectRunGauges(TimePoint now) {
  std::map<std::string, int> phases{
      {"Pending", 0}, {"Bound", 0}, {"Running", 0}, {"Succeeded", 0}, {"Failed", 0}};
  int overdue = 0;
  for (const auto& run : runs_->store().list()) {
    std::string phase = str(*run, "/status/phase");
    if (phase.empty()) {
      phase = "Pending";
    }
    ++phases[phase];
    const auto deadline = integer(*run, "/spec/activeDeadlineSeconds");
    if ((phase == "Bound" || phase == "Running") && deadline) {
      const auto start = timeAt(*run, "/status/startTime")
                             .value_or(timeAt(*run, "/status/boundTime").value_or(now));
      // A minute of grace: the reconciler fails a run at its deadline, not at this scrape.
      overdue += now >= start + std::chrono::seconds(*deadline) + std::chrono::minutes(1) ? 1 : 0;
    }
  }
  auto& by_phase =
      registry_->gauge("tributary_syncruns", "SyncRuns in the cache, by phase", {"phase"});
  for (const auto& [phase, count] : phases) {
    by_phase.with({phase}).set(count);
  }
  registry_
      ->gauge("tributary_syncruns_overdue",
              "SyncRuns still Bound or Running a minute after their activeDeadlineSeconds", {})
      .with({})
      .set(overdue);

  auto& last_result = registry_->gauge("tributary_syncjob_last_run_succeeded",
                                       "1 when the SyncJob's last finished run succeeded, 0 when "
                                       "it failed (absent before the first)",
                                       {"syncjob_namespace", "syncjob"});
  auto& last_success = registry_->gauge("tributary_syncjob_last_success_timestamp_seconds",
                                        "When the SyncJob's last successful run finished",
                                        {"syncjob_namespace", "syncjob"});
  std::set<std::vector<std::string>> with_result;
  std::set<std::vector<std::string>> with_success;
  for (const auto& job : jobs_->store().list()) {
    std::vector<std::string> labels{str(*job, "/metadata/namespace"), str(*job, "/metadata/name")};
    if (const std::string phase = str(*job, "/status/lastRun/phase"); !phase.empty()) {
      last_result.with(labels).set(phase == "Succeeded" ? 1 : 0);
      with_result.insert(labels);
    }
    if (const auto at = timeAt(*job, "/status/lastSuccessfulTime")) {
      last_success.with(labels).set(static_cast<double>(
          std::chrono::duration_cast<std::chrono::seconds>(at->time_since_epoch()).count()));
      with_success.insert(std::move(labels));
    }
  }
  last_result.removeIf([&](const auto& labels) { return !with_result.contains(labels); });
  last_success.removeIf([&](const auto& labels) { return !with_success.contains(labels); });
}

Controller::~Controller() { stop(); }

void Controller::startInformers() {
  std::lock_guard lock(mu_);
  if (informers_started_) {
    return;
  }
  informers_started_ = true;
  connectors_->start();
  jobs_->start();
  runs_->start();
  leases_->start();
}

bool Controller::synced() const {
  return connectors_->hasSynced() && jobs_->hasSynced() && runs_->hasSynced() &&
         leases_->hasSynced();
}

bool Controller::waitForSync(std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (const auto* i : {connectors_.get(), jobs_.get(), runs_.get(), leases_.get()}) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!i->waitForSync(std::max(left, 0ms))) {
      return false;
    }
  }
  return true;
}

std::unique_ptr<kube::WorkQueue> Controller::makeQueue(const std::string& name) {
  kube::WorkQueueOptions o;
  o.name = name;
  o.rate_limiter = kube::defaultControllerRateLimiter();
  o.metrics = kube::workQueueMetrics(*registry_, name);
  return std::make_unique<kube::WorkQueue>(std::move(o));
}

void Controller::observe(const std::string& controller, const Result& result, double seconds) {
  std::string r = "success";
  if (!result.ok()) {
    r = "error";
    registry_->counter("controller_runtime_reconcile_errors_total", "", {"controller"})
        .with({controller})
        .inc();
    log_.warn("reconcile failed",
              {{"controller", controller}, {"error", std::string(result.status().message())}});
  } else if (result->requeue_after > 0ns) {
    r = "requeue_after";
  } else if (result->requeue) {
    r = "requeue";
  }
  registry_->counter("controller_runtime_reconcile_total", "", {"controller", "result"})
      .with({controller, r})
      .inc();
  registry_->histogram("controller_runtime_reconcile_time_seconds", "", {"controller"}, {})
      .with({controller})
      .observe(seconds);
}

void Controller::startWorkers() {
  auto q = std::make_shared<Queues>();
  q->connectors = makeQueue(std::string(kConnectorController));
  q->jobs = makeQueue(std::string(kSyncJobController));
  q->runs = makeQueue(std::string(kSyncRunController));
  {
    std::lock_guard lock(mu_);
    if (queues_) {
      return;
    }
    queues_ = q;
  }
  auto pool = [&](kube::WorkQueue& queue, std::string_view name,
                  Result (Controller::*fn)(const std::string&)) {
    const std::string n(name);
    q->pools.push_back(std::make_unique<kube::WorkerPool>(
        queue, options_.workers,
        [this, fn](const std::string& key, std::stop_token) {
          try {
            return (this->*fn)(key);
          } catch (const std::exception& e) {
            return Result(absl::InternalError(strings::cat("reconcile threw: ", e.what())));
          }
        },
        [this, n](const std::string&, const Result& result, double seconds) {
          observe(n, result, seconds);
        }));
  };
  pool(*q->connectors, kConnectorController, &Controller::reconcileConnector);
  pool(*q->jobs, kSyncJobController, &Controller::reconcileSyncJob);
  pool(*q->runs, kSyncRunController, &Controller::reconcileSyncRun);
  for (const auto& k : connectors_->store().keys()) {
    q->connectors->add(k);
  }
  for (const auto& k : jobs_->store().keys()) {
    q->jobs->add(k);
  }
  for (const auto& k : runs_->store().keys()) {
    q->runs->add(k);
  }
  // An agent whose Lease simply stops being renewed produces no event: look every run_poll.
  q->agent_monitor = std::jthread([this](const std::stop_token& stop) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    while (!cv.wait_for(lock, stop, options_.run_poll, [] { return false; })) {
      if (stop.stop_requested()) {
        return;
      }
      enqueueRunsForAgents();
    }
  });
  log_.info("reconciling", {{"workers", options_.workers}});
}

void Controller::stopWorkers() {
  std::shared_ptr<Queues> q;
  {
    std::lock_guard lock(mu_);
    q = std::move(queues_);
    queues_.reset();
    assumed_.clear();
  }
  if (q) {
    if (q->agent_monitor.joinable()) {
      q->agent_monitor.request_stop();
      q->agent_monitor.join();
    }
    q->connectors->shutDown();
    q->jobs->shutDown();
    q->runs->shutDown();
    for (auto& p : q->pools) {
      p->stop();
    }
    log_.info("stopped reconciling");
  }
}

void Controller::stop() {
  stopWorkers();
  recorder_.flush(2s);  // the last reconciles' events, while the API server may still answer
  connectors_->stop();
  jobs_->stop();
  runs_->stop();
  leases_->stop();
}

bool Controller::reconciling() const {
  std::lock_guard lock(mu_);
  return queues_ != nullptr;
}

void Controller::enqueueAllSyncJobs() {
  std::shared_ptr<Queues> q;
  {
    std::lock_guard lock(mu_);
    q = queues_;
  }
  if (q) {
    for (const auto& k : jobs_->store().keys()) {
      q->jobs->add(k);
    }
  }
}

void Controller::enqueueJobsOfConnector(const Json& connector) {
  std::shared_ptr<Queues> q;
  {
    std::lock_guard lock(mu_);
    q = queues_;
  }
  if (!q) {
    return;
  }
  const std::string ns = kube::namespaceOf(connector);
  const std::string name = kube::nameOf(connector);
  for (const auto& job : jobs_->store().list()) {
    if (kube::namespaceOf(*job) == ns && str(*job, "/spec/connectorRef/name") == name) {
      q->jobs->add(kube::keyOf(*job));
    }
  }
}

void Controller::onRun(const Json* old_object, const Json* object) {
  const Json& any = object != nullptr ? *object : *old_object;
  const std::string key = kube::keyOf(any);
  const std::string job_key =
      kube::makeKey(kube::namespaceOf(any), str(any, "/spec/syncJobRef/name"));
  run_writes_.observe(key, object);
  std::shared_ptr<Queues> q;
  {
    std::lock_guard lock(mu_);
    if (object == nullptr) {
      runs_by_job_[job_key].erase(key);
      if (runs_by_job_[job_key].empty()) {
        runs_by_job_.erase(job_key);
      }
      bound_.erase(key);
      assumed_.erase(key);
      pending_runs_.erase(key);
    } else {
      runs_by_job_[job_key].insert(key);
      const std::string phase = phaseOf(*object);
      const std::string agent = str(*object, "/status/agent");
      if ((phase == "Bound" || phase == "Running") && !agent.empty()) {
        bound_[key] = agent;
        assumed_.erase(key);
      } else {
        bound_.erase(key);
      }
      if (finalPhase(phase)) {
        assumed_.erase(key);
      }
      if (phase == "Pending") {
        pending_runs_.insert(key);
      } else {
        pending_runs_.erase(key);
      }
    }
    q = queues_;
  }
  if (q) {
    if (object != nullptr) {
      q->runs->add(key);
    }
    q->jobs->add(job_key);
  }
}

void Controller::enqueueRunsForAgents() {
  // Pending runs may fit now; runs bound to an agent that is gone or expired must be retried.
  // Runs of live agents are left alone: rechecking every bound run on every renewal would cost
  // (runs × renewals) reconciles.
  const auto now = options_.clock();
  std::set<std::string> live;
  for (const auto& l : leases_->store().list()) {
    if (const api::AgentLease a = api::parseAgentLease(*l, now); !agentGone(a, now)) {
      live.insert(a.name);
    }
  }
  std::shared_ptr<Queues> q;
  std::vector<std::string> keys;
  {
    std::lock_guard lock(mu_);
    q = queues_;
    if (!q) {
      return;
    }
    keys.assign(pending_runs_.begin(), pending_runs_.end());
    for (const auto& [k, agent] : bound_) {
      if (!live.contains(agent)) {
        keys.push_back(k);
      }
    }
  }
  for (const auto& k : keys) {
    q->runs->add(k);
  }
}

// Whether an agent's runs must be taken from it: its Lease was released, or it expired by its
// renewTime and this controller has watched it for one lease duration of its own clock without
// seeing a renewal. The second half matters after an API server outage: no agent could renew,
// so every Lease looks expired when the controller sees them again, yet the agents are alive and
// renew within moments. While the Lease cache is not in sync (the watch fails, or waits to
// retry), the controller is blind and its clock for every agent starts again.
bool Controller::agentGone(const api::AgentLease& agent, TimePoint now) {
  const bool in_sync = leases_->stats().in_sync;
  const std::lock_guard lock(sightings_mu_);
  if (!in_sync) {
    for (auto& [name, sighting] : lease_sightings_) {
      sighting.seen = now;
    }
  }
  LeaseSighting& sighting = lease_sightings_[agent.name];
  if (sighting.renew_time != agent.renew_time || sighting.seen == TimePoint{}) {
    sighting = {agent.renew_time, now};
  }
  if (agent.live) {
    return false;
  }
  return agent.released || now - sighting.seen >= agent.duration;
}

std::chrono::milliseconds Controller::retryDelay(int failures) const {
  if (options_.retry_backoff) {
    return options_.retry_backoff(failures);
  }
  return retryBackoff(failures);
}

void Controller::event(const Json& object, std::string_view type, std::string_view reason,
                       std::string_view message) {
  if (!recorder_.post(object, type, reason, message)) {
    registry_->counter("tributary_events_dropped_total", "", {}).with({}).inc();
    log_.warn("event dropped: too many events waiting to be written",
              {{"reason", std::string(reason)}, {"object", kube::keyOf(object)}});
  }
}

// --- Connector ---------------------------------------------------------------------------------

Controller::Result Controller::reconcileConnector(const std::string& key) {
  const auto obj = connectors_->store().get(key);
  if (!obj) {
    return kube::ReconcileResult{};
  }
  const Json& c = *obj;
  const auto gen = kube::generationOf(c);
  const std::string ns = kube::namespaceOf(c);
  Json status = c.value("status", Json::object());
  const Json old_status = status;
  const Json old_conditions = old_status.value("conditions", Json::array());
  Json& conditions = status["conditions"];
  if (!conditions.is_array()) {
    conditions = Json::array();
  }
  // Validation beyond the CRD's CEL rules (which the API server already enforces): lib/api's,
  // the same checks the agent and the CLI make.
  std::vector<api::Problem> problems;
  const api::Connector parsed = api::parseConnector(c, problems);
  const bool accepted = problems.empty();
  const std::string message = accepted ? "the spec is valid" : api::describe(problems);
  const auto* before = kube::findCondition(old_conditions, "Accepted");
  const bool was_accepted = before != nullptr && (*before)["status"] == "True";
  kube::setCondition(conditions, "Accepted", accepted ? "True" : "False",
                     accepted ? "Valid" : "InvalidSpec", message, gen, Clock::now());

  std::string ready_reason = accepted ? "Available" : "NotAccepted";
  std::string ready_message =
      accepted ? "agents install the connector on first use" : "the spec is not valid";
  bool ready = accepted;
  std::optional<kube::ReconcileResult> requeue;
  const std::string secret = str(c, "/spec/secretRef/name");
  if (accepted && !secret.empty()) {
    auto s = client_->get(kube::resources::secret(), ns, secret);
    if (!s.ok()) {
      if (!kube::isNotFound(s.status())) {
        return s.status();
      }
      ready = false;
      ready_reason = "SecretNotFound";
      ready_message = strings::cat("secret \"", secret, "\" (spec.secretRef) not found");
      requeue = kube::ReconcileResult{false, 10s};
    }
  }
  const auto* ready_before = kube::findCondition(old_conditions, "Ready");
  const bool was_ready = ready_before != nullptr && (*ready_before)["status"] == "True";
  kube::setCondition(conditions, "Ready", ready ? "True" : "False", ready_reason, ready_message,
                     gen, Clock::now());
  status["observedGeneration"] = gen;
  status["specHash"] = parsed.specHash();
  if (status != old_status) {
    Json updated = c;
    updated["status"] = status;
    auto r = client_->updateStatus(kube::resources::connector(), updated);
    if (!r.ok()) {
      return r.status();
    }
    if (!accepted && (was_accepted || before == nullptr)) {
      event(c, "Warning", "InvalidSpec", message);
    } else if (ready && !was_ready) {
      event(c, "Normal", "Ready", "connector accepted");
    } else if (!ready && accepted && (was_ready || ready_before == nullptr)) {
      event(c, "Warning", ready_reason, ready_message);
    }
  }
  return requeue.value_or(kube::ReconcileResult{});
}

// --- SyncJob -----------------------------------------------------------------------------------

absl::Status Controller::writeJobStatus(const Json& job, const Json& status) {
  Json updated = job;
  updated["status"] = status;
  bool first = true;
  return kube::retryOnConflict([&]() -> absl::Status {
    if (!first) {
      auto fresh =
          client_->get(kube::resources::syncJob(), kube::namespaceOf(job), kube::nameOf(job));
      if (!fresh.ok()) {
        return fresh.status();
      }
      if (kube::uidOf(*fresh) != kube::uidOf(job)) {
        return absl::OkStatus();  // deleted and re-created: the new one gets its own reconcile
      }
      // Never move times backwards because our view was stale.
      Json merged = status;
      for (const char* f : {"lastScheduleTime", "lastSuccessfulTime"}) {
        const auto ours = timeAt(status, strings::cat("/", f));
        const auto theirs = timeAt(*fresh, strings::cat("/status/", f));
        if (theirs && (!ours || *theirs > *ours)) {
          merged[f] = (*fresh)["status"][f];
        }
      }
      updated = *fresh;
      updated["status"] = merged;
    }
    const bool from_cache = first;
    first = false;
    auto r = client_->updateStatus(kube::resources::syncJob(), updated);
    if (!r.ok()) {
      return r.status();
    }
    if (from_cache) {
      job_writes_.remember(std::make_shared<const Json>(std::move(*r)),
                           kube::resourceVersionOf(job));
    }
    return absl::OkStatus();
  });
}

Controller::Result Controller::reconcileSyncJob(const std::string& key) {
  const auto obj = job_writes_.newest(key, jobs_->store().get(key));
  if (!obj) {
    return kube::ReconcileResult{};
  }
  const Json& job = *obj;
  const auto now = options_.clock();
  const std::string ns = kube::namespaceOf(job);
  const std::string name = kube::nameOf(job);
  const std::string uid = kube::uidOf(job);
  const auto gen = kube::generationOf(job);
  const Json old_status = job.value("status", Json::object());
  const Json old_conditions = old_status.value("conditions", Json::array());
  Json status = old_status;
  if (!status["conditions"].is_array()) {
    status["conditions"] = Json::array();
  }
  Json& conditions = status["conditions"];
  std::optional<std::chrono::milliseconds> requeue;
  auto requeueIn = [&](std::chrono::milliseconds d) {
    d = std::min(d, options_.max_requeue);
    requeue = requeue ? std::min(*requeue, d) : d;
  };
  // Conditions with an event when one turns False.
  auto condition = [&](std::string_view type, bool ok, std::string_view reason,
                       std::string_view message) {
    const auto* before = kube::findCondition(old_conditions, type);
    const bool was_false = before != nullptr && (*before)["status"] == "False" &&
                           (*before)["reason"] == reason && (*before)["message"] == message;
    kube::setCondition(conditions, type, ok ? "True" : "False", reason, message, gen, Clock::now());
    if (!ok && !was_false) {
      event(job, "Warning", reason, message);
    }
  };

  // Connector.
  const std::string connector_name = str(job, "/spec/connectorRef/name");
  const auto connector = connectors_->store().get(kube::makeKey(ns, connector_name));
  condition("ConnectorFound", connector != nullptr, connector ? "Found" : "ConnectorNotFound",
            connector
                ? strings::cat("connector \"", connector_name, "\" found")
                : strings::cat("connector \"", connector_name, "\" not found in namespace ", ns));
  // Options.
  bool options_found = true;
  std::string options_reason = "Found";
  std::string options_message = "spec.options is set";
  if (at(job, "/spec/optionsFrom").is_object()) {
    const std::string secret = str(job, "/spec/optionsFrom/secretKeyRef/name");
    const std::string skey = str(job, "/spec/optionsFrom/secretKeyRef/key");
    auto value = kube::readSecretKey(*client_, ns, secret, skey);
    if (value.ok()) {
      options_message = strings::cat("secret \"", secret, "\" key \"", skey, "\" found");
    } else if (kube::isNotFound(value.status())) {
      options_found = false;
      options_reason = "SecretNotFound";
      options_message = std::string(value.status().message());
      requeueIn(10s);  // Secrets are not watched (RBAC, memory): poll until it appears.
    } else {
      return value.status();
    }
  }
  condition("OptionsFound", options_found, options_reason, options_message);
  // Schedule and time zone.
  const std::string schedule_text = str(job, "/spec/schedule");
  std::optional<CronSchedule> schedule;
  std::shared_ptr<const TimeZone> tz = TimeZone::utc();
  bool schedule_ok = true;
  std::string schedule_reason = "Valid";
  std::string schedule_message = schedule_text.empty() ? "no schedule: the job runs once"
                                                       : "the schedule and time zone are valid";
  if (!schedule_text.empty()) {
    auto parsed = CronSchedule::parse(schedule_text);
    auto zone = TimeZone::load(str(job, "/spec/timeZone"));
    if (!parsed.ok()) {
      schedule_ok = false;
      schedule_reason = "InvalidSchedule";
      schedule_message =
          strings::cat("invalid schedule \"", schedule_text, "\": ", parsed.status().message());
    } else if (!zone.ok()) {
      schedule_ok = false;
      schedule_reason = "UnknownTimeZone";
      schedule_message = std::string(zone.status().message());
    } else {
      schedule = *parsed;
      tz = *zone;
    }
  }
  condition("ScheduleValid", schedule_ok, schedule_reason, schedule_message);
  const bool ready = connector != nullptr && options_found && schedule_ok;

  // Owned runs from the cache.
  std::vector<kube::ObjectPtr> runs;
  {
    std::set<std::string> keys;
    {
      std::lock_guard lock(mu_);
      if (auto it = runs_by_job_.find(key); it != runs_by_job_.end()) {
        keys = it->second;
      }
    }
    for (const auto& k : keys) {
      if (auto r = run_writes_.newest(k, runs_->store().get(k));
          r && str(*r, "/spec/syncJobRef/uid") == uid) {
        runs.push_back(r);
      }
    }
  }
  std::vector<kube::ObjectPtr> active;
  std::vector<kube::ObjectPtr> succeeded;
  std::vector<kube::ObjectPtr> failed;
  for (const auto& r : runs) {
    const std::string phase = phaseOf(*r);
    (phase == "Succeeded" ? succeeded : phase == "Failed" ? failed : active).push_back(r);
  }
  auto finishedAt = [](const kube::ObjectPtr& r) {
    return timeAt(*r, "/status/completionTime").value_or(TimePoint{});
  };
  // lastRun and lastSuccessfulTime.
  kube::ObjectPtr last;
  for (const auto* list : {&succeeded, &failed}) {
    for (const auto& r : *list) {
      if (!last || finishedAt(r) > finishedAt(last) ||
          (finishedAt(r) == finishedAt(last) && kube::nameOf(*r) > kube::nameOf(*last))) {
        last = r;
      }
    }
  }
  if (last) {
    Json lr = {{"name", kube::nameOf(*last)}, {"phase", phaseOf(*last)}};
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"/spec/scheduledTime", "scheduledTime"},
             {"/status/startTime", "startTime"},
             {"/status/completionTime", "completionTime"},
             {"/status/reason", "reason"},
             {"/status/message", "message"}}) {
      const Json v = at(*last, from);
      if (v.is_string() && !v.get<std::string>().empty()) {
        lr[to] = v;
      }
    }
    if (auto u = integer(*last, "/status/objects/upserted")) {
      lr["objectsUpserted"] = *u;
    }
    if (auto d = integer(*last, "/status/objects/deleted")) {
      lr["objectsDeleted"] = *d;
    }
    if (lr.value("message", "").size() > 32768) {
      lr["message"] = lr["message"].get<std::string>().substr(0, 32768);
    }
    status["lastRun"] = lr;
  }
  for (const auto& r : succeeded) {
    const auto t = timeAt(*r, "/status/completionTime");
    const auto cur = timeAt(status, "/lastSuccessfulTime");
    if (t && (!cur || *t > *cur)) {
      status["lastSuccessfulTime"] = kube::formatTime(*t);
    }
  }
  // History limits: delete the oldest finished runs (by start time, then name).
  auto prune = [&](std::vector<kube::ObjectPtr>& list, std::int64_t limit) -> absl::Status {
    if (static_cast<std::int64_t>(list.size()) <= limit) {
      return absl::OkStatus();
    }
    auto started = [](const kube::ObjectPtr& r) {
      return timeAt(*r, "/status/startTime")
          .value_or(timeAt(*r, "/metadata/creationTimestamp").value_or(TimePoint{}));
    };
    std::sort(list.begin(), list.end(), [&](const auto& a, const auto& b) {
      return std::make_pair(started(a), kube::nameOf(*a)) <
             std::make_pair(started(b), kube::nameOf(*b));
    });
    const auto excess = static_cast<std::size_t>(static_cast<std::int64_t>(list.size()) - limit);
    for (std::size_t i = 0; i < excess; ++i) {
      auto st = client_->remove(kube::resources::syncRun(), ns, kube::nameOf(*list[i]),
                                kube::DeleteOptions{kube::uidOf(*list[i]), "", "Background", {}});
      if (!st.ok() && !kube::isNotFound(st)) {
        return st;
      }
    }
    return absl::OkStatus();
  };
  if (auto st = prune(succeeded, integer(job, "/spec/successfulRunsHistoryLimit").value_or(3));
      !st.ok()) {
    return st;
  }
  if (auto st = prune(failed, integer(job, "/spec/failedRunsHistoryLimit").value_or(1)); !st.ok()) {
    return st;
  }

  // What is due now.
  const bool suspend =
      at(job, "/spec/suspend").is_boolean() && at(job, "/spec/suspend").get<bool>();
  struct Due {
    std::string name;
    TimePoint slot;
    std::string trigger;
  };
  std::optional<Due> due;
  status.erase("nextScheduleTime");
  const std::string run_now =
      str(job, strings::cat("/metadata/annotations/", "tributary.dev~1run-now"));
  // A run-now value is handled once the status names its run (kept in the status, not in an
  // annotation: one status write per manual run, and no conflict with our own metadata patch).
  const bool run_now_pending =
      !run_now.empty() && str(status, "/lastManualRun") != manualRunName(name, run_now);
  if (ready && !suspend) {
    // A pending run-now goes first; the schedule is still evaluated for nextScheduleTime, and a
    // slot due at the same time runs on the next pass (our status write brings the job back).
    if (!schedule) {
      if (!run_now_pending && !status.contains("lastScheduleTime")) {
        const auto created = timeAt(job, "/metadata/creationTimestamp").value_or(now);
        due = Due{scheduledRunName(name, created), created, "Once"};
      }
    } else {
      const auto created = timeAt(job, "/metadata/creationTimestamp").value_or(now);
      auto decision = decideSchedule(*schedule, *tz, created, timeAt(status, "/lastScheduleTime"),
                                     integer(job, "/spec/startingDeadlineSeconds"), now);
      if (!decision.ok()) {
        condition("ScheduleValid", false, "InvalidSchedule",
                  strings::cat("invalid schedule \"", schedule_text,
                               "\": ", decision.status().message()));
      } else {
        if (decision->too_many_missed && !run_now_pending) {
          event(job, "Warning", "TooManyMissedTimes",
                strings::cat("too many missed start times: ", decision->missed,
                             ". Set or decrease .spec.startingDeadlineSeconds or check clock "
                             "skew"));
        }
        if (decision->run_at && decision->deadline_exceeded) {
          if (!run_now_pending) {
            event(job, "Warning", "MissSchedule",
                  strings::cat("missed scheduled time to start a run: ",
                               kube::formatTime(*decision->run_at)));
          }
        } else if (decision->run_at) {
          due = Due{scheduledRunName(name, *decision->run_at), *decision->run_at, "Schedule"};
        }
        if (decision->next) {
          status["nextScheduleTime"] = kube::formatTime(*decision->next);
          requeueIn(until(*decision->next, now) + 100ms);
        }
      }
    }
    if (run_now_pending) {
      due = Due{manualRunName(name, run_now), now, "Manual"};
    }
  }

  // Concurrency policy.
  std::vector<kube::ObjectPtr> still_active;
  for (const auto& r : active) {
    if (!due || kube::nameOf(*r) != due->name) {
      still_active.push_back(r);
    }
  }
  if (due && !still_active.empty()) {
    const std::string policy = str(job, "/spec/concurrencyPolicy");
    if (policy == "Replace") {
      for (const auto& r : still_active) {
        auto st = client_->remove(kube::resources::syncRun(), ns, kube::nameOf(*r),
                                  kube::DeleteOptions{kube::uidOf(*r), "", "Background", {}});
        if (!st.ok() && !kube::isNotFound(st)) {
          return st;
        }
        event(
            job, "Normal", "SuccessfulDelete",
            strings::cat("deleted active run ", kube::nameOf(*r), " (concurrencyPolicy Replace)"));
      }
      active.erase(std::remove_if(active.begin(), active.end(),
                                  [&](const auto& r) {
                                    return std::find(still_active.begin(), still_active.end(), r) !=
                                           still_active.end();
                                  }),
                   active.end());
    } else {
      event(job, "Normal", "JobAlreadyActive",
            strings::cat("not starting run ", due->name, ": run ",
                         kube::nameOf(*still_active.front()),
                         " is still active (concurrencyPolicy Forbid)"));
      due.reset();
    }
  }

  Json active_refs = Json::array();
  for (const auto& r : active) {
    active_refs.push_back({{"name", kube::nameOf(*r)}, {"uid", kube::uidOf(*r)}});
  }
  if (due) {
    Json run = {
        {"apiVersion", kube::resources::syncRun().apiVersion()},
        {"kind", "SyncRun"},
        {"metadata",
         {{"name", due->name},
          {"namespace", ns},
          {"labels", {{std::string(kSyncJobLabel), name}}},
          {"annotations", {{std::string(kScheduledAnnotation), kube::formatTime(due->slot)}}},
          {"ownerReferences", Json::array({kube::controllerOwnerReference(job)})}}},
        {"spec",
         {{"syncJobRef",
           {{"name", name}, {"uid", uid}, {"generation", std::max<std::int64_t>(1, gen)}}},
          {"connectorRef", {{"name", connector_name}}},
          {"scheduledTime", kube::formatTime(due->slot)},
          {"trigger", due->trigger},
          {"backoffLimit", integer(job, "/spec/backoffLimit").value_or(6)},
          {"deletionPolicy", str(job, "/spec/deletionPolicy").empty()
                                 ? std::string("Mark")
                                 : str(job, "/spec/deletionPolicy")}}}};
    if (connector && kube::generationOf(*connector) > 0) {
      run["spec"]["connectorRef"]["generation"] = kube::generationOf(*connector);
    }
    if (auto d = integer(job, "/spec/activeDeadlineSeconds")) {
      run["spec"]["activeDeadlineSeconds"] = *d;
    }
    run["spec"]["deletionGuard"] = {
        {"maxDeletePercent", integer(job, "/spec/deletionGuard/maxDeletePercent").value_or(50)}};
    // A new confirm-deletion value confirms this run's deletions, once (recorded in the status
    // with the run's creation, like run-now).
    const std::string confirmation =
        str(job, strings::cat("/metadata/annotations/", "tributary.dev~1confirm-deletion"));
    if (!confirmation.empty() && confirmation != str(status, "/lastDeletionConfirmation")) {
      run["spec"]["deletionGuard"]["confirmed"] = true;
      status["lastDeletionConfirmation"] = confirmation;
    }
    auto created = client_->create(kube::resources::syncRun(), ns, run);
    std::string run_uid;
    if (created.ok()) {
      run_uid = kube::uidOf(*created);
      {
        std::lock_guard lock(mu_);
        runs_by_job_[key].insert(kube::keyOf(*created));
      }
      run_writes_.remember(std::make_shared<const Json>(*created), "");
      registry_->counter("tributary_syncruns_created_total", "", {"trigger"})
          .with({due->trigger})
          .inc();
      event(job, "Normal", "SuccessfulCreate", strings::cat("created run ", due->name));
      log_.info("created run", {{"syncjob", key}, {"run", due->name}, {"trigger", due->trigger}});
    } else if (kube::isAlreadyExists(created.status())) {
      // Created before (a restart, a stale cache): the deterministic name is the guard.
      auto existing = client_->get(kube::resources::syncRun(), ns, due->name);
      if (existing.ok()) {
        if (str(*existing, "/spec/syncJobRef/uid") != uid) {
          event(job, "Warning", "UnexpectedRun",
                strings::cat("run ", due->name, " exists but belongs to another SyncJob"));
        }
        run_uid = kube::uidOf(*existing);
        if (finalPhase(phaseOf(*existing))) {
          run_uid.clear();
        }
      }
    } else {
      event(job, "Warning", "FailedCreate",
            strings::cat("cannot create run ", due->name, ": ", created.status().message()));
      return created.status();
    }
    if (due->trigger == "Manual") {
      // Our status write brings the job back, for a scheduled slot that may be waiting too.
      status["lastManualRun"] = due->name;
    } else {
      status["lastScheduleTime"] = kube::formatTime(due->slot);
    }
    if (!run_uid.empty() && std::none_of(active_refs.begin(), active_refs.end(),
                                         [&](const Json& a) { return a["name"] == due->name; })) {
      active_refs.push_back({{"name", due->name}, {"uid", run_uid}});
    }
  } else if (ready && !suspend && run_now_pending) {
    // A manual run waits for the active one (Forbid); run events bring us back.
    requeueIn(options_.run_poll);
  }
  std::sort(active_refs.begin(), active_refs.end(),
            [](const Json& a, const Json& b) { return a["name"] < b["name"]; });
  if (active_refs.size() > 16) {
    active_refs.erase(active_refs.begin() + 16, active_refs.end());
  }
  if (active_refs.empty()) {
    status.erase("active");
  } else {
    status["active"] = active_refs;
  }
  std::string ready_message = "the job can run";
  std::string ready_reason = "Ready";
  if (!ready) {
    ready_reason = connector == nullptr ? "ConnectorNotFound"
                   : !options_found     ? options_reason
                                        : schedule_reason;
    ready_message = connector == nullptr ? "the connector is missing"
                    : !options_found     ? options_message
                                         : schedule_message;
  } else if (suspend) {
    ready_reason = "Suspended";
    ready_message = "the job is suspended: no new runs start";
  }
  kube::setCondition(conditions, "Ready", ready ? "True" : "False", ready_reason, ready_message,
                     gen, Clock::now());
  status["observedGeneration"] = gen;
  if (status != old_status) {
    if (auto st = writeJobStatus(job, status); !st.ok()) {
      return st;
    }
  }
  if (requeue) {
    return kube::ReconcileResult{false, *requeue};
  }
  return kube::ReconcileResult{};
}

// --- SyncRun -----------------------------------------------------------------------------------

absl::Status Controller::writeRunStatus(const Json& run, const Json& status) {
  Json updated = run;
  updated["status"] = status;
  auto r = client_->updateStatus(kube::resources::syncRun(), updated);
  if (!r.ok()) {
    return r.status();
  }
  run_writes_.remember(std::make_shared<const Json>(std::move(*r)), kube::resourceVersionOf(run));
  return absl::OkStatus();
}

std::optional<std::string> Controller::pickAgent(const Json& run, const Json* job) {
  const auto now = options_.clock();
  const Json selector = job != nullptr ? at(*job, "/spec/agentSelector") : Json();
  const std::string key = kube::keyOf(run);
  const auto leases = leases_->store().list();
  std::lock_guard lock(mu_);
  std::map<std::string, int> load;
  for (const auto& [k, a] : bound_) {
    if (k != key) {
      load[a]++;
    }
  }
  for (const auto& [k, a] : assumed_) {
    if (k != key && !bound_.contains(k)) {
      load[a]++;
    }
  }
  std::optional<std::string> best;
  double best_ratio = 0;
  std::uint64_t best_tie = 0;
  for (const auto& l : leases) {
    const api::AgentLease a = api::parseAgentLease(*l, now);
    if (!a.live || a.capacity <= 0 || load[a.name] >= a.capacity ||
        !selectorMatches(selector, at(*l, "/metadata/labels"))) {
      continue;
    }
    const double ratio = static_cast<double>(load[a.name]) / a.capacity;
    const std::uint64_t tie = fnv64(strings::cat(key, "/", a.name));  // spread equal agents
    if (!best || ratio < best_ratio || (ratio == best_ratio && tie < best_tie)) {
      best = a.name;
      best_ratio = ratio;
      best_tie = tie;
    }
  }
  if (best) {
    assumed_[key] = *best;
  }
  return best;
}

Controller::Result Controller::reconcileSyncRun(const std::string& key) {
  const auto obj = run_writes_.newest(key, runs_->store().get(key));
  if (!obj) {
    return kube::ReconcileResult{};
  }
  const Json& run = *obj;
  const std::string phase = phaseOf(run);
  if (finalPhase(phase)) {
    return kube::ReconcileResult{};
  }
  const auto now = options_.clock();
  const std::string ns = kube::namespaceOf(run);
  const auto job = jobs_->store().get(kube::makeKey(ns, str(run, "/spec/syncJobRef/name")));
  Json status = run.value("status", Json::object());
  if (!status["conditions"].is_array()) {
    status["conditions"] = Json::array();
  }
  const int attempt = static_cast<int>(std::max<std::int64_t>(1, status.value("attempt", 0)));
  const auto backoff_limit = integer(run, "/spec/backoffLimit").value_or(6);
  status["attempt"] = attempt;
  status["observedGeneration"] = kube::generationOf(run);

  auto fail = [&](const std::string& reason, const std::string& message) -> Result {
    status["phase"] = "Failed";
    status["reason"] = reason;
    status["message"] = message;
    status["completionTime"] = kube::formatTime(now);
    kube::setCondition(status["conditions"], "Failed", "True", reason, message,
                       kube::generationOf(run), Clock::now());
    if (auto st = writeRunStatus(run, status); !st.ok()) {
      return st;
    }
    registry_->counter("tributary_syncruns_failed_total", "", {"reason"}).with({reason}).inc();
    event(run, "Warning", reason, message);
    return kube::ReconcileResult{};
  };
  auto retryOrFail = [&](const std::string& reason, const std::string& message) -> Result {
    if (attempt - 1 >= backoff_limit) {
      return fail("BackoffLimitExceeded", strings::cat(message, "; backoffLimit (", backoff_limit,
                                                       ") reached after ", attempt, " attempt(s)"));
    }
    const auto delay = retryDelay(attempt);
    Json patch = {{"metadata",
                   {{"annotations",
                     {{std::string(kNotBeforeAnnotation), kube::formatMicroTime(now + delay)}}}}}};
    auto p = client_->patch(kube::resources::syncRun(), ns, kube::nameOf(run),
                            kube::PatchType::Merge, patch);
    if (!p.ok()) {
      return p.status();
    }
    Json fresh = *p;  // the patch changed the resourceVersion
    run_writes_.remember(std::make_shared<const Json>(fresh), kube::resourceVersionOf(run));
    status["phase"] = "Pending";
    status["attempt"] = attempt + 1;
    for (const char* f : {"agent", "boundTime", "startTime", "lastProgressTime"}) {
      status.erase(f);
    }
    status["reason"] = reason;
    const std::string msg =
        strings::cat("attempt ", attempt, " failed: ", message, "; retrying in ",
                     static_cast<double>(delay.count()) / 1000.0, " s");
    status["message"] = msg;
    kube::setCondition(status["conditions"], "Bound", "False", reason, msg, kube::generationOf(run),
                       Clock::now());
    kube::setCondition(status["conditions"], "Failed", "False", "Retrying", msg,
                       kube::generationOf(run), Clock::now());
    if (kube::findCondition(status["conditions"], "Running") != nullptr) {
      kube::setCondition(status["conditions"], "Running", "False", reason, msg,
                         kube::generationOf(run), Clock::now());
    }
    if (auto st = writeRunStatus(fresh, status); !st.ok()) {
      return st;
    }
    registry_->counter("tributary_syncruns_retried_total", "", {"reason"}).with({reason}).inc();
    event(run, "Warning", reason, msg);
    return kube::ReconcileResult{false, delay};
  };

  if (phase == "Pending") {
    const auto not_before =
        timeAt(run, strings::cat("/metadata/annotations/", "tributary.dev~1not-before"));
    if (not_before && *not_before > now) {
      return kube::ReconcileResult{false, until(*not_before, now)};
    }
    auto agent = pickAgent(run, job.get());
    if (!agent) {
      const auto* bound = kube::findCondition(status["conditions"], "Bound");
      const bool noted = bound != nullptr && (*bound)["reason"] == "NoAgentAvailable" &&
                         str(run, "/status/phase") == "Pending";
      if (!noted) {
        status["phase"] = "Pending";
        kube::setCondition(status["conditions"], "Bound", "False", "NoAgentAvailable",
                           "no live agent with free capacity matches the SyncJob's agentSelector",
                           kube::generationOf(run), Clock::now());
        if (auto st = writeRunStatus(run, status); !st.ok()) {
          return st;
        }
      }
      return kube::ReconcileResult{false, options_.run_poll};
    }
    status["phase"] = "Bound";
    status["agent"] = *agent;
    status["boundTime"] = kube::formatTime(now);
    status.erase("reason");
    status.erase("message");
    kube::setCondition(status["conditions"], "Bound", "True", "Bound",
                       strings::cat("bound to agent ", *agent), kube::generationOf(run),
                       Clock::now());
    if (auto st = writeRunStatus(run, status); !st.ok()) {
      std::lock_guard lock(mu_);
      assumed_.erase(key);
      return st;
    }
    registry_->counter("tributary_syncruns_bound_total", "", {}).with({}).inc();
    event(run, "Normal", "Bound",
          strings::cat("bound to agent ", *agent, " (attempt ", attempt, ")"));
    return kube::ReconcileResult{false, options_.max_requeue};
  }

  // Bound or Running.
  std::chrono::milliseconds next_check = options_.max_requeue;
  if (auto deadline = integer(run, "/spec/activeDeadlineSeconds")) {
    const auto start =
        timeAt(run, "/status/startTime").value_or(timeAt(run, "/status/boundTime").value_or(now));
    const auto end = start + std::chrono::seconds(*deadline);
    if (now >= end) {
      return fail(
          "DeadlineExceeded",
          strings::cat("the run was active longer than activeDeadlineSeconds (", *deadline, " s)"));
    }
    next_check = std::min(next_check, until(end, now) + 10ms);
  }
  if (const auto* failed = kube::findCondition(status["conditions"], "Failed");
      failed != nullptr && (*failed)["status"] == "True") {
    const std::string reason = failed->value("reason", "AttemptFailed");
    return retryOrFail(reason.empty() ? "AttemptFailed" : reason, failed->value("message", ""));
  }
  const std::string agent_name = str(run, "/status/agent");
  const auto lease = leases_->store().get(kube::makeKey(options_.agent_namespace, agent_name));
  if (!lease) {
    return retryOrFail("AgentLost", strings::cat("agent ", agent_name, " has no Lease"));
  }
  const api::AgentLease agent = api::parseAgentLease(*lease, now);
  if (agentGone(agent, now)) {
    return retryOrFail("AgentLost", strings::cat("agent ", agent_name, " lost its Lease"));
  }
  // Lease expiry is checked per agent (enqueueRunsForAgents, every run_poll), not per run.
  return kube::ReconcileResult{false, next_check};
}

}  // namespace tributary::controller
