// Submit gates with a fake clock and transport: budgets, credits, the window,
// the rate bucket and the operator pause, each with the reason a shot shows.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>

#include "jobs/engine/scheduler.h"
#include "jobs/engine/spend.h"
#include "tests/unit/scheduler_rig.h"

using namespace wb;
using test::FakeTransport;

namespace {

struct Rig : test::SchedulerRig {
  int request_seq = 0;

  // Ticks; answers balance checks; accepts every submit. Returns submits accepted.
  int step(Millis d = Millis(0)) {
    tick(d);
    int accepted = 0;
    while (net.has("/v2/wan2.7-i2v")) {
      auto c = net.take("/v2/wan2.7-i2v");
      FakeTransport::reply(c, 200, R"({"request_id":"r)" + std::to_string(++request_seq) + R"("})");
      ++accepted;
    }
    return accepted;
  }
  // Completes every job that is polled or fetched, at `cost` each.
  void finish_all(double cost) { finish_all_json(std::to_string(cost)); }
  // The same with the result's metrics.cost as this JSON text.
  void finish_all_json(const std::string& cost) {
    for (int round = 0; round < 4; ++round) {
      step(Millis(1000));
      while (net.has("/status")) {
        auto c = net.take("/status");
        FakeTransport::reply(c, 200, R"({"status":"COMPLETED"})");
      }
      step();
      for (auto it = net.calls.begin(); it != net.calls.end();) {
        if (it->request.url.find("/v2/requests/") != std::string::npos) {
          auto c = std::move(*it);
          it = net.calls.erase(it);
          FakeTransport::reply(c, 200, R"({"status":"COMPLETED","output":"https://cdn/x.mp4","metrics":{"cost":)" +
                                           cost + "}}");
        } else {
          ++it;
        }
      }
      step();
      while (net.has("cdn/x.mp4")) {
        auto c = net.take("cdn/x.mp4");
        FakeTransport::reply(c, 404, "gone");  // the download is not what these tests are about
      }
    }
  }
  std::string reason(const std::string& id) {
    for (auto& s : store->shots("b"))
      if (s.spec.id == id) return s.reason;
    return "?";
  }
  int count(ShotState st) {
    int n = 0;
    for (auto& s : store->shots("b")) n += s.state == st;
    return n;
  }
};

std::string shots(int n, const std::string& extra = "") {
  std::string t = extra + "batch: b\nshots:\n";
  for (int i = 0; i < n; ++i)
    t += "  - {id: s" + std::to_string(i) + ", prompt: p, image: 'https://x/a.png', duration: 5}\n";
  return t;
}

}  // namespace

TEST_CASE("the cost model starts from the price table and learns from observed costs") {
  PricingConfig p;
  CostModel m(p);
  ShotSpec s;
  s.duration = 10;
  CHECK(from_micro(m.estimate(s)) == doctest::Approx(1.0));
  s.resolution = "1080P";
  CHECK(from_micro(m.estimate(s)) == doctest::Approx(1.5));
  m.observe(s, 3.0);  // 0.3 per second observed
  CHECK(from_micro(m.estimate(s)) == doctest::Approx(3.0));
  s.resolution = "720P";
  CHECK(from_micro(m.estimate(s)) == doctest::Approx(1.0));
}

TEST_CASE("a batch budget stops the batch exactly at its cap") {
  Rig rig;
  rig.start();
  rig.accept(shots(10, "budget_credits: 2.0\n"));  // 0.5 each by the table: four fit
  CHECK(rig.step() == 4);
  CHECK(rig.step(Millis(60000)) == 0);
  CHECK(rig.reason("s4").find("batch budget 2.00 would be exceeded") != std::string::npos);
  rig.finish_all(0.5);
  CHECK(rig.step(Millis(60000)) == 0);  // spent 2.0 of 2.0: nothing more, ever
  CHECK(rig.count(ShotState::pending) == 6);
}

