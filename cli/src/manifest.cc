#include "manifest.h"

#include "tributary/common/strings.h"

#include "absl/strings/escaping.h"
#include "common.h"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <regex>
#include <set>

namespace tributary::cli {
namespace {

using strings::cat;

constexpr const char* kApiVersion = "tributary.dev/v1alpha1";

std::string describeType(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
      return "empty";
    case YAML::NodeType::Scalar:
      return cat("`", node.Scalar(), "`");
    default:
      return "undefined";
  }
}

std::string position(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.line < 0) {
    return "";
  }
  return cat(" (line ", mark.line + 1, ")");
}

// YAML scalar → JSON value with YAML 1.2 core-schema typing for plain scalars.
nlohmann::json toJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return nullptr;
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& item : node) {
        out.push_back(toJson(item));
      }
      return out;
    }
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& kv : node) {
        out[kv.first.as<std::string>()] = toJson(kv.second);
      }
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string& text = node.Scalar();
      if (node.Tag() != "?") {
        return text;  // Quoted (or explicitly tagged): a string.
      }
      static const std::regex kInt(R"(^[-+]?[0-9]+$)");
      static const std::regex kFloat(R"(^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$)");
      if (text == "~" || text == "null" || text == "Null" || text == "NULL" || text.empty()) {
        return nullptr;
      }
      if (text == "true" || text == "True" || text == "TRUE") {
        return true;
      }
      if (text == "false" || text == "False" || text == "FALSE") {
        return false;
      }
      if (std::regex_match(text, kInt)) {
        try {
          return std::stoll(text);
        } catch (const std::exception&) {
          return nlohmann::json::parse(text, nullptr, false);
        }
      }
      if (std::regex_match(text, kFloat)) {
        return std::stod(text);
      }
      return text;
    }
    default:
      return nullptr;
  }
}

bool isDnsSubdomain(std::string_view name) {
  static const std::regex kName(
      R"(^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$)");
  return !name.empty() && name.size() <= 253 && std::regex_match(std::string(name), kName);
}

std::string camelFromSnake(std::string_view key) {
  std::string out;
  bool upper = false;
  for (const char c : key) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out.push_back(upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c);
    upper = false;
  }
  return out;
}

// Collects the problems of one document.
class Doc {
 public:
  Doc(std::string source, int index, std::vector<std::string>& errors)
      : source_(std::move(source)), index_(index), errors_(errors) {}

  void setIdentity(std::string kind, std::string ns, std::string name) {
    kind_ = std::move(kind);
    ns_ = std::move(ns);
    name_ = std::move(name);
  }
  [[nodiscard]] std::string origin() const {
    std::string out = cat(source_, ": document ", index_);
    if (!kind_.empty()) {
      out += cat(" (", kind_, name_.empty() ? "" : " ", ns_.empty() ? "" : ns_ + "/", name_, ")");
    }
    return out;
  }
  void error(std::string_view path, std::string_view what, const YAML::Node* at = nullptr) {
    errors_.push_back(
        cat(origin(), ": ", path, ": ", what, at != nullptr ? position(*at) : std::string()));
    ++count_;
  }
  [[nodiscard]] int count() const { return count_; }

  // A string field; nullopt (with an error) when present but not a scalar.
  std::optional<std::string> string(const YAML::Node& parent, const std::string& key,
                                    const std::string& path, bool required = false) {
    const YAML::Node node = parent[key];
    if (!node || node.IsNull()) {
      if (required) {
        error(path, "required field is missing");
      }
      return std::nullopt;
    }
    if (!node.IsScalar()) {
      error(path, cat("must be a string, got ", describeType(node)), &node);
      return std::nullopt;
    }
    return node.Scalar();
  }

  std::optional<std::int64_t> integer(const YAML::Node& parent, const std::string& key,
                                      const std::string& path, std::int64_t minimum) {
    const YAML::Node node = parent[key];
    if (!node || node.IsNull()) {
      return std::nullopt;
    }
    const nlohmann::json value = node.IsScalar() ? toJson(node) : nlohmann::json();
    if (!value.is_number_integer()) {
      error(path, cat("must be an integer, got ", describeType(node)), &node);
      return std::nullopt;
    }
    const auto v = value.get<std::int64_t>();
    if (v < minimum) {
      error(path, cat("must be at least ", minimum, ", got ", v), &node);
      return std::nullopt;
    }
    return v;
  }

