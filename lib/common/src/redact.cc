#include "tributary/common/redact.h"

#include "tributary/common/log.h"

#include <algorithm>
#include <memory>
#include <utility>

namespace tributary::log {
namespace {

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) {
    return {};
  }
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

class RedactingSink final : public Sink {
 public:
  RedactingSink(SinkPtr inner, std::shared_ptr<const Redactor> secrets)
      : inner_(std::move(inner)), secrets_(std::move(secrets)) {}

  void write(const Record& record) override {
    Record safe = record;
    safe.message = secrets_->apply(record.message);
    secrets_->apply(safe.fields);
    inner_->write(safe);
  }

 private:
  SinkPtr inner_;
  std::shared_ptr<const Redactor> secrets_;
};

}  // namespace

Logger Logger::redacting(std::shared_ptr<const Redactor> secrets) const {
  if (secrets == nullptr || secrets->empty()) {
    return *this;
  }
  Logger child = *this;
  child.sink_ = std::make_shared<RedactingSink>(sink_, std::move(secrets));
  return child;
}

void Redactor::addOne(std::string_view value) {
  value = trim(value);
  if (value.size() < kMinSecretBytes) {
    return;
  }
  const auto at = std::lower_bound(secrets_.begin(), secrets_.end(), value,
                                   [](const std::string& a, std::string_view b) {
                                     return a.size() != b.size() ? a.size() > b.size() : a < b;
                                   });
  if (at == secrets_.end() || *at != value) {
    secrets_.insert(at, std::string(value));
  }
}

void Redactor::addJsonStrings(const nlohmann::json& value) {
  if (value.is_string()) {
    addOne(value.get_ref<const std::string&>());
  } else if (value.is_structured()) {
    for (const auto& item : value) {
      addJsonStrings(item);
    }
  }
}

void Redactor::add(std::string_view secret) {
  addOne(secret);
  for (std::size_t start = 0; start < secret.size();) {
    const auto end = std::min(secret.find('\n', start), secret.size());
    addOne(secret.substr(start, end - start));
    start = end + 1;
  }
  const auto parsed = nlohmann::json::parse(secret, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_discarded()) {
    addJsonStrings(parsed);
  }
}

std::string Redactor::apply(std::string_view text) const {
  std::string out(text);
  for (const std::string& secret : secrets_) {
    for (auto at = out.find(secret); at != std::string::npos;
         at = out.find(secret, at + kReplacement.size())) {
      out.replace(at, secret.size(), kReplacement);
    }
  }
  return out;
}

void Redactor::apply(nlohmann::json& value) const {
  if (secrets_.empty()) {
    return;
  }
  if (value.is_string()) {
    value = apply(value.get_ref<const std::string&>());
  } else if (value.is_array()) {
    for (auto& item : value) {
      apply(item);
    }
  } else if (value.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (auto& [key, item] : value.items()) {
      apply(item);
      out[apply(key)] = std::move(item);
    }
    value = std::move(out);
  }
}

}  // namespace tributary::log
