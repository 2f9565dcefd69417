// Stuck jobs (jobs/engine/stuck.h): a job in flight far beyond its render time
// is marked once per take, announced by shot_stuck, and never resubmitted.
#include <doctest/doctest.h>

#include <cmath>

#include "jobs/engine/stuck.h"
#include "tests/unit/scheduler_rig.h"

using namespace wb;

namespace {

const char* kOne = "batch: b\nshots: [{id: s1, prompt: wind, image: 'https://cdn.example/a.png'}]\n";

struct Rig : test::SchedulerRig {
  int stuck_events = 0;
  std::string stuck_reason;
  int64_t submitted_at_ms = 0;

  void begin() {
    start();
    listen();
    accept(kOne);
    tick();
    answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1","status":"QUEUED"})");
    submitted_at_ms = wb::mono_ms(clock.mono);
  }
  void listen() {
    sched->events().subscribe([this](const Event& e) {
      if (e.kind != Event::Kind::shot_stuck) return;
      ++stuck_events;
      stuck_reason = e.reason;
    });
  }
  double in_flight_s() const { return static_cast<double>(wb::mono_ms(clock.mono) - submitted_at_ms) / 1000.0; }
  Shot s1() {
    for (auto& s : store->shots("b"))
      if (s.spec.id == "s1") return s;
    FAIL("no shot s1");
    return {};
  }
  // Answers every status poll PROCESSING until `seconds` in flight have passed.
  void processing_until(double seconds) {
    while (in_flight_s() < seconds) {
      until("/status");
      answer("/status", 200, R"({"status":"PROCESSING"})");
    }
  }
  size_t submits() const {
    size_t n = 0;
    for (const auto& r : net.started) n += r.url.find("/v2/wan2.7-i2v") != std::string::npos;
    return n;
  }
};

}  // namespace

TEST_CASE("the stuck limit is the setting, else twice the 99th percentile of the render time") {
  RenderDist prior = RenderDist::lognormal(138, 0.5);
  CHECK(stuck_limit_seconds(prior, 600) == 600);
  CHECK(stuck_limit_seconds(prior, 0) == doctest::Approx(2 * prior.quantile(0.99)));
  CHECK(stuck_limit_seconds(prior, 0) == doctest::Approx(2 * 138 * std::exp(0.5 * 2.3263)).epsilon(0.02));
  CHECK(stuck_limit_seconds(RenderDist(), 0) == 0);  // nothing known, nothing set: never stuck
}

TEST_CASE("a job in flight past poll.stuck_after_seconds is marked stuck once, and never resubmitted") {
  Rig rig;
  rig.config.poll.stuck_after_seconds = 600;
  rig.begin();
  rig.processing_until(590);
  CHECK(rig.stuck_events == 0);
  CHECK_FALSE(is_stuck(rig.s1()));

  rig.processing_until(620);  // the first poll after 600 s marks it
  CHECK(rig.stuck_events == 1);
  Shot s = rig.s1();
  CHECK(is_stuck(s));
  CHECK(s.stuck_request_id == "r1");
  CHECK(s.state == ShotState::in_flight);
  CHECK(rig.stuck_reason.find("poll.stuck_after_seconds") != std::string::npos);
  CHECK(rig.stuck_reason.find("r1") != std::string::npos);

  // Many more polls: not announced again, and no new submit; still followed.
  rig.processing_until(3600);
  CHECK(rig.stuck_events == 1);
  CHECK(rig.submits() == 1);

  // A restart keeps the mark (stored with the shot): not announced again.
  rig.stuck_events = 0;
  rig.start();
  rig.listen();
  rig.processing_until(5400);
  CHECK(rig.stuck_events == 0);
  CHECK(is_stuck(rig.s1()));
  CHECK(rig.submits() == 1);

  // It completes after all: fetched as any other, no longer stuck.
  rig.until("/status");
  rig.answer("/status", 200, R"({"status":"COMPLETED"})");
  rig.tick();
  CHECK(rig.net.has("/v2/requests/r1"));
  CHECK_FALSE(is_stuck(rig.s1()));
  CHECK(rig.s1().reason.find("stuck") == std::string::npos);
}

