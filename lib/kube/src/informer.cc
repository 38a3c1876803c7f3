#include "tributary/kube/informer.h"

#include "tributary/common/strings.h"

#include <algorithm>
#include <cmath>

namespace tributary::kube {

// --- Store ------------------------------------------------------------------------------------

ObjectPtr Store::get(std::string_view key) const {
  std::lock_guard lock(mu_);
  const auto it = items_.find(key);
  return it == items_.end() ? nullptr : it->second;
}

std::vector<ObjectPtr> Store::list() const {
  std::lock_guard lock(mu_);
  std::vector<ObjectPtr> out;
  out.reserve(items_.size());
  for (const auto& [_, obj] : items_) {
    out.push_back(obj);
  }
  return out;
}

std::vector<std::string> Store::keys() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  out.reserve(items_.size());
  for (const auto& [key, _] : items_) {
    out.push_back(key);
  }
  return out;
}

std::size_t Store::size() const {
  std::lock_guard lock(mu_);
  return items_.size();
}

void stripManagedFields(Json& object) {
  if (auto meta = object.find("metadata"); meta != object.end() && meta->is_object()) {
    meta->erase("managedFields");
  }
}

void MutationCache::remember(ObjectPtr written, std::string previous_rv) {
  if (!written) {
    return;
  }
  const std::string key = keyOf(*written);
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it != entries_.end() && resourceVersionOf(*it->second.written) == previous_rv) {
    it->second.behind.push_back(std::move(previous_rv));
    it->second.written = std::move(written);
    it->second.at = now;
    return;
  }
  entries_.insert_or_assign(key, Entry{{std::move(previous_rv)}, std::move(written), now});
}

bool MutationCache::behind(const Entry& e, const Json* cached) const {
  const std::string rv = cached != nullptr ? resourceVersionOf(*cached) : std::string();
  return std::find(e.behind.begin(), e.behind.end(), rv) != e.behind.end();
}

ObjectPtr MutationCache::newest(const std::string& key, ObjectPtr cached) {
  std::lock_guard lock(mu_);
  const auto it = entries_.find(key);
  if (it == entries_.end()) {
    return cached;
  }
  if (std::chrono::steady_clock::now() - it->second.at < ttl_ && behind(it->second, cached.get())) {
    return it->second.written;
  }
  entries_.erase(it);
  return cached;
}

void MutationCache::observe(const std::string& key, const Json* cached) {
  std::lock_guard lock(mu_);
  const auto it = entries_.find(key);
  if (it != entries_.end() && (cached == nullptr || !behind(it->second, cached))) {
    entries_.erase(it);
  }
}

std::size_t MutationCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

std::optional<Delta> Store::apply(WatchEvent::Type type, Json object) {
  std::string key = keyOf(object);
  std::lock_guard lock(mu_);
  const auto it = items_.find(key);
  if (type == WatchEvent::Type::Deleted) {
    if (it == items_.end()) {
      return std::nullopt;
    }
    Delta delta{Delta::Type::Deleted, key, it->second,
                std::make_shared<const Json>(std::move(object)), false};
    items_.erase(it);
    return delta;
  }
  if (type != WatchEvent::Type::Added && type != WatchEvent::Type::Modified) {
    return std::nullopt;
  }
  auto stored = std::make_shared<const Json>(std::move(object));
  if (it == items_.end()) {
    items_.emplace(key, stored);
    return Delta{Delta::Type::Added, std::move(key), nullptr, std::move(stored), false};
  }
  if (resourceVersionOf(*it->second) == resourceVersionOf(*stored)) {
    return std::nullopt;  // a replay of what we have
  }
  Delta delta{Delta::Type::Updated, key, it->second, stored, false};
  it->second = std::move(stored);
  return delta;
}

std::vector<Delta> Store::replace(std::vector<Json> items, std::optional<std::string_view> ns) {
  std::vector<Delta> deltas;
  const std::string prefix = ns ? strings::cat(*ns, "/") : std::string();
  const auto in_scope = [&](const std::string& key) { return !ns || key.starts_with(prefix); };
  std::lock_guard lock(mu_);
  std::map<std::string, ObjectPtr, std::less<>> next;
  for (const auto& [key, obj] : items_) {
    if (!in_scope(key)) {
      next.emplace(key, obj);  // another namespace's objects: listed by its own reflector
    }
  }
  for (Json& item : items) {
    std::string key = keyOf(item);
    auto obj = std::make_shared<const Json>(std::move(item));
    const auto old = items_.find(key);
    if (old == items_.end()) {
      deltas.push_back(Delta{Delta::Type::Added, key, nullptr, obj, false});
    } else if (resourceVersionOf(*old->second) != resourceVersionOf(*obj)) {
      deltas.push_back(Delta{Delta::Type::Updated, key, old->second, obj, false});
    } else {
      obj = old->second;  // unchanged: keep the same instance
    }
    next[std::move(key)] = std::move(obj);
  }
  for (const auto& [key, obj] : items_) {
    if (in_scope(key) && next.find(key) == next.end()) {
      deltas.push_back(Delta{Delta::Type::Deleted, key, obj, obj, true});
    }
  }
  items_ = std::move(next);
  return deltas;
}

