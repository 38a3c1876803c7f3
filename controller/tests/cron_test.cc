// Unit tests of the pure scheduling code: cron parsing (robfig ParseStandard), next() with time
// zones and DST, CronJob's missed-schedule decision, run names, retry backoff.

#include "tributary/controller/cron.h"

#include <gtest/gtest.h>

namespace tributary::controller {
namespace {

TimePoint at(std::int64_t unix) { return Clock::from_time_t(unix); }
std::int64_t unixOf(TimePoint t) { return Clock::to_time_t(t); }
// UTC from fields.
std::int64_t utc(int y, int mo, int d, int h = 0, int mi = 0, int s = 0) {
  return fromCivil(y, mo, d, h, mi, s, *TimeZone::utc());
}

std::int64_t nextOf(std::string_view spec, std::int64_t from, const TimeZone& tz) {
  auto s = CronSchedule::parse(spec);
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) {
    return -1;
  }
  auto n = s->next(at(from), tz);
  return n ? unixOf(*n) : -1;
}

const TimeZone& zone(std::string_view name) {
  auto tz = TimeZone::load(name);
  EXPECT_TRUE(tz.ok()) << tz.status();
  return **tz;
}

TEST(Cron, RejectsBadSchedules) {
  for (const char* spec :
       {"", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
        "* * * * 7", "5-3 * * * *", "*/0 * * * *", "a * * * *", "@fortnightly", "TZ=UTC * * * * *",
        "CRON_TZ=UTC 0 * * * *", "0 0 30 2 *", "1-2-3 * * * *", "@every 5x"}) {
    EXPECT_FALSE(CronSchedule::parse(spec).ok()) << spec;
  }
  EXPECT_NE(CronSchedule::parse("5-3 * * * *").status().message().find("beyond end of range"),
            std::string_view::npos);
}

TEST(Cron, AcceptsStandardForms) {
  for (const char* spec :
       {"* * * * *", "?  * * * ?", "0,15,30,45 * * * *", "1-59/2 * * * *", "5/10 * * * *",
        "0 0 1 JAN,jul *", "0 0 * * SUN-sat", "@yearly", "@annually", "@monthly", "@weekly",
        "@daily", "@midnight", "@hourly", "@every 1h30m", "0 0 29 2 *"}) {
    EXPECT_TRUE(CronSchedule::parse(spec).ok()) << spec;
  }
}

TEST(Cron, NextUtc) {
  const auto& u = *TimeZone::utc();
  EXPECT_EQ(nextOf("*/15 * * * *", utc(2024, 3, 8, 10, 7), u), utc(2024, 3, 8, 10, 15));
  EXPECT_EQ(nextOf("*/15 * * * *", utc(2024, 3, 8, 10, 15), u), utc(2024, 3, 8, 10, 30));
  EXPECT_EQ(nextOf("5/20 * * * *", utc(2024, 3, 8, 10, 30), u), utc(2024, 3, 8, 10, 45));
  // Friday 10:00 → Monday 09:00.
  EXPECT_EQ(nextOf("0 9 * * MON-FRI", utc(2024, 3, 8, 10), u), utc(2024, 3, 11, 9));
  EXPECT_EQ(nextOf("0 0 31 * *", utc(2024, 2, 1), u), utc(2024, 3, 31));
  EXPECT_EQ(nextOf("0 0 29 2 *", utc(2024, 3, 1), u), utc(2028, 2, 29));
  EXPECT_EQ(nextOf("@yearly", utc(2024, 3, 1), u), utc(2025, 1, 1));
  EXPECT_EQ(nextOf("@weekly", utc(2024, 3, 6), u), utc(2024, 3, 10));  // a Sunday
  EXPECT_EQ(nextOf("@hourly", utc(2024, 12, 31, 23, 30), u), utc(2025, 1, 1));
  EXPECT_EQ(nextOf("@every 90s", utc(2024, 1, 1), u), utc(2024, 1, 1, 0, 1, 30));
  EXPECT_EQ(nextOf("0 12 * dec *", utc(2024, 12, 31, 13), u), utc(2025, 12, 1, 12));
}

TEST(Cron, DayOfMonthOrDayOfWeek) {
  const auto& u = *TimeZone::utc();
  // Both restricted: OR (the 13th or any Friday). 2024-09-01 is a Sunday; Friday is the 6th.
  EXPECT_EQ(nextOf("0 0 13 * FRI", utc(2024, 9, 1), u), utc(2024, 9, 6));
  EXPECT_EQ(nextOf("0 0 13 * FRI", utc(2024, 9, 10), u), utc(2024, 9, 13));
  // One starred: AND.
  EXPECT_EQ(nextOf("0 0 * * FRI", utc(2024, 9, 1), u), utc(2024, 9, 6));
  EXPECT_EQ(nextOf("0 0 13 * *", utc(2024, 9, 1), u), utc(2024, 9, 13));
  // "*/2" in day-of-week is not a star (robfig: a step > 1 clears the star bit): OR again.
  EXPECT_EQ(nextOf("0 0 1 * */2", utc(2024, 9, 1, 1), u), utc(2024, 9, 3));  // Tuesday
}

TEST(TimeZoneTest, OffsetsFromTzdata) {
  const auto& paris = zone("Europe/Paris");
  EXPECT_EQ(paris.offsetAt(utc(2024, 1, 15)), 3600);
  EXPECT_EQ(paris.offsetAt(utc(2024, 7, 15)), 7200);
  // Far future: the TZif footer rule (CET-1CEST,M3.5.0,M10.5.0/3).
  EXPECT_EQ(paris.offsetAt(utc(2100, 7, 15)), 7200);
  EXPECT_EQ(paris.offsetAt(utc(2100, 1, 15)), 3600);
  // 2100-03-28 is the last Sunday of March: DST from 01:00 UTC.
  EXPECT_EQ(paris.offsetAt(utc(2100, 3, 28, 0, 59, 59)), 3600);
  EXPECT_EQ(paris.offsetAt(utc(2100, 3, 28, 1)), 7200);
  const auto& sydney = zone("Australia/Sydney");  // southern hemisphere
  EXPECT_EQ(sydney.offsetAt(utc(2024, 1, 15)), 11 * 3600);
  EXPECT_EQ(sydney.offsetAt(utc(2024, 7, 15)), 10 * 3600);
  EXPECT_EQ(sydney.offsetAt(utc(2100, 1, 15)), 11 * 3600);
  EXPECT_EQ(sydney.offsetAt(utc(2100, 7, 15)), 10 * 3600);
  EXPECT_EQ(zone("Asia/Kolkata").offsetAt(utc(2024, 1, 1)), 19800);
  EXPECT_FALSE(TimeZone::load("Mars/Olympus_Mons").ok());
  EXPECT_EQ(TimeZone::load("Mars/Olympus_Mons").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(TimeZone::load("../etc/passwd").ok());
}

TEST(Cron, NextInTimeZone) {
  const auto& paris = zone("Europe/Paris");
  EXPECT_EQ(nextOf("0 9 * * *", utc(2024, 7, 1), paris), utc(2024, 7, 1, 7));
  EXPECT_EQ(nextOf("0 9 * * *", utc(2024, 1, 1), paris), utc(2024, 1, 1, 8));
  const auto& kolkata = zone("Asia/Kolkata");
  EXPECT_EQ(nextOf("0 0 * * *", utc(2024, 1, 1), kolkata), utc(2024, 1, 1, 18, 30));
}

TEST(Cron, DstGapSkipsTheSlotLikeCronJob) {
  const auto& ny = zone("America/New_York");
  // 2024-03-10: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
  EXPECT_EQ(nextOf("30 2 * * *", utc(2024, 3, 10, 5), ny), utc(2024, 3, 11, 6, 30));
  // Slots outside the gap are unaffected.
  EXPECT_EQ(nextOf("30 3 * * *", utc(2024, 3, 10, 5), ny), utc(2024, 3, 10, 7, 30));
  EXPECT_EQ(nextOf("0 * * * *", utc(2024, 3, 10, 6, 30), ny), utc(2024, 3, 10, 7));  // 03:00 EDT
}

TEST(Cron, DstOverlapFiresInBothPassesLikeCronJob) {
  const auto& ny = zone("America/New_York");
  // 2024-11-03: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
  const auto first = nextOf("30 1 * * *", utc(2024, 11, 3, 4), ny);
  EXPECT_EQ(first, utc(2024, 11, 3, 5, 30));  // 01:30 EDT
  const auto second = nextOf("30 1 * * *", first, ny);
  EXPECT_EQ(second, utc(2024, 11, 3, 6, 30));  // 01:30 EST
  EXPECT_EQ(nextOf("30 1 * * *", second, ny), utc(2024, 11, 4, 6, 30));
  // Daily at midnight across the change stays at local midnight.
  EXPECT_EQ(nextOf("@daily", utc(2024, 11, 3, 4, 30), ny), utc(2024, 11, 4, 5));
}

TEST(Schedule, NothingDueBeforeTheFirstSlot) {
  auto s = *CronSchedule::parse("*/5 * * * *");
  auto d = decideSchedule(s, *TimeZone::utc(), at(utc(2024, 1, 1, 10, 0, 30)), std::nullopt,
                          std::nullopt, at(utc(2024, 1, 1, 10, 4)));
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->run_at);
  EXPECT_EQ(unixOf(*d->next), utc(2024, 1, 1, 10, 5));
}

TEST(Schedule, OnlyTheMostRecentMissedSlotRuns) {
  auto s = *CronSchedule::parse("*/5 * * * *");
  auto d = decideSchedule(s, *TimeZone::utc(), at(utc(2024, 1, 1, 10, 0, 30)), std::nullopt,
                          std::nullopt, at(utc(2024, 1, 1, 10, 11)));
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->run_at);
  EXPECT_EQ(unixOf(*d->run_at), utc(2024, 1, 1, 10, 10));
  EXPECT_EQ(d->missed, 2);
  EXPECT_FALSE(d->too_many_missed);
  EXPECT_EQ(unixOf(*d->next), utc(2024, 1, 1, 10, 15));
  // After it ran (lastScheduleTime = 10:10), nothing until 10:15.
  d = decideSchedule(s, *TimeZone::utc(), at(utc(2024, 1, 1, 10, 0, 30)),
                     at(utc(2024, 1, 1, 10, 10)), std::nullopt, at(utc(2024, 1, 1, 10, 12)));
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->run_at);
}