TEST_CASE("without the setting, a job is stuck past twice the 99th percentile of its class's render time") {
  Rig rig;  // nothing learned: the prior, lognormal around 138 s for 5 s at 720P
  const double limit = 2 * RenderDist::lognormal(rig.config.poll.prior_render_seconds, 0.5).quantile(0.99);
  rig.begin();
  rig.processing_until(limit - 60);
  CHECK(rig.stuck_events == 0);
  rig.processing_until(limit + 310);  // a poll at most poll.max_interval_seconds after the limit
  CHECK(rig.stuck_events == 1);
  CHECK(rig.stuck_reason.find("99th percentile of 720P/5s") != std::string::npos);
  CHECK(rig.submits() == 1);
}

TEST_CASE("after a restart, a job that ended while the daemon was down is not stuck: only a poll saying it runs can mark it") {
  Rig rig;
  rig.config.poll.stuck_after_seconds = 600;
  rig.begin();
  rig.processing_until(60);
  // Down for two hours, far past the limit; the job completed meanwhile.
  rig.clock.advance(wb::Millis(2 * 3600 * 1000));
  rig.start();
  rig.listen();
  rig.until("/status");  // the first poll since the start is on the wire: nothing is known yet
  CHECK(rig.stuck_events == 0);
  CHECK_FALSE(is_stuck(rig.s1()));
  rig.answer("/status", 200, R"({"status":"COMPLETED"})");
  rig.tick();
  CHECK(rig.stuck_events == 0);
  CHECK_FALSE(is_stuck(rig.s1()));
  CHECK(rig.net.has("/v2/requests/r1"));  // fetched as any other
}

TEST_CASE("after a restart, a job still running past the limit is marked at the first poll that says it runs") {
  Rig rig;
  rig.config.poll.stuck_after_seconds = 600;
  rig.begin();
  rig.processing_until(60);
  rig.clock.advance(wb::Millis(2 * 3600 * 1000));
  rig.start();
  rig.listen();
  rig.until("/status");
  CHECK(rig.stuck_events == 0);
  rig.answer("/status", 200, R"({"status":"PROCESSING"})");
  CHECK(rig.stuck_events == 1);
  CHECK(is_stuck(rig.s1()));
  CHECK(rig.submits() == 1);
}

TEST_CASE("without the setting, time waiting in the provider's queue does not count: the limit is a render time") {
  Rig rig;
  const double limit = 2 * RenderDist::lognormal(rig.config.poll.prior_render_seconds, 0.5).quantile(0.99);
  rig.begin();
  while (rig.in_flight_s() < limit + 100) {  // a long queue
    rig.until("/status");
    rig.answer("/status", 200, R"({"status":"QUEUED"})");
  }
  CHECK(rig.stuck_events == 0);
  const double queued = rig.in_flight_s();
  rig.processing_until(queued + limit - 60);
  CHECK(rig.stuck_events == 0);  // rendering for less than the limit
  rig.processing_until(queued + limit + 310);
  CHECK(rig.stuck_events == 1);
  CHECK(rig.stuck_reason.find("rendering for ") != std::string::npos);
}

TEST_CASE("after a restart, a job last seen QUEUED counts its render from the restart, not its submit") {
  Rig rig;
  const double limit = 2 * RenderDist::lognormal(rig.config.poll.prior_render_seconds, 0.5).quantile(0.99);
  rig.begin();
  while (rig.in_flight_s() < limit + 100) {  // a long queue, then the daemon stops
    rig.until("/status");
    rig.answer("/status", 200, R"({"status":"QUEUED"})");
  }
  rig.start();
  rig.listen();
  const double restarted = rig.in_flight_s();
  rig.processing_until(restarted + limit - 60);
  CHECK(rig.stuck_events == 0);
  rig.processing_until(restarted + limit + 310);
  CHECK(rig.stuck_events == 1);
}
