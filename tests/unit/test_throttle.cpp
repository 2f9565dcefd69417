#include <doctest/doctest.h>

#include <cstdlib>
#include <ctime>
#include <vector>

#include "jobs/throttle.h"

using namespace wb;
using std::chrono::minutes;
using std::chrono::seconds;

namespace {
const MonoPoint kStart = MonoPoint(seconds(1'800'000));

// Sets TZ for one test and restores it.
struct LocalZone {
  std::string old;
  explicit LocalZone(const char* tz) {
    if (const char* o = std::getenv("TZ")) old = o;
    ::setenv("TZ", tz, 1);
    ::tzset();
  }
  ~LocalZone() {
    if (old.empty()) ::unsetenv("TZ");
    else ::setenv("TZ", old.c_str(), 1);
    ::tzset();
  }
};

TimePoint utc(int y, int mo, int d, int h, int mi) {
  struct tm tm {};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  return TimePoint(seconds(timegm(&tm)));
}
}  // namespace

TEST_CASE("a window's worth of submits goes at once, and no span of the window ever holds more") {
  SubmitBucket b(20, 60, kStart);  // the shipped setting: 20 in any 60 s
  int taken = 0;
  for (int i = 0; i < 30; ++i) taken += b.try_take(kStart);
  CHECK(taken == 20);  // a batch of 8 or 20 starts at once, not 3 s apart
  CHECK(b.next_token(kStart) == kStart + seconds(60));
  // Keep asking every 100 ms for ten minutes: every span of 60 s holds at most 20,
  // and the long-run rate is the configured one.
  std::vector<MonoPoint> sent(20, kStart);
  for (int ms = 100; ms <= 600000; ms += 100) {
    MonoPoint t = kStart + Millis(ms);
    while (b.try_take(t)) sent.push_back(t);  // a backlog: as many as it lets out
  }
  for (size_t i = 20; i < sent.size(); ++i) CHECK(sent[i] - sent[i - 20] >= seconds(60));
  CHECK(sent.size() == 20 * 11);  // 0, 60, ..., 600 s
}

TEST_CASE("a window at or under one spacing spaces submits evenly") {
  SubmitBucket b(600, 0.1, kStart);  // ten a second: one each 100 ms
  int taken = 0;
  for (int i = 0; i < 100; ++i) taken += b.try_take(kStart);
  CHECK(taken == 1);
  MonoPoint t = kStart;
  int over_a_minute = 0;
  for (int ms = 10; ms <= 60000; ms += 10) {
    t = kStart + Millis(ms);
    over_a_minute += b.try_take(t);
  }
  CHECK(over_a_minute == 600);
  CHECK(b.next_token(t) > t);
  CHECK(b.next_token(t) <= t + Millis(100));
  SubmitBucket slow(0.5, 60, kStart);  // under one a window: one each two minutes
  CHECK(slow.try_take(kStart));
  CHECK_FALSE(slow.try_take(kStart + seconds(119)));
  CHECK(slow.next_token(kStart + seconds(119)) == kStart + seconds(120));
  CHECK(slow.try_take(kStart + seconds(120)));
}

TEST_CASE("a fractional rate rounds the window's count down, never up") {
  SubmitBucket b(2.5, 60, kStart);
  int taken = 0;
  for (int i = 0; i < 5; ++i) taken += b.try_take(kStart);
  CHECK(taken == 2);
}

TEST_CASE("each 429 takes a tenth off the rate, and quiet time wins it back slowly") {
  SubmitBucket b(60, 60, kStart);
  b.on_rate_limited(kStart);
  CHECK(b.current_per_minute() == doctest::Approx(54));
  b.on_rate_limited(kStart + seconds(1));
  CHECK(b.current_per_minute() == doctest::Approx(48.6));
  b.try_take(kStart + seconds(8));  // within 10 s of the 429: no recovery yet
  CHECK(b.current_per_minute() == doctest::Approx(48.6));
  b.try_take(kStart + seconds(20));
  CHECK(b.current_per_minute() > 48.6);
  CHECK(b.current_per_minute() < 60);
  b.try_take(kStart + minutes(5));
  CHECK(b.current_per_minute() == doctest::Approx(60));
  SubmitBucket slow(1, 60, kStart);
  for (int i = 0; i < 50; ++i) slow.on_rate_limited(kStart);
  CHECK(slow.current_per_minute() == doctest::Approx(1));
}