TEST(Schedule, MoreThanOneHundredMissedWarnsAndStillRunsTheLatest) {
  auto s = *CronSchedule::parse("* * * * *");
  auto d = decideSchedule(s, *TimeZone::utc(), at(utc(2024, 1, 1)), std::nullopt, std::nullopt,
                          at(utc(2024, 1, 3, 5, 7, 30)));
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->too_many_missed);
  EXPECT_GT(d->missed, 100);
  EXPECT_EQ(unixOf(*d->run_at), utc(2024, 1, 3, 5, 7));
}

TEST(Schedule, IrregularScheduleFindsTheRightSlot) {
  auto s = *CronSchedule::parse("0 9 * * 1-5");
  // Created on Monday 2024-03-04, now Sunday 2024-03-17: the latest slot is Friday the 15th.
  auto d = decideSchedule(s, *TimeZone::utc(), at(utc(2024, 3, 4)), std::nullopt, std::nullopt,
                          at(utc(2024, 3, 17, 12)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(unixOf(*d->run_at), utc(2024, 3, 15, 9));
  EXPECT_EQ(unixOf(*d->next), utc(2024, 3, 18, 9));
}

TEST(Schedule, StartingDeadlineLimitsTheSearch) {
  auto s = *CronSchedule::parse("*/5 * * * *");
  const auto created = at(utc(2024, 1, 1, 8));
  // 10:10 is due, 30 s ago; deadline 60 s: runs.
  auto d = decideSchedule(s, *TimeZone::utc(), created, std::nullopt, 60,
                          at(utc(2024, 1, 1, 10, 10, 30)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(unixOf(*d->run_at), utc(2024, 1, 1, 10, 10));
  EXPECT_FALSE(d->deadline_exceeded);
  // 10:10 is 90 s ago: too late, and no earlier slot is searched.
  d = decideSchedule(s, *TimeZone::utc(), created, std::nullopt, 60,
                     at(utc(2024, 1, 1, 10, 11, 30)));
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->run_at);
  EXPECT_EQ(unixOf(*d->next), utc(2024, 1, 1, 10, 15));
}

TEST(Schedule, RunNamesAreDeterministic) {
  EXPECT_EQ(scheduledRunName("job", at(utc(2024, 1, 1))), "job-28401120");
  EXPECT_EQ(scheduledRunName("job", at(utc(2024, 1, 1, 0, 0, 59))), "job-28401120");
  EXPECT_EQ(manualRunName("job", "a"), manualRunName("job", "a"));
  EXPECT_NE(manualRunName("job", "a"), manualRunName("job", "b"));
  EXPECT_EQ(manualRunName(std::string(52, 'j'), "x").size(), 62U);
}

TEST(Schedule, RetryBackoffDoublesFromTenSecondsCappedAtTenMinutes) {
  EXPECT_EQ(retryBackoff(1).count(), 10);
  EXPECT_EQ(retryBackoff(2).count(), 20);
  EXPECT_EQ(retryBackoff(3).count(), 40);
  EXPECT_EQ(retryBackoff(7).count(), 600);
  EXPECT_EQ(retryBackoff(100).count(), 600);
}

}  // namespace
}  // namespace tributary::controller
