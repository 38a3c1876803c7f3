#include "tributary/installer/spec.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

#include "util.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

namespace tributary::installer {
namespace {

using nlohmann::json;

bool nameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

bool alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

std::string_view schemeOf(std::string_view uri) {
  const auto pos = uri.find("://");
  if (pos == std::string_view::npos) {
    return {};
  }
  return uri.substr(0, pos);
}

bool hasControlChars(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return true;
    }
  }
  return false;
}

absl::Status validateName(std::string_view name) {
  if (name.empty()) {
    return absl::InvalidArgumentError("missing required field 'name'");
  }
  if (name.size() > 128) {
    return absl::InvalidArgumentError("field 'name' is longer than 128 characters");
  }
  if (!alnum(name.front())) {
    return absl::InvalidArgumentError(strings::cat(
        "field 'name' must start with a letter or digit (got '", name,
        "'): it names a cache directory and may not be '..', absolute or contain '/'"));
  }
  for (char c : name) {
    if (!nameChar(c)) {
      return absl::InvalidArgumentError(
          strings::cat("field 'name' may only contain letters, digits, '.', '_' and '-' (got '",
                       name, "'): it names a cache directory"));
    }
  }
  return absl::OkStatus();
}

absl::Status validateUri(const ConnectorSpec& spec) {
  const std::string_view uri = spec.uri;
  if (uri.empty()) {
    return absl::InvalidArgumentError("missing required field 'uri'");
  }
  if (hasControlChars(uri) || uri.find(' ') != std::string_view::npos) {
    return absl::InvalidArgumentError("field 'uri' contains spaces or control characters");
  }
  const std::string scheme = strings::toLower(schemeOf(uri));
  switch (spec.source) {
    case Source::Vcs:
      if (scheme.empty()) {
        // An absolute path, or scp-like "user@host:path".
        const bool scp_like = uri.find(':') != std::string_view::npos && uri.front() != '/';
        if (uri.front() != '/' && !scp_like) {
          return absl::InvalidArgumentError(strings::cat(
              "field 'uri' must be an https://, http://, git://, ssh:// or file:// URL, "
              "user@host:path or an absolute path for source VCS (got '",
              redactUri(uri), "')"));
        }
      } else if (scheme != "https" && scheme != "http" && scheme != "git" && scheme != "ssh" &&
                 scheme != "file" && scheme != "git+ssh" && scheme != "ssh+git") {
        return absl::InvalidArgumentError(strings::cat(
            "unsupported URL scheme '", scheme, "' for source VCS (https, http, git, ssh, file)"));
      }
      break;
    case Source::Http:
      if (scheme != "http" && scheme != "https") {
        return absl::InvalidArgumentError(
            strings::cat("field 'uri' must be an http:// or https:// URL for source HTTP (got '",
                         redactUri(uri), "')"));
      }
      if (uri.size() <= scheme.size() + 3) {
        return absl::InvalidArgumentError("field 'uri' has no host");
      }
      break;
    case Source::Local: {
      std::string_view path = uri;
      if (scheme == "file") {
        path = uri.substr(7);
      } else if (!scheme.empty()) {
        return absl::InvalidArgumentError(strings::cat(
            "field 'uri' must be a path for source Local (got scheme '", scheme, "')"));
      }
      if (path.empty() || path.front() != '/') {
        return absl::InvalidArgumentError(strings::cat(
            "field 'uri' must be an absolute path for source Local (got '", uri, "')"));
      }
      break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Source> parseSource(std::string_view text) {
  const std::string lower = strings::toLower(text);
  if (lower == "vcs" || lower == "git") {
    return Source::Vcs;
  }
  if (lower == "http" || lower == "https") {
    return Source::Http;
  }
  if (lower == "local") {
    return Source::Local;
  }
  if (text.empty()) {
    return absl::InvalidArgumentError("missing required field 'source'");
  }
  return absl::InvalidArgumentError(
      strings::cat("unknown source '", text, "' (want VCS, HTTP or Local)"));
}

// Reads an optional string field under any of `keys`; absent or null is "".
absl::StatusOr<std::string> stringField(const json& obj, std::initializer_list<const char*> keys) {
  for (const char* key : keys) {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
      continue;
    }
    if (!it->is_string()) {
      return absl::InvalidArgumentError(strings::cat("field '", key, "' must be a string"));
    }
    return it->get<std::string>();
  }
  return std::string();
}

absl::StatusOr<ConnectorSpec> fromJson(const json& obj) {
  if (!obj.is_object()) {
    return absl::InvalidArgumentError("a connector must be a JSON object");
  }
  ConnectorSpec spec;
  TRIBUTARY_ASSIGN_OR_RETURN(spec.name, stringField(obj, {"name"}));
  TRIBUTARY_ASSIGN_OR_RETURN(spec.description, stringField(obj, {"description"}));
  TRIBUTARY_ASSIGN_OR_RETURN(std::string source, stringField(obj, {"source"}));
  TRIBUTARY_ASSIGN_OR_RETURN(spec.source, parseSource(source));
  TRIBUTARY_ASSIGN_OR_RETURN(spec.uri, stringField(obj, {"uri"}));
  TRIBUTARY_ASSIGN_OR_RETURN(spec.ref, stringField(obj, {"ref"}));
  TRIBUTARY_ASSIGN_OR_RETURN(spec.sha256, stringField(obj, {"sha256"}));
  TRIBUTARY_ASSIGN_OR_RETURN(spec.install_command,
                             stringField(obj, {"install_command", "installCommand"}));
  TRIBUTARY_ASSIGN_OR_RETURN(spec.update_command,
                             stringField(obj, {"update_command", "updateCommand"}));
  TRIBUTARY_ASSIGN_OR_RETURN(spec.command, stringField(obj, {"command"}));
  TRIBUTARY_ASSIGN_OR_RETURN(spec.secret_ref, stringField(obj, {"secret_ref", "secretRef"}));
  if (const auto it = obj.find("env"); it != obj.end() && !it->is_null()) {
    if (!it->is_object()) {
      return absl::InvalidArgumentError("field 'env' must be an object of strings");
    }
    for (const auto& [key, value] : it->items()) {
      if (!value.is_string()) {
        return absl::InvalidArgumentError(strings::cat("env '", key, "' must be a string"));
      }
      spec.env[key] = value.get<std::string>();
    }
  }
  TRIBUTARY_RETURN_IF_ERROR(validate(spec));
  return spec;
}

absl::StatusOr<json> parseJson(std::string_view text) {
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError("connector JSON is not valid JSON");
  }
  return doc;
}

}  // namespace

