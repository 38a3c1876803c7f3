#include "tributary/controller/cron.h"

#include "tributary/common/strings.h"

#include "absl/status/status.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

namespace tributary::controller {
namespace {

// --- civil dates (Howard Hinnant's algorithms) -------------------------------------------------

std::int64_t floorDiv(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) {
    --q;
  }
  return q;
}

std::int64_t daysFromCivil(std::int64_t y, std::int64_t m, std::int64_t d) {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = floorDiv(y, 400);
  const std::int64_t yoe = y - era * 400;
  const std::int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

void civilFromDays(std::int64_t z, std::int64_t& y, int& m, int& d) {
  z += 719468;
  const std::int64_t era = floorDiv(z, 146097);
  const std::int64_t doe = z - era * 146097;
  const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const std::int64_t mp = (5 * doy + 2) / 153;
  d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  y = yoe + era * 400 + (m <= 2 ? 1 : 0);
}

// Local seconds (as if UTC) for normalised fields.
std::int64_t localSeconds(std::int64_t year, std::int64_t month, std::int64_t day,
                          std::int64_t hour, std::int64_t minute, std::int64_t second) {
  std::int64_t m0 = month - 1;
  year += floorDiv(m0, 12);
  m0 -= floorDiv(m0, 12) * 12;
  const std::int64_t days = daysFromCivil(year, m0 + 1, 1) + day - 1;
  return days * 86400 + hour * 3600 + minute * 60 + second;
}

}  // namespace

// --- POSIX TZ rule -------------------------------------------------------------------------------

struct TimeZone::Rule {
  std::int64_t std_offset = 0;  // east positive
  std::int64_t dst_offset = 0;
  bool has_dst = false;
  struct When {
    char kind = 'M';  // 'M' (month.week.day), 'J' (1-365, no Feb 29), 'N' (0-365)
    int month = 0, week = 0, wday = 0, day = 0;
    std::int64_t time = 7200;  // seconds after local midnight
  };
  When start, end;

  // Local seconds-of-year origin of `w` in `year` (local midnight of the day + time).
  static std::int64_t localTransition(std::int64_t year, const When& w) {
    std::int64_t day_num = 0;  // days since epoch of the transition day
    if (w.kind == 'J') {
      day_num = daysFromCivil(year, 1, 1) + w.day - 1;
      const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
      if (leap && w.day >= 60) {
        ++day_num;
      }
    } else if (w.kind == 'N') {
      day_num = daysFromCivil(year, 1, 1) + w.day;
    } else {
      const std::int64_t first = daysFromCivil(year, w.month, 1);
      const std::int64_t first_wday = ((first + 4) % 7 + 7) % 7;
      std::int64_t d = first + ((w.wday - first_wday) % 7 + 7) % 7;
      d += 7 * (w.week - 1);
      if (w.week == 5) {
        const std::int64_t next_month =
            w.month == 12 ? daysFromCivil(year + 1, 1, 1) : daysFromCivil(year, w.month + 1, 1);
        while (d >= next_month) {
          d -= 7;
        }
      }
      day_num = d;
    }
    return day_num * 86400 + w.time;
  }

