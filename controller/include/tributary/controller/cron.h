#pragma once

// Cron schedules and time zones with Kubernetes CronJob semantics, as pure code (no API calls).
//
// * CronSchedule: robfig/cron v3 ParseStandard — five fields (minute hour day-of-month month
//   day-of-week) with `*`, `?`, lists, ranges, steps (`N/s` means `N-max/s`), JAN–DEC and
//   SUN–SAT (case-insensitive), the descriptors @yearly @annually @monthly @weekly @daily
//   @midnight @hourly, and `@every <Go duration>`. Day-of-month and day-of-week are OR-ed unless
//   either field starts with `*`/`?` (then AND-ed), like Vixie cron and robfig.
// * next() is robfig's SpecSchedule.Next, step by step (months, days, hours by absolute time,
//   minutes), so DST behaves exactly like a CronJob: a slot inside a spring-forward gap is skipped
//   that day; a slot inside a fall-back overlap fires in both passes (robfig's known behaviour).
// * TimeZone: IANA zones read from the system tz database (/usr/share/zoneinfo or $TZDIR) by our
//   own TZif v1/v2/v3 reader, including the POSIX TZ footer rule for instants after the last
//   transition. GCC 12's libstdc++ has no std::chrono::tzdb, and per-call TZ= + localtime_r is not
//   thread-safe (setenv/tzset race with every other thread), so zones are immutable objects,
//   loaded once and cached: safe to share between reconcile workers.

#include "absl/status/statusor.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::controller {

using Clock = std::chrono::system_clock;
using TimePoint = Clock::time_point;

/// An IANA time zone (immutable, thread-safe).
class TimeZone {
 public:
  /// "" and "UTC" give UTC. Loads /usr/share/zoneinfo/<name> (or $TZDIR/<name>) once; cached.
  /// NotFound for unknown names, InvalidArgument for names with `..` or a leading '/'.
  static absl::StatusOr<std::shared_ptr<const TimeZone>> load(std::string_view name);
  static std::shared_ptr<const TimeZone> utc();
  /// Parses TZif bytes (for tests).
  static absl::StatusOr<std::shared_ptr<const TimeZone>> fromTzif(std::string name,
                                                                  std::string_view data);

  /// UTC offset in seconds (east positive) in effect at `unix` seconds.
  [[nodiscard]] std::int64_t offsetAt(std::int64_t unix) const;
  [[nodiscard]] const std::string& name() const { return name_; }

  struct Rule;  // POSIX TZ footer rule
  ~TimeZone();
  TimeZone(const TimeZone&) = delete;
  TimeZone& operator=(const TimeZone&) = delete;

 private:
  TimeZone() = default;
  std::string name_;
  std::vector<std::int64_t> transitions_;
  std::vector<std::int64_t> offsets_;  // offset after each transition
  std::int64_t initial_offset_ = 0;    // before the first transition
  std::unique_ptr<Rule> rule_;
};

/// Broken-down local time.
struct CivilTime {
  std::int64_t year = 1970;
  int month = 1;    // 1-12
  int day = 1;      // 1-31
  int hour = 0;     // 0-23
  int minute = 0;   // 0-59
  int second = 0;   // 0-59
  int weekday = 4;  // 0 = Sunday
};

CivilTime toCivil(std::int64_t unix, const TimeZone& tz);
/// Go's time.Date: fields may overflow (month 13, day 32) and are normalised; a local time in a
/// gap or overlap resolves like Go does.
std::int64_t fromCivil(std::int64_t year, std::int64_t month, std::int64_t day, std::int64_t hour,
                       std::int64_t minute, std::int64_t second, const TimeZone& tz);

class CronSchedule {
 public:
  /// Parses a schedule; InvalidArgument with robfig's messages for bad syntax or ranges, and
  /// for schedules that never fire (e.g. "0 0 30 2 *"). TZ=/CRON_TZ= prefixes are refused.
  static absl::StatusOr<CronSchedule> parse(std::string_view spec);

  /// The first activation strictly after `t` (sub-seconds dropped), in `tz`; nullopt when there
  /// is none within five years (robfig's limit).
  [[nodiscard]] std::optional<TimePoint> next(TimePoint t, const TimeZone& tz) const;

 private:
  std::uint64_t minute_ = 0, hour_ = 0, dom_ = 0, month_ = 0, dow_ = 0;
  std::int64_t every_seconds_ = 0;  // @every
};

/// Result of the missed-schedule computation (Kubernetes' mostRecentScheduleTime + checks).
struct ScheduleDecision {
  /// The slot to start now (the most recent missed one), if any.
  std::optional<TimePoint> run_at;
  /// Estimated slots missed since the earliest time (1 = just the one due).
  std::int64_t missed = 0;
  /// missed > 100: CronJob's TooManyMissedTimes warning (the most recent still runs).
  bool too_many_missed = false;
  /// run_at was later than startingDeadlineSeconds allows: skip it (MissSchedule); run_at is
  /// still set so callers can name it in the event.
  bool deadline_exceeded = false;
  /// The next slot strictly after `now` (requeue time), if any.
  std::optional<TimePoint> next;
};

/**
 * CronJob's scheduling decision. earliest = last_schedule, else creation; raised to
 * now - starting_deadline when that is later. Only the most recent slot in (earliest, now] runs.
 * InvalidArgument if two consecutive slots are less than a second apart.
 */
absl::StatusOr<ScheduleDecision> decideSchedule(const CronSchedule& schedule, const TimeZone& tz,
                                                TimePoint creation,
                                                std::optional<TimePoint> last_schedule,
                                                std::optional<std::int64_t> starting_deadline,
                                                TimePoint now);

/// "<job>-<minutes since the epoch of slot>" (CronJob's Job naming).
std::string scheduledRunName(std::string_view job, TimePoint slot);
/// "<job>-m<8 hex of FNV-1a(value)>": one run per distinct run-now annotation value.
std::string manualRunName(std::string_view job, std::string_view value);

/// The Job controller's retry delay: 10 s doubling per failure, capped at 10 minutes.
/// `failures` >= 1.
std::chrono::seconds retryBackoff(int failures);

}  // namespace tributary::controller
