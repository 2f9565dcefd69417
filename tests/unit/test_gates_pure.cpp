// The submit gates as pure functions (jobs/engine/gates.h): each reason, its
// text and when to look again, from a SubmitState and times the test makes.
// test_gates.cpp drives the same gates through the whole scheduler.
#include <doctest/doctest.h>

#include <ctime>
#include <cstdio>
#include <string>

#include "jobs/engine/gates.h"

using namespace wb;

namespace {

// On a whole minute, plus 30 s.
const TimePoint kWall = from_epoch_ms(1'800'000'000'000 + 30'000);
const MonoPoint kMono = MonoPoint(std::chrono::seconds(5000));

TimeWindow window_of(const std::string& text) {
  std::string error;
  auto w = TimeWindow::parse(text, error);
  REQUIRE_MESSAGE(w, error);
  return *w;
}

// "HH:MM" of the local minute `minutes` after the one `t` is in.
std::string local_minute(TimePoint t, int minutes) {
  time_t secs = static_cast<time_t>(to_epoch_ms(t) / 1000);
  struct tm tm {};
  localtime_r(&secs, &tm);
  int m = ((tm.tm_hour * 60 + tm.tm_min + minutes) % 1440 + 1440) % 1440;
  char buf[8];
  std::snprintf(buf, sizeof buf, "%02d:%02d", m / 60, m % 60);
  return buf;
}

// Nothing holds submits back.
SubmitState clear() {
  SubmitState st;
  st.balance_read = true;
  return st;
}

}  // namespace

TEST_CASE("gates: with nothing holding them back, submits go") {
  CHECK_FALSE(common_gate(clear(), TimeWindow(), kWall, kMono));
  // Inside a window, too.
  CHECK_FALSE(common_gate(clear(), window_of(local_minute(kWall, 0) + "-" + local_minute(kWall, 1)), kWall, kMono));
}

TEST_CASE("gates: an operator's pause comes first and waits for a change, not a time") {
  SubmitState st = clear();
  st.paused = true;
  st.blocked_until = kMono + Millis(5000);
  st.balance_read = false;
  auto w = common_gate(st, window_of(local_minute(kWall, 5) + "-" + local_minute(kWall, 6)), kWall, kMono);
  REQUIRE(w);
  CHECK(w->reason == "waiting: submits paused by an operator (wanbatch resume)");
  CHECK(w->until_ms == 0);
}

TEST_CASE("gates: outside the window, look again when it opens, at most a minute ahead") {
  const int64_t now_ms = mono_ms(kMono);
  SUBCASE("opening in 30 s") {
    const std::string text = local_minute(kWall, 1) + "-" + local_minute(kWall, 2);
    auto w = common_gate(clear(), window_of(text), kWall, kMono);
    REQUIRE(w);
    CHECK(w->reason == "waiting: outside the submit window " + text + " (opens " +
                           iso8601_utc(from_epoch_ms(1'800'000'060'000)) + ")");
    CHECK(w->until_ms == now_ms + 30'000);
  }
  SUBCASE("opening in ten minutes") {
    const std::string text = local_minute(kWall, 10) + "-" + local_minute(kWall, 20);
    auto w = common_gate(clear(), window_of(text), kWall, kMono);
    REQUIRE(w);
    CHECK(w->reason == "waiting: outside the submit window " + text + " (opens " +
                           iso8601_utc(from_epoch_ms(1'800'000'600'000)) + ")");
    CHECK(w->until_ms == now_ms + 60'000);
  }
  SUBCASE("the window comes before a block") {
    SubmitState st = clear();
    st.blocked_until = kMono + Millis(5000);
    st.blocked_reason = "rate limited (429)";
    auto w = common_gate(st, window_of(local_minute(kWall, 1) + "-" + local_minute(kWall, 2)), kWall, kMono);
    REQUIRE(w);
    CHECK(w->reason.find("outside the submit window") != std::string::npos);
  }
}

TEST_CASE("gates: a block holds until its monotonic deadline, shown as wall time") {
  SubmitState st = clear();
  st.blocked_until = kMono + Millis(90'000);
  st.blocked_reason = "the API key was refused (401)";
  st.balance_read = false;  // the block comes first
  auto w = common_gate(st, TimeWindow(), kWall, kMono);
  REQUIRE(w);
  CHECK(w->reason == "waiting: the API key was refused (401) (until " + iso8601_utc(kWall + Millis(90'000)) + ")");
  CHECK(w->until_ms == mono_ms(kMono) + 90'000);

  // At the deadline it no longer holds.
  st.balance_read = true;
  CHECK_FALSE(common_gate(st, TimeWindow(), kWall + Millis(90'000), kMono + Millis(90'000)));
}

TEST_CASE("gates: submits wait for the first balance reading, then for a top-up after a 406") {
  SubmitState st;
  auto w = common_gate(st, TimeWindow(), kWall, kMono);
  REQUIRE(w);
  CHECK(w->reason == "waiting: reading the credit balance");
  CHECK(w->until_ms == 0);

  st.balance_read = true;
  st.credits_wait = true;
  w = common_gate(st, TimeWindow(), kWall, kMono);
  REQUIRE(w);
  CHECK(w->reason == "waiting: insufficient credits (balance unknown); submits resume when the balance recovers");
  CHECK(w->until_ms == 0);

  st.balance = 12.5;
  w = common_gate(st, TimeWindow(), kWall, kMono);
  REQUIRE(w);
  CHECK(w->reason == "waiting: insufficient credits (balance 12.50); submits resume when the balance recovers");

  st.credits_wait = false;
  CHECK_FALSE(common_gate(st, TimeWindow(), kWall, kMono));
}

TEST_CASE("gates: the in-flight cap and the provider's queue hold at their limit, not before") {
  CHECK_FALSE(in_flight_gate(7, 8));
  auto w = in_flight_gate(8, 8);
  REQUIRE(w);
  CHECK(w->reason == "waiting: in-flight cap (limits.max_in_flight 8)");
  CHECK(w->until_ms == 0);
  CHECK(in_flight_gate(9, 8));

  CHECK_FALSE(queue_gate(2, 3));
  w = queue_gate(3, 3);
  REQUIRE(w);
  CHECK(w->reason ==
        "waiting: 3 jobs already wait in the provider's queue (more would risk their records expiring unfetched)");
  CHECK(w->until_ms == 0);
  CHECK(queue_gate(0, 0));  // a render too long for a second round: nothing may wait
}