  std::int64_t offsetAt(std::int64_t unix) const {
    if (!has_dst) {
      return std_offset;
    }
    std::int64_t y = 0;
    int m = 0, d = 0;
    civilFromDays(floorDiv(unix + std_offset, 86400), y, m, d);
    // Transitions of the years around `unix`, in UTC: dst starts (in standard time) and ends
    // (in daylight time).
    std::vector<std::pair<std::int64_t, bool>> events;  // (utc, dst after)
    for (std::int64_t year = y - 1; year <= y + 1; ++year) {
      events.emplace_back(localTransition(year, start) - std_offset, true);
      events.emplace_back(localTransition(year, end) - dst_offset, false);
    }
    std::sort(events.begin(), events.end());
    bool dst = false;
    bool first = true;
    for (const auto& [t, after] : events) {
      if (first) {
        dst = !after;  // the state before the earliest transition
        first = false;
      }
      if (t <= unix) {
        dst = after;
      }
    }
    return dst ? dst_offset : std_offset;
  }
};

TimeZone::~TimeZone() = default;

namespace {

bool parseTzName(std::string_view& s) {
  if (!s.empty() && s[0] == '<') {
    const auto close = s.find('>');
    if (close == std::string_view::npos) {
      return false;
    }
    s.remove_prefix(close + 1);
    return true;
  }
  std::size_t n = 0;
  while (n < s.size() && std::isalpha(static_cast<unsigned char>(s[n])) != 0) {
    ++n;
  }
  if (n < 3) {
    return false;
  }
  s.remove_prefix(n);
  return true;
}

bool parseNum(std::string_view& s, int& out) {
  std::size_t n = 0;
  int v = 0;
  while (n < s.size() && std::isdigit(static_cast<unsigned char>(s[n])) != 0) {
    v = v * 10 + (s[n] - '0');
    ++n;
  }
  if (n == 0) {
    return false;
  }
  s.remove_prefix(n);
  out = v;
  return true;
}

// [+-]hh[:mm[:ss]] in seconds (sign as written).
bool parseHms(std::string_view& s, std::int64_t& out) {
  int sign = 1;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    sign = s[0] == '-' ? -1 : 1;
    s.remove_prefix(1);
  }
  int h = 0, m = 0, sec = 0;
  if (!parseNum(s, h)) {
    return false;
  }
  if (!s.empty() && s[0] == ':') {
    s.remove_prefix(1);
    if (!parseNum(s, m)) {
      return false;
    }
    if (!s.empty() && s[0] == ':') {
      s.remove_prefix(1);
      if (!parseNum(s, sec)) {
        return false;
      }
    }
  }
  out = sign * (static_cast<std::int64_t>(h) * 3600 + m * 60 + sec);
  return true;
}

bool parseWhen(std::string_view& s, TimeZone::Rule::When& w) {
  if (s.empty()) {
    return false;
  }
  if (s[0] == 'M') {
    s.remove_prefix(1);
    w.kind = 'M';
    if (!parseNum(s, w.month) || s.empty() || s[0] != '.') {
      return false;
    }
    s.remove_prefix(1);
    if (!parseNum(s, w.week) || s.empty() || s[0] != '.') {
      return false;
    }
    s.remove_prefix(1);
    if (!parseNum(s, w.wday)) {
      return false;
    }
    if (w.month < 1 || w.month > 12 || w.week < 1 || w.week > 5 || w.wday > 6) {
      return false;
    }
  } else if (s[0] == 'J') {
    s.remove_prefix(1);
    w.kind = 'J';
    if (!parseNum(s, w.day)) {
      return false;
    }
  } else {
    w.kind = 'N';
    if (!parseNum(s, w.day)) {
      return false;
    }
  }
  w.time = 7200;
  if (!s.empty() && s[0] == '/') {
    s.remove_prefix(1);
    if (!parseHms(s, w.time)) {
      return false;
    }
  }
  return true;
}

std::optional<TimeZone::Rule> parseRule(std::string_view s) {
  TimeZone::Rule r;
  if (!parseTzName(s)) {
    return std::nullopt;
  }
  std::int64_t off = 0;
  if (!parseHms(s, off)) {
    return std::nullopt;
  }
  r.std_offset = -off;
  if (s.empty()) {
    return r;
  }
  if (!parseTzName(s)) {
    return std::nullopt;
  }
  r.has_dst = true;
  r.dst_offset = r.std_offset + 3600;
  if (!s.empty() && s[0] != ',') {
    if (!parseHms(s, off)) {
      return std::nullopt;
    }
    r.dst_offset = -off;
  }
  if (s.empty()) {
    // No rule: POSIX default (US rules since 2007).
    r.start = {'M', 3, 2, 0, 0, 7200};
    r.end = {'M', 11, 1, 0, 0, 7200};
    return r;
  }
  if (s[0] != ',') {
    return std::nullopt;
  }
  s.remove_prefix(1);
  if (!parseWhen(s, r.start) || s.empty() || s[0] != ',') {
    return std::nullopt;
  }
  s.remove_prefix(1);
  if (!parseWhen(s, r.end) || !s.empty()) {
    return std::nullopt;
  }
  return r;
}

std::int64_t readBE(std::string_view data, std::size_t pos, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v = (v << 8) | static_cast<unsigned char>(data[pos + static_cast<std::size_t>(i)]);
  }
  if (bytes == 4) {
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(v));
  }
  return static_cast<std::int64_t>(v);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TimeZone>> TimeZone::fromTzif(std::string name,
                                                                   std::string_view data) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        strings::cat("time zone ", name, ": bad TZif data (", why, ")"));
  };
  struct Header {
    std::int64_t isut, isstd, leap, time, type, chars;
  };
  auto header = [&](std::size_t pos, Header& h) -> bool {
    if (data.size() < pos + 44 || data.substr(pos, 4) != "TZif") {
      return false;
    }
    h.isut = readBE(data, pos + 20, 4);
    h.isstd = readBE(data, pos + 24, 4);
    h.leap = readBE(data, pos + 28, 4);
    h.time = readBE(data, pos + 32, 4);
    h.type = readBE(data, pos + 36, 4);
    h.chars = readBE(data, pos + 40, 4);
    return h.time >= 0 && h.type > 0 && h.chars >= 0 && h.leap >= 0;
  };
  Header h{};
  if (!header(0, h)) {
    return bad("header");
  }
  const char version = data[4];
  std::size_t pos = 44;
  int tsize = 4;
  auto blockSize = [](const Header& x, int ts) {
    return static_cast<std::size_t>(x.time * ts + x.time + x.type * 6 + x.chars +
                                    x.leap * (ts + 4) + x.isstd + x.isut);
  };
  if (version >= '2') {
    pos += blockSize(h, 4);
    if (!header(pos, h)) {
      return bad("v2 header");
    }
    pos += 44;
    tsize = 8;
  }
  if (data.size() < pos + blockSize(h, tsize)) {
    return bad("truncated");
  }
  std::shared_ptr<TimeZone> tz(new TimeZone());
  tz->name_ = std::move(name);
  const std::size_t times_pos = pos;
  const std::size_t idx_pos = times_pos + static_cast<std::size_t>(h.time * tsize);
  const std::size_t types_pos = idx_pos + static_cast<std::size_t>(h.time);
  std::vector<std::int64_t> type_offsets;
  std::vector<bool> type_dst;
  for (std::int64_t i = 0; i < h.type; ++i) {
    const std::size_t p = types_pos + static_cast<std::size_t>(i * 6);
    type_offsets.push_back(readBE(data, p, 4));
    type_dst.push_back(data[p + 4] != 0);
  }
  for (std::int64_t i = 0; i < h.time; ++i) {
    tz->transitions_.push_back(
        readBE(data, times_pos + static_cast<std::size_t>(i * tsize), tsize));
    const auto idx = static_cast<unsigned char>(data[idx_pos + static_cast<std::size_t>(i)]);
    if (idx >= type_offsets.size()) {
      return bad("type index");
    }
    tz->offsets_.push_back(type_offsets[idx]);
  }
  // Before the first transition: the first non-DST type (RFC 8536 §3.2 suggests type 0).
  tz->initial_offset_ = type_offsets[0];
  for (std::size_t i = 0; i < type_offsets.size(); ++i) {
    if (!type_dst[i]) {
      tz->initial_offset_ = type_offsets[i];
      break;
    }
  }
  if (version >= '2') {
    const std::size_t footer = pos + blockSize(h, tsize);
    if (footer < data.size() && data[footer] == '\n') {
      const auto end = data.find('\n', footer + 1);
      if (end != std::string_view::npos && end > footer + 1) {
        auto rule = parseRule(data.substr(footer + 1, end - footer - 1));
        if (!rule) {
          return bad("footer TZ string");
        }
        tz->rule_ = std::make_unique<Rule>(*rule);
      }
    }
  }
  return std::shared_ptr<const TimeZone>(std::move(tz));
}