  std::optional<bool> boolean(const YAML::Node& parent, const std::string& key,
                              const std::string& path) {
    const YAML::Node node = parent[key];
    if (!node || node.IsNull()) {
      return std::nullopt;
    }
    const nlohmann::json value = node.IsScalar() ? toJson(node) : nlohmann::json();
    if (!value.is_boolean()) {
      error(path, cat("must be true or false, got ", describeType(node)), &node);
      return std::nullopt;
    }
    return value.get<bool>();
  }

  bool mapping(const YAML::Node& node, const std::string& path) {
    if (!node.IsMap()) {
      error(path, cat("must be a mapping, got ", describeType(node)), &node);
      return false;
    }
    return true;
  }

  void unknownKeys(const YAML::Node& node, const std::string& path,
                   const std::set<std::string>& known) {
    for (const auto& kv : node) {
      const std::string key = kv.first.Scalar();
      if (known.contains(key)) {
        continue;
      }
      std::string hint;
      if (const std::string camel = camelFromSnake(key); camel != key && known.contains(camel)) {
        hint = cat(" (manifests use camelCase: ", camel, ")");
      } else {
        hint = cat(" (known: ", strings::join(known, ", "), ")");
      }
      error(cat(path, ".", key), cat("unknown field", hint), &kv.first);
    }
  }

 private:
  std::string source_;
  int index_;
  std::string kind_;
  std::string ns_;
  std::string name_;
  std::vector<std::string>& errors_;
  int count_ = 0;
};

// A string that YAML would not turn into something else (a plain `true` or `8080` is not one).
bool isStringScalar(const YAML::Node& node) {
  return node.IsScalar() && (node.Tag() != "?" || toJson(node).is_string());
}

bool isEnvName(std::string_view name) {
  static const std::regex kEnvName(R"(^[A-Za-z_][A-Za-z0-9_]*$)");
  return !name.empty() && name.size() <= 128 && std::regex_match(std::string(name), kEnvName);
}

bool isSecretKey(std::string_view key) {
  static const std::regex kKey(R"(^[-._a-zA-Z0-9]+$)");
  return !key.empty() && key.size() <= 253 && std::regex_match(std::string(key), kKey);
}

// A relative path of [A-Za-z0-9._-] components, none of them `.` or `..`.
bool isSafeRelativePath(std::string_view path) {
  static const std::regex kPath(R"(^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$)");
  if (path.empty() || path.size() > 253 || !std::regex_match(std::string(path), kPath)) {
    return false;
  }
  for (const std::string_view part : strings::split(path, '/')) {
    if (part == "." || part == "..") {
      return false;
    }
  }
  return true;
}

// An environment variable name field; nullopt (with an error) when missing or invalid.
std::optional<std::string> envNameField(Doc& doc, const YAML::Node& parent, const std::string& key,
                                        const std::string& path, bool required) {
  auto name = doc.string(parent, key, path, required);
  if (name && !isEnvName(*name)) {
    doc.error(path,
              cat("`", *name,
                  "` is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128 "
                  "characters)"));
    return std::nullopt;
  }
  return name;
}

// `secretRef: {name, optional}` (envFrom, files); false (with an error) when unusable.
bool secretRefField(Doc& doc, const YAML::Node& parent, const std::string& path,
                    std::string& secret, bool& optional) {
  const YAML::Node ref = parent["secretRef"];
  if (!ref || ref.IsNull()) {
    doc.error(path, "required field is missing");
    return false;
  }
  if (!doc.mapping(ref, path)) {
    return false;
  }
  doc.unknownKeys(ref, path, {"name", "optional"});
  const int before = doc.count();
  secret = doc.string(ref, "name", path + ".name", true).value_or("");
  if (!secret.empty() && !isDnsSubdomain(secret)) {
    doc.error(path + ".name", cat("`", secret, "` is not a valid Secret name"));
  }
  optional = doc.boolean(ref, "optional", path + ".optional").value_or(false);
  return doc.count() == before;
}

