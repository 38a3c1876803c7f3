#include "page_encoding.h"

#include "tributary/common/strings.h"

#include "absl/container/flat_hash_set.h"
#include "pg.h"

#include <cstdint>
#include <cstring>

namespace tributary::store::internal {
namespace {

// Exponents / digit counts beyond these may not fit PostgreSQL's numeric (which jsonb uses for
// every number). Conservative: such documents keep metadata text only, metadata_json NULL.
constexpr std::int64_t kMaxJsonExponent = 16000;
constexpr std::size_t kMaxJsonNumberChars = 16000;

// A validating JSON scanner (RFC 8259, no comments) that also refuses what jsonb's input cannot
// store: the \u0000 escape, unpaired surrogate escapes, numbers beyond numeric. Iterative (an
// explicit stack), allocation-free for nesting up to 64, ~1 GB/s: it runs on every object of
// every page, so it must cost far less than the database's own jsonb parse. Input must already
// be valid UTF-8 (preparePage checks that first).
class JsonScanner {
 public:
  explicit JsonScanner(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

  bool valid() {
    enum class Next { Value, Key, AfterValue };
    Next next = Next::Value;
    while (true) {
      skipSpace();
      switch (next) {
        case Next::Value:
          if (p_ == end_) {
            return false;
          }
          if (*p_ == '{' || *p_ == '[') {
            const char open = *p_++;
            skipSpace();
            if (p_ < end_ && *p_ == (open == '{' ? '}' : ']')) {
              ++p_;
              next = Next::AfterValue;
              break;
            }
            push(open);
            next = open == '{' ? Next::Key : Next::Value;
            break;
          }
          if (!scalar()) {
            return false;
          }
          next = Next::AfterValue;
          break;
        case Next::Key:
          if (p_ == end_ || *p_ != '"' || !string()) {
            return false;
          }
          skipSpace();
          if (p_ == end_ || *p_ != ':') {
            return false;
          }
          ++p_;
          next = Next::Value;
          break;
        case Next::AfterValue:
          if (depth_ == 0) {
            return p_ == end_;
          }
          if (p_ == end_) {
            return false;
          }
          if (*p_ == ',') {
            ++p_;
            next = top() == '{' ? Next::Key : Next::Value;
            break;
          }
          if (*p_ == (top() == '{' ? '}' : ']')) {
            ++p_;
            pop();
            break;
          }
          return false;
      }
    }
  }

 private:
  void skipSpace() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) {
      ++p_;
    }
  }
  void push(char c) {
    if (depth_ < kInline) {
      inline_stack_[depth_] = c;
    } else {
      overflow_.push_back(c);
    }
    ++depth_;
  }
  [[nodiscard]] char top() const {
    return depth_ <= kInline ? inline_stack_[depth_ - 1] : overflow_.back();
  }
  void pop() {
    if (depth_ > kInline) {
      overflow_.pop_back();
    }
    --depth_;
  }
  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - p_) < word.size() ||
        std::memcmp(p_, word.data(), word.size()) != 0) {
      return false;
    }
    p_ += word.size();
    return true;
  }
  bool scalar() {
    switch (*p_) {
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }
  static int hex(char c) {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
      return c - 'A' + 10;
    }
    return -1;
  }
  // \uXXXX after the backslash-u; returns the code unit or -1.
  int escapeUnit() {
    if (end_ - p_ < 4) {
      return -1;
    }
    int unit = 0;
    for (int i = 0; i < 4; ++i) {
      const int digit = hex(p_[i]);
      if (digit < 0) {
        return -1;
      }
      unit = unit * 16 + digit;
    }
    p_ += 4;
    return unit;
  }
  bool string() {
    ++p_;  // opening quote
    while (p_ < end_) {
      const auto c = static_cast<unsigned char>(*p_++);
      if (c == '"') {
        return true;
      }
      if (c < 0x20) {
        return false;
      }
      if (c != '\\') {
        continue;
      }
      if (p_ == end_) {
        return false;
      }
      const char e = *p_++;
      if (e == 'u') {
        const int unit = escapeUnit();
        if (unit <= 0) {  // invalid, or \u0000 which jsonb refuses
          return false;
        }
        if (unit >= 0xDC00 && unit <= 0xDFFF) {
          return false;  // low surrogate without a high one
        }
        if (unit >= 0xD800 && unit <= 0xDBFF) {
          if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') {
            return false;
          }
          p_ += 2;
          const int low = escapeUnit();
          if (low < 0xDC00 || low > 0xDFFF) {
            return false;
          }
        }
        continue;
      }
      if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' && e != 'r' &&
          e != 't') {
        return false;
      }
    }
    return false;
  }
  bool digits() {
    const char* start = p_;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
      ++p_;
    }
    return p_ > start;
  }
  bool number() {
    const char* start = p_;
    if (*p_ == '-') {
      ++p_;
    }
    if (p_ == end_) {
      return false;
    }
    if (*p_ == '0') {
      ++p_;
    } else if (!digits()) {
      return false;
    }
    if (p_ < end_ && *p_ == '.') {
      ++p_;
      if (!digits()) {
        return false;
      }
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) {
        ++p_;
      }
      const char* exponent_digits = p_;
      if (!digits()) {
        return false;
      }
      while (exponent_digits < p_ - 1 && *exponent_digits == '0') {
        ++exponent_digits;  // leading zeros do not count
      }
      if (p_ - exponent_digits > 6) {
        return false;
      }
      std::int64_t exponent = 0;
      for (const char* d = exponent_digits; d < p_; ++d) {
        exponent = exponent * 10 + (*d - '0');
      }
      if (exponent > kMaxJsonExponent) {
        return false;
      }
    }
    return static_cast<std::size_t>(p_ - start) <= kMaxJsonNumberChars;
  }

  static constexpr std::size_t kInline = 64;
  const char* p_;
  const char* end_;
  std::size_t depth_ = 0;
  char inline_stack_[kInline] = {};
  std::string overflow_;
};

