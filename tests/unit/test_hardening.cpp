// The holes a hostile fault probe found (hardening issue), each as the unit test
// that would have caught it: a stepped wall clock, hostile API answers, a store
// that forgot a submit, an unreadable record, request_ids that are not tokens.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "jobs/scheduler.h"
#include "jobs/segmind.h"
#include "tests/sim/simulator.h"
#include "tests/unit/scheduler_rig.h"

using namespace wb;
using test::FakeTransport;

namespace {

struct Rig : test::SchedulerRig {
  Rig() {
    config.credits.check_interval_seconds = 300;
    config.poll.min_interval_seconds = 2;
    config.poll.max_interval_seconds = 15;
    config.limits.submits_per_minute = 6;  // one each 10 s
    start();
  }

  Shot shot(const std::string& key) {
    auto slash = key.find('/');
    for (auto& s : store->shots(key.substr(0, slash)))
      if (s.spec.id == key.substr(slash + 1)) return s;
    FAIL("no shot " << key);
    return {};
  }

  // Ticks without answering anything.
  void raw_tick(Millis d = Millis(0)) {
    clock.advance(d);
    sched->tick();
  }
  void answer_credits() {
    while (net.has("/v1/get-user-credits")) answer("/v1/get-user-credits", 200, R"({"credits":1000})");
  }
};

std::string shots_yaml(const std::string& batch, int n) {
  std::string y = "batch: " + batch + "\nshots:\n";
  for (int i = 0; i < n; ++i)
    y += "  - {id: s" + std::to_string(i) + ", prompt: p, image: 'https://cdn.example/a.png'}\n";
  return y;
}

}  // namespace

TEST_CASE("a wall clock stepped back two hours stalls no poll, submit or credit check") {
  Rig rig;
  rig.accept(shots_yaml("b", 2));
  rig.raw_tick();
  rig.answer_credits();
  rig.raw_tick();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r0"})");
  REQUIRE(rig.shot("b/s0").state == ShotState::in_flight);
  REQUIRE_FALSE(rig.net.has("/v2/wan2.7-i2v"));  // s1 waits for the next submit token

  rig.clock.step_wall(-std::chrono::hours(2));
  // The poll interval later, the job is polled, whatever the wall clock says.
  rig.raw_tick(Millis(2100));
  CHECK(rig.net.has("/v2/requests/r0/status"));
  rig.answer("/v2/requests/r0/status", 200, R"({"status":"PROCESSING"})");
  // The next submit token comes 10 s after the first, on the monotonic clock.
  rig.raw_tick(Millis(8000));
  CHECK(rig.net.has("/v2/wan2.7-i2v"));
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1"})");
  // Polls go on at their interval.
  rig.raw_tick(Millis(15000));
  CHECK(rig.net.has("/v2/requests/r0/status"));
  // The balance is read again after its interval (300 s).
  CHECK_FALSE(rig.net.has("/v1/get-user-credits"));
  for (int i = 0; i < 20; ++i) {
    while (rig.net.has("/status")) rig.answer("/status", 200, R"({"status":"PROCESSING"})");
    rig.raw_tick(Millis(15000));
  }
  CHECK(rig.net.has("/v1/get-user-credits"));
  CHECK(rig.shot("b/s0").state == ShotState::in_flight);
  CHECK(rig.shot("b/s1").state == ShotState::in_flight);
}

TEST_CASE("a wall clock stepped forward rushes nothing: no poll before its interval") {
  Rig rig;
  rig.accept(shots_yaml("b", 1));
  rig.raw_tick();
  rig.answer_credits();
  rig.raw_tick();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r0"})");
  rig.raw_tick(Millis(2100));
  rig.answer("/v2/requests/r0/status", 200, R"({"status":"QUEUED"})");
  rig.clock.step_wall(std::chrono::hours(5));
  rig.raw_tick(Millis(100));
  CHECK_FALSE(rig.net.has("/status"));
}

TEST_CASE("a 429 reset time far ahead of our wall clock holds submits an hour at most") {
  Rig rig;
  rig.accept(shots_yaml("b", 2));
  rig.raw_tick();
  rig.answer_credits();
  rig.raw_tick();
  auto submit = rig.net.take("/v2/wan2.7-i2v");
  // Our wall clock is two hours behind the provider's (it stepped back).
  FakeTransport::reply(submit, 429, R"({"error":"Rate limit exceeded"})",
                       {{"x-rate-limit-reset-at-utc", iso8601_utc(rig.clock.now + std::chrono::hours(2))}});
  for (int i = 0; i < 60; ++i) {
    rig.raw_tick(Millis(61000));
    rig.answer_credits();
    if (rig.net.has("/v2/wan2.7-i2v")) break;
  }
  CHECK(rig.net.has("/v2/wan2.7-i2v"));
}