// `spec.env`: a Pod-style list of {name, value} / {name, valueFrom: {secretKeyRef}}, or (the
// older form, still accepted) a mapping of name → value. Plain values go to ConnectorSpec::env
// (install commands and the install hash see them); Secret references to secret_env.
void parseEnv(const YAML::Node& spec, Doc& doc, ConnectorManifest& m) {
  const YAML::Node env = spec["env"];
  if (!env || env.IsNull()) {
    return;
  }
  if (env.IsMap()) {
    for (const auto& kv : env) {
      const std::string key = kv.first.Scalar();
      if (!isStringScalar(kv.second)) {
        doc.error(cat("spec.env.", key),
                  cat("must be a string, got ", describeType(kv.second), " (quote it)"),
                  &kv.second);
        continue;
      }
      m.spec.env[key] = kv.second.Scalar();
    }
    return;
  }
  if (!env.IsSequence()) {
    doc.error("spec.env",
              cat("must be a list of {name, value} or {name, valueFrom} (or a mapping of name to "
                  "value), got ",
                  describeType(env)),
              &env);
    return;
  }
  if (env.size() > 64) {
    doc.error("spec.env", cat("at most 64 entries, got ", env.size()));
  }
  std::set<std::string> names;
  for (std::size_t i = 0; i < env.size(); ++i) {
    const YAML::Node item = env[i];
    const std::string path = cat("spec.env[", i, "]");
    if (!doc.mapping(item, path)) {
      continue;
    }
    doc.unknownKeys(item, path, {"name", "value", "valueFrom"});
    const auto name = envNameField(doc, item, "name", path + ".name", true);
    if (!name) {
      continue;
    }
    if (!names.insert(*name).second) {
      doc.error(path + ".name", cat("`", *name, "` is set more than once in spec.env"));
      continue;
    }
    const YAML::Node value = item["value"];
    const YAML::Node from = item["valueFrom"];
    const bool has_value = value && !value.IsNull();
    if (has_value && from && !from.IsNull()) {
      doc.error(path, "give value or valueFrom, not both");
      continue;
    }
    if (!from || from.IsNull()) {
      if (has_value && !isStringScalar(value)) {
        doc.error(path + ".value",
                  cat("must be a string, got ", describeType(value), " (quote it)"), &value);
        continue;
      }
      m.spec.env[*name] = has_value ? value.Scalar() : std::string();
      continue;
    }
    if (!doc.mapping(from, path + ".valueFrom")) {
      continue;
    }
    for (const char* other : {"configMapKeyRef", "fieldRef", "resourceFieldRef"}) {
      if (from[other]) {
        doc.error(cat(path, ".valueFrom.", other),
                  "not supported: connectors get values from Secrets only (secretKeyRef), or "
                  "plain values");
      }
    }
    doc.unknownKeys(from, path + ".valueFrom",
                    {"secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"});
    const std::string ref_path = path + ".valueFrom.secretKeyRef";
    const YAML::Node ref = from["secretKeyRef"];
    if (!ref || ref.IsNull()) {
      doc.error(ref_path, "required field is missing");
      continue;
    }
    if (!doc.mapping(ref, ref_path)) {
      continue;
    }
    doc.unknownKeys(ref, ref_path, {"name", "key", "optional"});
    SecretEnvVar var;
    var.name = *name;
    var.path = ref_path;
    var.ref.name = doc.string(ref, "name", ref_path + ".name", true).value_or("");
    var.ref.key = doc.string(ref, "key", ref_path + ".key", true).value_or("");
    var.ref.optional = doc.boolean(ref, "optional", ref_path + ".optional").value_or(false);
    if (!var.ref.name.empty() && !isDnsSubdomain(var.ref.name)) {
      doc.error(ref_path + ".name", cat("`", var.ref.name, "` is not a valid Secret name"));
    }
    if (!var.ref.key.empty() && !isSecretKey(var.ref.key)) {
      doc.error(ref_path + ".key",
                cat("`", var.ref.key, "` is not a valid Secret key ([-._a-zA-Z0-9]+)"));
    }
    m.secret_env.push_back(std::move(var));
  }
}

// `spec.envFrom`: [{secretRef: {name, optional}, prefix}].
void parseEnvFrom(const YAML::Node& spec, Doc& doc, ConnectorManifest& m) {
  const YAML::Node list = spec["envFrom"];
  if (!list || list.IsNull()) {
    return;
  }
  if (!list.IsSequence()) {
    doc.error("spec.envFrom",
              cat("must be a list of {secretRef: {name}, prefix}, got ", describeType(list)),
              &list);
    return;
  }
  if (list.size() > 16) {
    doc.error("spec.envFrom", cat("at most 16 entries, got ", list.size()));
  }
  for (std::size_t i = 0; i < list.size(); ++i) {
    const YAML::Node item = list[i];
    const std::string path = cat("spec.envFrom[", i, "]");
    if (!doc.mapping(item, path)) {
      continue;
    }
    if (item["configMapRef"]) {
      doc.error(path + ".configMapRef",
                "not supported: connectors get variables from Secrets only (secretRef)");
    }
    doc.unknownKeys(item, path, {"secretRef", "prefix", "configMapRef"});
    EnvFromSecret from;
    from.path = path + ".secretRef";
    if (!secretRefField(doc, item, from.path, from.secret, from.optional)) {
      continue;
    }
    from.prefix = doc.string(item, "prefix", path + ".prefix").value_or("");
    if (!from.prefix.empty() && (from.prefix.size() > 64 || !isEnvName(from.prefix))) {
      doc.error(path + ".prefix", cat("`", from.prefix,
                                      "` is not a valid variable name prefix "
                                      "([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)"));
      continue;
    }
    m.env_from.push_back(std::move(from));
  }
}