bool plausibleJsonStart(std::string_view text) {
  for (char c : text) {
    switch (c) {
      case ' ':
      case '\t':
      case '\n':
      case '\r':
        continue;
      case '{':
      case '[':
      case '"':
      case 't':
      case 'f':
      case 'n':
      case '-':
        return true;
      default:
        return c >= '0' && c <= '9';
    }
  }
  return false;
}

void appendInt32(std::string& out, std::int32_t value) {
  const auto u = static_cast<std::uint32_t>(value);
  const char bytes[4] = {static_cast<char>((u >> 24U) & 0xFFU),
                         static_cast<char>((u >> 16U) & 0xFFU),
                         static_cast<char>((u >> 8U) & 0xFFU), static_cast<char>(u & 0xFFU)};
  out.append(bytes, 4);
}

void appendInt16(std::string& out, std::int16_t value) {
  const auto u = static_cast<std::uint16_t>(value);
  const char bytes[2] = {static_cast<char>((u >> 8U) & 0xFFU), static_cast<char>(u & 0xFFU)};
  out.append(bytes, 2);
}

void appendField(std::string& out, std::string_view value) {
  appendInt32(out, static_cast<std::int32_t>(value.size()));
  out.append(value);
}

absl::Status checkField(std::string_view value, std::string_view field,
                        const proto::DataObject& object, std::size_t index) {
  std::size_t offset = 0;
  bool nul = false;
  if (validText(value, &offset, &nul)) {
    return absl::OkStatus();
  }
  // Name the object by remote_id unless that is the broken field.
  const std::string who = field == "remote_id"
                              ? strings::cat("object #", index)
                              : strings::cat("object #", index, " (remote_id \"",
                                             object.remote_id().substr(0, 200), "\")");
  if (nul) {
    return absl::InvalidArgumentError(strings::cat(
        who, ": field ", field, " contains a NUL byte at offset ", offset,
        "; PostgreSQL text cannot store NUL, so the page is refused (escape it in the connector,"
        " e.g. as \\u0000 inside JSON metadata)"));
  }
  return absl::InvalidArgumentError(
      strings::cat(who, ": field ", field, " is not valid UTF-8 (byte offset ", offset, ")"));
}

}  // namespace

bool validText(std::string_view text, std::size_t* offset, bool* nul) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    // Fast path: 8 ASCII bytes without a zero byte.
    if (i + 8 <= n) {
      std::uint64_t word = 0;
      std::memcpy(&word, bytes + i, 8);
      const std::uint64_t high = word & 0x8080808080808080ULL;
      const std::uint64_t zero = (word - 0x0101010101010101ULL) & ~word & 0x8080808080808080ULL;
      if (high == 0 && zero == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = bytes[i];
    if (c == 0) {
      *offset = i;
      *nul = true;
      return false;
    }
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if ((c & 0xE0U) == 0xC0U) {
      len = 2;
      cp = c & 0x1FU;
    } else if ((c & 0xF0U) == 0xE0U) {
      len = 3;
      cp = c & 0x0FU;
    } else if ((c & 0xF8U) == 0xF0U) {
      len = 4;
      cp = c & 0x07U;
    } else {
      *offset = i;
      *nul = false;
      return false;
    }
    if (i + len > n) {
      *offset = i;
      *nul = false;
      return false;
    }
    for (std::size_t k = 1; k < len; ++k) {
      const unsigned char cc = bytes[i + k];
      if ((cc & 0xC0U) != 0x80U) {
        *offset = i;
        *nul = false;
        return false;
      }
      cp = (cp << 6U) | (cc & 0x3FU);
    }
    const bool overlong =
        (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      *offset = i;
      *nul = false;
      return false;
    }
    i += len;
  }
  return true;
}

bool jsonbCompatible(std::string_view text) {
  if (!plausibleJsonStart(text)) {
    return false;
  }
  return JsonScanner(text).valid();
}

