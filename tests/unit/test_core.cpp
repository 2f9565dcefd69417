// The engine's shared actions (jobs/engine/core.h) with a fake clock and transport.
#include <doctest/doctest.h>

#include "jobs/engine/core.h"
#include "tests/support.h"

using namespace wb;
using test::FakeTransport;

namespace {

struct CoreRig {
  std::string root = test::cwd();
  Config config = test::make_config(root);
  test::FakeClock clock;
  FakeTransport net;
  std::unique_ptr<Store> store = Store::open(root + "/state/db", Store::Mode::read_write);
  Core core{config, *store, net, [this] { return clock.now; }, [this] { return clock.mono; }, "KEY"};

  Shot& followed(const std::string& id) {
    if (!core.book.batch("b")) {
      BatchRecord b;
      b.name = "b";
      core.book.add_batch(b);
    }
    Shot s;
    s.batch = "b";
    s.spec.id = id;
    s.spec.prompt = "p";
    s.spec.image.url = "https://cdn.example/a.png";
    s.state = ShotState::in_flight;
    s.request_id = "r-" + id;
    return core.book.add(s);
  }
};

}  // namespace

TEST_CASE("a shot whose answer handler throws (a full state disk) is queued again, not left busy forever") {
  CoreRig rig;
  Shot& s = rig.followed("s1");
  const int64_t now = rig.core.now_ms();
  rig.core.book.set_due(s, now);
  REQUIRE(rig.core.book.pop_due(now) == &s);
  rig.core.send(s.key(), "status", rig.core.api.make("https://api.example/x"),
                [](const HttpResponse&) { throw Error("No space left on device"); });
  CHECK(rig.core.book.busy("b/s1"));
  auto call = rig.net.take("api.example/x");
  CHECK_THROWS_AS(FakeTransport::reply(call, 200, "{}"), Error);
  CHECK_FALSE(rig.core.book.busy("b/s1"));
  CHECK(rig.core.book.pop_due(now) == rig.core.book.find("b/s1"));  // due again, so it is tried again
}

TEST_CASE("send tells the event stream which endpoint was asked and what it answered") {
  CoreRig rig;
  Shot& s = rig.followed("s1");
  std::vector<Event> seen;
  rig.core.events.subscribe([&](const Event& e) { seen.push_back(e); });
  rig.core.send(s.key(), "result", rig.core.api.make("https://api.example/y"), [](const HttpResponse&) {});
  auto call = rig.net.take("api.example/y");
  FakeTransport::reply(call, 503, "{}");
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].kind == Event::Kind::request_made);
  CHECK(seen[0].endpoint == "result");
  CHECK(seen[0].http_status == 503);
  CHECK(seen[0].key == "b/s1");
}

TEST_CASE("end() takes a shot out of the book, releases its commitment and tells the batch") {
  CoreRig rig;
  Shot& s = rig.followed("s1");
  rig.core.spend.commit("b/s1", "b", 500000);
  std::string ended_batch;
  rig.core.on_shot_ended = [&](const std::string& b) { ended_batch = b; };
  rig.core.end(s, ShotState::held, "why");
  CHECK(rig.core.book.find("b/s1") == nullptr);
  CHECK(rig.core.book.in_slot() == 0);
  CHECK(rig.core.spend.committed() == 0);
  CHECK(ended_batch == "b");
  auto stored = rig.store->shots("b");
  REQUIRE(stored.size() == 1);
  CHECK(stored[0].state == ShotState::held);
  CHECK(stored[0].held_from == ShotState::in_flight);  // retry resumes at the step it stopped
}
