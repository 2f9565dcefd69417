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

TEST_CASE("a shot record leaves default fields out and reads back every field") {
  Shot fresh = shot("b", "a");
  std::string text = shot_to_json(fresh);
  CHECK(text.find("request_id") == std::string::npos);  // a new shot's record is small
  CHECK(text.find("cost") == std::string::npos);
  Shot back = shot_from_json(text);
  CHECK(back.spec.seed == 7);
  CHECK(back.state == ShotState::pending);
  CHECK(back.request_id.empty());
  CHECK_FALSE(back.cost);

  Shot full = fresh;
  full.index = 4;
  full.spec.negative_prompt = "blur";
  full.spec.last_frame.url = "https://cdn.example/l.png";
  full.spec.audio.path = "/m/a.wav";
  full.spec.duration = 8;
  full.spec.resolution = "1080P";
  full.spec.line = 12;
  full.state = ShotState::held;
  full.held_from = ShotState::in_flight;
  full.reason = "why";
  full.image_url = "https://x/i";
  full.last_frame_url = "https://x/l";
  full.audio_url = "https://x/a";
  full.request_id = "r-1";
  full.submit_attempts = 2;
  full.attempts = 3;
  full.submitted_ms = 1700000000000;
  full.completed_ms = 1700000001000;
  full.remote_status = "COMPLETED";
  full.output_url = "https://x/o.mp4";
  full.metrics_json = "{\"a\":1}";
  full.file = "/out/b/a.mp4";
  full.cost = 0.6;
  full.damaged = true;
  Shot r = shot_from_json(shot_to_json(full));
  CHECK(r.index == 4);
  CHECK(r.spec.negative_prompt == "blur");
  CHECK(r.spec.last_frame.url == "https://cdn.example/l.png");
  CHECK(r.spec.audio.path == "/m/a.wav");
  CHECK(r.spec.duration == 8);
  CHECK(r.spec.resolution == "1080P");
  CHECK(r.spec.line == 12);
  CHECK(r.state == ShotState::held);
  CHECK(r.held_from == ShotState::in_flight);
  CHECK(r.reason == "why");
  CHECK(r.image_url == "https://x/i");
  CHECK(r.last_frame_url == "https://x/l");
  CHECK(r.audio_url == "https://x/a");
  CHECK(r.request_id == "r-1");
  CHECK(r.submit_attempts == 2);
  CHECK(r.attempts == 3);
  CHECK(r.submitted_ms == 1700000000000);
  CHECK(r.completed_ms == 1700000001000);
  CHECK(r.remote_status == "COMPLETED");
  CHECK(r.output_url == "https://x/o.mp4");
  CHECK(r.metrics_json == "{\"a\":1}");
  CHECK(r.file == "/out/b/a.mp4");
  CHECK(r.cost == 0.6);
  CHECK(r.damaged);
  // A record written before defaults were left out still reads.
  Shot old = shot_from_json(
      R"({"batch":"b","index":0,"spec":{"id":"a","prompt":"p","negative_prompt":"","image":{"path":"/m/a.png"},)"
      R"("last_frame":null,"audio_url":null,"duration":5,"resolution":"720P","line":0,"seed":null},"state":"PENDING",)"
      R"("reason":"","image_url":"","last_frame_url":"","audio_url":"","request_id":"","submit_attempts":0,"attempts":0,)"
      R"("submitted_ms":0,"completed_ms":0,"remote_status":"","output_url":"","metrics":"","file":"","cost":null})");
  CHECK(old.spec.image.path == "/m/a.png");
  CHECK_FALSE(old.spec.seed);
  CHECK_FALSE(old.cost);
}