TEST_CASE("a 429 after a full window lowers what the next window lets out") {
  SubmitBucket b(20, 60, kStart);
  for (int i = 0; i < 20; ++i) REQUIRE(b.try_take(kStart + Millis(i)));
  b.on_rate_limited(kStart + seconds(1));  // 18 a window now
  // Room comes back only when the count in the last 60 s falls under 18: after the
  // third submit of the window leaves it.
  CHECK(b.next_token(kStart + seconds(2)) == kStart + Millis(2) + seconds(60));
}

TEST_CASE("window arithmetic across midnight") {
  LocalZone zone("UTC");
  std::string err;
  auto w = TimeWindow::parse("22:00-07:00", err);
  REQUIRE(w);
  CHECK(w->contains(utc(2026, 11, 24, 23, 30)));
  CHECK(w->contains(utc(2026, 11, 25, 6, 59)));
  CHECK_FALSE(w->contains(utc(2026, 11, 25, 7, 0)));
  CHECK_FALSE(w->contains(utc(2026, 11, 24, 12, 0)));
  CHECK(w->next_open(utc(2026, 11, 24, 12, 0)) == utc(2026, 11, 24, 22, 0));
  auto day = TimeWindow::parse("09:30-17:00", err);
  REQUIRE(day);
  CHECK(day->next_open(utc(2026, 11, 24, 17, 0)) == utc(2026, 11, 25, 9, 30));
  CHECK(TimeWindow::parse("", err)->always());
}

TEST_CASE("window arithmetic across a DST change uses local time") {
  LocalZone zone("Europe/Berlin");
  std::string err;
  auto w = TimeWindow::parse("01:00-03:30", err);
  REQUIRE(w);
  // 2026-03-29: clocks jump from 02:00 to 03:00 local (01:00 UTC). 00:30 UTC is 01:30 CET.
  CHECK(w->contains(utc(2026, 3, 29, 0, 30)));
  // 01:15 UTC is 03:15 CEST: still inside; 01:30 UTC is 03:30 CEST: outside.
  CHECK(w->contains(utc(2026, 3, 29, 1, 15)));
  CHECK_FALSE(w->contains(utc(2026, 3, 29, 1, 30)));
  // Next opening: 01:00 CEST on 30 March = 23:00 UTC on the 29th.
  CHECK(w->next_open(utc(2026, 3, 29, 1, 30)) == utc(2026, 3, 29, 23, 0));
  CHECK(local_day(utc(2026, 3, 29, 22, 30)) == "2026-03-30");
}

TEST_CASE("bad windows are refused with a reason") {
  std::string err;
  CHECK_FALSE(TimeWindow::parse("22-07", err));
  CHECK(err.find("22:00-07:00") != std::string::npos);
  CHECK_FALSE(TimeWindow::parse("25:00-07:00", err));
  CHECK_FALSE(TimeWindow::parse("07:00-07:00", err));
  CHECK_FALSE(TimeWindow::parse("07:00-08:00x", err));
}

TEST_CASE("backoff doubles from the base, is capped, and jitters by a fifth either way") {
  CHECK(backoff_delay(0, 1, 60, 0.5) == Millis(1000));
  CHECK(backoff_delay(3, 1, 60, 0.5) == Millis(8000));
  CHECK(backoff_delay(10, 1, 60, 0.5) == Millis(60000));
  CHECK(backoff_delay(1000, 1, 60, 0.5) == Millis(60000));
  CHECK(backoff_delay(0, 1, 60, 0.0) == Millis(800));
  CHECK(backoff_delay(0, 1, 60, 0.999) >= Millis(1199));
  CHECK(backoff_delay(-5, 1, 60, 0.5) == Millis(1000));
}

TEST_CASE("submits remembered from before a restart fill the window they were made in") {
  SubmitBucket b(20, 60, kStart);
  for (int i = 0; i < 15; ++i) b.remember(kStart - seconds(50), kStart);
  b.remember(kStart - seconds(61), kStart);  // out of the window: forgotten
  b.remember(kStart + seconds(5), kStart);   // "in the future" (a stepped clock): counts as now
  int taken = 0;
  for (int i = 0; i < 10; ++i) taken += b.try_take(kStart);
  CHECK(taken == 4);                                     // 20 - 15 - 1
  CHECK(b.next_token(kStart) == kStart + seconds(10));  // the 50-s-old ones leave first
  CHECK(b.try_take(kStart + seconds(10)));
}