absl::StatusOr<PreparedPage> preparePage(const proto::SyncResponse& page,
                                         std::size_t max_remote_id_bytes) {
  PreparedPage out;
  const int n = page.response_size();
  out.received = static_cast<std::size_t>(n);
  for (int i = 0; i < n; ++i) {
    const proto::DataObject& object = page.response(i);
    const auto index = static_cast<std::size_t>(i);
    if (object.remote_id().empty()) {
      return absl::InvalidArgumentError(
          strings::cat("object #", index, ": remote_id is empty; every object needs one"));
    }
    if (object.remote_id().size() > max_remote_id_bytes) {
      return absl::InvalidArgumentError(
          strings::cat("object #", index, ": remote_id is ", object.remote_id().size(),
                       " bytes, longer than the store's limit of ", max_remote_id_bytes,
                       " (it is part of a btree key)"));
    }
    for (const auto& [value, field] :
         {std::pair<const std::string&, std::string_view>{object.remote_id(), "remote_id"},
          {object.resource_name(), "resource_name"},
          {object.uri(), "uri"},
          {object.metadata(), "metadata"}}) {
      if (absl::Status status = checkField(value, field, object, index); !status.ok()) {
        return status;
      }
    }
    out.bytes += object.remote_id().size() + object.resource_name().size() + object.uri().size() +
                 object.metadata().size();
  }

  // Last copy wins: walk backwards keeping the first occurrence, then restore page order.
  out.objects.reserve(out.received);
  if (n > 1) {
    absl::flat_hash_set<std::string_view, std::hash<std::string_view>> seen;
    seen.reserve(out.received);
    for (int i = n - 1; i >= 0; --i) {
      const proto::DataObject& object = page.response(i);
      if (seen.insert(object.remote_id()).second) {
        out.objects.push_back(&object);
      }
    }
    std::reverse(out.objects.begin(), out.objects.end());
  } else if (n == 1) {
    out.objects.push_back(&page.response(0));
  }
  out.duplicates = out.received - out.objects.size();

  out.json_ok.reserve(out.objects.size());
  for (const proto::DataObject* object : out.objects) {
    out.json_ok.push_back(jsonbCompatible(object->metadata()));
  }
  return out;
}

namespace {

// One text[] in binary array format, written in one allocation.
std::string textArray(const PreparedPage& page,
                      const std::string& (proto::DataObject::*field)() const) {
  const std::size_t count = page.objects.size();
  std::size_t bytes = 0;
  for (const proto::DataObject* object : page.objects) {
    bytes += (object->*field)().size();
  }
  std::string out;
  if (count == 0) {
    out.reserve(12);
    appendInt32(out, 0);  // ndim 0: the empty array
    appendInt32(out, 0);
    appendInt32(out, static_cast<std::int32_t>(kTextOid));
    return out;
  }
  out.resize(20 + count * 4 + bytes);
  char* w = out.data();
  auto put32 = [&w](std::uint32_t v) {
    const std::uint32_t be = __builtin_bswap32(v);
    std::memcpy(w, &be, 4);
    w += 4;
  };
  put32(1);  // ndim
  put32(0);  // no NULLs
  put32(kTextOid);
  put32(static_cast<std::uint32_t>(count));
  put32(1);  // lower bound
  for (const proto::DataObject* object : page.objects) {
    const std::string& value = (object->*field)();
    put32(static_cast<std::uint32_t>(value.size()));
    std::memcpy(w, value.data(), value.size());
    w += value.size();
  }
  return out;
}

}  // namespace

ArrayParams encodeArrays(const PreparedPage& page) {
  BinaryArrayBuilder json_ok(kBoolOid);
  json_ok.reserve(page.objects.size(), page.objects.size());
  for (std::size_t i = 0; i < page.objects.size(); ++i) {
    json_ok.addBool(page.json_ok[i]);
  }
  return {textArray(page, &proto::DataObject::remote_id),
          textArray(page, &proto::DataObject::resource_name),
          textArray(page, &proto::DataObject::uri), textArray(page, &proto::DataObject::metadata),
          json_ok.finish()};
}

std::string encodeCopy(const PreparedPage& page) {
  std::string out;
  out.reserve(page.bytes + page.objects.size() * 30 + 32);
  static constexpr char kSignature[] = "PGCOPY\n\377\r\n";
  out.append(kSignature, 11);  // 11 bytes including the trailing NUL
  appendInt32(out, 0);         // flags
  appendInt32(out, 0);         // header extension length
  for (std::size_t i = 0; i < page.objects.size(); ++i) {
    const proto::DataObject& object = *page.objects[i];
    appendInt16(out, 5);
    appendField(out, object.remote_id());
    appendField(out, object.resource_name());
    appendField(out, object.uri());
    appendField(out, object.metadata());
    appendInt32(out, 1);
    out.push_back(page.json_ok[i] ? '\1' : '\0');
  }
  appendInt16(out, -1);
  return out;
}

}  // namespace tributary::store::internal