absl::StatusOr<std::vector<std::string>> parseNamespaceList(std::string_view comma_separated) {
  std::vector<std::string> namespaces;
  if (comma_separated.empty()) {
    return namespaces;
  }
  for (const std::string_view ns : strings::split(comma_separated, ',')) {
    // A DNS-1123 label: lower-case alphanumerics and '-', alphanumeric at both ends.
    const auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    const bool label =
        !ns.empty() && ns.size() <= 63 && alnum(ns.front()) && alnum(ns.back()) &&
        std::all_of(ns.begin(), ns.end(), [&](char c) { return alnum(c) || c == '-'; });
    if (!label) {
      return absl::InvalidArgumentError(
          strings::cat("namespace list '", comma_separated, "': '", ns,
                       "' is not a namespace name (lower-case letters, digits and '-', at most 63, "
                       "separated by commas)"));
    }
    if (std::find(namespaces.begin(), namespaces.end(), ns) == namespaces.end()) {
      namespaces.emplace_back(ns);
    }
  }
  return namespaces;
}

// --- Backoff ----------------------------------------------------------------------------------

Backoff::Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, double factor,
                 std::uint64_t seed)
    : initial_(initial), max_(max), factor_(factor), rng_(seed) {}

std::chrono::milliseconds Backoff::next() {
  const double base = static_cast<double>(initial_.count()) *
                      std::pow(factor_, static_cast<double>(std::min(attempt_, 62)));
  const double capped = std::min(base, static_cast<double>(max_.count()));
  ++attempt_;
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  return std::chrono::milliseconds(static_cast<std::int64_t>(capped * jitter(rng_)));
}

// --- Informer ---------------------------------------------------------------------------------

Informer::Informer(std::shared_ptr<Client> client, InformerOptions options)
    : client_(std::move(client)),
      options_(std::move(options)),
      log_((options_.logger ? *options_.logger : log::Logger("kube.informer"))
               .with({{"resource", options_.type.qualifiedName()},
                      {"namespace", strings::join(options_.namespaces, ",")}})) {
  if (options_.namespaces.empty()) {
    options_.namespaces.emplace_back();  // all namespaces
  }
  if (options_.page_size <= 0) {
    options_.page_size = 500;
  }
  if (options_.max_watch_timeout < options_.min_watch_timeout) {
    options_.max_watch_timeout = options_.min_watch_timeout;
  }
}

Informer::~Informer() { stop(); }

void Informer::addEventHandler(EventHandler handler) {
  if (started_.load()) {
    log_.error("addEventHandler after start() is ignored");
    return;
  }
  handlers_.push_back(std::move(handler));
}

void Informer::start() {
  if (started_.exchange(true)) {
    return;
  }
  dispatcher_ = std::jthread([this](const std::stop_token& stop) { dispatchLoop(stop); });
  for (const std::string& ns : options_.namespaces) {
    Reflector& r = reflectors_.emplace_back();
    r.ns = ns;
    r.thread = std::jthread([this, &r](const std::stop_token& stop) { reflectorLoop(stop, r); });
  }
}

void Informer::stop() {
  for (Reflector& r : reflectors_) {
    r.thread.request_stop();
  }
  if (dispatcher_.joinable()) {
    dispatcher_.request_stop();
  }
  cv_.notify_all();
  for (Reflector& r : reflectors_) {
    if (r.thread.joinable()) {
      r.thread.join();
    }
  }
  if (dispatcher_.joinable()) {
    dispatcher_.join();
  }
}

bool Informer::waitForSync(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [this] { return synced_.load(); });
}

InformerStats Informer::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Informer::push(std::vector<Notification> batch) {
  if (batch.empty()) {
    return;
  }
  {
    std::lock_guard lock(mu_);
    for (Notification& n : batch) {
      queue_.push_back(std::move(n));
    }
  }
  cv_.notify_all();
}

