#include "prometheus_queries.h"

// cpprest's U() macro breaks gtest's templates.
#define _TURN_OFF_PLATFORM_STRING
#include <cpprest/http_client.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

namespace tributary::testing {

namespace {

using Json = nlohmann::json;

// j[key] as a string, "" when absent or not a string (json::value trips GCC 12's
// -Wnull-dereference here).
std::string stringAt(const Json& j, const char* key) {
  if (!j.is_object()) {
    return "";
  }
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get_ref<const std::string&>() : std::string();
}

// Whether a query_range answer holds at least one number (histogram quantiles of a window
// without observations are NaN: no data).
bool hasNumbers(const Json& answer) {
  if (stringAt(answer, "status") != "success") {
    return false;
  }
  for (const Json& series : answer["data"]["result"]) {
    for (const Json& point : series["values"]) {
      const std::string v = point[1];
      if (v != "NaN" && v != "+Inf" && v != "-Inf") {
        return true;
      }
    }
  }
  return false;
}

std::string seconds(std::chrono::system_clock::time_point t) {
  return std::to_string(
      std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
}

}  // namespace

Json getJson(const std::string& base, const std::string& path_and_query) {
  try {
    web::http::client::http_client client(base);
    auto response = client.request(web::http::methods::GET, path_and_query).get();
    return Json::parse(response.extract_utf8string(true).get(), nullptr, false);
  } catch (const std::exception&) {
    return nullptr;
  }
}

std::string urlEncode(const std::string& text) { return web::uri::encode_data_string(text); }

DashboardQueries runDashboardQueries(const std::string& api, const std::string& dashboards_dir,
                                     std::chrono::system_clock::time_point start,
                                     std::chrono::system_clock::time_point end) {
  const std::string range =
      std::to_string(std::chrono::duration_cast<std::chrono::seconds>(end - start).count() + 10) +
      "s";
  DashboardQueries result;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dashboards_dir)) {
    if (entry.path().extension() == ".json") {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    std::ifstream in(file);
    const Json dashboard = Json::parse(in, nullptr, false);
    if (!dashboard.is_object()) {
      result.without_data.push_back(file.filename().string() + ": not JSON");
      continue;
    }
    for (const Json& panel : dashboard["panels"]) {
      for (const Json& target : panel["targets"]) {
        std::string expr = target["expr"];
        expr = std::regex_replace(expr, std::regex(R"(\$__rate_interval)"), "15s");
        expr = std::regex_replace(expr, std::regex(R"(\$__range)"), range);
        expr = std::regex_replace(expr, std::regex(R"(\$namespace)"), ".*");
        const Json answer =
            getJson(api, "/api/v1/query_range?query=" + urlEncode(expr) +
                             "&start=" + seconds(start) + "&end=" + seconds(end) + "&step=1");
        ++result.evaluated;
        if (!hasNumbers(answer)) {
          result.without_data.push_back(file.filename().string() + " / " +
                                        panel["title"].get<std::string>() + ": " + expr + " → " +
                                        answer.dump().substr(0, 300));
        }
      }
    }
  }
  return result;
}

int loadedAlertRules(const std::string& api, std::vector<std::string>* unhealthy) {
  const Json rules = getJson(api, "/api/v1/rules?type=alert");
  if (!rules.is_object()) {
    unhealthy->push_back("GET /api/v1/rules failed");
    return 0;
  }
  int loaded = 0;
  for (const Json& group : rules["data"]["groups"]) {
    for (const Json& rule : group["rules"]) {
      ++loaded;
      if (stringAt(rule, "health") != "ok") {
        unhealthy->push_back(rule.dump());
      }
    }
  }
  return loaded;
}

bool scrapesTargets(const std::string& api, int targets) {
  const Json up = getJson(api, "/api/v1/query?query=" + urlEncode("sum(up)"));
  // {"data":{"result":[{"metric":{},"value":[<time>,"2"]}]},"status":"success"}
  return stringAt(up, "status") == "success" &&
         up.dump().find(",\"" + std::to_string(targets) + "\"]}]") != std::string::npos;
}

}  // namespace tributary::testing