std::string_view sourceName(Source source) {
  switch (source) {
    case Source::Vcs:
      return "VCS";
    case Source::Http:
      return "HTTP";
    case Source::Local:
      return "Local";
  }
  return "?";
}

absl::Status validate(const ConnectorSpec& spec) {
  TRIBUTARY_RETURN_IF_ERROR(validateName(spec.name));
  TRIBUTARY_RETURN_IF_ERROR(validateUri(spec));
  if (strings::trim(spec.command).empty()) {
    return absl::InvalidArgumentError("missing required field 'command'");
  }
  for (const auto* field : {&spec.command, &spec.install_command, &spec.update_command}) {
    if (field->find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("commands may not contain NUL characters");
    }
  }
  if (!spec.ref.empty()) {
    if (spec.source != Source::Vcs) {
      return absl::InvalidArgumentError(strings::cat(
          "field 'ref' applies to source VCS only (source is ", sourceName(spec.source), ")"));
    }
    if (hasControlChars(spec.ref) || spec.ref.find(' ') != std::string::npos ||
        spec.ref.find("..") != std::string::npos || spec.ref.front() == '-' ||
        spec.ref.find(':') != std::string::npos) {
      return absl::InvalidArgumentError(
          strings::cat("field 'ref' is not a valid git ref: '", spec.ref, "'"));
    }
  }
  if (!spec.sha256.empty()) {
    if (spec.source != Source::Http) {
      return absl::InvalidArgumentError(strings::cat(
          "field 'sha256' applies to source HTTP only (source is ", sourceName(spec.source), ")"));
    }
    if (spec.sha256.size() != 64 || !internal::isHex(spec.sha256)) {
      return absl::InvalidArgumentError("field 'sha256' must be 64 hexadecimal digits");
    }
  }
  for (const auto& [key, value] : spec.env) {
    if (key.empty() || key.find('=') != std::string::npos || hasControlChars(key) ||
        (key.front() >= '0' && key.front() <= '9')) {
      return absl::InvalidArgumentError(strings::cat("invalid env variable name '", key, "'"));
    }
    if (value.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(strings::cat("env '", key, "' contains a NUL character"));
    }
  }
  if (!spec.secret_ref.empty()) {
    for (char c : spec.secret_ref) {
      if (!nameChar(c)) {
        return absl::InvalidArgumentError(
            "field 'secret_ref' may only contain letters, digits, '.', '_' and '-'");
      }
    }
    if (!alnum(spec.secret_ref.front())) {
      return absl::InvalidArgumentError("field 'secret_ref' must start with a letter or digit");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ConnectorSpec> parseConnectorJson(std::string_view text) {
  TRIBUTARY_ASSIGN_OR_RETURN(json doc, parseJson(text));
  return fromJson(doc);
}

absl::StatusOr<std::vector<ConnectorSpec>> parseConnectorListJson(std::string_view text) {
  TRIBUTARY_ASSIGN_OR_RETURN(json doc, parseJson(text));
  std::vector<ConnectorSpec> out;
  if (doc.is_object()) {
    TRIBUTARY_ASSIGN_OR_RETURN(ConnectorSpec spec, fromJson(doc));
    out.push_back(std::move(spec));
    return out;
  }
  if (!doc.is_array()) {
    return absl::InvalidArgumentError("connector list must be a JSON array of objects");
  }
  for (std::size_t i = 0; i < doc.size(); ++i) {
    auto spec = fromJson(doc[i]);
    if (!spec.ok()) {
      return absl::Status(spec.status().code(),
                          strings::cat("connector #", i, ": ", spec.status().message()));
    }
    out.push_back(*std::move(spec));
  }
  return out;
}

absl::StatusOr<ConnectorSpec> loadConnectorFile(const std::string& path) {
  TRIBUTARY_ASSIGN_OR_RETURN(std::string text, internal::readFile(path, 1U << 20U));
  auto spec = parseConnectorJson(text);
  if (!spec.ok()) {
    return absl::Status(spec.status().code(), strings::cat(path, ": ", spec.status().message()));
  }
  return spec;
}

std::string toJson(const ConnectorSpec& spec) {
  json obj = {{"name", spec.name},
              {"description", spec.description},
              {"source", std::string(sourceName(spec.source))},
              {"uri", spec.uri},
              {"install_command", spec.install_command},
              {"update_command", spec.update_command},
              {"command", spec.command}};
  if (!spec.ref.empty()) {
    obj["ref"] = spec.ref;
  }
  if (!spec.sha256.empty()) {
    obj["sha256"] = spec.sha256;
  }
  if (!spec.env.empty()) {
    obj["env"] = spec.env;
  }
  if (!spec.secret_ref.empty()) {
    obj["secret_ref"] = spec.secret_ref;
  }
  return obj.dump(2);
}

std::string specHash(const ConnectorSpec& spec) {
  // A JSON array gives an unambiguous encoding (no field can bleed into the next).
  const json canonical = {"tributary-installer-v1",
                          std::string(sourceName(spec.source)),
                          spec.uri,
                          spec.ref,
                          strings::toLower(spec.sha256),
                          spec.install_command,
                          spec.env};
  return internal::sha256Hex(canonical.dump()).substr(0, 16);
}

std::string redactUri(std::string_view uri) {
  const auto scheme_end = uri.find("://");
  if (scheme_end == std::string_view::npos) {
    return std::string(uri);
  }
  const auto authority_start = scheme_end + 3;
  const auto authority_end = uri.find_first_of("/?#", authority_start);
  const std::string_view authority = uri.substr(
      authority_start, authority_end == std::string_view::npos ? std::string_view::npos
                                                               : authority_end - authority_start);
  const auto at = authority.rfind('@');
  if (at == std::string_view::npos) {
    return std::string(uri);
  }
  const std::string_view userinfo = authority.substr(0, at);
  std::string user(userinfo.substr(0, userinfo.find(':')));
  const bool had_password = userinfo.find(':') != std::string_view::npos;
  std::string out(uri.substr(0, authority_start));
  // A user name alone ("git@") is not secret; a password or a lone token is.
  out += had_password ? strings::cat(user, ":***@") : strings::cat("***@");
  if (!had_password && (user == "git" || user.empty())) {
    out = strings::cat(uri.substr(0, authority_start), user, "@");
  }
  out.append(uri.substr(authority_start + at + 1));
  return out;
}

}  // namespace tributary::installer