bool Informer::sleepFor(std::chrono::milliseconds d, const std::stop_token& stop) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, stop, d, [] { return false; }) && !stop.stop_requested();
}

absl::Status Informer::listAndReplace(const std::stop_token& stop, Reflector& r) {
  ListOptions list_options;
  list_options.label_selector = options_.label_selector;
  list_options.field_selector = options_.field_selector;
  list_options.limit = options_.page_size;
  // resourceVersion "" = a consistent (quorum) read: never older than anything seen before.
  auto listed = client_->listAll(options_.type, r.ns, list_options);
  if (!listed.ok()) {
    return listed.status();
  }
  if (stop.stop_requested()) {
    return absl::CancelledError("stopped");
  }
  const std::string rv = listed->resource_version;
  const std::size_t count = listed->items.size();
  if (options_.transform) {
    for (Json& item : listed->items) {
      options_.transform(item);
    }
  }
  std::vector<Delta> deltas =
      store_.replace(std::move(listed->items),
                     r.ns.empty() ? std::nullopt : std::optional<std::string_view>(r.ns));
  const bool initial = !r.listed_once;
  std::vector<Notification> batch;
  batch.reserve(deltas.size() + 1);
  for (Delta& d : deltas) {
    batch.push_back(Notification{std::move(d), initial, false});
  }
  r.listed_once = true;
  {
    std::lock_guard lock(mu_);
    r.last_rv = rv;
    ++stats_.lists;
    stats_.in_sync = true;
    // Synced once every namespace's first list is queued (pushed below, before the marker).
    if (initial && ++listed_ == reflectors_.size()) {
      batch.push_back(Notification{Delta{}, false, true});
    }
  }
  push(std::move(batch));
  log_.debug("listed", {{"items", count}, {"resourceVersion", rv}, {"changes", deltas.size()}});
  return absl::OkStatus();
}

void Informer::reflectorLoop(const std::stop_token& stop, Reflector& r) {
  Backoff backoff(options_.backoff_initial, options_.backoff_max);
  bool need_list = true;
  int failures = 0;
  while (!stop.stop_requested()) {
    if (need_list) {
      const absl::Status listed = listAndReplace(stop, r);
      if (stop.stop_requested()) {
        break;
      }
      if (!listed.ok()) {
        {
          std::lock_guard lock(mu_);
          stats_.in_sync = false;
        }
        const auto delay = backoff.next();
        log_.warn("list failed; retrying",
                  {{"error", std::string(listed.message())}, {"retry_in_ms", delay.count()}});
        sleepFor(delay, stop);
        continue;
      }
      need_list = false;
      failures = 0;
      backoff.reset();
    }

    WatchOptions watch_options;
    watch_options.label_selector = options_.label_selector;
    watch_options.field_selector = options_.field_selector;
    {
      std::lock_guard lock(mu_);
      watch_options.resource_version = r.last_rv;
    }
    watch_options.allow_bookmarks = true;
    {
      std::uniform_int_distribution<std::int64_t> pick(options_.min_watch_timeout.count(),
                                                       options_.max_watch_timeout.count());
      watch_options.timeout_seconds = pick(r.rng);
    }
    watch_options.idle_timeout = options_.idle_timeout;
    {
      std::lock_guard lock(mu_);
      ++stats_.watches;
    }

    bool gone = false;
    absl::Status event_error;
    std::uint64_t received = 0;
    const auto started = std::chrono::steady_clock::now();
    const absl::Status watched = client_->watch(
        options_.type, r.ns, watch_options,
        [&](WatchEvent&& event) -> bool {
          ++received;
          switch (event.type) {
            case WatchEvent::Type::Bookmark: {
              std::string rv = resourceVersionOf(event.object);
              std::lock_guard lock(mu_);
              ++stats_.bookmarks;
              stats_.in_sync = true;
              if (!rv.empty()) {
                r.last_rv = std::move(rv);
              }
              return true;
            }
            case WatchEvent::Type::Error: {
              const Json& code = event.object.is_object() && event.object.contains("code")
                                     ? event.object["code"]
                                     : Json();
              const std::string message = event.object.is_object() &&
                                                  event.object.contains("message") &&
                                                  event.object["message"].is_string()
                                              ? event.object["message"].get<std::string>()
                                              : event.object.dump();
              if (code.is_number_integer() && code.get<int>() == 410) {
                gone = true;
              } else {
                event_error = absl::UnavailableError(strings::cat("watch ERROR event: ", message));
              }
              log_.info("watch error event", {{"message", message}, {"gone", gone}});
              return false;
            }
            default:
              break;
          }
          std::string rv = resourceVersionOf(event.object);
          if (options_.transform) {
            options_.transform(event.object);
          }
          auto delta = store_.apply(event.type, std::move(event.object));
          {
            std::lock_guard lock(mu_);
            stats_.in_sync = true;
            if (!rv.empty()) {
              r.last_rv = std::move(rv);
            }
            if (delta) {
              queue_.push_back(Notification{std::move(*delta), false, false});
            }
          }
          if (delta) {
            cv_.notify_all();
          }
          return true;
        },
        stop);
    if (stop.stop_requested()) {
      break;
    }
    const auto lasted = std::chrono::steady_clock::now() - started;
    if (gone || isGone(watched)) {
      {
        std::lock_guard lock(mu_);
        ++stats_.relists_gone;
        stats_.in_sync = false;
      }
      log_.info("resourceVersion expired (410 Gone); listing again");
      need_list = true;
      if (failures++ > 0) {
        sleepFor(backoff.next(), stop);  // repeated 410s: do not hammer the server
      }
      continue;
    }
    const absl::Status result = !watched.ok() ? watched : event_error;
    if (result.ok()) {
      // The server ended the stream (timeoutSeconds): watch again at once.
      failures = 0;
      if (received > 0 || lasted > std::chrono::seconds(1)) {
        backoff.reset();
      } else {
        sleepFor(backoff.next(), stop);  // an empty stream that ended at once
      }
      continue;
    }
    {
      std::lock_guard lock(mu_);
      ++stats_.watch_errors;
      stats_.in_sync = false;
      if (absl::IsDeadlineExceeded(result)) {
        ++stats_.idle_timeouts;
      }
    }
    if (absl::IsDeadlineExceeded(result)) {
      // Idle stream (no byte, not even a bookmark, for idle_timeout): a normal event on a quiet
      // or half-dead connection. Reconnect at once from the last resourceVersion; idle_timeout
      // itself limits the rate.
      log_.info("watch idle; reconnecting", {{"error", std::string(result.message())}});
      continue;
    }
    if (received > 0) {
      backoff.reset();
      failures = 0;
    }
    ++failures;
    if (failures >= options_.relist_after_failures) {
      need_list = true;
      failures = 0;
    }
    const auto delay = backoff.next();
    log_.warn("watch failed; retrying", {{"error", std::string(result.message())},
                                         {"retry_in_ms", delay.count()},
                                         {"relist", need_list}});
    sleepFor(delay, stop);
  }
}

