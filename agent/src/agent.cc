#include "tributary/agent/agent.h"

#include "tributary/api/credentials.h"
#include "tributary/api/resources.h"
#include "tributary/common/strings.h"
#include "tributary/kube/informer.h"
#include "tributary/sync/sync.h"

#include "absl/status/statusor.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <thread>
#include <unistd.h>

namespace tributary::agent {
namespace {

using namespace std::chrono_literals;
using kube::Json;
using strings::cat;
using SystemClock = std::chrono::system_clock;
using SteadyClock = std::chrono::steady_clock;

const kube::ResourceType& nodeType() {
  static const kube::ResourceType type{"", "v1", "nodes", "Node", false};
  return type;
}

void setCondition(Json& status, std::string_view type, std::string_view value,
                  std::string_view reason, std::string_view message) {
  kube::setCondition(status["conditions"], type, value, reason, message, 0);
}

double secondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

// Secrets of the run's namespace, read from the API server at the run's start.
class KubeSecrets : public api::SecretSource {
 public:
  explicit KubeSecrets(kube::Client& client) : client_(client) {}

  absl::StatusOr<std::optional<std::string>> key(const std::string& ns, const std::string& name,
                                                 const std::string& key) const override {
    auto keys = all(ns, name);
    if (!keys.ok()) {
      return keys.status();
    }
    if (!keys->has_value()) {
      return std::optional<std::string>();
    }
    const auto it = (*keys)->find(key);
    return it == (*keys)->end() ? std::optional<std::string>() : std::optional(it->second);
  }

  absl::StatusOr<std::optional<std::map<std::string, std::string>>> all(
      const std::string& ns, const std::string& name) const override {
    auto data = kube::readSecretData(client_, ns, name);
    if (!data.ok()) {
      if (kube::isNotFound(data.status())) {
        return std::optional<std::map<std::string, std::string>>();
      }
      return data.status();
    }
    return std::optional(*std::move(data));
  }

  std::string placesForKey(const std::string& ns, const std::string& name,
                           const std::string& key) const override {
    return cat("(Secret ", ns, "/", name, ", key ", key, ")");
  }
  std::string placesForSecret(const std::string& ns, const std::string& name) const override {
    return cat("(Secret ", ns, "/", name, ")");
  }

 private:
  kube::Client& client_;
};

// Why a run ended without the pipeline's own verdict.
struct Verdict {
  std::string reason;
  std::string message;
  bool retriable = true;
};

}  // namespace

// --- one run -----------------------------------------------------------------------------------

// An active run: its thread, its cancellation, and what the status writer needs.
struct ActiveRun {
  std::string key;
  std::string uid;
  int attempt = 1;
  std::stop_source stop;
  std::mutex mu;  // guards the fields below
  /// Set before stop is requested: why the run was cancelled, and whether that is reported
  /// (not when the run object is gone or no longer this agent's).
  std::optional<Verdict> cancel;
  bool report = true;
  // Progress, written by the run thread, read by the progress writer.
  std::optional<store::RunCounters> counters;
  std::int64_t fencing_token = 0;
  bool progress_dirty = false;
  bool finished = false;  ///< The final status was written (or the run is gone): no more writes.
  SteadyClock::time_point last_write{};
  std::jthread thread;
};

struct Agent::Impl {
  explicit Impl(AgentOptions o)
      : options(std::move(o)),
        log(options.logger.with({{"agent", options.name}})),
        client(options.client),
        registry(options.registry ? options.registry : std::make_shared<metrics::Registry>()),
        recorder(client, "tributary-agent", options.name),
        identity(cat(options.name, "_", ::getpid())),
        holder(cat("agent/", options.name)) {}

  AgentOptions options;
  log::Logger log;
  std::shared_ptr<kube::Client> client;
  std::shared_ptr<metrics::Registry> registry;
  kube::EventRecorder recorder;
  std::string identity;
  std::string holder;

  std::unique_ptr<kube::Informer> runs;
  std::jthread lease_loop;
  std::jthread progress_loop;

  mutable std::mutex mu;
  std::condition_variable idle_cv;
  std::map<std::string, std::shared_ptr<ActiveRun>> active;  // run key → run
  std::list<std::shared_ptr<ActiveRun>> done;                // threads to join
  std::set<std::string> handled;                             // "uid/attempt" run by us
  std::deque<std::string> waiting;                           // Bound runs over capacity
  bool draining = false;
  bool cordoned = false;
  bool stopped = false;
  std::atomic<bool> lease_held{false};