// `spec.files`: [{secretRef: {name, optional}, items: [{key, path, env}]}].
void parseFiles(const YAML::Node& spec, Doc& doc, ConnectorManifest& m) {
  const YAML::Node list = spec["files"];
  if (!list || list.IsNull()) {
    return;
  }
  if (!list.IsSequence()) {
    doc.error("spec.files",
              cat("must be a list of {secretRef: {name}, items: [{key, path, env}]}, got ",
                  describeType(list)),
              &list);
    return;
  }
  if (list.size() > 16) {
    doc.error("spec.files", cat("at most 16 entries, got ", list.size()));
  }
  std::set<std::string> paths;
  std::set<std::string> vars;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const YAML::Node entry = list[i];
    const std::string path = cat("spec.files[", i, "]");
    if (!doc.mapping(entry, path)) {
      continue;
    }
    doc.unknownKeys(entry, path, {"secretRef", "items"});
    SecretFiles files;
    files.path = path;
    if (!secretRefField(doc, entry, path + ".secretRef", files.secret, files.optional)) {
      continue;
    }
    const YAML::Node items = entry["items"];
    if (!items || items.IsNull()) {
      doc.error(path + ".items", "required field is missing (list the keys to write)");
      continue;
    }
    if (!items.IsSequence() || items.size() == 0 || items.size() > 32) {
      doc.error(path + ".items",
                cat("must be a list of 1 to 32 {key, path, env}, got ", describeType(items)),
                &items);
      continue;
    }
    for (std::size_t j = 0; j < items.size(); ++j) {
      const YAML::Node item = items[j];
      const std::string item_path = cat(path, ".items[", j, "]");
      if (!doc.mapping(item, item_path)) {
        continue;
      }
      doc.unknownKeys(item, item_path, {"key", "path", "env"});
      SecretFileItem file;
      file.key = doc.string(item, "key", item_path + ".key", true).value_or("");
      if (!file.key.empty() && !isSecretKey(file.key)) {
        doc.error(item_path + ".key",
                  cat("`", file.key, "` is not a valid Secret key ([-._a-zA-Z0-9]+)"));
        continue;
      }
      file.path = doc.string(item, "path", item_path + ".path").value_or(file.key);
      if (file.path.empty()) {
        continue;  // The key was missing: already reported.
      }
      if (!isSafeRelativePath(file.path)) {
        doc.error(item_path + ".path",
                  cat("`", file.path,
                      "` must be a relative path of [A-Za-z0-9._-] components without `.` or "
                      "`..` (files live in the run's private directory)"));
        continue;
      }
      if (!paths.insert(file.path).second) {
        doc.error(item_path + ".path", cat("`", file.path, "` is written more than once"));
        continue;
      }
      file.env = envNameField(doc, item, "env", item_path + ".env", false).value_or("");
      if (!file.env.empty()) {
        const bool in_env = m.spec.env.contains(file.env) ||
                            std::any_of(m.secret_env.begin(), m.secret_env.end(),
                                        [&](const SecretEnvVar& v) { return v.name == file.env; });
        if (in_env || !vars.insert(file.env).second) {
          doc.error(item_path + ".env",
                    cat("`", file.env, "` is also set by ",
                        in_env ? "spec.env" : "another spec.files item", "; set it once"));
          continue;
        }
      }
      files.items.push_back(std::move(file));
    }
    m.files.push_back(std::move(files));
  }
}

