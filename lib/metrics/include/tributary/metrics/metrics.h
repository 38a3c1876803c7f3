#pragma once

// A small Prometheus metrics registry: counters, gauges and histograms with labels, and the text
// exposition format (version 0.0.4) that Prometheus scrapes. Debian 12 has no prometheus-cpp; this
// is the part we need. Thread-safe; metric objects live as long as their registry.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::metrics {

class Counter {
 public:
  /// Adds `v` (>= 0; negative values are ignored, counters never go down).
  void inc(double v = 1.0);
  [[nodiscard]] double value() const;

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v); }
  void inc(double v = 1.0);
  void dec(double v = 1.0) { inc(-v); }
  [[nodiscard]] double value() const { return value_.load(); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  /// `bounds`: upper bounds, strictly increasing (+Inf is implicit).
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);

  struct Snapshot {
    std::vector<std::uint64_t> cumulative;  ///< per bound, then +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  [[nodiscard]] Snapshot snapshot() const;
  [[nodiscard]] const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<std::uint64_t> counts_;  // per bucket (not cumulative), last = +Inf
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

/// `count` buckets: start, start*factor, ... (Prometheus' ExponentialBuckets).
std::vector<double> exponentialBuckets(double start, double factor, int count);

enum class Type { Counter, Gauge, Histogram };

/// A metric name with a fixed list of label names; one child per label-value combination.
template <typename Metric>
class Family {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::function<std::unique_ptr<Metric>()> make)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        make_(std::move(make)) {}

  /// The child for these label values (in label-name order; missing values are ""). The
  /// reference stays valid as long as the registry.
  Metric& with(const std::vector<std::string>& label_values) {
    std::vector<std::string> key = label_values;
    key.resize(label_names_.size());
    std::lock_guard lock(mu_);
    auto& slot = children_[key];
    if (!slot) {
      slot = make_();
    }
    return *slot;
  }

  /// Drops the children whose label values `drop` selects. Only for families whose children
  /// nobody keeps a reference to: gauges a collect hook recomputes, such as one per object that
  /// may be deleted (a removed child must not stay exported with its last value).
  void removeIf(const std::function<bool(const std::vector<std::string>&)>& drop) {
    std::lock_guard lock(mu_);
    std::erase_if(children_, [&](const auto& child) { return drop(child.first); });
  }

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] const std::string& help() const { return help_; }
  [[nodiscard]] const std::vector<std::string>& labelNames() const { return label_names_; }

  /// Calls `f(label_values, metric)` for every child, in label order.
  void forEach(const std::function<void(const std::vector<std::string>&, const Metric&)>& f) const {
    std::lock_guard lock(mu_);
    for (const auto& [values, metric] : children_) {
      f(values, *metric);
    }
  }

 private:
  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
  std::function<std::unique_ptr<Metric>()> make_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Metric>> children_;
};

class Registry {
 public:
  /// Registering a name twice returns the first family (same type required; a different type or
  /// an invalid name throws std::invalid_argument: a programming error).
  Family<Counter>& counter(const std::string& name, const std::string& help,
                           std::vector<std::string> label_names = {});
  Family<Gauge>& gauge(const std::string& name, const std::string& help,
                       std::vector<std::string> label_names = {});
  Family<Histogram>& histogram(const std::string& name, const std::string& help,
                               std::vector<std::string> label_names, std::vector<double> bounds);

  /// Called at the start of every expose() (e.g. to refresh gauges computed on demand).
  void addCollectHook(std::function<void()> hook);

  /// The text exposition format, families in name order.
  [[nodiscard]] std::string expose() const;

 private:
  struct Entry {
    Type type;
    std::unique_ptr<Family<Counter>> counter;
    std::unique_ptr<Family<Gauge>> gauge;
    std::unique_ptr<Family<Histogram>> histogram;
  };
  Entry& entry(const std::string& name, Type type);
  mutable std::mutex mu_;
  std::map<std::string, Entry> families_;
  std::vector<std::function<void()>> hooks_;
};

/// Formats a sample value like Prometheus' Go client (+Inf, -Inf, NaN, shortest round-trip).
std::string formatValue(double v);

}  // namespace tributary::metrics
