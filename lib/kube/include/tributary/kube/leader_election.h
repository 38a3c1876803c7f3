#pragma once

// Leader election on a coordination.k8s.io/v1 Lease, following client-go's leaderelection:
// LeaseDuration 15 s, RenewDeadline 10 s, RetryPeriod 2 s; expiry judged by the local time at
// which the lease record was last seen to change (clock skew between hosts does not matter).
//
// Differences from client-go, on purpose: seeing another holder on the lease while we lead
// (somebody took it over) ends our leadership at once instead of retrying until the renew
// deadline; and a lease that cannot be renewed for RenewDeadline ends it too (as in client-go).

#include "tributary/common/log.h"
#include "tributary/kube/client.h"

#include "absl/status/statusor.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>

namespace tributary::kube {

struct LeaderElectionConfig {
  std::string lease_namespace;
  std::string lease_name;
  /// Unique per candidate (e.g. pod name + random suffix).
  std::string identity;
  std::chrono::milliseconds lease_duration{std::chrono::seconds(15)};
  std::chrono::milliseconds renew_deadline{std::chrono::seconds(10)};
  std::chrono::milliseconds retry_period{std::chrono::seconds(2)};
  /// On a graceful stop, give the lease up (holder "", leaseDurationSeconds 1) so another
  /// candidate takes over at once.
  bool release_on_cancel = true;

  /// Runs on its own thread once we lead; `leading` is signalled the moment leadership ends.
  std::function<void(std::stop_token leading)> on_started_leading;
  /// Called at once (from the elector's thread) when leadership ends for any reason.
  std::function<void()> on_stopped_leading;
  /// A different holder was observed (including ourselves after acquiring).
  std::function<void(const std::string& identity)> on_new_leader;
  /// leader_election_master_status: true when leading, false otherwise.
  std::function<void(bool leading)> on_status;
  std::optional<log::Logger> logger;
};

/// The spec of a Lease as leader election uses it.
struct LeaseRecord {
  std::string holder_identity;
  std::int64_t lease_duration_seconds = 0;
  std::string acquire_time;  ///< MicroTime text as stored
  std::string renew_time;
  std::int64_t lease_transitions = 0;
};
LeaseRecord leaseRecordFrom(const Json& lease);

class LeaderElector {
 public:
  /// Validates the config: LeaseDuration > RenewDeadline > 1.2 × RetryPeriod, names set.
  static absl::StatusOr<std::unique_ptr<LeaderElector>> create(std::shared_ptr<Client> client,
                                                               LeaderElectionConfig config);
  ~LeaderElector();
  LeaderElector(const LeaderElector&) = delete;
  LeaderElector& operator=(const LeaderElector&) = delete;

  /**
   * Tries to acquire until it leads or `stop`; then renews until `stop` or leadership is lost.
   * Returns when either happens (after on_stopped_leading, after the leading thread returned, and
   * after releasing the lease on a graceful stop). Run again to become a candidate again.
   * Returns OK after a graceful stop, Aborted when leadership was lost.
   */
  absl::Status run(std::stop_token stop);

  [[nodiscard]] bool isLeader() const { return leading_.load(); }
  /// The holder last observed ("" if none).
  [[nodiscard]] std::string leader() const;
  [[nodiscard]] const LeaderElectionConfig& config() const { return config_; }

 private:
  LeaderElector(std::shared_ptr<Client> client, LeaderElectionConfig config);
  enum class Attempt { Acquired, HeldByOther, Failed };
  Attempt tryAcquireOrRenew();
  void release();
  void observe(const LeaseRecord& record, const std::string& raw);
  bool sleepFor(std::chrono::milliseconds d, const std::stop_token& stop);

  std::shared_ptr<Client> client_;
  LeaderElectionConfig config_;
  log::Logger log_;
  std::atomic<bool> leading_{false};

  mutable std::mutex mu_;
  std::string observed_raw_;
  LeaseRecord observed_;
  std::chrono::steady_clock::time_point observed_time_{};
  std::string observed_resource_version_;
  std::string last_reported_leader_;
};

}  // namespace tributary::kube
