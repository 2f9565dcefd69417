#include <doctest/doctest.h>

#include "jobs/store.h"
#include "jobs/util.h"
#include "tests/support.h"

using namespace wb;

namespace {
Shot shot(const std::string& batch, const std::string& id) {
  Shot s;
  s.batch = batch;
  s.spec.id = id;
  s.spec.prompt = "p";
  s.spec.image.path = "/m/" + id + ".png";
  s.spec.seed = 7;
  return s;
}
}  // namespace

TEST_CASE("batches, shots, request index, assets and the ledger round-trip across a reopen") {
  std::string dir = test::cwd() + "/db";
  {
    auto store = Store::open(dir, Store::Mode::read_write);
    BatchRecord b;
    b.name = "b1";
    b.priority = 2;
    b.sha256 = "abc";
    b.shot_count = 2;
    store->add_batch(b, {shot("b1", "s1"), shot("b1", "s2")});
    Shot s = shot("b1", "s2");
    s.state = ShotState::in_flight;
    s.request_id = "req-9";
    s.cost = 0.5;
    store->put_shot_and_ledger(s, {{"event", "accepted"}});
    store->append_ledger({{"event", "other"}});
    store->put_asset("sha1", "https://u/1.png");
  }
  auto store = Store::open(dir, Store::Mode::read_write);
  auto b = store->batch("b1");
  REQUIRE(b);
  CHECK(b->priority == 2);
  auto shots = store->shots("b1");
  REQUIRE(shots.size() == 2);
  CHECK(shots[1].state == ShotState::in_flight);
  CHECK(shots[1].request_id == "req-9");
  CHECK(shots[1].cost == doctest::Approx(0.5));
  CHECK(shots[0].spec.seed == 7);
  CHECK(store->shot_by_request("req-9") == "b1/s2");
  CHECK(store->asset_url("sha1") == "https://u/1.png");
  CHECK_FALSE(store->asset_url("nope"));
  // The ledger keeps its order and its sequence continues after a reopen.
  store->append_ledger({{"event", "third"}});
  auto ledger = store->ledger();
  REQUIRE(ledger.size() == 3);
  CHECK(ledger[0]["event"] == "accepted");
  CHECK(ledger[2]["event"] == "third");
}

TEST_CASE("a read-only open sees the writer's data and refuses a missing store") {
  std::string dir = test::cwd() + "/db";
  auto writer = Store::open(dir, Store::Mode::read_write);
  BatchRecord b;
  b.name = "b";
  writer->add_batch(b, {shot("b", "x")});
  auto reader = Store::open(dir, Store::Mode::read_only);
  CHECK(reader->shots("b").size() == 1);
  CHECK_THROWS_AS(Store::open(test::cwd() + "/missing", Store::Mode::read_only), Error);
}

TEST_CASE("shot keys of one batch do not leak into a batch whose name is a prefix") {
  auto store = Store::open(test::cwd() + "/db", Store::Mode::read_write);
  BatchRecord a, ab;
  a.name = "a";
  ab.name = "a-b";
  store->add_batch(a, {shot("a", "1")});
  store->add_batch(ab, {shot("a-b", "1"), shot("a-b", "2")});
  CHECK(store->shots("a").size() == 1);
  CHECK(store->all_shots().size() == 3);
}

TEST_CASE("every state name round-trips") {
  for (int i = 0; i <= static_cast<int>(ShotState::held); ++i) {
    auto s = static_cast<ShotState>(i);
    CHECK(shot_state_from(to_string(s)) == s);
  }
  CHECK_FALSE(shot_state_from("BOGUS"));
}
