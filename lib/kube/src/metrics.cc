#include "tributary/kube/metrics.h"

namespace tributary::kube {
namespace {

const std::vector<double>& workqueueBuckets() {
  static const std::vector<double> buckets = metrics::exponentialBuckets(10e-9, 10, 12);
  return buckets;
}

class RegistryWorkQueueMetrics final : public WorkQueueMetrics {
 public:
  RegistryWorkQueueMetrics(metrics::Registry& r, const std::string& name)
      : depth_(r.gauge("workqueue_depth", "Current depth of workqueue",
                       {"name", "controller", "priority"})
                   .with({name, name, ""})),
        adds_(r.counter("workqueue_adds_total", "Total number of adds handled by workqueue",
                        {"name", "controller"})
                  .with({name, name})),
        retries_(r.counter("workqueue_retries_total",
                           "Total number of retries handled by workqueue", {"name", "controller"})
                     .with({name, name})),
        queue_(r.histogram("workqueue_queue_duration_seconds",
                           "How long in seconds an item stays in workqueue before being requested",
                           {"name", "controller"}, workqueueBuckets())
                   .with({name, name})),
        work_(r.histogram("workqueue_work_duration_seconds",
                          "How long in seconds processing an item from workqueue takes.",
                          {"name", "controller"}, workqueueBuckets())
                  .with({name, name})) {}

  void depth(std::int64_t d) override { depth_.set(static_cast<double>(d)); }
  void added() override { adds_.inc(); }
  void retried() override { retries_.inc(); }
  void queueLatency(double s) override { queue_.observe(s); }
  void workDuration(double s) override { work_.observe(s); }

 private:
  metrics::Gauge& depth_;
  metrics::Counter& adds_;
  metrics::Counter& retries_;
  metrics::Histogram& queue_;
  metrics::Histogram& work_;
};

}  // namespace

std::shared_ptr<WorkQueueMetrics> workQueueMetrics(metrics::Registry& registry,
                                                   const std::string& name) {
  return std::make_shared<RegistryWorkQueueMetrics>(registry, name);
}

void registerWorkQueueGauges(metrics::Registry& registry, const std::string& name,
                             std::shared_ptr<const WorkQueue> queue) {
  auto& unfinished = registry
                         .gauge("workqueue_unfinished_work_seconds",
                                "How many seconds of work has been done that is in progress and "
                                "hasn't been observed by work_duration. Large values indicate "
                                "stuck threads. One can deduce the number of stuck threads by "
                                "observing the rate at which this increases.",
                                {"name", "controller"})
                         .with({name, name});
  auto& longest = registry
                      .gauge("workqueue_longest_running_processor_seconds",
                             "How many seconds has the longest running processor for workqueue "
                             "been running.",
                             {"name", "controller"})
                      .with({name, name});
  std::weak_ptr<const WorkQueue> weak = queue;
  registry.addCollectHook([weak, &unfinished, &longest] {
    if (auto q = weak.lock()) {
      unfinished.set(q->unfinishedWorkSeconds());
      longest.set(q->longestRunningProcessorSeconds());
    }
  });
}

std::function<void(std::string_view, std::string_view)> restClientMetrics(
    metrics::Registry& registry, std::string host) {
  auto& family = registry.counter("rest_client_requests_total",
                                  "Number of HTTP requests, partitioned by status code, method, "
                                  "and host.",
                                  {"code", "method", "host"});
  return [&family, host = std::move(host)](std::string_view method, std::string_view code) {
    family.with({std::string(code), std::string(method), host}).inc();
  };
}

std::function<void(bool)> leaderElectionMetrics(metrics::Registry& registry, std::string name) {
  auto& gauge = registry
                    .gauge("leader_election_master_status",
                           "Gauge of if the reporting system is master of the relevant lease, 0 "
                           "indicates backup, 1 indicates master. 'name' is the string used to "
                           "identify the lease. Please make sure to group by name.",
                           {"name"})
                    .with({std::move(name)});
  return [&gauge](bool leading) { gauge.set(leading ? 1.0 : 0.0); };
}

}  // namespace tributary::kube
