#include "tributary/common/rfc3339.h"

#include "tributary/common/strings.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <iomanip>
#include <sstream>

namespace tributary::rfc3339 {

std::string formatTime(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string formatMicroTime(std::chrono::system_clock::time_point t) {
  const auto since = t.time_since_epoch();
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(since - secs).count();
  micros = std::clamp<decltype(micros)>(micros, 0, 999999);
  const std::time_t tt = static_cast<std::time_t>(secs.count());
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[48];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  char frac[32];
  std::snprintf(frac, sizeof(frac), ".%06ldZ", static_cast<long>(micros));
  return strings::cat(buf, frac);
}

std::optional<std::chrono::system_clock::time_point> parseTime(std::string_view text) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)
  if (text.size() < 20) {
    return std::nullopt;
  }
  std::tm tm{};
  std::istringstream in{std::string(text.substr(0, 19))};
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%S");
  if (in.fail()) {
    return std::nullopt;
  }
  std::size_t pos = 19;
  std::chrono::microseconds frac{0};
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    long value = 0;
    int digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (digits < 6) {
        value = value * 10 + (text[pos] - '0');
        ++digits;
      }
      ++pos;
    }
    while (digits < 6) {
      value *= 10;
      ++digits;
    }
    frac = std::chrono::microseconds(value);
  }
  long offset = 0;
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos + 6 == text.size() && (text[pos] == '+' || text[pos] == '-')) {
    const int sign = text[pos] == '+' ? 1 : -1;
    const int hh = (text[pos + 1] - '0') * 10 + (text[pos + 2] - '0');
    const int mm = (text[pos + 4] - '0') * 10 + (text[pos + 5] - '0');
    offset = sign * (hh * 3600L + mm * 60L);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != text.size()) {
    return std::nullopt;
  }
  const std::time_t secs = timegm(&tm) - offset;
  return std::chrono::system_clock::from_time_t(secs) + frac;
}

}  // namespace tributary::rfc3339
