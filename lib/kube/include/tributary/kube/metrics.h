#pragma once

// controller-runtime's metric names for lib/kube's pieces, on a tributary::metrics::Registry, so
// existing operator dashboards work (DESIGN §5, notes §2.2–2.3):
//   workqueue_{depth, adds_total, retries_total, queue_duration_seconds, work_duration_seconds,
//   unfinished_work_seconds, longest_running_processor_seconds}{name, controller[, priority]},
//   rest_client_requests_total{code, method, host}, leader_election_master_status{name}.

#include "tributary/kube/workqueue.h"
#include "tributary/metrics/metrics.h"

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace tributary::kube {

/// WorkQueueOptions::metrics for the queue of controller `name`.
std::shared_ptr<WorkQueueMetrics> workQueueMetrics(metrics::Registry& registry,
                                                   const std::string& name);

/// Adds a collect hook that refreshes workqueue_unfinished_work_seconds and
/// workqueue_longest_running_processor_seconds of `queue` at every scrape. `queue` must outlive
/// the registry's use (or call this with a registry owned alongside the queue).
void registerWorkQueueGauges(metrics::Registry& registry, const std::string& name,
                             std::shared_ptr<const WorkQueue> queue);

/// ClientOptions::on_request: counts rest_client_requests_total{code, method, host}.
std::function<void(std::string_view, std::string_view)> restClientMetrics(
    metrics::Registry& registry, std::string host);

/// LeaderElectionConfig::on_status: sets leader_election_master_status{name}.
std::function<void(bool)> leaderElectionMetrics(metrics::Registry& registry, std::string name);

}  // namespace tributary::kube
