#pragma once

// The node agent: runs the SyncRuns the controller binds to it (agent/README.md).
//
//   Agent Lease (lib/api's convention) → informer on SyncRuns with status.agent=<name> → for each
//   Bound run, up to capacity at once: resolve Connector, SyncJob and Secrets → Running →
//   sync::runSync (install, fenced lock, go-plugin host, store) → Succeeded, or the controller's
//   failure protocol (retriable: condition Failed=True with the phase left; terminal: Failed).
//
// Thread-safe. start() once; drain() then waitIdle() then stop() for a graceful exit.

#include "tributary/common/log.h"
#include "tributary/installer/installer.h"
#include "tributary/kube/client.h"
#include "tributary/locks/lock.h"
#include "tributary/metrics/metrics.h"
#include "tributary/store/store.h"
#include "tributary/sync/sync.h"

#include "absl/status/status.h"

#include <chrono>
#include <map>
#include <memory>
#include <string>

namespace tributary::agent {

struct AgentOptions {
  std::shared_ptr<kube::Client> client;
  /// The agent's name: its Lease's name and what SyncRun.status.agent holds.
  std::string name;
  /// Where agent Leases live (the controller's --agent-namespace).
  std::string lease_namespace = "tributary-system";
  /// SyncRuns of these namespaces only; empty = all namespaces.
  std::vector<std::string> watch_namespaces;
  /// Labels of the Lease besides tributary.dev/agent=true (what agentSelector matches).
  std::map<std::string, std::string> labels;
  int capacity = 4;
  /// The Node this agent runs on: a cordoned node (spec.unschedulable) takes no new runs. "" =
  /// not checked.
  std::string node_name;
  std::chrono::milliseconds lease_duration{std::chrono::seconds(15)};
  /// Least time between two progress writes of one run's status.
  std::chrono::milliseconds progress_interval{std::chrono::seconds(5)};
  /// Source lock: TTL and how long a run waits for a source held by someone else (a crashed
  /// agent's lock expires after its TTL).
  locks::AcquireOptions lock_options = [] {
    locks::AcquireOptions o;
    o.wait = std::chrono::seconds(45);
    return o;
  }();
  /// Connector start (handshake) timeout; unset = the host's default.
  std::optional<std::chrono::milliseconds> start_timeout;
  /// How connectors are confined; each run adds its Connector's spec.limits.
  sync::SandboxSettings sandbox;
  std::shared_ptr<store::Store> store;
  std::shared_ptr<installer::Installer> installer;
  std::shared_ptr<locks::SourceLock> lock;
  std::shared_ptr<metrics::Registry> registry;
  log::Logger logger{"tributary-agent"};
};

class Agent {
 public:
  /// Checks the options; starts nothing.
  static absl::StatusOr<std::unique_ptr<Agent>> create(AgentOptions options);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  /// Registers the Lease (taking it over from a previous process of the same agent), starts the
  /// SyncRun informer and the renewal loop. Runs Running on this agent that this process did not
  /// start are reported as failed attempts (AgentRestarted).
  absl::Status start();
  /// Takes no new runs (capacity 0 on the Lease); running ones go on. Bound runs not yet started
  /// are handed back to the controller (a retriable failure, AgentDraining).
  void drain();
  /// Waits until no run is active; false on timeout.
  bool waitIdle(std::chrono::milliseconds timeout);
  /// Cancels active runs (reported as retriable failures, AgentStopping), waits for them,
  /// releases the Lease (holderIdentity cleared). Idempotent.
  void stop();

  /// Lease held and the informer synced.
  [[nodiscard]] bool ready() const;
  [[nodiscard]] int activeRuns() const;

 private:
  struct Impl;
  explicit Agent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::agent