void parseConnector(const YAML::Node& root, Doc& doc, const std::string& ns,
                    const std::string& name, Manifests& out) {
  ConnectorManifest m;
  m.origin = doc.origin();
  m.ns = ns;
  m.name = name;
  m.spec.name = name;
  const YAML::Node spec = root["spec"];
  if (!spec) {
    doc.error("spec", "required field is missing");
    return;
  }
  if (!doc.mapping(spec, "spec")) {
    return;
  }
  doc.unknownKeys(
      spec, "spec",
      {"description", "source", "uri", "ref", "sha256", "installCommand", "updateCommand",
       "command", "env", "envFrom", "files", "secretRef", "handshake"});
  const int before = doc.count();
  m.spec.description = doc.string(spec, "description", "spec.description").value_or("");
  if (auto source = doc.string(spec, "source", "spec.source", true)) {
    if (*source == "VCS") {
      m.spec.source = installer::Source::Vcs;
    } else if (*source == "HTTP") {
      m.spec.source = installer::Source::Http;
    } else if (*source == "Local") {
      m.spec.source = installer::Source::Local;
    } else {
      doc.error("spec.source", cat("must be one of VCS, HTTP, Local, got `", *source, "`"));
    }
  }
  m.spec.uri = doc.string(spec, "uri", "spec.uri", true).value_or("");
  m.spec.ref = doc.string(spec, "ref", "spec.ref").value_or("");
  m.spec.sha256 = doc.string(spec, "sha256", "spec.sha256").value_or("");
  m.spec.install_command = doc.string(spec, "installCommand", "spec.installCommand").value_or("");
  m.spec.update_command = doc.string(spec, "updateCommand", "spec.updateCommand").value_or("");
  m.spec.command = doc.string(spec, "command", "spec.command", true).value_or("");
  parseEnv(spec, doc, m);
  parseEnvFrom(spec, doc, m);
  parseFiles(spec, doc, m);
  if (const YAML::Node ref = spec["secretRef"];
      ref && !ref.IsNull() && doc.mapping(ref, "spec.secretRef")) {
    doc.unknownKeys(ref, "spec.secretRef", {"name"});
    m.spec.secret_ref = doc.string(ref, "name", "spec.secretRef.name", true).value_or("");
  }
  if (const YAML::Node hs = spec["handshake"];
      hs && !hs.IsNull() && doc.mapping(hs, "spec.handshake")) {
    doc.unknownKeys(hs, "spec.handshake",
                    {"cookieKey", "cookieValue", "protocolVersions", "pluginName"});
    if (auto key = doc.string(hs, "cookieKey", "spec.handshake.cookieKey")) {
      m.handshake.cookie_key = *key;
    }
    if (auto value = doc.string(hs, "cookieValue", "spec.handshake.cookieValue")) {
      m.handshake.cookie_value = *value;
    }
    if (const YAML::Node versions = hs["protocolVersions"]; versions && !versions.IsNull()) {
      const nlohmann::json list = toJson(versions);
      std::vector<int> parsed;
      bool ok = list.is_array() && !list.empty();
      for (const auto& v : list) {
        ok = ok && v.is_number_integer() && v.get<std::int64_t>() >= 1 &&
             v.get<std::int64_t>() < 1000000;
        if (ok) {
          parsed.push_back(v.get<int>());
        }
      }
      if (!ok) {
        doc.error("spec.handshake.protocolVersions", "must be a non-empty list of integers >= 1",
                  &versions);
      } else {
        m.handshake.protocol_versions = parsed;
      }
    }
  }
  if (doc.count() == before) {
    if (absl::Status valid = installer::validate(m.spec); !valid.ok()) {
      doc.error("spec", std::string(valid.message()));
    }
  }
  out.connectors.push_back(std::move(m));
}