  // --- metrics -------------------------------------------------------------------------------
  metrics::Family<metrics::Counter>& runs_total = registry->counter(
      "tributary_sync_runs_total", "Sync runs this agent finished, by result.", {"result"});
  metrics::Family<metrics::Counter>& pages_total =
      registry->counter("tributary_sync_pages_total", "Pages committed to PostgreSQL.");
  metrics::Family<metrics::Counter>& objects_total = registry->counter(
      "tributary_sync_objects_total", "Objects by what the store did with them.", {"outcome"});
  metrics::Family<metrics::Counter>& bytes_total =
      registry->counter("tributary_sync_bytes_total", "Encoded page bytes received.");
  metrics::Family<metrics::Histogram>& run_seconds = registry->histogram(
      "tributary_sync_run_duration_seconds", "Wall time of one run attempt, by result.", {"result"},
      {1, 5, 15, 60, 300, 900, 3600, 14400});
  metrics::Family<metrics::Histogram>& install_seconds = registry->histogram(
      "tributary_connector_install_duration_seconds",
      "Time to fetch and install a connector version (installs only, not reuses).", {},
      {0.5, 1, 5, 15, 60, 300, 900});
  metrics::Family<metrics::Counter>& connector_failures = registry->counter(
      "tributary_connector_failures_total",
      "Connector processes that failed: no handshake, crash, Sync error, timeout.", {});
  metrics::Family<metrics::Histogram>& lock_wait_seconds = registry->histogram(
      "tributary_lock_wait_seconds", "Time to acquire the source's fenced lock.", {},
      {0.001, 0.01, 0.1, 1, 5, 15, 60});
  metrics::Family<metrics::Histogram>& write_seconds = registry->histogram(
      "tributary_db_write_duration_seconds", "One page's PostgreSQL transaction.", {},
      {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5});
  metrics::Family<metrics::Gauge>& active_gauge =
      registry->gauge("tributary_agent_active_runs", "Runs this agent is executing.");
  metrics::Family<metrics::Gauge>& capacity_gauge = registry->gauge(
      "tributary_agent_capacity", "Runs this agent takes at once (0 while draining or cordoned).");
  // Every label-less series, and the labels every sync produces, exported from the start at 0:
  // a series born with its first increment shows no increase to rate().
  const bool metrics_initialised = [this] {
    for (auto* counter : {&pages_total, &bytes_total, &connector_failures}) {
      counter->with({});
    }
    for (auto* histogram : {&install_seconds, &lock_wait_seconds, &write_seconds}) {
      histogram->with({});
    }
    runs_total.with({"succeeded"});
    run_seconds.with({"succeeded"});
    for (const char* outcome : {"inserted", "updated", "unchanged", "deleted"}) {
      objects_total.with({outcome});
    }
    return true;
  }();

  // --- Lease ---------------------------------------------------------------------------------

  int advertisedCapacity() const {
    const std::lock_guard lock(mu);
    return draining || cordoned || stopped ? 0 : options.capacity;
  }

  Json leaseObject(const Json& base, bool release) const {
    Json lease = base.is_object() ? base : Json::object();
    lease["apiVersion"] = "coordination.k8s.io/v1";
    lease["kind"] = "Lease";
    lease["metadata"]["name"] = options.name;
    lease["metadata"]["namespace"] = options.lease_namespace;
    Json labels = Json::object();
    for (const auto& [k, v] : options.labels) {
      labels[k] = v;
    }
    labels[std::string(api::kAgentLabel)] = "true";
    lease["metadata"]["labels"] = labels;
    lease["metadata"]["annotations"][std::string(api::kCapacityAnnotation)] =
        std::to_string(advertisedCapacity());
    const std::string now = kube::formatMicroTime(SystemClock::now());
    Json& spec = lease["spec"];
    if (!spec.is_object()) {
      spec = Json::object();
    }
    if (release) {
      spec["holderIdentity"] = nullptr;
      spec["leaseDurationSeconds"] = 1;
    } else {
      const Json holder_now = spec.value("holderIdentity", Json());
      if (!holder_now.is_string() || holder_now.get<std::string>() != identity) {
        spec["acquireTime"] = now;
        spec["leaseTransitions"] = spec.value("leaseTransitions", 0) + 1;
      }
      spec["holderIdentity"] = identity;
      spec["leaseDurationSeconds"] = std::max<std::int64_t>(
          1, std::chrono::duration_cast<std::chrono::seconds>(options.lease_duration).count());
      spec["renewTime"] = now;
    }
    return lease;
  }

