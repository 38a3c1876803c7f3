#include "tributary/api/resources.h"

#include "tributary/common/rfc3339.h"
#include "tributary/common/strings.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <regex>
#include <set>

namespace tributary::api {
namespace {

using strings::cat;

// A read-only view of a JSON value with the vocabulary of a YAML node, so that manifests (YAML
// converted to JSON by the CLI) and API objects are checked by the same code. Absent = no value.
class Node {
 public:
  Node() = default;
  explicit Node(const Json* json) : json_(json) {}

  explicit operator bool() const { return json_ != nullptr; }
  [[nodiscard]] bool IsNull() const { return json_ != nullptr && json_->is_null(); }
  [[nodiscard]] bool IsMap() const { return json_ != nullptr && json_->is_object(); }
  [[nodiscard]] bool IsSequence() const { return json_ != nullptr && json_->is_array(); }
  [[nodiscard]] bool IsScalar() const {
    return json_ != nullptr && (json_->is_string() || json_->is_number() || json_->is_boolean());
  }
  [[nodiscard]] bool IsString() const { return json_ != nullptr && json_->is_string(); }
  /// A scalar's text: the string itself, or the number or boolean as written.
  [[nodiscard]] std::string Scalar() const {
    if (json_ == nullptr) {
      return {};
    }
    return json_->is_string() ? json_->get<std::string>() : json_->dump();
  }
  [[nodiscard]] const Json& json() const {
    static const Json kNull;
    return json_ != nullptr ? *json_ : kNull;
  }
  Node operator[](const std::string& key) const {
    if (!IsMap()) {
      return Node();
    }
    const auto it = json_->find(key);
    return it == json_->end() ? Node() : Node(&*it);
  }
  Node operator[](std::size_t index) const {
    return IsSequence() && index < json_->size() ? Node(&(*json_)[index]) : Node();
  }
  [[nodiscard]] std::size_t size() const { return IsMap() || IsSequence() ? json_->size() : 0; }

  // Iteration over a mapping: {first: the key (Scalar()), second: the value}.
  struct Entry;
  [[nodiscard]] std::vector<Entry> entries() const;

 private:
  const Json* json_ = nullptr;
};

struct Node::Entry {
  struct Key {
    std::string text;
    [[nodiscard]] std::string Scalar() const { return text; }
  };
  Key first;
  Node second;
};

std::vector<Node::Entry> Node::entries() const {
  std::vector<Entry> out;
  if (IsMap()) {
    for (auto it = json_->begin(); it != json_->end(); ++it) {
      out.push_back(Entry{Entry::Key{it.key()}, Node(&it.value())});
    }
  }
  return out;
}

std::string describeType(const Node& node) {
  if (node.IsMap()) {
    return "a mapping";
  }
  if (node.IsSequence()) {
    return "a list";
  }
  if (!node || node.IsNull()) {
    return "empty";
  }
  return cat("`", node.Scalar(), "`");
}

Json toJson(const Node& node) { return node.json(); }

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
  explicit Doc(std::vector<Problem>& problems) : problems_(problems) {}

  void error(std::string_view path, std::string_view what, const Node* /*at*/ = nullptr) {
    problems_.push_back(Problem{std::string(path), std::string(what)});
    ++count_;
  }
  [[nodiscard]] int count() const { return count_; }

  // A string field; nullopt (with an error) when present but not a string. A number or boolean
  // is one that YAML typed (a plain `8080` or `true`): the fix is quoting it.
  std::optional<std::string> string(const Node& parent, const std::string& key,
                                    const std::string& path, bool required = false) {
    const Node node = parent[key];
    if (!node || node.IsNull()) {
      if (required) {
        error(path, "required field is missing");
      }
      return std::nullopt;
    }
    if (!node.IsString()) {
      error(path,
            cat("must be a string, got ", describeType(node), node.IsScalar() ? " (quote it)" : ""),
            &node);
      return std::nullopt;
    }
    return node.Scalar();
  }

