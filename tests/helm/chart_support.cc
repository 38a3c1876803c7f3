#include "chart_support.h"

#include "tributary/testing/kube.h"

#include "manifest.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace tributary::testing {

namespace {

std::vector<std::string> currentEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    env.emplace_back(*e);
  }
  return env;
}

std::string scratchPath() {
  static std::atomic<int> counter{0};
  return (std::filesystem::temp_directory_path() /
          ("tributary-chart-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
      .string();
}

}  // namespace

std::vector<std::string> requiredValues() {
  return {"--set", "database.existingSecret=tributary-db", "--set",
          "redis.address=redis.example:6379"};
}

std::vector<std::string> with(std::vector<std::string> flags,
                              const std::vector<std::string>& more) {
  flags.insert(flags.end(), more.begin(), more.end());
  return flags;
}

std::string syncRunPhases(const std::string& ns) {
  return harness::KubeApiServer::shared()
      .runKubectl(
          {"get", "syncruns", "--namespace=" + ns, "-o", "jsonpath={.items[*].status.phase}"})
      .output;
}

std::string tool(const std::string& name) {
  if (const char* bin = std::getenv("TRIBUTARY_KUBE_BIN_DIR");
      bin != nullptr && std::filesystem::exists(std::filesystem::path(bin) / name)) {
    return (std::filesystem::path(bin) / name).string();
  }
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"}) {
    if (std::filesystem::exists(std::filesystem::path(dir) / name)) {
      return (std::filesystem::path(dir) / name).string();
    }
  }
  ADD_FAILURE() << name << " not found in $TRIBUTARY_KUBE_BIN_DIR or PATH "
                << "(scripts/build-kube.sh builds helm; scripts/bootstrap.sh installs promtool)";
  return "/nonexistent/" + name;
}

harness::CommandResult runTool(const std::vector<std::string>& argv, const std::string& input,
                               std::chrono::seconds timeout) {
  return harness::runCommand(argv, currentEnvironment(), "/", scratchPath(), input, timeout);
}

std::string Chart::dir() const {
  return (std::filesystem::path(TRIBUTARY_SOURCE_DIR) / "deploy/helm/tributary").string();
}

harness::CommandResult Chart::helm(const std::vector<std::string>& args,
                                   std::chrono::seconds timeout) const {
  std::vector<std::string> argv{tool("helm")};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string home = home_.path().string();
  std::vector<std::string> env{
      "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "HELM_CACHE_HOME=" + home + "/cache",
      "HELM_CONFIG_HOME=" + home + "/config", "HELM_DATA_HOME=" + home + "/data"};
  if (const char* kubeconfig = std::getenv("KUBECONFIG"); kubeconfig != nullptr) {
    env.push_back(std::string("KUBECONFIG=") + kubeconfig);
  }
  return harness::runCommand(argv, env, home, scratchPath(), "", timeout);
}

std::string Chart::renderYaml(const std::vector<std::string>& flags) const {
  std::vector<std::string> args{"template", kRelease, dir(), "--namespace", kReleaseNamespace};
  args.insert(args.end(), flags.begin(), flags.end());
  const harness::CommandResult r = helm(args);
  if (!r.ok()) {
    ADD_FAILURE() << "helm template failed (" << r.error << ", exit " << r.exit_code << "):\n"
                  << r.output;
    return "";
  }
  return r.output;
}

std::vector<Json> Chart::render(const std::vector<std::string>& flags) const {
  const std::string yaml = renderYaml(flags);
  if (yaml.empty()) {
    return {};
  }
  auto docs = cli::yamlDocumentsToJson(yaml, "helm template");
  if (!docs.ok()) {
    ADD_FAILURE() << docs.status();
    return {};
  }
  return *docs;
}

const Json* findObject(const std::vector<Json>& objects, const std::string& kind,
                       const std::string& name) {
  for (const Json& o : objects) {
    if (o.value("kind", "") == kind && o["metadata"].value("name", "") == name) {
      return &o;
    }
  }
  return nullptr;
}

std::vector<const Json*> objectsOf(const std::vector<Json>& objects, const std::string& kind) {
  std::vector<const Json*> out;
  for (const Json& o : objects) {
    if (o.value("kind", "") == kind) {
      out.push_back(&o);
    }
  }
  return out;
}

const Json& podSpec(const Json& workload) {
  return workload.value("kind", "") == "Pod" ? workload["spec"]
                                             : workload["spec"]["template"]["spec"];
}

std::string readFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool waitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return pred();
}

std::string uniqueName(const std::string& prefix) {
  static std::atomic<int> n{0};
  return prefix + "-" + std::to_string(::getpid() % 100000) + "-" + std::to_string(n++);
}

bool Child::start(const std::vector<std::string>& argv, const std::string& log_path) {
  log = log_path;
  auto started = harness::spawnLogged(argv, log_path);
  if (!started.ok()) {
    ADD_FAILURE() << started.status();
    return false;
  }
  pid = *started;
  return true;
}

void Child::stop() {
  if (pid <= 0) {
    return;
  }
  ::kill(-pid, SIGTERM);
  int status = 0;
  for (int i = 0; i < 200 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(-pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  pid = -1;
}

}  // namespace tributary::testing
