#pragma once

// The Tributary controller: Connector, SyncJob and SyncRun reconcilers on lib/kube informers and
// work queues. Leadership is the caller's business: start the informers at once (warm caches,
// /readyz), and startWorkers()/stopWorkers() when leadership starts/ends.
//
// Conventions (see controller/README.md):
//  * run-now: annotation `tributary.dev/run-now: <value>` on a SyncJob starts one Manual run per
//    distinct value (SyncRun `<job>-m<hash>`); the controller records that run's name in
//    status.lastManualRun, which marks the value handled.
//  * agents: Leases in the agent namespace labelled `tributary.dev/agent=true`; the Lease name is
//    the agent name, its labels are matched against SyncJob.spec.agentSelector, annotation
//    `tributary.dev/capacity` (default 4) bounds concurrent Bound/Running runs; live while
//    renewTime + leaseDurationSeconds is in the future and holderIdentity is set.
//  * an agent reports a failed attempt by setting condition Failed=True on a Bound/Running run
//    (the controller retries up to backoffLimit, or fails it); phase Failed is final.

#include "tributary/api/resources.h"
#include "tributary/common/log.h"
#include "tributary/controller/cron.h"
#include "tributary/kube/client.h"
#include "tributary/kube/informer.h"
#include "tributary/kube/workqueue.h"
#include "tributary/metrics/metrics.h"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

namespace tributary::controller {

// The conventions (annotations, labels, the agent Lease) are lib/api's.
using api::kAgentLabel;
using api::kCapacityAnnotation;
using api::kDefaultAgentCapacity;
using api::kNotBeforeAnnotation;
using api::kRunNowAnnotation;
using api::kScheduledAnnotation;
using api::kSyncJobLabel;

struct ControllerOptions {
  std::shared_ptr<kube::Client> client;
  /// Namespaces of Connectors/SyncJobs/SyncRuns; empty = all namespaces.
  std::vector<std::string> watch_namespaces;
  /// Where agent Leases live.
  std::string agent_namespace = "tributary-system";
  /// Workers per controller (connector, syncjob, syncrun).
  int workers = 2;
  /// The scheduler's clock (tests move it).
  std::function<TimePoint()> clock = [] { return Clock::now(); };
  /// Longest requeue delay (the next slot may be far away; tests with a moving clock use less).
  std::chrono::milliseconds max_requeue{std::chrono::minutes(10)};
  /// How often runs waiting for an agent are retried and agent Leases are checked for expiry
  /// (runs of an expired agent are retried). Bound runs are otherwise rechecked on events, at
  /// their activeDeadlineSeconds, and every max_requeue.
  std::chrono::milliseconds run_poll{std::chrono::seconds(5)};
  /// Delay before retry n (>= 1); default retryBackoff (10 s doubling, 10 min cap).
  std::function<std::chrono::milliseconds(int)> retry_backoff;
  std::shared_ptr<metrics::Registry> registry;
  std::optional<log::Logger> logger;
  std::string component = "tributary-controller";
};

class Controller {
 public:
  explicit Controller(ControllerOptions options);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  /// Starts the informers (idempotent).
  void startInformers();
  /// True once every informer delivered its first list.
  [[nodiscard]] bool synced() const;
  bool waitForSync(std::chrono::milliseconds timeout) const;
  /// Starts reconciling (the leader). Queues every cached object. Idempotent.
  void startWorkers();
  /// Stops reconciling: running reconciles finish (drain), queued keys are dropped.
  void stopWorkers();
  /// stopWorkers() and the informers.
  void stop();
  [[nodiscard]] bool reconciling() const;

  /// Queues every SyncJob (tests that move the clock call this instead of waiting for requeues).
  void enqueueAllSyncJobs();

 private:
  struct Queues;
  using Result = absl::StatusOr<kube::ReconcileResult>;
  Result reconcileConnector(const std::string& key);
  Result reconcileSyncJob(const std::string& key);
  Result reconcileSyncRun(const std::string& key);

  void onRun(const kube::Json* old_object, const kube::Json* object);
  void enqueueJobsOfConnector(const kube::Json& connector);
  void enqueueRunsForAgents();
  bool agentGone(const api::AgentLease& agent, TimePoint now);
  std::chrono::milliseconds retryDelay(int failures) const;
  std::optional<std::string> pickAgent(const kube::Json& run, const kube::Json* job);
  absl::Status writeRunStatus(const kube::Json& run, const kube::Json& status);
  absl::Status writeJobStatus(const kube::Json& job, const kube::Json& status);
  void event(const kube::Json& object, std::string_view type, std::string_view reason,
             std::string_view message);
  std::unique_ptr<kube::WorkQueue> makeQueue(const std::string& name);
  void observe(const std::string& controller, const Result& result, double seconds);
  void collectRunGauges(TimePoint now);

  ControllerOptions options_;
  log::Logger log_;
  std::shared_ptr<kube::Client> client_;
  std::shared_ptr<metrics::Registry> registry_;
  kube::EventRecorder recorder_;

  std::unique_ptr<kube::Informer> connectors_;
  std::unique_ptr<kube::Informer> jobs_;
  std::unique_ptr<kube::Informer> runs_;
  std::unique_ptr<kube::Informer> leases_;
  // Our own writes until the informers deliver them: a reconcile never acts on the version it
  // just replaced (and sees the runs it just created).
  kube::MutationCache job_writes_;
  kube::MutationCache run_writes_;

  mutable std::mutex mu_;  // guards the indexes and the worker state
  std::map<std::string, std::set<std::string>> runs_by_job_;  // job key → run keys
  std::map<std::string, std::string> bound_;                  // run key → agent (from cache)
  std::map<std::string, std::string> assumed_;                // run key → agent (just bound)
  std::set<std::string> pending_runs_;
  bool informers_started_ = false;
  std::shared_ptr<Queues> queues_;

  // When this controller first saw each agent Lease's current renewTime, restarted while the
  // Lease cache is out of sync (agentGone).
  struct LeaseSighting {
    std::string renew_time;
    TimePoint seen;
  };
  std::mutex sightings_mu_;
  std::map<std::string, LeaseSighting> lease_sightings_;  // guarded by sightings_mu_
};

}  // namespace tributary::controller