  absl::Status writeLease(bool release) {
    return kube::retryOnConflict([&]() -> absl::Status {
      auto current = client->get(kube::resources::lease(), options.lease_namespace, options.name);
      if (!current.ok()) {
        if (!kube::isNotFound(current.status()) || release) {
          return kube::isNotFound(current.status()) ? absl::OkStatus() : current.status();
        }
        const Json fresh = leaseObject(Json::object(), false);
        auto created = client->create(kube::resources::lease(), options.lease_namespace, fresh);
        return created.status();
      }
      if (release) {
        const Json& spec = current->value("spec", Json::object());
        if (spec.value("holderIdentity", Json("")).is_string() &&
            spec.value("holderIdentity", Json("")).get<std::string>() != identity) {
          return absl::OkStatus();  // not ours any more
        }
      }
      auto updated = client->update(kube::resources::lease(), leaseObject(*current, release));
      return updated.status();
    });
  }

  void checkNode() {
    if (options.node_name.empty()) {
      return;
    }
    auto node = client->get(nodeType(), "", options.node_name);
    if (!node.ok()) {
      log.warn("cannot read this agent's Node (cordon check)",
               {{"node", options.node_name}, {"error", node.status().message()}});
      return;
    }
    const bool unschedulable = node->value("/spec/unschedulable"_json_pointer, false);
    const std::lock_guard lock(mu);
    if (unschedulable != cordoned) {
      cordoned = unschedulable;
      log.info(unschedulable ? "node cordoned: taking no new runs" : "node uncordoned",
               {{"node", options.node_name}});
      startWaitingLocked();  // runs bound while it was cordoned
    }
  }

  void leaseLoop(const std::stop_token& stop) {
    const auto period = std::max<std::chrono::milliseconds>(options.lease_duration / 3, 200ms);
    std::mutex m;
    std::condition_variable_any cv;
    while (!stop.stop_requested()) {
      checkNode();
      if (absl::Status st = writeLease(false); !st.ok()) {
        log.warn("cannot renew the agent Lease", {{"error", st.message()}});
      } else {
        lease_held = true;
      }
      capacity_gauge.with({}).set(advertisedCapacity());
      reap();
      std::unique_lock lock(m);
      cv.wait_for(lock, stop, period, [] { return false; });
    }
  }

  // --- SyncRun events ------------------------------------------------------------------------

  static std::string attemptKey(const api::SyncRun& run) { return cat(run.uid, "/", run.attempt); }

  void onRun(const Json& object) {
    const api::SyncRun run = api::parseSyncRun(object);
    const std::string key = kube::makeKey(run.ns, run.name);
    std::unique_lock lock(mu);
    if (const auto it = active.find(key); it != active.end()) {
      const auto& current = it->second;
      bool ending = false;
      {
        const std::lock_guard entry_lock(current->mu);
        ending = current->finished;  // our own final write coming back
      }
      if (!ending && (current->uid != run.uid || run.finished() || run.agent != options.name ||
                      run.attempt != current->attempt)) {
        lock.unlock();
        cancel(*current,
               Verdict{"Cancelled",
                       cat("SyncRun ", key, " was ",
                           run.finished() ? cat("finished (", run.phase, ") by the controller")
                                          : std::string("taken from this agent"),
                           " while it ran")},
               /*report=*/false);
      }
      return;
    }
    if (run.finished() || run.attempt_failed || run.agent != options.name ||
        handled.contains(attemptKey(run))) {
      return;
    }
    if (run.phase == "Running") {
      // Running on this agent but not started by this process: the previous one died.
      handled.insert(attemptKey(run));
      lock.unlock();
      reportAttempt(
          run, Verdict{"AgentRestarted", cat("agent ", options.name,
                                             " restarted while the run was active; the attempt is "
                                             "retried")});
      return;
    }
    if (run.phase != "Bound") {
      return;
    }
    if (draining || stopped) {
      handled.insert(attemptKey(run));
      lock.unlock();
      reportAttempt(
          run, Verdict{"AgentDraining",
                       cat("agent ", options.name, " is shutting down and did not start the run")});
      return;
    }
    if (static_cast<int>(active.size()) >= options.capacity || cordoned) {
      if (std::find(waiting.begin(), waiting.end(), key) == waiting.end()) {
        waiting.push_back(key);
      }
      return;
    }
    startLocked(run, key);
  }

  void onRunDeleted(const Json& object) {
    const std::string key = kube::keyOf(object);
    std::shared_ptr<ActiveRun> current;
    {
      const std::lock_guard lock(mu);
      if (const auto it = active.find(key); it != active.end()) {
        current = it->second;
      }
      waiting.erase(std::remove(waiting.begin(), waiting.end(), key), waiting.end());
      // The run left this agent: its attempts will not come back here under the same number.
      const std::string uid = kube::uidOf(object) + "/";
      std::erase_if(handled, [&](const std::string& k) { return k.starts_with(uid); });
    }
    if (current) {
      cancel(*current, Verdict{"Cancelled", cat("SyncRun ", key, " was deleted or reassigned")},
             /*report=*/false);
    }
  }