void parseSyncJob(const YAML::Node& root, Doc& doc, const std::string& ns, const std::string& name,
                  Manifests& out) {
  SyncJobManifest m;
  m.origin = doc.origin();
  m.ns = ns;
  m.name = name;
  if (name.size() > 52) {
    doc.error("metadata.name", cat("must be at most 52 characters (run names append a suffix), "
                                   "got ",
                                   name.size()));
  }
  const YAML::Node spec = root["spec"];
  if (!spec) {
    doc.error("spec", "required field is missing");
    return;
  }
  if (!doc.mapping(spec, "spec")) {
    return;
  }
  doc.unknownKeys(spec, "spec",
                  {"connectorRef", "options", "optionsFrom", "schedule", "timeZone", "suspend",
                   "concurrencyPolicy", "startingDeadlineSeconds", "backoffLimit",
                   "activeDeadlineSeconds", "deletionPolicy", "deletionGuard", "agentSelector",
                   "successfulRunsHistoryLimit", "failedRunsHistoryLimit"});
  if (const YAML::Node ref = spec["connectorRef"]; !ref || ref.IsNull()) {
    doc.error("spec.connectorRef", "required field is missing");
  } else if (doc.mapping(ref, "spec.connectorRef")) {
    doc.unknownKeys(ref, "spec.connectorRef", {"name"});
    m.connector_ref = doc.string(ref, "name", "spec.connectorRef.name", true).value_or("");
  }
  const YAML::Node options = spec["options"];
  const YAML::Node options_from = spec["optionsFrom"];
  const bool has_options = options && !options.IsNull();
  const bool has_options_from = options_from && !options_from.IsNull();
  if (has_options == has_options_from) {
    doc.error("spec", has_options ? "exactly one of spec.options and spec.optionsFrom must be set, "
                                    "both are"
                                  : "exactly one of spec.options and spec.optionsFrom must be set "
                                    "(use `options: {}` for none)");
  }
  if (has_options) {
    if (!options.IsMap()) {
      doc.error("spec.options",
                cat("must be a mapping (a JSON object), got ", describeType(options)), &options);
    } else {
      m.options_json = toJson(options).dump();
    }
  }
  if (has_options_from && doc.mapping(options_from, "spec.optionsFrom")) {
    doc.unknownKeys(options_from, "spec.optionsFrom", {"secretKeyRef"});
    const YAML::Node ref = options_from["secretKeyRef"];
    if (!ref || ref.IsNull()) {
      doc.error("spec.optionsFrom.secretKeyRef", "required field is missing");
    } else if (doc.mapping(ref, "spec.optionsFrom.secretKeyRef")) {
      doc.unknownKeys(ref, "spec.optionsFrom.secretKeyRef", {"name", "key"});
      auto secret = doc.string(ref, "name", "spec.optionsFrom.secretKeyRef.name", true);
      auto key = doc.string(ref, "key", "spec.optionsFrom.secretKeyRef.key", true);
      if (secret && key) {
        m.options_from = SecretKeyRef{*secret, *key};
      }
    }
  }
  if (auto policy = doc.string(spec, "deletionPolicy", "spec.deletionPolicy")) {
    if (*policy == "Keep") {
      m.deletion_policy = store::DeletionPolicy::Keep;
    } else if (*policy == "Mark") {
      m.deletion_policy = store::DeletionPolicy::Mark;
    } else if (*policy == "Delete") {
      m.deletion_policy = store::DeletionPolicy::Delete;
    } else {
      doc.error("spec.deletionPolicy",
                cat("must be one of Keep, Mark, Delete, got `", *policy, "`"));
    }
  }
  if (const YAML::Node guard = spec["deletionGuard"];
      guard && !guard.IsNull() && doc.mapping(guard, "spec.deletionGuard")) {
    doc.unknownKeys(guard, "spec.deletionGuard", {"maxDeletePercent"});
    if (auto percent =
            doc.integer(guard, "maxDeletePercent", "spec.deletionGuard.maxDeletePercent", 0)) {
      if (*percent > 100) {
        doc.error("spec.deletionGuard.maxDeletePercent",
                  cat("must be between 0 and 100, got ", *percent));
      } else {
        m.deletion_guard.max_delete_percent = static_cast<int>(*percent);
      }
    }
  }
  if (auto policy = doc.string(spec, "concurrencyPolicy", "spec.concurrencyPolicy");
      policy && *policy != "Forbid" && *policy != "Replace") {
    doc.error("spec.concurrencyPolicy", cat("must be Forbid or Replace, got `", *policy, "`"));
  }
  m.schedule = doc.string(spec, "schedule", "spec.schedule");
  static_cast<void>(doc.string(spec, "timeZone", "spec.timeZone"));
  m.suspend = doc.boolean(spec, "suspend", "spec.suspend").value_or(false);
  static_cast<void>(
      doc.integer(spec, "startingDeadlineSeconds", "spec.startingDeadlineSeconds", 0));
  static_cast<void>(doc.integer(spec, "backoffLimit", "spec.backoffLimit", 0));
  m.active_deadline_seconds =
      doc.integer(spec, "activeDeadlineSeconds", "spec.activeDeadlineSeconds", 1);
  static_cast<void>(
      doc.integer(spec, "successfulRunsHistoryLimit", "spec.successfulRunsHistoryLimit", 0));
  static_cast<void>(doc.integer(spec, "failedRunsHistoryLimit", "spec.failedRunsHistoryLimit", 0));
  if (const YAML::Node selector = spec["agentSelector"]; selector && !selector.IsNull()) {
    doc.mapping(selector, "spec.agentSelector");
  }
  out.syncjobs.push_back(std::move(m));
}

