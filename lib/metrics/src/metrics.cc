#include "tributary/metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

namespace tributary::metrics {
namespace {

bool validName(std::string_view name, bool label) {
  if (name.empty()) {
    return false;
  }
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) {
      return false;
    }
  }
  return !(label && name.rfind("__", 0) == 0);
}

void appendEscaped(std::string& out, std::string_view text, bool quote) {
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out.push_back(c);
    }
  }
}

void appendLabels(std::string& out, const std::vector<std::string>& names,
                  const std::vector<std::string>& values, std::string_view extra_name = {},
                  std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) {
    return;
  }
  out.push_back('{');
  bool first = true;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!first) {
      out.push_back(',');
    }
    first = false;
    out += names[i];
    out += "=\"";
    appendEscaped(out, i < values.size() ? values[i] : std::string(), true);
    out.push_back('"');
  }
  if (!extra_name.empty()) {
    if (!first) {
      out.push_back(',');
    }
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out.push_back('"');
  }
  out.push_back('}');
}

void appendHeader(std::string& out, const std::string& name, const std::string& help,
                  std::string_view type) {
  out += "# HELP ";
  out += name;
  out.push_back(' ');
  appendEscaped(out, help, false);
  out += "\n# TYPE ";
  out += name;
  out.push_back(' ');
  out += type;
  out.push_back('\n');
}

void checkLabels(const std::string& name, const std::vector<std::string>& labels) {
  if (!validName(name, false)) {
    throw std::invalid_argument("invalid metric name: " + name);
  }
  for (const auto& l : labels) {
    if (!validName(l, true) || l == "le") {
      throw std::invalid_argument("invalid label name for " + name + ": " + l);
    }
  }
}

}  // namespace

std::string formatValue(double v) {
  if (std::isnan(v)) {
    return "NaN";
  }
  if (std::isinf(v)) {
    return v > 0 ? "+Inf" : "-Inf";
  }
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(v);
}

void Counter::inc(double v) {
  if (v > 0) {
    value_.fetch_add(v);
  }
}

double Counter::value() const { return value_.load(); }

void Gauge::inc(double v) { value_.fetch_add(v); }

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  std::sort(bounds_.begin(), bounds_.end());
  bounds_.erase(std::unique(bounds_.begin(), bounds_.end()), bounds_.end());
  if (!bounds_.empty() && std::isinf(bounds_.back())) {
    bounds_.pop_back();
  }
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::observe(double v) {
  const auto idx = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                            bounds_.begin());
  std::lock_guard lock(mu_);
  ++counts_[idx];
  sum_ += v;
  ++count_;
}

Histogram::Snapshot Histogram::snapshot() const {
  std::lock_guard lock(mu_);
  Snapshot s;
  s.cumulative.resize(counts_.size());
  std::uint64_t running = 0;
  for (std::size_t i = 0; i < counts_.size(); ++i) {
    running += counts_[i];
    s.cumulative[i] = running;
  }
  s.sum = sum_;
  s.count = count_;
  return s;
}

std::vector<double> exponentialBuckets(double start, double factor, int count) {
  std::vector<double> out;
  double v = start;
  for (int i = 0; i < count; ++i) {
    out.push_back(v);
    v *= factor;
  }
  return out;
}

Registry::Entry& Registry::entry(const std::string& name, Type type) {
  auto it = families_.find(name);
  if (it != families_.end()) {
    if (it->second.type != type) {
      throw std::invalid_argument("metric " + name + " registered twice with different types");
    }
    return it->second;
  }
  Entry& e = families_[name];
  e.type = type;
  return e;
}

Family<Counter>& Registry::counter(const std::string& name, const std::string& help,
                                   std::vector<std::string> label_names) {
  checkLabels(name, label_names);
  std::lock_guard lock(mu_);
  Entry& e = entry(name, Type::Counter);
  if (!e.counter) {
    e.counter = std::make_unique<Family<Counter>>(name, help, std::move(label_names),
                                                  [] { return std::make_unique<Counter>(); });
  }
  return *e.counter;
}

Family<Gauge>& Registry::gauge(const std::string& name, const std::string& help,
                               std::vector<std::string> label_names) {
  checkLabels(name, label_names);
  std::lock_guard lock(mu_);
  Entry& e = entry(name, Type::Gauge);
  if (!e.gauge) {
    e.gauge = std::make_unique<Family<Gauge>>(name, help, std::move(label_names),
                                              [] { return std::make_unique<Gauge>(); });
  }
  return *e.gauge;
}

Family<Histogram>& Registry::histogram(const std::string& name, const std::string& help,
                                       std::vector<std::string> label_names,
                                       std::vector<double> bounds) {
  checkLabels(name, label_names);
  std::lock_guard lock(mu_);
  Entry& e = entry(name, Type::Histogram);
  if (!e.histogram) {
    e.histogram = std::make_unique<Family<Histogram>>(name, help, std::move(label_names), [bounds] {
      return std::make_unique<Histogram>(bounds);
    });
  }
  return *e.histogram;
}

void Registry::addCollectHook(std::function<void()> hook) {
  std::lock_guard lock(mu_);
  hooks_.push_back(std::move(hook));
}

std::string Registry::expose() const {
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard lock(mu_);
    hooks = hooks_;
  }
  for (const auto& hook : hooks) {
    hook();
  }
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& [name, e] : families_) {
    switch (e.type) {
      case Type::Counter:
        appendHeader(out, name, e.counter->help(), "counter");
        e.counter->forEach([&](const std::vector<std::string>& values, const Counter& c) {
          out += name;
          appendLabels(out, e.counter->labelNames(), values);
          out += ' ' + formatValue(c.value()) + '\n';
        });
        break;
      case Type::Gauge:
        appendHeader(out, name, e.gauge->help(), "gauge");
        e.gauge->forEach([&](const std::vector<std::string>& values, const Gauge& g) {
          out += name;
          appendLabels(out, e.gauge->labelNames(), values);
          out += ' ' + formatValue(g.value()) + '\n';
        });
        break;
      case Type::Histogram:
        appendHeader(out, name, e.histogram->help(), "histogram");
        e.histogram->forEach([&](const std::vector<std::string>& values, const Histogram& h) {
          const Histogram::Snapshot s = h.snapshot();
          const auto& labels = e.histogram->labelNames();
          for (std::size_t i = 0; i <= h.bounds().size(); ++i) {
            out += name + "_bucket";
            appendLabels(out, labels, values, "le",
                         i < h.bounds().size() ? formatValue(h.bounds()[i]) : "+Inf");
            out += ' ' + std::to_string(s.cumulative[i]) + '\n';
          }
          out += name + "_sum";
          appendLabels(out, labels, values);
          out += ' ' + formatValue(s.sum) + '\n';
          out += name + "_count";
          appendLabels(out, labels, values);
          out += ' ' + std::to_string(s.count) + '\n';
        });
        break;
    }
  }
  return out;
}

}  // namespace tributary::metrics