  void cancel(ActiveRun& run, Verdict verdict, bool report) {
    log.info("cancelling run", {{"run", run.key},
                                {"reason", verdict.reason},
                                {"why", verdict.message},
                                {"report", report}});
    {
      const std::lock_guard lock(run.mu);
      if (!run.cancel) {
        run.cancel = std::move(verdict);
        run.report = report;
      }
    }
    run.stop.request_stop();
  }

  void startLocked(const api::SyncRun& run, const std::string& key) {
    auto entry = std::make_shared<ActiveRun>();
    entry->key = key;
    entry->uid = run.uid;
    entry->attempt = run.attempt;
    handled.insert(attemptKey(run));
    active[key] = entry;
    active_gauge.with({}).set(static_cast<double>(active.size()));
    entry->thread = std::jthread([this, entry, run] { execute(entry, run); });
  }

  // Called when a slot frees: the next waiting run that is still Bound to us.
  void startWaitingLocked() {
    while (!waiting.empty() && static_cast<int>(active.size()) < options.capacity && !draining &&
           !cordoned && !stopped) {
      const std::string key = waiting.front();
      waiting.pop_front();
      const auto object = runs->store().get(key);
      if (!object) {
        continue;
      }
      const api::SyncRun run = api::parseSyncRun(*object);
      if (run.phase == "Bound" && !run.attempt_failed && run.agent == options.name &&
          !handled.contains(attemptKey(run)) && !active.contains(key)) {
        startLocked(run, key);
      }
    }
  }

  bool waitIdle(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu);
    return idle_cv.wait_for(lock, timeout, [&] { return active.empty(); });
  }

  void reap() {
    std::list<std::shared_ptr<ActiveRun>> finished;
    {
      const std::lock_guard lock(mu);
      finished.swap(done);
    }
    for (auto& run : finished) {
      if (run->thread.joinable()) {
        run->thread.join();
      }
    }
  }

  // --- status writes -------------------------------------------------------------------------

  // Re-reads the run and applies `change` to its status while it is still this attempt on this
  // agent and not finished; conflicts are retried. NotFound (the run was deleted) is OK.
  absl::Status writeStatus(const api::SyncRun& run, const std::function<void(Json&)>& change) {
    return kube::retryOnConflict([&]() -> absl::Status {
      auto current = client->get(kube::resources::syncRun(), run.ns, run.name);
      if (!current.ok()) {
        return kube::isNotFound(current.status()) ? absl::OkStatus() : current.status();
      }
      const api::SyncRun now = api::parseSyncRun(*current);
      if (now.uid != run.uid || now.agent != options.name || now.attempt != run.attempt ||
          now.finished()) {
        return absl::OkStatus();  // no longer ours to write
      }
      Json updated = *current;
      if (!updated["status"].is_object()) {
        updated["status"] = Json::object();
      }
      if (!updated["status"]["conditions"].is_array()) {
        updated["status"]["conditions"] = Json::array();
      }
      change(updated["status"]);
      return client->updateStatus(kube::resources::syncRun(), updated).status();
    });
  }