void parseSecret(const YAML::Node& root, Doc& doc, const std::string& ns, const std::string& name,
                 Manifests& out) {
  SecretManifest m;
  m.ns = ns;
  m.name = name;
  if (const YAML::Node data = root["data"]; data && !data.IsNull() && doc.mapping(data, "data")) {
    for (const auto& kv : data) {
      std::string decoded;
      if (!kv.second.IsScalar() || !absl::Base64Unescape(kv.second.Scalar(), &decoded)) {
        doc.error(cat("data.", kv.first.Scalar()), "must be base64 (or use stringData)",
                  &kv.second);
        continue;
      }
      m.data[kv.first.Scalar()] = decoded;
    }
  }
  if (const YAML::Node data = root["stringData"];
      data && !data.IsNull() && doc.mapping(data, "stringData")) {
    for (const auto& kv : data) {
      if (!kv.second.IsScalar()) {
        doc.error(cat("stringData.", kv.first.Scalar()), "must be a string", &kv.second);
        continue;
      }
      m.data[kv.first.Scalar()] = kv.second.Scalar();
    }
  }
  out.secrets.push_back(std::move(m));
}

void parseDocument(const YAML::Node& root, Doc& doc, const std::string& default_namespace,
                   Manifests& out) {
  if (!root.IsMap()) {
    doc.error(
        "(document)",
        cat("must be a mapping with apiVersion, kind, metadata and spec, got ", describeType(root)),
        &root);
    return;
  }
  const std::optional<std::string> kind = doc.string(root, "kind", "kind", true);
  const std::optional<std::string> api = doc.string(root, "apiVersion", "apiVersion", true);
  if (!kind || !api) {
    return;
  }
  std::string name;
  std::string ns = default_namespace;
  if (const YAML::Node meta = root["metadata"]; !meta || meta.IsNull()) {
    doc.setIdentity(*kind, "", "");
    doc.error("metadata", "required field is missing");
    return;
  } else if (doc.mapping(meta, "metadata")) {
    name = doc.string(meta, "name", "metadata.name", true).value_or("");
    ns = doc.string(meta, "namespace", "metadata.namespace").value_or(default_namespace);
  }
  doc.setIdentity(*kind, ns, name);
  if (*kind == "Secret" && *api == "v1") {
    parseSecret(root, doc, ns, name, out);
    return;
  }
  if (*kind != "Connector" && *kind != "SyncJob") {
    doc.error("kind",
              *kind == "SyncRun"
                  ? std::string("SyncRun objects are created by the controller; "
                                "`tributary run` takes Connector and SyncJob manifests")
                  : cat("unknown kind `", *kind, "`; expected Connector or SyncJob (apiVersion ",
                        kApiVersion, ") or a v1 Secret"));
    return;
  }
  if (*api != kApiVersion) {
    doc.error("apiVersion",
              cat("expected ", kApiVersion, " for kind ", *kind, ", got `", *api, "`"));
    return;
  }
  if (!name.empty() && !isDnsSubdomain(name)) {
    doc.error("metadata.name",
              cat("`", name,
                  "` is not a valid name: lower case letters, digits, '-' and '.', starting and "
                  "ending with a letter or digit, at most 253 characters"));
  }
  if (!isDnsSubdomain(ns) || ns.size() > 63 || ns.find('.') != std::string::npos) {
    doc.error("metadata.namespace", cat("`", ns, "` is not a valid namespace name"));
  }
  if (*kind == "Connector") {
    parseConnector(root, doc, ns, name, out);
  } else {
    parseSyncJob(root, doc, ns, name, out);
  }
}

void crossCheck(Manifests& m, std::vector<std::string>& errors) {
  std::set<std::string> seen;
  for (const auto& c : m.connectors) {
    if (!seen.insert(cat("Connector ", c.ns, "/", c.name)).second) {
      errors.push_back(cat(c.origin, ": metadata.name: Connector ", c.ns, "/", c.name,
                           " is defined more than once"));
    }
  }
  for (const auto& j : m.syncjobs) {
    if (!seen.insert(cat("SyncJob ", j.ns, "/", j.name)).second) {
      errors.push_back(cat(j.origin, ": metadata.name: SyncJob ", j.ns, "/", j.name,
                           " is defined more than once"));
    }
    if (!j.connector_ref.empty() && m.connector(j.ns, j.connector_ref) == nullptr) {
      std::vector<std::string> names;
      for (const auto& c : m.connectors) {
        if (c.ns == j.ns) {
          names.push_back(c.name);
        }
      }
      errors.push_back(cat(j.origin, ": spec.connectorRef.name: no Connector `", j.connector_ref,
                           "` in namespace ", j.ns, " in the given files",
                           names.empty() ? std::string(" (there is none; add its manifest with -f)")
                                         : cat(" (found: ", strings::join(names, ", "), ")")));
    }
  }
}

}  // namespace

