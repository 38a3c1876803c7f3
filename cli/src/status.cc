// `tributary status`: is the operator in this cluster healthy? What `helm test` runs in a pod
// (in-cluster config) and what a user runs with a kubeconfig.
#include "tributary/api/resources.h"
#include "tributary/common/strings.h"
#include "tributary/kube/client.h"
#include "tributary/kube/config.h"

#include "commands.h"
#include "common.h"

#include <cpprest/http_client.h>

#include <charconv>
#include <chrono>
#include <iostream>

namespace tributary::cli {
namespace {

using kube::Json;
using strings::cat;

constexpr const char* kUsage = R"USAGE(usage: tributary status [options]

Checks an installed Tributary operator and prints one line per check:
  - the CRDs connectors, syncjobs and syncruns.tributary.dev are Established;
  - at least --min-agents agent Leases in --namespace are live (renewed, holder set);
  - with --leader-lease, a controller holds the leader-election Lease;
  - with --controller-url, the controller answers 200 on it (its /readyz).

  --namespace NS        where the agent Leases live (default: tributary-system)
  --min-agents N        live agents required (default 1)
  --leader-lease NAME   the controller's leader-election Lease in NS
  --controller-url URL  e.g. http://tributary-controller.tributary-system:8081/readyz
  --kubeconfig PATH     default: $KUBECONFIG, in-cluster, ~/.kube/config

Exit status: 0 every check passed, 1 a check failed (an unreachable API server fails them all),
2 usage, 3 no usable Kubernetes configuration.
)USAGE";

struct Check {
  bool ok = false;
  std::string line;
};

const kube::ResourceType& customResourceDefinition() {
  static const kube::ResourceType type{"apiextensions.k8s.io", "v1", "customresourcedefinitions",
                                       "CustomResourceDefinition", false};
  return type;
}

Check crdEstablished(kube::Client& client, const std::string& name) {
  auto crd = client.get(customResourceDefinition(), "", name);
  if (!crd.ok()) {
    return {false, cat("CRD ", name, ": ", crd.status().message())};
  }
  const Json* established = crd->contains("status") && (*crd)["status"].contains("conditions")
                                ? kube::findCondition((*crd)["status"]["conditions"], "Established")
                                : nullptr;
  if (established == nullptr || established->value("status", "") != "True") {
    return {false, cat("CRD ", name, ": not Established")};
  }
  return {true, cat("CRD ", name, ": Established")};
}

Check agents(kube::Client& client, const std::string& ns, int min_agents) {
  kube::ListOptions options;
  options.label_selector = cat(api::kAgentLabel, "=true");
  auto leases = client.list(kube::resources::lease(), ns, options);
  if (!leases.ok()) {
    return {false, cat("agents in ", ns, ": ", leases.status().message())};
  }
  const auto now = std::chrono::system_clock::now();
  std::vector<std::string> live;
  std::vector<std::string> stale;
  for (const Json& lease : leases->items) {
    const api::AgentLease a = api::parseAgentLease(lease, now);
    (a.live ? live : stale)
        .push_back(a.live ? cat(a.name, " (capacity ", a.capacity, ")") : a.name);
  }
  std::string line = cat(live.size(), " live agent(s) in ", ns, ", ", min_agents, " required");
  if (!live.empty()) {
    line += cat(": ", strings::join(live, ", "));
  }
  if (!stale.empty()) {
    line += cat("; expired: ", strings::join(stale, ", "));
  }
  return {static_cast<int>(live.size()) >= min_agents, line};
}

Check leader(kube::Client& client, const std::string& ns, const std::string& name) {
  auto lease = client.get(kube::resources::lease(), ns, name);
  if (!lease.ok()) {
    return {false, cat("leader Lease ", ns, "/", name, ": ", lease.status().message())};
  }
  if (!api::parseAgentLease(*lease, std::chrono::system_clock::now()).live) {
    return {false, cat("leader Lease ", ns, "/", name, ": no controller holds it")};
  }
  const std::string holder = (*lease)["spec"].value("holderIdentity", "");
  return {true, cat("leader Lease ", ns, "/", name, ": held by ", holder)};
}

Check controllerReady(const std::string& url) {
  try {
    web::http::client::http_client_config config;
    config.set_timeout(std::chrono::seconds(10));
    web::http::client::http_client http(utility::conversions::to_string_t(url), config);
    const web::http::http_response response = http.request(web::http::methods::GET).get();
    const auto code = response.status_code();
    return {code == web::http::status_codes::OK, cat("controller ", url, ": HTTP ", code)};
  } catch (const std::exception& e) {
    return {false, cat("controller ", url, ": ", e.what())};
  }
}

}  // namespace

int statusCommand(const std::vector<std::string>& args) {
  FlagSpec spec;
  spec.with_value = {"--namespace", "--min-agents", "--leader-lease", "--controller-url",
                     "--kubeconfig"};
  spec.boolean = {"--help"};
  auto parsed = parseArgs(args, spec);
  if (!parsed.ok()) {
    return usageError(std::string(parsed.status().message()), kUsage);
  }
  if (parsed->has("--help")) {
    std::cout << kUsage;
    return kExitOk;
  }
  if (!parsed->positionals.empty()) {
    return usageError(cat("unexpected argument `", parsed->positionals[0], "`"), kUsage);
  }
  const std::string ns = parsed->get("--namespace").value_or("tributary-system");
  int min_agents = 1;
  if (const auto n = parsed->get("--min-agents")) {
    const auto [end, ec] = std::from_chars(n->data(), n->data() + n->size(), min_agents);
    if (ec != std::errc() || end != n->data() + n->size() || min_agents < 0) {
      return usageError(cat("--min-agents: `", *n, "` is not a number >= 0"), kUsage);
    }
  }
  kube::LoadOptions load;
  load.kubeconfig = parsed->get("--kubeconfig").value_or("");
  auto config = kube::loadConfig(load);
  if (!config.ok()) {
    std::cerr << "tributary: " << config.status().message() << "\n";
    return kExitInvalid;
  }
  auto client = kube::Client::create(*config);
  if (!client.ok()) {
    std::cerr << "tributary: " << client.status().message() << "\n";
    return kExitInvalid;
  }
  std::vector<Check> checks;
  for (const char* crd :
       {"connectors.tributary.dev", "syncjobs.tributary.dev", "syncruns.tributary.dev"}) {
    checks.push_back(crdEstablished(**client, crd));
  }
  checks.push_back(agents(**client, ns, min_agents));
  if (const auto lease = parsed->get("--leader-lease")) {
    checks.push_back(leader(**client, ns, *lease));
  }
  if (const auto url = parsed->get("--controller-url")) {
    checks.push_back(controllerReady(*url));
  }
  bool all_ok = true;
  for (const Check& c : checks) {
    std::cout << (c.ok ? "ok    " : "FAIL  ") << c.line << "\n";
    all_ok = all_ok && c.ok;
  }
  return all_ok ? kExitOk : kExitConnector;
}

}  // namespace tributary::cli
