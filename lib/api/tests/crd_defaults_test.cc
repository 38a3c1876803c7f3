// The CRDs are the source of truth for defaults: the constants the code uses must equal them.

#include "tributary/api/resources.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <string>

namespace tributary::api {
namespace {

// The openAPIV3Schema property at a dotted path ("spec.handshake.cookieKey").
YAML::Node property(const std::string& crd, const std::string& path) {
  const YAML::Node root = YAML::LoadFile(std::string(TRIBUTARY_SOURCE_DIR) + "/crds/" + crd);
  YAML::Node node = root["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
  std::size_t start = 0;
  while (start <= path.size()) {
    const auto dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? dot : dot - start);
    // reset(), not `=`: assigning a yaml-cpp node overwrites the node it refers to.
    node.reset(node["properties"][part]);
    if (!node) {
      ADD_FAILURE() << crd << ": no property " << path;
      return node;
    }
    if (dot == std::string::npos) {
      break;
    }
    start = dot + 1;
  }
  return node;
}

std::string defaultOf(const std::string& crd, const std::string& path) {
  const YAML::Node p = property(crd, path);
  EXPECT_TRUE(p && p["default"]) << crd << ": " << path << " has no default";
  return p && p["default"] ? YAML::Dump(p["default"]) : std::string();
}

TEST(CrdDefaults, ConnectorHandshake) {
  EXPECT_EQ(defaultOf("connectors.yaml", "spec.handshake.cookieKey"), defaults::kCookieKey);
  EXPECT_EQ(defaultOf("connectors.yaml", "spec.handshake.cookieValue"), defaults::kCookieValue);
  EXPECT_EQ(defaultOf("connectors.yaml", "spec.handshake.protocolVersions"),
            "[" + std::to_string(defaults::kProtocolVersion) + "]");
  EXPECT_EQ(defaultOf("connectors.yaml", "spec.handshake.pluginName"), defaults::kPluginName);
  const Handshake handshake;
  EXPECT_EQ(handshake.cookie_key, defaults::kCookieKey);
  EXPECT_EQ(handshake.protocol_versions, std::vector<int>{defaults::kProtocolVersion});
}

TEST(CrdDefaults, ConnectorLimits) {
  EXPECT_EQ(defaultOf("connectors.yaml", "spec.limits.openFiles"),
            std::to_string(defaults::kOpenFiles));
  EXPECT_EQ(defaultOf("connectors.yaml", "spec.limits.processes"),
            std::to_string(defaults::kProcesses));
  EXPECT_EQ(defaultOf("connectors.yaml", "spec.limits.addressSpace"), defaults::kAddressSpace);
  EXPECT_EQ(defaultOf("connectors.yaml", "spec.limits.fileSize"), defaults::kFileSize);
  // A Connector without spec.limits gets them, and the CRD's pattern accepts what we parse.
  std::vector<Problem> problems;
  const Connector connector = parseConnector(Json::parse(R"({"metadata":{"name":"c"},
      "spec":{"source":"Local","uri":"/x","command":"./c"}})"),
                                             problems);
  ASSERT_TRUE(problems.empty()) << describe(problems);
  EXPECT_EQ(connector.limits.open_files, 4096U);
  EXPECT_EQ(connector.limits.address_space_bytes, 16ULL << 30U);
  EXPECT_EQ(connector.limits.file_size_bytes, 8ULL << 30U);
  const std::string pattern =
      property("connectors.yaml", "spec.limits.fileSize")["pattern"].as<std::string>();
  EXPECT_EQ(pattern, "^[0-9]{1,15}(Ki|Mi|Gi|Ti)?$");
}

TEST(CrdDefaults, ConnectorLimitsParse) {
  EXPECT_EQ(parseByteQuantity("512Mi"), 512ULL << 20U);
  EXPECT_EQ(parseByteQuantity("1000"), 1000U);
  EXPECT_EQ(parseByteQuantity("2Ti"), 2ULL << 40U);
  EXPECT_FALSE(parseByteQuantity("1G"));
  EXPECT_FALSE(parseByteQuantity("Gi"));
  EXPECT_FALSE(parseByteQuantity("-1Mi"));
  EXPECT_FALSE(parseByteQuantity("99999999999999999Ti"));
  std::vector<Problem> problems;
  const Connector connector = parseConnector(Json::parse(R"({"metadata":{"name":"c"},
      "spec":{"source":"Local","uri":"/x","command":"./c",
              "limits":{"openFiles":128,"processes":8,"fileSize":"1G","addressSpace":"1Gi"}}})"),
                                             problems);
  EXPECT_EQ(describe(problems),
            "spec.limits.processes: must be at least 16, got 8; spec.limits.fileSize: must be a "
            "byte count like 512Mi or 16Gi, got `1G`");
  EXPECT_EQ(connector.limits.open_files, 128U);
  EXPECT_EQ(connector.limits.address_space_bytes, 1ULL << 30U);
}

TEST(CrdDefaults, SyncJob) {
  EXPECT_EQ(defaultOf("syncjobs.yaml", "spec.suspend"), defaults::kSuspend ? "true" : "false");
  EXPECT_EQ(defaultOf("syncjobs.yaml", "spec.concurrencyPolicy"), defaults::kConcurrencyPolicy);
  EXPECT_EQ(defaultOf("syncjobs.yaml", "spec.backoffLimit"),
            std::to_string(defaults::kBackoffLimit));
  EXPECT_EQ(defaultOf("syncjobs.yaml", "spec.deletionPolicy"), defaults::kDeletionPolicy);
  EXPECT_EQ(defaultOf("syncjobs.yaml", "spec.deletionGuard.maxDeletePercent"),
            std::to_string(defaults::kMaxDeletePercent));
  EXPECT_EQ(defaultOf("syncjobs.yaml", "spec.successfulRunsHistoryLimit"),
            std::to_string(defaults::kSuccessfulRunsHistoryLimit));
  EXPECT_EQ(defaultOf("syncjobs.yaml", "spec.failedRunsHistoryLimit"),
            std::to_string(defaults::kFailedRunsHistoryLimit));
  // What a SyncJob without these fields parses to.
  std::vector<Problem> problems;
  const SyncJob job = parseSyncJob(Json::parse(R"({"metadata":{"name":"j","namespace":"n"},
                      "spec":{"connectorRef":{"name":"c"},"options":{}}})"),
                                   problems);
  EXPECT_TRUE(problems.empty()) << describe(problems);
  EXPECT_EQ(job.backoff_limit, defaults::kBackoffLimit);
  EXPECT_EQ(job.deletion_policy, defaults::kDeletionPolicy);
  EXPECT_EQ(job.max_delete_percent, defaults::kMaxDeletePercent);
  EXPECT_EQ(job.concurrency_policy, defaults::kConcurrencyPolicy);
  EXPECT_EQ(job.successful_runs_history_limit, defaults::kSuccessfulRunsHistoryLimit);
}

TEST(CrdDefaults, SyncRunTrigger) {
  EXPECT_EQ(defaultOf("syncruns.yaml", "spec.trigger"), defaults::kTrigger);
  EXPECT_EQ(parseSyncRun(Json::parse(R"({"metadata":{"name":"r"},"spec":{}})")).trigger,
            defaults::kTrigger);
}

}  // namespace
}  // namespace tributary::api