std::shared_ptr<const TimeZone> TimeZone::utc() {
  static const std::shared_ptr<const TimeZone> kUtc = [] {
    std::shared_ptr<TimeZone> tz(new TimeZone());
    tz->name_ = "UTC";
    return std::shared_ptr<const TimeZone>(std::move(tz));
  }();
  return kUtc;
}

absl::StatusOr<std::shared_ptr<const TimeZone>> TimeZone::load(std::string_view name) {
  if (name.empty() || name == "UTC") {
    return utc();
  }
  if (name.front() == '/' || name.find("..") != std::string_view::npos) {
    return absl::InvalidArgumentError(strings::cat("invalid time zone name \"", name, "\""));
  }
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const TimeZone>, std::less<>> cache;
  std::lock_guard lock(mu);
  if (auto it = cache.find(name); it != cache.end()) {
    return it->second;
  }
  const char* dir = std::getenv("TZDIR");
  const std::string path =
      strings::cat(dir != nullptr && *dir != '\0' ? dir : "/usr/share/zoneinfo", "/", name);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        strings::cat("unknown time zone \"", name, "\" (not in the tz database: ", path, ")"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto tz = fromTzif(std::string(name), buffer.str());
  if (!tz.ok()) {
    return tz.status();
  }
  cache.emplace(std::string(name), *tz);
  return *tz;
}

std::int64_t TimeZone::offsetAt(std::int64_t unix) const {
  if (transitions_.empty() || unix < transitions_.front()) {
    if (transitions_.empty() && rule_) {
      return rule_->offsetAt(unix);
    }
    return initial_offset_;
  }
  if (unix >= transitions_.back() && rule_) {
    return rule_->offsetAt(unix);
  }
  const auto it = std::upper_bound(transitions_.begin(), transitions_.end(), unix);
  return offsets_[static_cast<std::size_t>(it - transitions_.begin() - 1)];
}

CivilTime toCivil(std::int64_t unix, const TimeZone& tz) {
  const std::int64_t local = unix + tz.offsetAt(unix);
  const std::int64_t days = floorDiv(local, 86400);
  const std::int64_t secs = local - days * 86400;
  CivilTime c;
  civilFromDays(days, c.year, c.month, c.day);
  c.hour = static_cast<int>(secs / 3600);
  c.minute = static_cast<int>(secs % 3600 / 60);
  c.second = static_cast<int>(secs % 60);
  c.weekday = static_cast<int>(((days + 4) % 7 + 7) % 7);
  return c;
}

std::int64_t fromCivil(std::int64_t year, std::int64_t month, std::int64_t day, std::int64_t hour,
                       std::int64_t minute, std::int64_t second, const TimeZone& tz) {
  const std::int64_t local = localSeconds(year, month, day, hour, minute, second);
  // Go's time.Date: the offset at `local` read as UTC; if the resulting instant lies in another
  // zone period, the offset of that instant.
  const std::int64_t o1 = tz.offsetAt(local);
  const std::int64_t utc = local - o1;
  const std::int64_t o2 = tz.offsetAt(utc);
  return o2 == o1 ? utc : local - o2;
}

// --- cron parsing ------------------------------------------------------------------------------

namespace {

constexpr std::uint64_t kStarBit = 1ULL << 63;

struct Bounds {
  int min;
  int max;
  std::array<std::string_view, 13> names;
  int names_base;  // value of names[0]
};

const Bounds kMinutes{0, 59, {}, 0};
const Bounds kHours{0, 23, {}, 0};
const Bounds kDom{1, 31, {}, 0};
const Bounds kMonths{
    1,
    12,
    {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", ""},
    1};
const Bounds kDow{
    0, 6, {"sun", "mon", "tue", "wed", "thu", "fri", "sat", "", "", "", "", "", ""}, 0};

absl::StatusOr<int> parseIntOrName(std::string_view s, const Bounds& b) {
  const std::string lower = strings::toLower(s);
  for (std::size_t i = 0; i < b.names.size(); ++i) {
    if (!b.names[i].empty() && b.names[i] == lower) {
      return static_cast<int>(i) + b.names_base;
    }
  }
  if (s.empty() || s.size() > 9 ||
      !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return absl::InvalidArgumentError(strings::cat("failed to parse int from ", s));
  }
  return std::atoi(std::string(s).c_str());
}

absl::StatusOr<std::uint64_t> parseRange(std::string_view expr, const Bounds& b) {
  const auto range_and_step = strings::split(expr, '/');
  const auto low_high = strings::split(range_and_step[0], '-');
  const bool single = low_high.size() == 1;
  int start = 0, end = 0, step = 1;
  std::uint64_t extra = 0;
  if (low_high[0] == "*" || low_high[0] == "?") {
    if (!single) {
      return absl::InvalidArgumentError(strings::cat("too many hyphens: ", expr));
    }
    start = b.min;
    end = b.max;
    extra = kStarBit;
  } else {
    auto s = parseIntOrName(low_high[0], b);
    if (!s.ok()) {
      return s.status();
    }
    start = *s;
    if (low_high.size() == 1) {
      end = start;
    } else if (low_high.size() == 2) {
      auto e = parseIntOrName(low_high[1], b);
      if (!e.ok()) {
        return e.status();
      }
      end = *e;
    } else {
      return absl::InvalidArgumentError(strings::cat("too many hyphens: ", expr));
    }
  }
  if (range_and_step.size() == 2) {
    auto s = parseIntOrName(range_and_step[1], Bounds{0, 0, {}, 0});
    if (!s.ok()) {
      return s.status();
    }
    step = *s;
    if (single) {
      end = b.max;
    }
    if (step > 1) {
      extra = 0;
    }
  } else if (range_and_step.size() > 2) {
    return absl::InvalidArgumentError(strings::cat("too many slashes: ", expr));
  }
  if (start < b.min) {
    return absl::InvalidArgumentError(
        strings::cat("beginning of range (", start, ") below minimum (", b.min, "): ", expr));
  }
  if (end > b.max) {
    return absl::InvalidArgumentError(
        strings::cat("end of range (", end, ") above maximum (", b.max, "): ", expr));
  }
  if (start > end) {
    return absl::InvalidArgumentError(
        strings::cat("beginning of range (", start, ") beyond end of range (", end, "): ", expr));
  }
  if (step == 0) {
    return absl::InvalidArgumentError(
        strings::cat("step of range should be a positive number: ", expr));
  }
  std::uint64_t bits = 0;
  for (int i = start; i <= end; i += step) {
    bits |= 1ULL << i;
  }
  return bits | extra;
}

absl::StatusOr<std::uint64_t> parseField(std::string_view field, const Bounds& b) {
  std::uint64_t bits = 0;
  for (const auto part : strings::split(field, ',')) {
    auto r = parseRange(part, b);
    if (!r.ok()) {
      return r.status();
    }
    bits |= *r;
  }
  return bits;
}

// Go's time.ParseDuration for @every (units ns us µs ms s m h, decimals).
absl::StatusOr<std::int64_t> parseGoDurationSeconds(std::string_view s) {
  double total_ns = 0;
  if (s.empty()) {
    return absl::InvalidArgumentError("empty duration");
  }
  while (!s.empty()) {
    std::size_t n = 0;
    while (n < s.size() && (std::isdigit(static_cast<unsigned char>(s[n])) != 0 || s[n] == '.')) {
      ++n;
    }
    if (n == 0) {
      return absl::InvalidArgumentError(strings::cat("invalid duration ", s));
    }
    const double value = std::strtod(std::string(s.substr(0, n)).c_str(), nullptr);
    s.remove_prefix(n);
    std::size_t u = 0;
    while (u < s.size() && std::isdigit(static_cast<unsigned char>(s[u])) == 0 && s[u] != '.') {
      ++u;
    }
    const std::string_view unit = s.substr(0, u);
    s.remove_prefix(u);
    double mult = 0;
    if (unit == "ns") {
      mult = 1;
    } else if (unit == "us" || unit == "\xC2\xB5s") {
      mult = 1e3;
    } else if (unit == "ms") {
      mult = 1e6;
    } else if (unit == "s") {
      mult = 1e9;
    } else if (unit == "m") {
      mult = 60e9;
    } else if (unit == "h") {
      mult = 3600e9;
    } else {
      return absl::InvalidArgumentError(strings::cat("unknown unit in duration: ", unit));
    }
    total_ns += value * mult;
  }
  // robfig: Every() rounds durations below a second up to one second and truncates the rest.
  const auto secs = static_cast<std::int64_t>(total_ns / 1e9);
  return std::max<std::int64_t>(1, secs);
}

}  // namespace

absl::StatusOr<CronSchedule> CronSchedule::parse(std::string_view spec) {
  std::string_view s = strings::trim(spec);
  if (s.empty()) {
    return absl::InvalidArgumentError("empty spec string");
  }
  if (s.starts_with("TZ=") || s.starts_with("CRON_TZ=")) {
    return absl::InvalidArgumentError(
        "TZ= and CRON_TZ= are not supported in a schedule; use spec.timeZone");
  }
  std::string expanded;
  CronSchedule out;
  if (s[0] == '@') {
    if (s.starts_with("@every ")) {
      auto secs = parseGoDurationSeconds(strings::trim(s.substr(7)));
      if (!secs.ok()) {
        return absl::InvalidArgumentError(
            strings::cat("failed to parse duration ", s, ": ", secs.status().message()));
      }
      out.every_seconds_ = *secs;
      return out;
    }
    static const std::map<std::string_view, std::string_view> kDescriptors = {
        {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"}};
    const auto it = kDescriptors.find(s);
    if (it == kDescriptors.end()) {
      return absl::InvalidArgumentError(strings::cat("unrecognized descriptor: ", s));
    }
    expanded = std::string(it->second);
    s = expanded;
  }
  std::vector<std::string_view> fields;
  for (const auto f : strings::split(s, ' ')) {
    const auto t = strings::trim(f);
    if (!t.empty()) {
      fields.push_back(t);
    }
  }
  if (fields.size() != 5) {
    return absl::InvalidArgumentError(
        strings::cat("expected exactly 5 fields, found ", fields.size(), ": ", spec));
  }
  const std::array<const Bounds*, 5> bounds{&kMinutes, &kHours, &kDom, &kMonths, &kDow};
  std::array<std::uint64_t*, 5> targets{&out.minute_, &out.hour_, &out.dom_, &out.month_,
                                        &out.dow_};
  for (std::size_t i = 0; i < 5; ++i) {
    auto bits = parseField(fields[i], *bounds[i]);
    if (!bits.ok()) {
      return bits.status();
    }
    *targets[i] = *bits;
  }
  // A schedule that never fires (e.g. Feb 30) is an error for us (CronJob reports it at run
  // time): check from a leap year start, UTC, over 5 years.
  if (!out.next(Clock::from_time_t(946684800), *TimeZone::utc())) {
    return absl::InvalidArgumentError(strings::cat("schedule never fires: ", spec));
  }
  return out;
}

std::optional<TimePoint> CronSchedule::next(TimePoint tp, const TimeZone& tz) const {
  const std::int64_t t0 =
      std::chrono::duration_cast<std::chrono::seconds>(tp.time_since_epoch()).count() -
      ((tp.time_since_epoch() < Clock::duration::zero() &&
        tp.time_since_epoch() % std::chrono::seconds(1) != Clock::duration::zero())
           ? 1
           : 0);
  if (every_seconds_ > 0) {
    return Clock::from_time_t(t0 + every_seconds_);
  }
  std::int64_t t = t0 + 1;  // the upcoming second
  bool added = false;
  const std::int64_t year_limit = toCivil(t, tz).year + 5;
  auto dayMatches = [&](const CivilTime& c) {
    const bool dom = ((1ULL << c.day) & dom_) != 0;
    const bool dow = ((1ULL << c.weekday) & dow_) != 0;
    if ((dom_ & kStarBit) != 0 || (dow_ & kStarBit) != 0) {
      return dom && dow;
    }
    return dom || dow;
  };
wrap:
  CivilTime c = toCivil(t, tz);
  if (c.year > year_limit) {
    return std::nullopt;
  }
  while (((1ULL << c.month) & month_) == 0) {
    if (!added) {
      added = true;
      t = fromCivil(c.year, c.month, 1, 0, 0, 0, tz);
      c = toCivil(t, tz);
    }
    t = fromCivil(c.year, c.month + 1, c.day, c.hour, c.minute, c.second, tz);  // AddDate(0,1,0)
    c = toCivil(t, tz);
    if (c.month == 1) {
      goto wrap;
    }
  }
  while (!dayMatches(c)) {
    if (!added) {
      added = true;
      t = fromCivil(c.year, c.month, c.day, 0, 0, 0, tz);
      c = toCivil(t, tz);
    }
    t = fromCivil(c.year, c.month, c.day + 1, c.hour, c.minute, c.second, tz);  // AddDate(0,0,1)
    c = toCivil(t, tz);
    if (c.hour != 0) {
      t += c.hour > 12 ? (24 - c.hour) * 3600 : -c.hour * 3600;
      c = toCivil(t, tz);
    }
    if (c.day == 1) {
      goto wrap;
    }
  }
  while (((1ULL << c.hour) & hour_) == 0) {
    if (!added) {
      added = true;
      t = fromCivil(c.year, c.month, c.day, c.hour, 0, 0, tz);
    }
    t += 3600;
    c = toCivil(t, tz);
    if (c.hour == 0) {
      goto wrap;
    }
  }
  while (((1ULL << c.minute) & minute_) == 0) {
    if (!added) {
      added = true;
      t -= ((t % 60) + 60) % 60;  // Truncate(time.Minute)
    }
    t += 60;
    c = toCivil(t, tz);
    if (c.minute == 0) {
      goto wrap;
    }
  }
  // Seconds: the standard parser fixes them to 0.
  while (c.second != 0) {
    if (!added) {
      added = true;
    }
    t += 1;
    c = toCivil(t, tz);
    if (c.second == 0) {
      goto wrap;
    }
  }
  return Clock::from_time_t(t);
}

absl::StatusOr<ScheduleDecision> decideSchedule(const CronSchedule& schedule, const TimeZone& tz,
                                                TimePoint creation,
                                                std::optional<TimePoint> last_schedule,
                                                std::optional<std::int64_t> starting_deadline,
                                                TimePoint now) {
  ScheduleDecision d;
  TimePoint earliest = last_schedule.value_or(creation);
  if (starting_deadline) {
    const TimePoint deadline = now - std::chrono::seconds(*starting_deadline);
    if (deadline > earliest) {
      earliest = deadline;
    }
  }
  const auto t1 = schedule.next(earliest, tz);
  if (!t1) {
    return d;
  }
  const auto t2 = schedule.next(*t1, tz);
  if (t2 && *t2 - *t1 < std::chrono::seconds(1)) {
    return absl::InvalidArgumentError(
        "time difference between two schedules is less than 1 second");
  }
  if (now < *t1) {
    d.next = t1;
    return d;
  }
  if (!t2 || now < *t2) {
    d.run_at = t1;
    d.missed = 1;
    d.next = t2;
  } else {
    const auto period = std::chrono::duration_cast<std::chrono::seconds>(*t2 - *t1).count();
    const auto elapsed = std::chrono::duration_cast<std::chrono::seconds>(now - *t1).count();
    d.missed = elapsed / period + 1;
    // Find the most recent slot <= now without walking every missed slot: search a window
    // before now that doubles until it contains a slot (irregular schedules, DST).
    std::int64_t window = 2 * period;
    std::optional<TimePoint> found;
    while (true) {
      TimePoint from = now - std::chrono::seconds(window);
      if (from < *t1) {
        from = *t1 - std::chrono::seconds(1);
      }
      auto cand = schedule.next(from, tz);
      if (cand && *cand <= now) {
        found = cand;
        for (auto n = schedule.next(*cand, tz); n && *n <= now; n = schedule.next(*n, tz)) {
          found = n;
        }
        break;
      }
      if (from < *t1) {
        break;
      }
      window *= 2;
    }
    d.run_at = found ? found : t1;
    d.next = schedule.next(*d.run_at, tz);
    while (d.next && *d.next <= now) {
      d.next = schedule.next(*d.next, tz);
    }
  }
  d.too_many_missed = d.missed > 100;
  if (starting_deadline && *d.run_at + std::chrono::seconds(*starting_deadline) < now) {
    d.deadline_exceeded = true;
  }
  return d;
}

std::string scheduledRunName(std::string_view job, TimePoint slot) {
  const auto minutes = std::chrono::duration_cast<std::chrono::minutes>(slot.time_since_epoch());
  return strings::cat(job, "-", static_cast<std::int64_t>(minutes.count()));
}

std::string manualRunName(std::string_view job, std::string_view value) {
  std::uint32_t h = 2166136261U;
  for (const char c : value) {
    h ^= static_cast<unsigned char>(c);
    h *= 16777619U;
  }
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", h);
  return strings::cat(job, "-m", hex);
}

std::chrono::seconds retryBackoff(int failures) {
  std::int64_t d = 10;
  for (int i = 1; i < failures && d < 600; ++i) {
    d *= 2;
  }
  return std::chrono::seconds(std::min<std::int64_t>(d, 600));
}

}  // namespace tributary::controller