void Informer::dispatchLoop(const std::stop_token& stop) {
  auto next_resync = std::chrono::steady_clock::now() + options_.resync_period;
  while (!stop.stop_requested()) {
    Notification n;
    {
      std::unique_lock lock(mu_);
      const auto ready = [this] { return !queue_.empty(); };
      if (options_.resync_period.count() > 0) {
        cv_.wait_until(lock, stop, next_resync, ready);
      } else {
        cv_.wait(lock, stop, ready);
      }
      if (stop.stop_requested()) {
        return;
      }
      if (queue_.empty()) {
        lock.unlock();
        // Resync: replay every cached object as an update (level-triggered safety net).
        if (synced_.load()) {
          for (const ObjectPtr& obj : store_.list()) {
            for (const EventHandler& h : handlers_) {
              if (h.on_update) {
                h.on_update(*obj, *obj);
              }
            }
          }
        }
        next_resync = std::chrono::steady_clock::now() + options_.resync_period;
        continue;
      }
      n = std::move(queue_.front());
      queue_.pop_front();
    }
    if (n.synced_marker) {
      synced_.store(true);
      std::lock_guard lock(mu_);
      cv_.notify_all();
      continue;
    }
    {
      std::lock_guard lock(mu_);
      ++stats_.events;
    }
    for (const EventHandler& h : handlers_) {
      try {
        switch (n.delta.type) {
          case Delta::Type::Added:
            if (h.on_add) {
              h.on_add(*n.delta.object, n.initial);
            }
            break;
          case Delta::Type::Updated:
            if (h.on_update) {
              h.on_update(*n.delta.old_object, *n.delta.object);
            }
            break;
          case Delta::Type::Deleted:
            if (h.on_delete) {
              h.on_delete(*n.delta.object, n.delta.final_state_unknown);
            }
            break;
        }
      } catch (const std::exception& e) {
        log_.error("event handler threw", {{"key", n.delta.key}, {"error", e.what()}});
      }
    }
  }
}

}  // namespace tributary::kube
