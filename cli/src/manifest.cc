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

// The YAML node at a problem's field path ("spec.env[2].valueFrom"), for its line; nullopt when
// the path does not lead to one (a missing field).
std::optional<YAML::Node> nodeAt(const YAML::Node& root, std::string_view path) {
  YAML::Node node = root;
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '.') {
      ++i;
      continue;
    }
    if (path[i] == '[') {
      const auto close = path.find(']', i);
      if (close == std::string_view::npos || !node.IsSequence()) {
        return std::nullopt;
      }
      const auto index = std::stoul(std::string(path.substr(i + 1, close - i - 1)));
      if (index >= node.size()) {
        return std::nullopt;
      }
      node.reset(node[index]);  // Not `=`: that would overwrite the node it refers to.
      i = close + 1;
      continue;
    }
    const auto end = path.find_first_of(".[", i);
    const std::string key(path.substr(i, end == std::string_view::npos ? end : end - i));
    if (!node.IsMap() || !node[key]) {
      return std::nullopt;
    }
    node.reset(node[key]);
    i = end == std::string_view::npos ? path.size() : end;
  }
  return node;
}

// A Connector or SyncJob document through lib/api's parser; its problems as this document's
// errors, with their lines.
template <typename Resource, typename Parse>
Resource parseResource(const YAML::Node& root, Doc& doc, const std::string& ns,
                       const std::string& name, Parse parse) {
  nlohmann::json object = toJson(root);
  if (!object["metadata"].is_object()) {
    object["metadata"] = nlohmann::json::object();  // Already reported.
  }
  object["metadata"]["namespace"] = ns;
  object["metadata"]["name"] = name;
  std::vector<api::Problem> problems;
  Resource resource = parse(object, problems);
  resource.origin = doc.origin();
  for (const api::Problem& problem : problems) {
    const auto at = nodeAt(root, problem.path);
    doc.error(problem.path, problem.message, at ? &*at : nullptr);
  }
  return resource;
}

void parseConnector(const YAML::Node& root, Doc& doc, const std::string& ns,
                    const std::string& name, Manifests& out) {
  out.connectors.push_back(parseResource<api::Connector>(root, doc, ns, name, api::parseConnector));
}

void parseSyncJob(const YAML::Node& root, Doc& doc, const std::string& ns, const std::string& name,
                  Manifests& out) {
  out.syncjobs.push_back(parseResource<api::SyncJob>(root, doc, ns, name, api::parseSyncJob));
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

absl::StatusOr<std::vector<nlohmann::json>> yamlDocumentsToJson(const std::string& text,
                                                                const std::string& source) {
  std::vector<nlohmann::json> out;
  try {
    for (const YAML::Node& doc : YAML::LoadAll(text)) {
      if (doc && !doc.IsNull()) {
        out.push_back(toJson(doc));
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        cat(source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": invalid YAML: ", e.msg));
  }
  return out;
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