const ConnectorManifest* Manifests::connector(const std::string& ns,
                                              const std::string& name) const {
  for (const auto& c : connectors) {
    if (c.ns == ns && c.name == name) {
      return &c;
    }
  }
  return nullptr;
}

namespace {

void parseInto(const std::string& text, const std::string& source,
               const std::string& default_namespace, Manifests& out,
               std::vector<std::string>& errors) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    errors.push_back(
        cat(source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": invalid YAML: ", e.msg));
    return;
  }
  int index = 0;
  for (const YAML::Node& root : docs) {
    ++index;
    if (!root || root.IsNull()) {
      continue;  // An empty document (a trailing `---`).
    }
    Doc doc(source, index, errors);
    try {
      parseDocument(root, doc, default_namespace, out);
    } catch (const YAML::Exception& e) {
      doc.error("(document)", cat("cannot read: ", e.msg));
    }
  }
}

}  // namespace

absl::StatusOr<Manifests> parseManifests(const std::string& text, const std::string& source,
                                         const std::string& default_namespace) {
  Manifests out;
  std::vector<std::string> errors;
  parseInto(text, source, default_namespace, out, errors);
  crossCheck(out, errors);
  if (!errors.empty()) {
    return absl::InvalidArgumentError(strings::join(errors, "\n"));
  }
  return out;
}

absl::StatusOr<Manifests> loadManifests(const std::vector<std::string>& files,
                                        const std::string& default_namespace) {
  Manifests out;
  std::vector<std::string> errors;
  for (const std::string& file : files) {
    auto text = file == "-" ? readFile("/dev/stdin") : readFile(file);
    if (!text.ok()) {
      errors.emplace_back(text.status().message());
      continue;
    }
    parseInto(*text, file, default_namespace, out, errors);
  }
  crossCheck(out, errors);
  if (!errors.empty()) {
    return absl::InvalidArgumentError(strings::join(errors, "\n"));
  }
  if (out.connectors.empty() && out.syncjobs.empty()) {
    return absl::InvalidArgumentError(
        cat(strings::join(files, ", "), ": no Connector or SyncJob manifests found"));
  }
  return out;
}

std::string kubeName(std::string_view name) {
  std::string out;
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(std::tolower(static_cast<unsigned char>(ch)));
    out.push_back((std::isalnum(c) != 0 || c == '-' || c == '.') ? static_cast<char>(c) : '-');
  }
  while (!out.empty() && (std::isalnum(static_cast<unsigned char>(out.back())) == 0)) {
    out.pop_back();
  }
  while (!out.empty() && (std::isalnum(static_cast<unsigned char>(out.front())) == 0)) {
    out.erase(out.begin());
  }
  if (out.size() > 253) {
    out.resize(253);
  }
  return out.empty() ? "connector" : out;
}

std::string connectorManifestYaml(const installer::ConnectorSpec& spec, const std::string& ns) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "apiVersion" << YAML::Value << kApiVersion;
  e << YAML::Key << "kind" << YAML::Value << "Connector";
  e << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "name" << YAML::Value << kubeName(spec.name);
  if (!ns.empty()) {
    e << YAML::Key << "namespace" << YAML::Value << ns;
  }
  e << YAML::EndMap;
  e << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
  auto field = [&](const char* key, const std::string& value) {
    if (!value.empty()) {
      e << YAML::Key << key << YAML::Value << YAML::DoubleQuoted << value;
    }
  };
  field("description", spec.description);
  e << YAML::Key << "source" << YAML::Value << std::string(installer::sourceName(spec.source));
  field("uri", spec.uri);
  field("ref", spec.ref);
  field("sha256", spec.sha256);
  field("installCommand", spec.install_command);
  field("updateCommand", spec.update_command);
  field("command", spec.command);
  if (!spec.env.empty()) {
    e << YAML::Key << "env" << YAML::Value << YAML::BeginMap;
    for (const auto& [key, value] : spec.env) {
      e << YAML::Key << key << YAML::Value << YAML::DoubleQuoted << value;
    }
    e << YAML::EndMap;
  }
  if (!spec.secret_ref.empty()) {
    e << YAML::Key << "secretRef" << YAML::Value << YAML::BeginMap << YAML::Key << "name"
      << YAML::Value << kubeName(spec.secret_ref) << YAML::EndMap;
  }
  e << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace tributary::cli