TEST_CASE("a result that names no readable cost counts its estimate as spent: budgets hold") {
  // Found by an outside attack: a DONE shot with no cost counted 0, so a batch budget
  // of 1 let 6 shots of 0.5 through.
  const std::string top = test::cwd();
  int run = 0;
  for (std::string cost : {"null", "\"abc\"", "-1", "1e999"}) {
    CAPTURE(cost);
    const std::string dir = top + "/run" + std::to_string(run++);  // a state of its own each
    test::mkdirs(dir);
    REQUIRE(::chdir(dir.c_str()) == 0);
    Rig rig;
    rig.start();
    rig.accept(shots(10, "budget_credits: 2.0\n"));
    CHECK(rig.step() == 4);
    rig.finish_all_json(cost);
    CHECK(rig.step(Millis(60000)) == 0);  // 4 x the 0.5 estimate spent of 2.0: nothing more
    int costed = 0;
    for (auto& s : rig.store->shots("b"))
      if (s.state != ShotState::pending) costed += s.cost == 0.5;
    CHECK(costed == 4);
    int unknown = 0;
    for (const auto& e : rig.store->ledger()) unknown += e.value("event", "") == "cost_unknown";
    CHECK(unknown == 4);
    REQUIRE(::chdir(top.c_str()) == 0);
  }
}

TEST_CASE("observed costs below the estimate let the budget go further") {
  Rig rig;
  rig.config.limits.max_in_flight = 100;
  rig.start();
  rig.accept(shots(10, "budget_credits: 2.0\n"));
  CHECK(rig.step() == 4);
  rig.finish_all(0.25);  // half the table price: 1.0 spent, 0.25 each from then on
  rig.step(Millis(1000));
  CHECK(rig.count(ShotState::pending) == 2);  // 1.0 spent + 4 x 0.25 = the 2.0 budget
  CHECK(rig.reason("s8").find("batch budget") != std::string::npos);
}

TEST_CASE("the daily budget holds across batches") {
  Rig rig;
  rig.config.limits.daily_budget_credits = 1.5;
  rig.start();
  rig.accept(shots(5));
  CHECK(rig.step() == 3);
  CHECK(rig.reason("s3").find("daily budget 1.50") != std::string::npos);
}

TEST_CASE("credits: the balance less reservations and the reserve must cover the next shot") {
  Rig rig;
  rig.balance = 1.2;
  rig.config.limits.credit_reserve = 0.1;
  rig.start();
  rig.accept(shots(5));
  CHECK(rig.step() == 2);   // 1.2 - 0.1 reserve covers two shots of 0.5
  CHECK(rig.reason("s2").find("waiting: credits") == 0);
}

TEST_CASE("a failed first balance read holds submits while a credit reserve needs a balance, and is read again soon") {
  Rig rig;
  rig.config.limits.credit_reserve = 0.1;
  rig.config.retry.base_delay_seconds = 1;
  rig.config.credits.check_interval_seconds = 300;
  rig.balance_status = 503;
  rig.start();
  rig.accept(shots(3));
  CHECK(rig.step() == 0);  // the reserve cannot be kept with no balance known
  CHECK(rig.reason("s0").find("waiting: reading the credit balance (the last read failed") == 0);
  CHECK(rig.reason("s0").find("limits.credit_reserve") != std::string::npos);
  CHECK_MESSAGE(rig.reason("s0").find("read again in 1.0 s") != std::string::npos, rig.reason("s0"));  // not 3999999 s
  auto reads = [&] {
    return std::count_if(rig.net.started.begin(), rig.net.started.end(),
                         [](const HttpRequest& r) { return r.url.find("/v1/get-user-credits") != std::string::npos; });
  };
  CHECK(reads() == 1);
  CHECK(rig.step(Millis(1100)) == 0);  // read again after retry.base_delay_seconds: failed again
  CHECK(reads() == 2);
  rig.balance_status = 200;
  rig.balance = 1.2;
  CHECK(rig.step(Millis(1100)) == 0);  // backing off: 2 s after the second failure
  CHECK(reads() == 2);
  CHECK(rig.step(Millis(1000)) == 2);  // then read, well before the 300 s interval: 1.2 - 0.1 covers two
  CHECK(reads() == 3);
  CHECK(rig.reason("s2").find("waiting: credits") == 0);
}

TEST_CASE("a credit reserve set while no balance is known holds the next submits") {
  // Found by an outside attack: a reserve set by SIGHUP after a failed first read was
  // not kept (the failed read had already let submits go).
  Rig rig;
  rig.config.credits.check_interval_seconds = 300;
  rig.balance_status = 503;
  rig.start();
  rig.accept(shots(3));
  CHECK(rig.step() == 3);
  rig.accept("batch: c\nshots:\n  - {id: t0, prompt: p, image: 'https://x/a.png', duration: 5}\n", "c.yaml");
  rig.config.limits.credit_reserve = 0.1;  // as a SIGHUP applies it
  CHECK(rig.step(Millis(100)) == 0);
  CHECK(rig.store->meta("submit_wait").value_or("").find("waiting: reading the credit balance (the last read failed") == 0);
  rig.balance_status = 200;
  CHECK(rig.step(Millis(60000)) == 1);  // read again, the reserve kept: the shot goes
}