  std::optional<std::int64_t> integer(const Node& parent, const std::string& key,
                                      const std::string& path, std::int64_t minimum) {
    const Node node = parent[key];
    if (!node || node.IsNull()) {
      return std::nullopt;
    }
    const Json value = node.IsScalar() ? toJson(node) : Json();
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

  std::optional<bool> boolean(const Node& parent, const std::string& key, const std::string& path) {
    const Node node = parent[key];
    if (!node || node.IsNull()) {
      return std::nullopt;
    }
    const Json value = node.IsScalar() ? toJson(node) : Json();
    if (!value.is_boolean()) {
      error(path, cat("must be true or false, got ", describeType(node)), &node);
      return std::nullopt;
    }
    return value.get<bool>();
  }

  bool mapping(const Node& node, const std::string& path) {
    if (!node.IsMap()) {
      error(path, cat("must be a mapping, got ", describeType(node)), &node);
      return false;
    }
    return true;
  }

  void unknownKeys(const Node& node, const std::string& path, const std::set<std::string>& known) {
    for (const auto& kv : node.entries()) {
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
      error(cat(path, ".", key), cat("unknown field", hint));
    }
  }

 private:
  std::vector<Problem>& problems_;
  int count_ = 0;
};

// A string that YAML would not turn into something else (a plain `true` or `8080` is not one).
bool isStringScalar(const Node& node) { return node.IsString(); }

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
std::optional<std::string> envNameField(Doc& doc, const Node& parent, const std::string& key,
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

// `secretKeyRef: {name, key[, optional]}` at `path` (spec.env[].valueFrom.secretKeyRef,
// spec.optionsFrom.secretKeyRef); nullopt (with an error) when missing or unusable.
std::optional<SecretKeyRef> secretKeyRefField(Doc& doc, const Node& parent, const std::string& path,
                                              bool with_optional) {
  const Node ref = parent["secretKeyRef"];
  if (!ref || ref.IsNull()) {
    doc.error(path, "required field is missing");
    return std::nullopt;
  }
  if (!doc.mapping(ref, path)) {
    return std::nullopt;
  }
  doc.unknownKeys(ref, path,
                  with_optional ? std::set<std::string>{"name", "key", "optional"}
                                : std::set<std::string>{"name", "key"});
  const int before = doc.count();
  SecretKeyRef out;
  out.name = doc.string(ref, "name", path + ".name", true).value_or("");
  out.key = doc.string(ref, "key", path + ".key", true).value_or("");
  if (with_optional) {
    out.optional = doc.boolean(ref, "optional", path + ".optional").value_or(false);
  }
  if (!out.name.empty() && !isDnsSubdomain(out.name)) {
    doc.error(path + ".name", cat("`", out.name, "` is not a valid Secret name"));
  }
  if (!out.key.empty() && !isSecretKey(out.key)) {
    doc.error(path + ".key", cat("`", out.key, "` is not a valid Secret key ([-._a-zA-Z0-9]+)"));
  }
  if (doc.count() != before) {
    return std::nullopt;
  }
  return out;
}

// `secretRef: {name, optional}` (envFrom, files); false (with an error) when unusable.
bool secretRefField(Doc& doc, const Node& parent, const std::string& path, std::string& secret,
                    bool& optional) {
  const Node ref = parent["secretRef"];
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
void parseEnv(const Node& spec, Doc& doc, Connector& m) {
  const Node env = spec["env"];
  if (!env || env.IsNull()) {
    return;
  }
  if (env.IsMap()) {
    for (const auto& kv : env.entries()) {
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
    const Node item = env[i];
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
    const Node value = item["value"];
    const Node from = item["valueFrom"];
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
    if (auto ref = secretKeyRefField(doc, from, ref_path, /*with_optional=*/true)) {
      m.secret_env.push_back(SecretEnvVar{*name, *std::move(ref), ref_path});
    }
  }
}

// `spec.envFrom`: [{secretRef: {name, optional}, prefix}].
void parseEnvFrom(const Node& spec, Doc& doc, Connector& m) {
  const Node list = spec["envFrom"];
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
    const Node item = list[i];
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
void parseFiles(const Node& spec, Doc& doc, Connector& m) {
  const Node list = spec["files"];
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
    const Node entry = list[i];
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
    const Node items = entry["items"];
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
      const Node item = items[j];
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

// metadata.name (required) and metadata.namespace (the CLI fills in its default first, and
// checks both as names; the API server already did for its objects).
void parseMetadata(const Node& root, Doc& doc, std::string& ns, std::string& name) {
  const Node meta = root["metadata"];
  if (!meta || meta.IsNull()) {
    doc.error("metadata", "required field is missing");
    return;
  }
  if (!doc.mapping(meta, "metadata")) {
    return;
  }
  name = doc.string(meta, "name", "metadata.name", true).value_or("");
  ns = doc.string(meta, "namespace", "metadata.namespace").value_or("");
}

void parseConnectorSpec(const Node& root, Doc& doc, Connector& m) {
  m.spec.name = m.name;
  const Node spec = root["spec"];
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
       "command", "env", "envFrom", "files", "secretRef", "handshake", "limits"});
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
  if (const std::string& uri = m.spec.uri; uri.find("://") != std::string::npos &&
                                           uri.find('@') != std::string::npos &&
                                           uri.find('@') < uri.find('/', uri.find("://") + 3)) {
    doc.error("spec.uri", "must not carry credentials (user:password@); use spec.secretRef");
  }
  m.spec.ref = doc.string(spec, "ref", "spec.ref").value_or("");
  m.spec.sha256 = doc.string(spec, "sha256", "spec.sha256").value_or("");
  m.spec.install_command = doc.string(spec, "installCommand", "spec.installCommand").value_or("");
  m.spec.update_command = doc.string(spec, "updateCommand", "spec.updateCommand").value_or("");
  m.spec.command = doc.string(spec, "command", "spec.command", true).value_or("");
  parseEnv(spec, doc, m);
  parseEnvFrom(spec, doc, m);
  parseFiles(spec, doc, m);
  if (const Node ref = spec["secretRef"];
      ref && !ref.IsNull() && doc.mapping(ref, "spec.secretRef")) {
    doc.unknownKeys(ref, "spec.secretRef", {"name"});
    m.spec.secret_ref = doc.string(ref, "name", "spec.secretRef.name", true).value_or("");
  }
  if (const Node hs = spec["handshake"]; hs && !hs.IsNull() && doc.mapping(hs, "spec.handshake")) {
    doc.unknownKeys(hs, "spec.handshake",
                    {"cookieKey", "cookieValue", "protocolVersions", "pluginName"});
    if (auto key = doc.string(hs, "cookieKey", "spec.handshake.cookieKey")) {
      m.handshake.cookie_key = *key;
    }
    if (auto value = doc.string(hs, "cookieValue", "spec.handshake.cookieValue")) {
      m.handshake.cookie_value = *value;
    }
    if (const Node versions = hs["protocolVersions"]; versions && !versions.IsNull()) {
      const Json list = toJson(versions);
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
  if (const Node limits = spec["limits"];
      limits && !limits.IsNull() && doc.mapping(limits, "spec.limits")) {
    doc.unknownKeys(limits, "spec.limits", {"openFiles", "processes", "addressSpace", "fileSize"});
    if (auto v = doc.integer(limits, "openFiles", "spec.limits.openFiles", 64)) {
      m.limits.open_files = static_cast<std::uint64_t>(*v);
    }
    if (auto v = doc.integer(limits, "processes", "spec.limits.processes", 16)) {
      m.limits.processes = static_cast<std::uint64_t>(*v);
    }
    const auto bytes = [&](const char* key, std::optional<std::uint64_t>& into) {
      const std::string path = cat("spec.limits.", key);
      if (auto text = doc.string(limits, key, path)) {
        if (auto value = parseByteQuantity(*text)) {
          into = *value;
        } else {
          doc.error(path, cat("must be a byte count like 512Mi or 16Gi, got `", *text, "`"));
        }
      }
    };
    bytes("addressSpace", m.limits.address_space_bytes);
    bytes("fileSize", m.limits.file_size_bytes);
  }
  if (doc.count() == before) {
    if (absl::Status valid = installer::validate(m.spec); !valid.ok()) {
      doc.error("spec", std::string(valid.message()));
    }
  }
}

void parseSyncJobSpec(const Node& root, Doc& doc, SyncJob& m) {
  const std::string& name = m.name;
  if (name.size() > 52) {
    doc.error("metadata.name", cat("must be at most 52 characters (run names append a suffix), "
                                   "got ",
                                   name.size()));
  }
  const Node spec = root["spec"];
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
  if (const Node ref = spec["connectorRef"]; !ref || ref.IsNull()) {
    doc.error("spec.connectorRef", "required field is missing");
  } else if (doc.mapping(ref, "spec.connectorRef")) {
    doc.unknownKeys(ref, "spec.connectorRef", {"name"});
    m.connector_ref = doc.string(ref, "name", "spec.connectorRef.name", true).value_or("");
  }
  const Node options = spec["options"];
  const Node options_from = spec["optionsFrom"];
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
    m.options_from = secretKeyRefField(doc, options_from, "spec.optionsFrom.secretKeyRef",
                                       /*with_optional=*/false);
  }
  if (auto policy = doc.string(spec, "deletionPolicy", "spec.deletionPolicy")) {
    if (*policy == "Keep" || *policy == "Mark" || *policy == "Delete") {
      m.deletion_policy = *policy;
    } else {
      doc.error("spec.deletionPolicy",
                cat("must be one of Keep, Mark, Delete, got `", *policy, "`"));
    }
  }
  if (const Node guard = spec["deletionGuard"];
      guard && !guard.IsNull() && doc.mapping(guard, "spec.deletionGuard")) {
    doc.unknownKeys(guard, "spec.deletionGuard", {"maxDeletePercent"});
    if (auto percent =
            doc.integer(guard, "maxDeletePercent", "spec.deletionGuard.maxDeletePercent", 0)) {
      if (*percent > 100) {
        doc.error("spec.deletionGuard.maxDeletePercent",
                  cat("must be between 0 and 100, got ", *percent));
      } else {
        m.max_delete_percent = static_cast<int>(*percent);
      }
    }
  }
  if (auto policy = doc.string(spec, "concurrencyPolicy", "spec.concurrencyPolicy")) {
    if (*policy != "Forbid" && *policy != "Replace") {
      doc.error("spec.concurrencyPolicy", cat("must be Forbid or Replace, got `", *policy, "`"));
    } else {
      m.concurrency_policy = *policy;
    }
  }
  m.schedule = doc.string(spec, "schedule", "spec.schedule");
  m.time_zone = doc.string(spec, "timeZone", "spec.timeZone");
  m.suspend = doc.boolean(spec, "suspend", "spec.suspend").value_or(defaults::kSuspend);
  m.starting_deadline_seconds =
      doc.integer(spec, "startingDeadlineSeconds", "spec.startingDeadlineSeconds", 0);
  auto small = [&](const char* key, int fallback) {
    const auto v = doc.integer(spec, key, cat("spec.", key), 0);
    if (v && *v > 1000) {
      doc.error(cat("spec.", key), cat("must be at most 1000, got ", *v));
      return fallback;
    }
    return v ? static_cast<int>(*v) : fallback;
  };
  m.backoff_limit = small("backoffLimit", defaults::kBackoffLimit);
  m.active_deadline_seconds =
      doc.integer(spec, "activeDeadlineSeconds", "spec.activeDeadlineSeconds", 1);
  m.successful_runs_history_limit =
      small("successfulRunsHistoryLimit", defaults::kSuccessfulRunsHistoryLimit);
  m.failed_runs_history_limit = small("failedRunsHistoryLimit", defaults::kFailedRunsHistoryLimit);
  if (const Node selector = spec["agentSelector"]; selector && !selector.IsNull()) {
    if (doc.mapping(selector, "spec.agentSelector")) {
      m.agent_selector = selector.json();
    }
  }
}

std::string metaString(const Json& object, const char* field) {
  const Json& meta = object.contains("metadata") ? object["metadata"] : Json();
  return meta.is_object() && meta.contains(field) && meta[field].is_string()
             ? meta[field].get<std::string>()
             : std::string();
}

std::int64_t metaGeneration(const Json& object) {
  const Json& meta = object.contains("metadata") ? object["metadata"] : Json();
  return meta.is_object() && meta.contains("generation") && meta["generation"].is_number_integer()
             ? meta["generation"].get<std::int64_t>()
             : 0;
}

}  // namespace

std::optional<std::uint64_t> parseByteQuantity(std::string_view text) {
  unsigned shift = 0;
  for (const auto& [suffix, bits] : {std::pair{"Ki", 10U}, {"Mi", 20U}, {"Gi", 30U}, {"Ti", 40U}}) {
    if (text.ends_with(suffix)) {
      shift = bits;
      text.remove_suffix(2);
      break;
    }
  }
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() ||
      value > (~std::uint64_t{0} >> shift)) {
    return std::nullopt;
  }
  return value << shift;
}

sandbox::Limits defaultConnectorLimits() {
  sandbox::Limits limits;
  limits.open_files = defaults::kOpenFiles;
  limits.processes = defaults::kProcesses;
  limits.address_space_bytes = parseByteQuantity(defaults::kAddressSpace);
  limits.file_size_bytes = parseByteQuantity(defaults::kFileSize);
  return limits;
}

bool isEnvName(std::string_view name) {
  static const std::regex kEnvName(R"(^[A-Za-z_][A-Za-z0-9_]*$)");
  return !name.empty() && name.size() <= 128 && std::regex_match(std::string(name), kEnvName);
}

std::string describe(const std::vector<Problem>& problems) {
  std::vector<std::string> parts;
  parts.reserve(problems.size());
  for (const Problem& p : problems) {
    parts.push_back(cat(p.path, ": ", p.message));
  }
  return strings::join(parts, "; ");
}

std::string Connector::specHash() const { return installer::specHash(spec); }

Connector parseConnector(const Json& object, std::vector<Problem>& problems) {
  Connector m;
  Doc doc(problems);
  parseMetadata(Node(&object), doc, m.ns, m.name);
  m.generation = metaGeneration(object);
  m.origin = cat("Connector ", m.ns, m.ns.empty() ? "" : "/", m.name);
  parseConnectorSpec(Node(&object), doc, m);
  return m;
}

SyncJob parseSyncJob(const Json& object, std::vector<Problem>& problems) {
  SyncJob m;
  Doc doc(problems);
  parseMetadata(Node(&object), doc, m.ns, m.name);
  m.uid = metaString(object, "uid");
  m.generation = metaGeneration(object);
  m.origin = cat("SyncJob ", m.ns, m.ns.empty() ? "" : "/", m.name);
  parseSyncJobSpec(Node(&object), doc, m);
  return m;
}

SyncRun parseSyncRun(const Json& object) {
  SyncRun run;
  run.ns = metaString(object, "namespace");
  run.name = metaString(object, "name");
  run.uid = metaString(object, "uid");
  auto at = [&](const char* pointer) -> const Json& {
    static const Json kNull;
    const Json::json_pointer p(pointer);
    return object.contains(p) ? object.at(p) : kNull;
  };
  auto text = [&](const char* pointer, std::string fallback) {
    const Json& v = at(pointer);
    return v.is_string() && !v.get<std::string>().empty() ? v.get<std::string>() : fallback;
  };
  run.job = text("/spec/syncJobRef/name", "");
  run.connector = text("/spec/connectorRef/name", "");
  if (const Json& g = at("/spec/connectorRef/generation"); g.is_number_integer()) {
    run.connector_generation = g.get<std::int64_t>();
  }
  run.trigger = text("/spec/trigger", std::string(defaults::kTrigger));
  if (const Json& d = at("/spec/activeDeadlineSeconds"); d.is_number_integer()) {
    run.active_deadline_seconds = d.get<std::int64_t>();
  }
  run.deletion_policy = text("/spec/deletionPolicy", std::string(defaults::kDeletionPolicy));
  if (const Json& p = at("/spec/deletionGuard/maxDeletePercent"); p.is_number_integer()) {
    run.max_delete_percent = p.get<int>();
  }
  run.deletion_confirmed = at("/spec/deletionGuard/confirmed") == Json(true);
  run.phase = text("/status/phase", "Pending");
  run.agent = text("/status/agent", "");
  if (const Json& a = at("/status/attempt"); a.is_number_integer()) {
    run.attempt = std::max(1, a.get<int>());
  }
  if (run.phase == "Bound" || run.phase == "Running") {
    if (const Json& conditions = at("/status/conditions"); conditions.is_array()) {
      for (const Json& c : conditions) {
        if (c.is_object() && c.contains("type") && c["type"] == "Failed" && c.contains("status") &&
            c["status"] == "True") {
          run.attempt_failed = true;
        }
      }
    }
  }
  return run;
}

AgentLease parseAgentLease(const Json& lease, std::chrono::system_clock::time_point now) {
  AgentLease a;
  const auto text = [&](const Json::json_pointer& at) {
    return lease.contains(at) && lease[at].is_string() ? lease[at].get<std::string>()
                                                       : std::string();
  };
  a.name = text(Json::json_pointer("/metadata/name"));
  a.renew_time = text(Json::json_pointer("/spec/renewTime"));
  a.released = text(Json::json_pointer("/spec/holderIdentity")).empty();
  const auto renew = rfc3339::parseTime(a.renew_time);
  const Json::json_pointer duration_at("/spec/leaseDurationSeconds");
  const std::int64_t duration =
      lease.contains(duration_at) && lease[duration_at].is_number_integer()
          ? lease[duration_at].get<std::int64_t>()
          : 0;
  a.duration = std::chrono::seconds(duration);
  if (renew && !a.released) {
    a.expires = *renew + a.duration;
    a.live = a.expires > now;
  }
  const Json::json_pointer annotations_at("/metadata/annotations");
  if (lease.contains(annotations_at) && lease[annotations_at].is_object()) {
    const Json& annotations = lease[annotations_at];
    if (const auto it = annotations.find(std::string(kCapacityAnnotation));
        it != annotations.end() && it->is_string()) {
      a.capacity = std::max(0, std::atoi(it->get<std::string>().c_str()));
    }
  }
  return a;
}

}  // namespace tributary::api