  // A run's last word (its success or a failed attempt): retried with backoff while the API
  // server is unreachable or refuses for a while, or the run would stay Running on a live agent
  // because one request met an outage. Gives up when the agent stops or after ten minutes.
  absl::Status writeFinalStatus(const api::SyncRun& run, const std::function<void(Json&)>& change) {
    kube::Backoff backoff(std::chrono::milliseconds(500), std::chrono::seconds(10));
    const auto give_up = SteadyClock::now() + std::chrono::minutes(10);
    while (true) {
      const absl::Status st = writeStatus(run, change);
      const bool transient = absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st) ||
                             absl::IsResourceExhausted(st) || absl::IsInternal(st) ||
                             absl::IsUnknown(st) || absl::IsAborted(st);
      if (st.ok() || !transient || SteadyClock::now() >= give_up) {
        return st;
      }
      const auto delay = backoff.next();
      log.warn("cannot write the run's final status; retrying",
               {{"run", kube::makeKey(run.ns, run.name)},
                {"error", st.message()},
                {"retry_in_ms", delay.count()}});
      std::unique_lock lock(mu);
      if (idle_cv.wait_for(lock, delay, [this] { return stopped; })) {
        return st;
      }
    }
  }

  // A failed attempt the controller retries (condition Failed=True, phase left).
  void reportAttempt(const api::SyncRun& run, const Verdict& verdict) {
    log.warn("run attempt failed", {{"run", kube::makeKey(run.ns, run.name)},
                                    {"attempt", run.attempt},
                                    {"reason", verdict.reason},
                                    {"retriable", verdict.retriable},
                                    {"message", verdict.message}});
    const absl::Status st = writeFinalStatus(run, [&](Json& status) {
      if (!verdict.retriable) {
        status["phase"] = "Failed";
        status["completionTime"] = kube::formatTime(SystemClock::now());
      }
      status["reason"] = verdict.reason;
      status["message"] = verdict.message.substr(0, 32768);
      setCondition(status, "Failed", "True", verdict.reason, verdict.message.substr(0, 32768));
      if (kube::findCondition(status["conditions"], "Running") != nullptr) {
        setCondition(status, "Running", "False", verdict.reason, "the attempt failed");
      }
    });
    if (!st.ok()) {
      log.error("cannot report the run's failure",
                {{"run", kube::makeKey(run.ns, run.name)}, {"error", st.message()}});
    }
  }

  // At most once per progress_interval, and only when something changed.
  void writeProgress(ActiveRun& entry, const api::SyncRun& run) {
    std::optional<store::RunCounters> counters;
    std::int64_t token = 0;
    {
      const std::lock_guard lock(entry.mu);
      if (entry.finished || !entry.progress_dirty ||
          SteadyClock::now() - entry.last_write < options.progress_interval) {
        return;
      }
      entry.progress_dirty = false;
      entry.last_write = SteadyClock::now();
      counters = entry.counters;
      token = entry.fencing_token;
    }
    const absl::Status st = writeStatus(run, [&](Json& status) {
      if (token > 0) {
        status["fencingToken"] = token;
      }
      if (counters) {
        status["pages"] = counters->pages;
        status["objects"]["upserted"] = counters->upserted();
        status["objects"]["unchanged"] = counters->unchanged;
        status["lastProgressTime"] = kube::formatTime(SystemClock::now());
      }
    });
    if (!st.ok()) {
      log.warn("cannot write the run's progress", {{"run", entry.key}, {"error", st.message()}});
    }
  }

  void progressLoop(const std::stop_token& stop) {
    std::mutex m;
    std::condition_variable_any cv;
    while (!stop.stop_requested()) {
      std::vector<std::pair<std::shared_ptr<ActiveRun>, api::SyncRun>> todo;
      {
        const std::lock_guard lock(mu);
        for (const auto& [key, entry] : active) {
          if (const auto object = runs->store().get(key)) {
            todo.emplace_back(entry, api::parseSyncRun(*object));
          }
        }
      }
      for (auto& [entry, run] : todo) {
        if (run.uid == entry->uid && run.attempt == entry->attempt) {
          writeProgress(*entry, run);
        }
      }
      std::unique_lock lock(m);
      cv.wait_for(lock, stop, std::min<std::chrono::milliseconds>(options.progress_interval, 1s),
                  [] { return false; });
    }
  }

  // --- execution -----------------------------------------------------------------------------

  class RunObserver : public sync::Observer {
   public:
    RunObserver(Impl& impl, ActiveRun& entry) : impl_(impl), entry_(entry) {}
    void onStage(sync::Stage stage, const std::string& detail) override {
      if (stage == sync::Stage::Locking) {
        lock_started_ = SteadyClock::now();
      }
      impl_.log.info(detail, {{"run", entry_.key}, {"stage", sync::stageName(stage)}});
    }
    void onLocked(std::int64_t fencing_token, std::int64_t /*run_id*/) override {
      impl_.lock_wait_seconds.with({}).observe(secondsSince(lock_started_));
      const std::lock_guard lock(entry_.mu);
      entry_.fencing_token = fencing_token;
      entry_.progress_dirty = true;
    }
    void onCounters(const store::RunCounters& counters, double write_seconds) override {
      impl_.write_seconds.with({}).observe(write_seconds);
      impl_.pages_total.with({}).inc();
      const std::lock_guard lock(entry_.mu);
      entry_.counters = counters;
      entry_.progress_dirty = true;
    }

   private:
    Impl& impl_;
    ActiveRun& entry_;
    SteadyClock::time_point lock_started_ = SteadyClock::now();
  };

  // Everything the run needs from the API server, or why it cannot run.
  absl::StatusOr<sync::RunPlan> resolve(const api::SyncRun& run, Verdict& why) {
    const std::string run_key = kube::makeKey(run.ns, run.name);
    auto connector_object = client->get(kube::resources::connector(), run.ns, run.connector);
    if (!connector_object.ok()) {
      why =
          kube::isNotFound(connector_object.status())
              ? Verdict{"ConnectorNotFound",
                        cat("Connector ", run.ns, "/", run.connector, " of SyncRun ", run_key,
                            " does not exist; create it (the run is retried)")}
              : Verdict{"ApiUnavailable", cat("cannot read Connector ", run.ns, "/", run.connector,
                                              ": ", connector_object.status().message())};
      return absl::FailedPreconditionError(why.message);
    }
    std::vector<api::Problem> problems;
    const api::Connector connector = api::parseConnector(*connector_object, problems);
    if (run.connector_generation != 0 && connector.generation != run.connector_generation) {
      why =
          Verdict{"ConnectorChanged",
                  cat("Connector ", run.ns, "/", run.connector, " changed (generation ",
                      run.connector_generation, " when the run was created, ", connector.generation,
                      " now); this run is not retried, the next one uses the new spec"),
                  false};
      return absl::FailedPreconditionError(why.message);
    }
    if (!problems.empty()) {
      why = Verdict{
          "InvalidConnector",
          cat("Connector ", run.ns, "/", run.connector, " is not valid: ", api::describe(problems)),
          false};
      return absl::FailedPreconditionError(why.message);
    }
    auto job_object = client->get(kube::resources::syncJob(), run.ns, run.job);
    if (!job_object.ok()) {
      why = Verdict{
          kube::isNotFound(job_object.status()) ? "SyncJobNotFound" : "ApiUnavailable",
          cat("cannot read SyncJob ", run.ns, "/", run.job, ": ", job_object.status().message())};
      return absl::FailedPreconditionError(why.message);
    }
    const api::SyncJob job = api::parseSyncJob(*job_object, problems);
    if (!problems.empty()) {
      why = Verdict{
          "InvalidSyncJob",
          cat("SyncJob ", run.ns, "/", run.job, " is not valid: ", api::describe(problems)), false};
      return absl::FailedPreconditionError(why.message);
    }
    const KubeSecrets secrets(*client);
    sync::RunPlan plan;
    if (job.options_from) {
      auto text = api::resolveOptions(job, secrets);
      if (!text.ok()) {
        why = Verdict{"OptionsUnavailable", std::string(text.status().message())};
        return text.status();
      }
      plan.options = *std::move(text);
      plan.options_are_secret = true;
    } else {
      plan.options = job.options_json.value_or("{}");
    }
    auto credentials = api::resolveCredentials(connector, secrets);
    if (!credentials.ok()) {
      why = Verdict{"CredentialsUnavailable", std::string(credentials.status().message())};
      return credentials.status();
    }
    for (const std::string& note : credentials->notes) {
      log.warn(note, {{"run", run_key}});
    }
    plan.ns = run.ns;
    plan.name = run.job;
    plan.connector = connector.spec;
    plan.handshake = sync::hostHandshake(connector.handshake);
    plan.secret_env = std::move(credentials->env);
    for (auto& file : credentials->files) {
      plan.files.push_back(std::move(file));
    }
    auto policy = store::parseDeletionPolicy(run.deletion_policy);
    plan.deletion_policy = policy.ok() ? *policy : store::DeletionPolicy::Mark;
    plan.deletion_guard.max_delete_percent = run.max_delete_percent;
    plan.deletion_guard.confirmed = run.deletion_confirmed;
    plan.attempt = run.attempt;
    plan.holder = holder;
    if (run.active_deadline_seconds) {
      plan.sync_timeout = std::chrono::seconds(*run.active_deadline_seconds);
    }
    plan.start_timeout = options.start_timeout;
    plan.lock_options = options.lock_options;
    plan.sandbox = options.sandbox.policy(connector.limits);
    return plan;
  }

  void execute(const std::shared_ptr<ActiveRun>& entry, const api::SyncRun& run) {
    const auto started = SteadyClock::now();
    const std::string key = entry->key;
    auto log_run = log.with({{"run", key}, {"attempt", run.attempt}});
    log_run.info("run started", {{"sync_job", run.job}, {"connector", run.connector}});
    std::string result;
    Verdict why;
    auto plan = resolve(run, why);
    if (!plan.ok()) {
      result = why.reason;
      reportAttempt(run, why);
    } else {
      const absl::Status running = writeStatus(run, [&](Json& status) {
        status["phase"] = "Running";
        status["startTime"] = kube::formatTime(SystemClock::now());
        status.erase("reason");
        status.erase("message");
        setCondition(status, "Running", "True", "Started",
                     cat("agent ", options.name, " started the connector"));
      });
      if (!running.ok()) {
        log_run.warn("cannot mark the run Running", {{"error", running.message()}});
      }
      RunObserver observer(*this, *entry);
      sync::Services services{*options.store, *options.installer, *options.lock,
                              log_run.named("sync")};
      sync::Outcome outcome = sync::runSync(*plan, services, entry->stop.get_token(), observer);
      if (outcome.installation && outcome.installation->installed_now) {
        install_seconds.with({}).observe(
            static_cast<double>(outcome.installation->install_duration.count()) / 1000.0);
      }
      if (outcome.sync) {
        bytes_total.with({}).inc(static_cast<double>(outcome.sync->bytes));
      }
      result = finish(*entry, run, outcome);
    }
    runs_total.with({result}).inc();
    run_seconds.with({result}).observe(secondsSince(started));
    log_run.info("run ended", {{"result", result}, {"seconds", secondsSince(started)}});
    const std::lock_guard lock(mu);
    if (const auto it = active.find(key); it != active.end() && it->second == entry) {
      active.erase(it);
    }
    done.push_back(entry);
    active_gauge.with({}).set(static_cast<double>(active.size()));
    startWaitingLocked();
    idle_cv.notify_all();
  }

  // Reports the pipeline's outcome; returns the result label for metrics.
  std::string finish(ActiveRun& entry, const api::SyncRun& run, const sync::Outcome& outcome) {
    std::optional<Verdict> cancelled;
    bool report = true;
    std::int64_t fencing_token = 0;
    {
      const std::lock_guard lock(entry.mu);
      cancelled = entry.cancel;
      report = entry.report;
      fencing_token = entry.fencing_token;
      entry.finished = true;  // the progress writer stops here
    }
    if (outcome.succeeded()) {
      const store::RunCounters& c = outcome.summary->counters;
      objects_total.with({"inserted"}).inc(static_cast<double>(c.inserted));
      objects_total.with({"updated"}).inc(static_cast<double>(c.updated));
      objects_total.with({"unchanged"}).inc(static_cast<double>(c.unchanged));
      objects_total.with({"deleted"}).inc(static_cast<double>(c.marked + c.deleted));
      const absl::Status st = writeFinalStatus(run, [&](Json& status) {
        status["phase"] = "Succeeded";
        status["fencingToken"] = fencing_token;
        status["completionTime"] = kube::formatTime(SystemClock::now());
        status["lastProgressTime"] = kube::formatTime(SystemClock::now());
        status["pages"] = c.pages;
        status["objects"] = {{"upserted", c.upserted()},
                             {"unchanged", c.unchanged},
                             {"deleted", c.marked + c.deleted},
                             {"guarded", outcome.summary->guarded_objects}};
        status["connectorMetadata"] = outcome.sync->metadata.substr(0, 65536);
        status["reason"] = "Succeeded";
        status["message"] = outcome.summary->note.empty()
                                ? cat(c.pages, " pages, ", c.upserted(), " objects upserted, ",
                                      c.unchanged, " unchanged, ", c.marked + c.deleted, " deleted")
                                : outcome.summary->note.substr(0, 32768);
        setCondition(status, "Running", "False", "Completed", "the connector finished");
        setCondition(status, "Complete", "True", "Succeeded", "the run succeeded");
        if (outcome.summary->deletion_guarded) {
          setCondition(status, "DeletionGuarded", "True", "DeletionGuarded",
                       outcome.summary->note.substr(0, 32768));
        }
      });
      if (!st.ok()) {
        log.error("cannot record the run's success", {{"run", entry.key}, {"error", st.message()}});
      }
      if (auto object = runs->store().get(entry.key)) {
        recorder.post(*object, outcome.summary->deletion_guarded ? "Warning" : "Normal",
                      outcome.summary->deletion_guarded ? "DeletionGuarded" : "Succeeded",
                      outcome.summary->deletion_guarded
                          ? outcome.summary->note
                          : cat(c.upserted(), " objects upserted, ", c.unchanged, " unchanged, ",
                                c.marked + c.deleted, " deleted in ", c.pages, " pages"));
      }
      return "succeeded";
    }
    const sync::Failure& failure = *outcome.failure;
    if (failure.reason == sync::FailureReason::ConnectorFailed) {
      connector_failures.with({}).inc();
    }
    if (failure.reason == sync::FailureReason::Cancelled && cancelled) {
      if (report) {
        reportAttempt(run, *cancelled);
      }
      return cancelled->reason;
    }
    reportAttempt(run, Verdict{std::string(sync::failureReasonName(failure.reason)),
                               failure.message, failure.retriable});
    return std::string(sync::failureReasonName(failure.reason));
  }
};