TEST_CASE("with no credit reserve, a failed first balance read lets submits go") {
  Rig rig;
  rig.balance_status = 503;
  rig.start();
  rig.accept(shots(3));
  CHECK(rig.step() == 3);  // the provider's 406 is the guard then
}

TEST_CASE("406 Insufficient credits pauses submits until a balance check shows a top-up") {
  Rig rig;
  rig.start();
  rig.accept(shots(3));
  rig.tick();  // the balance is read, then every shot is submitted
  for (int i = 0; i < 3; ++i) {
    auto c = rig.net.take("/v2/wan2.7-i2v");
    FakeTransport::reply(c, 406, R"({"error":"Insufficient credits"})");
  }
  rig.net.calls.clear();
  rig.balance = 0.2;
  CHECK(rig.step(Millis(31000)) == 0);
  CHECK(rig.reason("s0").find("insufficient credits") != std::string::npos);
  CHECK(rig.count(ShotState::pending) == 3);  // nobody failed
  rig.balance = 100;
  CHECK(rig.step(Millis(31000)) == 3);  // the next check sees the top-up
}

TEST_CASE("outside the window nothing is submitted, and jobs in flight are still followed") {
  ::setenv("TZ", "UTC", 1);
  ::tzset();
  Rig rig;
  rig.config.window = "22:00-07:00";
  rig.clock.now = TimePoint(std::chrono::seconds(1'800'000'000));  // 2027-01-15 08:00 UTC
  rig.start();
  rig.accept(shots(2));
  CHECK(rig.step() == 0);
  CHECK(rig.reason("s0").find("outside the submit window 22:00-07:00 (opens 2027-01-15T22:00:00.000Z)") !=
        std::string::npos);
  CHECK(rig.step(std::chrono::hours(14)) == 2);
  rig.clock.advance(std::chrono::hours(10));  // 08:00 next day: closed again
  rig.sched->tick();
  CHECK(rig.net.has("/status"));
  ::unsetenv("TZ");
  ::tzset();
}

TEST_CASE("the submit rate is held to limits.submits_per_minute") {
  Rig rig;
  rig.config.limits.submits_per_minute = 12;  // 12 in any 60 s (the shipped window)
  rig.config.limits.max_in_flight = 100;
  rig.start();
  rig.accept(shots(20));
  int total = rig.step();
  CHECK(total == 12);  // a window's worth at once
  CHECK(rig.reason("s12").find("submit rate") != std::string::npos);
  for (int s = 0; s < 59; ++s) total += rig.step(Millis(1000));
  CHECK(total == 12);  // none more within the window
  total += rig.step(Millis(1000));
  CHECK(total == 20);
}

TEST_CASE("a window of one spacing spreads submits evenly") {
  Rig rig;
  rig.config.limits.submits_per_minute = 12;  // one each 5 s
  rig.config.limits.submit_window_seconds = 5;
  rig.config.limits.max_in_flight = 100;
  rig.start();
  rig.accept(shots(20));
  int total = rig.step();
  CHECK(total == 1);
  CHECK(rig.reason("s1").find("submit rate") != std::string::npos);
  for (int s = 0; s < 60; ++s) total += rig.step(Millis(1000));
  CHECK(total == 13);
}

TEST_CASE("a submit held by the rate takes nothing of the request budget") {
  Rig rig;
  rig.config.limits.submits_per_minute = 1;
  rig.config.limits.requests_per_minute = 30;  // one each 2 s, five at most
  rig.config.limits.max_in_flight = 100;
  rig.start();
  rig.accept(shots(2));
  CHECK(rig.step() == 1);
  // s1 waits on the rate for a minute; every tick in it asks. Were a budget request
  // taken for each ask, the budget would be spent by then and s1 would wait for it.
  for (int s = 0; s < 59; ++s) rig.step(Millis(1000));
  CHECK(rig.reason("s1").find("submit rate") != std::string::npos);
  CHECK(rig.step(Millis(1000)) == 1);
}

TEST_CASE("an operator pause holds submits across a restart until resumed") {
  Rig rig;
  rig.start();
  rig.sched->set_paused(true);
  rig.accept(shots(2));
  CHECK(rig.step() == 0);
  CHECK(rig.reason("s0").find("paused by an operator") != std::string::npos);
  rig.start();  // restart
  CHECK(rig.step() == 0);
  rig.sched->set_paused(false);
  CHECK(rig.step() == 2);
}

TEST_CASE("401 pauses every submit for a minute, loudly, without touching the shots") {
  Rig rig;
  rig.start();
  rig.accept(shots(2));
  rig.tick();  // the balance is read, then every shot is submitted
  auto a = rig.net.take("/v2/wan2.7-i2v");
  auto b = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::reply(a, 401, R"({"error":"Invalid API key"})");
  FakeTransport::reply(b, 401, R"({"error":"Invalid API key"})");
  CHECK(rig.step(Millis(30000)) == 0);
  CHECK(rig.reason("s0").find("the API key was refused (HTTP 401: Invalid API key)") != std::string::npos);
  CHECK(rig.count(ShotState::pending) == 2);
  CHECK(rig.step(Millis(31000)) == 2);
  for (auto& s : rig.store->shots("b")) CHECK(s.submit_attempts == 1);
}

TEST_CASE("a restart remembers the submits of the rate window (no second window's worth at once)") {
  Rig rig;
  rig.config.limits.submits_per_minute = 12;  // 12 in any 60 s
  rig.config.limits.max_in_flight = 100;
  rig.start();
  rig.accept(shots(20));
  int total = rig.step();
  CHECK(total == 12);
  rig.step(Millis(10000));
  rig.start();  // 10 s after the 12 submits: the provider's window still holds them
  for (int s = 0; s < 49; ++s) total += rig.step(Millis(1000));
  CHECK(total == 12);
  CHECK_MESSAGE(rig.reason("s12").find("submit rate") != std::string::npos, rig.reason("s12"));
  total += rig.step(Millis(1000));  // 60 s after the first submits
  CHECK(total == 20);
}

TEST_CASE("a wall clock stepped back over a restart counts earlier submits as just made") {
  Rig rig;
  rig.config.limits.submits_per_minute = 12;
  rig.config.limits.max_in_flight = 100;
  rig.start();
  rig.accept(shots(20));
  CHECK(rig.step() == 12);
  rig.clock.now -= std::chrono::hours(1);  // the submits now seem to lie in the future
  rig.start();
  int total = 0;
  for (int s = 0; s < 59; ++s) total += rig.step(Millis(1000));
  CHECK(total == 0);
  total += rig.step(Millis(1000));
  CHECK(total == 8);
}

TEST_CASE("a restart remembers the window's submits of shots that have finished since") {
  Rig rig;
  rig.config.limits.submits_per_minute = 12;
  rig.config.limits.max_in_flight = 100;
  rig.start();
  rig.accept(shots(20));
  int total = rig.step();
  CHECK(total == 12);
  rig.finish_all(0.5);  // all 12 done within a few seconds
  rig.start();          // restart: no shot of the window is unfinished now
  const MonoPoint restarted = rig.clock.mono;
  while (rig.clock.mono < restarted + std::chrono::seconds(50)) total += rig.step(Millis(1000));
  CHECK(total == 12);
  while (rig.clock.mono < restarted + std::chrono::seconds(70)) total += rig.step(Millis(1000));
  CHECK(total == 20);
}

TEST_CASE("a balance read before the scheduler started (a rehearsal's, from the daemon): no read at the start, the next when it is due") {
  test::SchedulerRig rig;
  rig.start();
  rig.sched->set_balance_read(500, Millis(5000));
  rig.sched->tick();
  CHECK_FALSE(rig.net.has("/v1/get-user-credits"));
  REQUIRE(rig.sched->balance());
  CHECK(*rig.sched->balance() == 500);
  CHECK(rig.sched->next_balance_read_in() == Millis(5000));
  rig.clock.advance(Millis(4999));
  rig.sched->tick();
  CHECK_FALSE(rig.net.has("/v1/get-user-credits"));
  rig.clock.advance(Millis(1));
  rig.sched->tick();
  CHECK(rig.net.has("/v1/get-user-credits"));
  CHECK(rig.sched->next_balance_read_in() == Millis(0));  // on the wire
}
