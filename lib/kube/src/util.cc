#include "util.h"

#include "tributary/common/status.h"
#include "tributary/common/strings.h"

#include <array>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <yaml.h>

namespace tributary::kube::internal {
namespace {

using Json = nlohmann::json;

class YamlParser {
 public:
  YamlParser() { yaml_parser_initialize(&parser_); }
  ~YamlParser() {
    if (have_document_) {
      yaml_document_delete(&document_);
    }
    yaml_parser_delete(&parser_);
  }
  YamlParser(const YamlParser&) = delete;
  YamlParser& operator=(const YamlParser&) = delete;

  absl::StatusOr<Json> parse(std::string_view text) {
    yaml_parser_set_input_string(&parser_, reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    if (yaml_parser_load(&parser_, &document_) == 0) {
      return absl::InvalidArgumentError(strings::cat(
          "invalid YAML at line ", parser_.problem_mark.line + 1, ", column ",
          parser_.problem_mark.column + 1, ": ",
          parser_.problem != nullptr ? parser_.problem : "parse error",
          parser_.context != nullptr ? strings::cat(" (", parser_.context, ")") : std::string()));
    }
    have_document_ = true;
    yaml_node_t* root = yaml_document_get_root_node(&document_);
    if (root == nullptr) {
      return Json::object();  // empty document
    }
    return convert(root, 0);
  }

 private:
  absl::StatusOr<Json> convert(yaml_node_t* node, int depth) {
    if (depth > 64) {
      return absl::InvalidArgumentError("YAML nested too deeply (or a recursive alias)");
    }
    switch (node->type) {
      case YAML_SCALAR_NODE: {
        const std::string value(reinterpret_cast<const char*>(node->data.scalar.value),
                                node->data.scalar.length);
        if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
          if (value == "true" || value == "True" || value == "TRUE") {
            return Json(true);
          }
          if (value == "false" || value == "False" || value == "FALSE") {
            return Json(false);
          }
          if (value.empty() || value == "null" || value == "Null" || value == "NULL" ||
              value == "~") {
            return Json(nullptr);
          }
        }
        return Json(value);
      }
      case YAML_SEQUENCE_NODE: {
        Json out = Json::array();
        for (yaml_node_item_t* item = node->data.sequence.items.start;
             item < node->data.sequence.items.top; ++item) {
          TRIBUTARY_ASSIGN_OR_RETURN(Json child,
                                     convert(yaml_document_get_node(&document_, *item), depth + 1));
          out.push_back(std::move(child));
        }
        return out;
      }
      case YAML_MAPPING_NODE: {
        Json out = Json::object();
        for (yaml_node_pair_t* pair = node->data.mapping.pairs.start;
             pair < node->data.mapping.pairs.top; ++pair) {
          yaml_node_t* key = yaml_document_get_node(&document_, pair->key);
          if (key == nullptr || key->type != YAML_SCALAR_NODE) {
            return absl::InvalidArgumentError(
                strings::cat("YAML mapping key at line ",
                             key != nullptr ? key->start_mark.line + 1 : 0, " is not a scalar"));
          }
          std::string name(reinterpret_cast<const char*>(key->data.scalar.value),
                           key->data.scalar.length);
          TRIBUTARY_ASSIGN_OR_RETURN(
              Json child, convert(yaml_document_get_node(&document_, pair->value), depth + 1));
          out[name] = std::move(child);
        }
        return out;
      }
      default:
        return Json(nullptr);
    }
  }

  yaml_parser_t parser_{};
  yaml_document_t document_{};
  bool have_document_ = false;
};

int base64Value(char c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '+' || c == '-') {
    return 62;
  }
  if (c == '/' || c == '_') {
    return 63;
  }
  return -1;
}

}  // namespace

absl::StatusOr<nlohmann::json> parseYaml(std::string_view text) {
  YamlParser parser;
  return parser.parse(text);
}

absl::StatusOr<std::string> base64Decode(std::string_view in) {
  std::string out;
  out.reserve(in.size() * 3 / 4);
  unsigned buffer = 0;
  int bits = 0;
  bool padding = false;
  for (const char c : in) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
      continue;
    }
    if (c == '=') {
      padding = true;
      continue;
    }
    const int v = base64Value(c);
    if (v < 0 || padding) {
      return absl::InvalidArgumentError("invalid base64 data");
    }
    buffer = (buffer << 6U) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> static_cast<unsigned>(bits)) & 0xFFU));
    }
  }
  if (bits >= 6) {
    return absl::InvalidArgumentError("invalid base64 data (truncated)");
  }
  return out;
}

std::string base64Encode(std::string_view in) {
  static constexpr std::string_view kTable =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned n = (static_cast<unsigned>(static_cast<unsigned char>(in[i])) << 16U) |
                       (static_cast<unsigned>(static_cast<unsigned char>(in[i + 1])) << 8U) |
                       static_cast<unsigned>(static_cast<unsigned char>(in[i + 2]));
    out.push_back(kTable[(n >> 18U) & 63U]);
    out.push_back(kTable[(n >> 12U) & 63U]);
    out.push_back(kTable[(n >> 6U) & 63U]);
    out.push_back(kTable[n & 63U]);
  }
  if (i < in.size()) {
    unsigned n = static_cast<unsigned>(static_cast<unsigned char>(in[i])) << 16U;
    if (i + 1 < in.size()) {
      n |= static_cast<unsigned>(static_cast<unsigned char>(in[i + 1])) << 8U;
    }
    out.push_back(kTable[(n >> 18U) & 63U]);
    out.push_back(kTable[(n >> 12U) & 63U]);
    out.push_back(i + 1 < in.size() ? kTable[(n >> 6U) & 63U] : '=');
    out.push_back('=');
  }
  return out;
}

absl::StatusOr<std::string> readFile(const std::string& path) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string why = strings::cat("cannot read ", path, ": ", strings::errnoMessage(err));
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(why);
    }
    if (err == EACCES || err == EPERM) {
      return absl::PermissionDeniedError(why);
    }
    return absl::FailedPreconditionError(why);
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    return absl::FailedPreconditionError(strings::cat("cannot read ", path));
  }
  return buffer.str();
}

std::string urlEncode(std::string_view in) {
  static constexpr std::string_view kHex = "0123456789ABCDEF";
  std::string out;
  for (const char c : in) {
    const auto u = static_cast<unsigned char>(c);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4U]);
      out.push_back(kHex[u & 15U]);
    }
  }
  return out;
}

}  // namespace tributary::kube::internal