// --- Agent -------------------------------------------------------------------------------------

Agent::Agent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Agent::~Agent() { stop(); }

absl::StatusOr<std::unique_ptr<Agent>> Agent::create(AgentOptions options) {
  if (!options.client || !options.store || !options.installer || !options.lock) {
    return absl::InvalidArgumentError("agent: client, store, installer and lock are required");
  }
  if (options.name.empty()) {
    return absl::InvalidArgumentError(
        "agent: the agent name is empty (set --name or the NODE_NAME variable)");
  }
  if (options.capacity < 1) {
    return absl::InvalidArgumentError(
        cat("agent: capacity must be at least 1, got ", options.capacity));
  }
  return std::unique_ptr<Agent>(new Agent(std::make_unique<Impl>(std::move(options))));
}

absl::Status Agent::start() {
  Impl& impl = *impl_;
  if (absl::Status st = impl.writeLease(false); !st.ok()) {
    return absl::Status(st.code(),
                        cat("cannot register the agent Lease ", impl.options.lease_namespace, "/",
                            impl.options.name, ": ", st.message()));
  }
  impl.lease_held = true;
  kube::InformerOptions informer;
  informer.type = kube::resources::syncRun();
  informer.namespaces = impl.options.watch_namespaces;
  informer.field_selector = cat("status.agent=", impl.options.name);
  informer.transform = kube::stripManagedFields;
  informer.logger = impl.log.named("informer");
  impl.runs = std::make_unique<kube::Informer>(impl.client, informer);
  kube::EventHandler handler;
  handler.on_add = [&impl](const Json& object, bool /*initial*/) { impl.onRun(object); };
  handler.on_update = [&impl](const Json& /*old*/, const Json& object) { impl.onRun(object); };
  handler.on_delete = [&impl](const Json& last, bool /*unknown*/) { impl.onRunDeleted(last); };
  impl.runs->addEventHandler(std::move(handler));
  impl.runs->start();
  impl.lease_loop = std::jthread([&impl](const std::stop_token& stop) { impl.leaseLoop(stop); });
  impl.progress_loop =
      std::jthread([&impl](const std::stop_token& stop) { impl.progressLoop(stop); });
  impl.log.info("agent started",
                {{"lease", cat(impl.options.lease_namespace, "/", impl.options.name)},
                 {"capacity", impl.options.capacity}});
  return absl::OkStatus();
}

