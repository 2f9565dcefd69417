// A Scheduler over a real RocksDB in the test's folder, a fake clock and a fake
// transport. Tests of the state machine and of the submit gates build on it.
#pragma once

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "jobs/engine/scheduler.h"
#include "tests/support.h"

namespace test {

struct SchedulerRig {
  std::string root = cwd();
  wb::Config config = make_config(root);
  FakeClock clock;
  FakeTransport net;
  std::unique_ptr<wb::Store> store = wb::Store::open(root + "/state/db", wb::Store::Mode::read_write);
  std::unique_ptr<wb::Scheduler> sched;
  std::vector<std::string> finished;  // batches, as on_batch_finished reported them
  double balance = 1000;               // what balance checks answer
  long balance_status = 200;           // and with what HTTP status (not 200: an error body)
  bool threads = false;                // blocking work on worker threads, as in the daemon

  // (Re)starts the scheduler on the same store: a daemon restart.
  void start() {
    sched.reset();
    sched = std::make_unique<wb::Scheduler>(config, *store, net, [this] { return clock.now; },
                                           [this] { return clock.mono; }, "SECRET-KEY", threads);
    sched->on_batch_finished = [this](const wb::BatchRecord& b) { finished.push_back(b.name); };
    sched->load();
  }

  void accept(const std::string& yaml, const std::string& name = "b.yaml") {
    wb::ManifestRules rules;
    rules.input_roots = config.input_roots;
    auto r = wb::parse_manifest(yaml, root + "/media/" + name, rules);
    REQUIRE_MESSAGE(r.manifest, wb::format_problems(name, r.problems));
    REQUIRE(sched->accept(*r.manifest, name, root + "/spool/active/" + name) == wb::Scheduler::Accept::added);
  }

  // Takes the oldest request whose URL contains `part` and answers it.
  void answer(const std::string& part, long status, const std::string& body) {
    auto call = net.take(part);
    FakeTransport::reply(call, status, body);
  }

  // Moves the clock from one due time to the next (as the daemon's loop sleeps)
  // until a request whose URL contains `part` is on the wire; fails the test
  // after `limit` of simulated time. When a poll happens is the policy's
  // business (tests/unit/test_poll_policy.cpp); these tests follow it.
  void until(const std::string& part, wb::Millis limit = wb::Millis(3600 * 1000)) {
    wb::Millis waited(0);
    tick();
    while (!net.has(part)) {
      REQUIRE_MESSAGE(waited < limit, "no request to " << part << " within " << limit.count() << " ms");
      wb::Millis d = std::max(sched->tick(), wb::Millis(1));
      waited += d;
      tick(d);
    }
  }

  // Advances the clock and ticks; answers balance checks with `balance` and
  // ticks again when there were any.
  void tick(wb::Millis d = wb::Millis(0)) {
    clock.advance(d);
    sched->tick();
    if (!net.has("/v1/get-user-credits")) return;
    while (net.has("/v1/get-user-credits"))
      answer("/v1/get-user-credits", balance_status,
             balance_status == 200 ? R"({"credits":)" + std::to_string(balance) + "}" : R"({"error":"unavailable"})");
    sched->tick();
  }
};

}  // namespace test
