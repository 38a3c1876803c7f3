#pragma once

// The chart's dashboards and alerts evaluated by a running Prometheus through its HTTP API: what
// dashboards_prometheus_test (static scrape targets) and the one-node cluster test (Kubernetes
// service discovery) both check.

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace tributary::testing {

/// GET <base><path_and_query> → the JSON body (null on any failure).
nlohmann::json getJson(const std::string& base, const std::string& path_and_query);
/// Percent-encodes a query parameter.
std::string urlEncode(const std::string& text);

struct DashboardQueries {
  int evaluated = 0;
  /// "<dashboard> / <panel>: <expr> → <answer>" for every query without a number.
  std::vector<std::string> without_data;
};

/// Runs every panel query of every dashboard in `dashboards_dir` as a query_range over
/// [start, end] (step 1 s) against the Prometheus at `api`, substituting what Grafana would:
/// $__rate_interval (15 s), $__range (the window plus 10 s), $namespace (All).
DashboardQueries runDashboardQueries(const std::string& api, const std::string& dashboards_dir,
                                     std::chrono::system_clock::time_point start,
                                     std::chrono::system_clock::time_point end);

/// The alerting rules Prometheus loaded; `unhealthy` gets each rule whose health is not "ok".
int loadedAlertRules(const std::string& api, std::vector<std::string>* unhealthy);

/// Whether `sum(up)` is `targets` at the Prometheus at `api`.
bool scrapesTargets(const std::string& api, int targets);

}  // namespace tributary::testing