void Agent::drain() {
  Impl& impl = *impl_;
  std::deque<std::string> waiting;
  {
    const std::lock_guard lock(impl.mu);
    if (impl.draining) {
      return;
    }
    impl.draining = true;
    waiting.swap(impl.waiting);
  }
  impl.log.info("draining: taking no new runs", {{"active", activeRuns()}});
  if (absl::Status st = impl.writeLease(false); !st.ok()) {
    impl.log.warn("cannot set the Lease's capacity to 0", {{"error", st.message()}});
  }
  for (const std::string& key : waiting) {
    if (const auto object = impl.runs ? impl.runs->store().get(key) : nullptr) {
      impl.onRun(*object);  // reports AgentDraining
    }
  }
}

bool Agent::waitIdle(std::chrono::milliseconds timeout) { return impl_->waitIdle(timeout); }

void Agent::stop() {
  Impl& impl = *impl_;
  std::vector<std::shared_ptr<ActiveRun>> running;
  {
    const std::lock_guard lock(impl.mu);
    if (impl.stopped) {
      return;
    }
    impl.stopped = true;
  }
  impl.idle_cv.notify_all();  // final-status retries give up
  // The loops first: only this thread joins run threads from here on (reap).
  impl.lease_loop = {};
  impl.progress_loop = {};
  {
    const std::lock_guard lock(impl.mu);
    for (const auto& [key, entry] : impl.active) {
      running.push_back(entry);
    }
  }
  for (const auto& entry : running) {
    impl.cancel(*entry,
                Verdict{"AgentStopping", cat("agent ", impl.options.name,
                                             " stopped before the run finished; it is retried")},
                /*report=*/true);
  }
  impl.waitIdle(std::chrono::hours(1));
  if (impl.runs) {
    impl.runs->stop();
  }
  impl.reap();
  if (impl.lease_held.exchange(false)) {
    if (absl::Status st = impl.writeLease(true); !st.ok()) {
      impl.log.warn("cannot release the agent Lease", {{"error", st.message()}});
    }
  }
  impl.recorder.flush(5s);
  impl.log.info("agent stopped");
}

bool Agent::ready() const { return impl_->lease_held && impl_->runs && impl_->runs->hasSynced(); }

int Agent::activeRuns() const {
  const std::lock_guard lock(impl_->mu);
  return static_cast<int>(impl_->active.size());
}

}  // namespace tributary::agent
