// Findings of the outside attack on revisions, takes, shot chains and adopt
// (issue 10), each pinned by a test: a HELD child released whatever path ends
// its parent DONE; adopt refuses an earlier take's job; cancel keeps a paid take
// that has a next take queued, and counts what an abandoned job costs; status
// shows queued takes; a revision's counts add up.
#include <doctest/doctest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "daemon/status.h"
#include "jobs/revision.h"
#include "jobs/credits.h"
#include "jobs/segmind.h"
#include "jobs/throttle.h"
#include "tests/sim/simulator.h"
#include "tests/unit/scheduler_rig.h"

using namespace wb;
using test::FakeTransport;

namespace {

struct Rig : test::SchedulerRig {
  Rig() { start(); }

  Scheduler::Accept revise(const std::string& yaml, const std::string& name) {
    ManifestRules rules;
    rules.input_roots = config.input_roots;
    auto r = parse_manifest(yaml, root + "/media/" + name, rules);
    REQUIRE_MESSAGE(r.manifest, format_problems(name, r.problems));
    return sched->accept(*r.manifest, name, root + "/spool/active/b__" + name);
  }

  Shot shot(const std::string& id) {
    auto s = store->shot("b", id);
    REQUIRE(s);
    return *s;
  }

  int submits() {
    int n = 0;
    for (const auto& r : net.started) n += r.url.find("/v2/wan2.7-i2v") != std::string::npos;
    return n;
  }

  // Answers the next submit with `request_id`.
  void submit(const std::string& request_id) {
    until("/v2/wan2.7-i2v");
    answer("/v2/wan2.7-i2v", 200, R"({"request_id":")" + request_id + R"("})");
  }

  // Follows the job `request_id` to DONE with the simulator's sample video, costing 0.5.
  void complete(const std::string& request_id) {
    until("/v2/requests/" + request_id + "/status");
    answer("/v2/requests/" + request_id + "/status", 200, R"({"status":"COMPLETED"})");
    tick();
    answer("/v2/requests/" + request_id, 200,
           R"({"status":"COMPLETED","output":{"video":{"url":"https://cdn.example/)" + request_id +
               R"(.mp4"}},"metrics":{"cost":0.5}})");
    tick();
    auto dl = net.take("https://cdn.example/" + request_id + ".mp4");
    FakeTransport::deliver(dl, std::string(sim::sample_mp4()));
    tick();
  }

  // The submit on the wire never answers (an ambiguous submit): the shot is HELD.
  void lose_submit() {
    until("/v2/wan2.7-i2v");
    auto call = net.take("/v2/wan2.7-i2v");
    FakeTransport::fail(call, NetError::unknown_outcome);
  }

  int ledger_events(const std::string& event) {
    int n = 0;
    for (const auto& e : store->ledger()) n += e.value("event", "") == event;
    return n;
  }
};

std::string chain(const std::string& parent_prompt) {
  return "batch: b\nshots:\n  - {id: sh010, prompt: " + parent_prompt +
         ", image: 'https://cdn.example/a.png'}\n"
         "  - {id: sh020, prompt: the boat crosses, image: {shot: sh010, frame: last}}\n"
         "  - {id: sh030, prompt: the boat arrives, image: {shot: sh020, frame: first}}\n";
}

std::string one(const std::string& prompt) {
  return "batch: b\nshots:\n  - {id: s1, prompt: " + prompt + ", image: 'https://cdn.example/a.png'}\n";
}

}  // namespace

TEST_CASE("a chain HELD by its failed parent is released when a revision's new take of the parent ends DONE") {
  Rig rig;
  rig.accept(chain("a boat leaves"));
  rig.submit("r1");
  rig.until("/v2/requests/r1/status");
  rig.answer("/v2/requests/r1/status", 422, R"({"status":"FAILED","error":"Content blocked"})");
  rig.tick();
  rig.tick();
  REQUIRE(rig.shot("sh010").state == ShotState::failed);
  REQUIRE(rig.shot("sh020").state == ShotState::held);
  REQUIRE(rig.shot("sh030").state == ShotState::held);

  // The revision changes the parent only: the held children stay HELD meanwhile.
  REQUIRE(rig.revise(chain("a boat leaves at dawn"), "b2.yaml") == Scheduler::Accept::revised);
  CHECK(rig.shot("sh010").take == 2);
  CHECK(rig.shot("sh020").state == ShotState::held);
  rig.submit("r2");
  rig.complete("r2");
  REQUIRE(rig.shot("sh010").state == ShotState::done);
  REQUIRE(rig.shot("sh010").take == 2);

  // Its DONE released them: they wait for it again, billed only when submitted.
  CHECK(rig.shot("sh020").state == ShotState::pending);
  CHECK(rig.shot("sh030").state == ShotState::pending);
  CHECK(rig.shot("sh030").reason == "waiting for sh020 to finish");
  CHECK(rig.ledger_events("chain_released") == 2);
  CHECK(rig.submits() == 2);
  CHECK(rig.finished.size() == 1);  // the batch ended once (with the failed parent), and is open again
  CHECK_FALSE(rig.store->batch("b")->finished);
}

TEST_CASE("a chain HELD by its parent's ambiguous submit is released when `adopt` brings the parent to DONE") {
  Rig rig;
  rig.accept(chain("a boat leaves"));
  rig.lose_submit();
  rig.tick();
  REQUIRE(rig.shot("sh010").state == ShotState::held);
  REQUIRE(rig.shot("sh020").state == ShotState::held);
  REQUIRE(rig.shot("sh020").reason.rfind("held: its parent sh010 ended HELD", 0) == 0);

  rig.sched->adopt("b/sh010", "found-1");
  rig.complete("found-1");
  REQUIRE(rig.shot("sh010").state == ShotState::done);
  CHECK(rig.shot("sh020").state == ShotState::pending);
  CHECK(rig.shot("sh030").state == ShotState::pending);
  CHECK(rig.submits() == 1);  // the adopted job was never submitted again
}

TEST_CASE("adopt refuses the job of an earlier take of the same shot, changing nothing, and takes the current one's") {
  Rig rig;
  rig.accept(one("wind"));
  rig.submit("r1");
  rig.complete("r1");
  REQUIRE(rig.shot("s1").state == ShotState::done);
  REQUIRE(rig.revise(one("storm"), "b2.yaml") == Scheduler::Accept::revised);
  rig.lose_submit();  // take 2's submit: ambiguous
  REQUIRE(rig.shot("s1").state == ShotState::held);
  REQUIRE(rig.shot("s1").take == 2);
  const size_t ledger_before = rig.store->ledger().size();

  CHECK_THROWS_WITH_AS(rig.sched->adopt("b/s1", "r1"),
                       doctest::Contains("request_id r1 belongs to take 1 of b/s1; the current take is 2"), Error);
  CHECK(rig.shot("s1").state == ShotState::held);
  CHECK(rig.store->ledger().size() == ledger_before);
  // The same id typed in another case is the same job.
  CHECK_THROWS_WITH_AS(rig.sched->adopt("b/s1", "R1"), doctest::Contains("belongs to take 1 of b/s1"), Error);
  CHECK(rig.store->ledger().size() == ledger_before);

  // The job a person found for take 2 is followed.
  auto r = rig.sched->adopt("b/s1", "r2");
  CHECK(r.changed == std::vector<std::string>{"s1"});
  rig.complete("r2");
  CHECK(rig.shot("s1").state == ShotState::done);
  CHECK(rig.shot("s1").take == 2);
  CHECK(rig.shot("s1").request_id == "r2");
}

TEST_CASE("cancel of a shot whose paid take runs with a next take queued cancels the next take and keeps the paid one") {
  Rig rig;
  rig.accept(one("wind"));
  rig.submit("r1");
  REQUIRE(rig.revise(one("storm"), "b2.yaml") == Scheduler::Accept::revised);
  REQUIRE_FALSE(rig.shot("s1").next_take.empty());

  auto r = rig.sched->cancel("b/s1");
  CHECK(r.changed == std::vector<std::string>{"s1"});
  REQUIRE(r.plan.size() == 1);
  CHECK(r.plan[0].find("queued take 2 is cancelled") != std::string::npos);
  // Both parts said, and `wanbatch cancel` exits 3: the shot has not ended, its paid take runs on.
  CHECK(r.kept_paid == std::vector<std::string>{"s1"});
  CHECK_MESSAGE(r.plan[0].find("take 1 on the provider (request_id r1) is paid for and keeps running to its end") !=
                    std::string::npos,
                r.plan[0]);
  CHECK(r.plan[0].find("`wanbatch cancel --abandon b/s1` stops following it") != std::string::npos);
  CHECK(rig.shot("s1").state == ShotState::in_flight);
  CHECK(rig.shot("s1").next_take.empty());
  CHECK(rig.ledger_events("next_take_cancelled") == 1);

  rig.complete("r1");
  rig.tick(Millis(3600 * 1000));
  CHECK(rig.submits() == 1);  // no second submit: the next take was cancelled
  Shot s1 = rig.shot("s1");
  CHECK(s1.state == ShotState::done);
  CHECK(s1.take == 1);
  CHECK(test::exists(rig.root + "/out/b/s1.mp4"));
  REQUIRE(rig.finished == std::vector<std::string>{"b"});
  auto report = nlohmann::json::parse(test::read(rig.root + "/out/b/report.json"));
  CHECK(report["total_cost"] == doctest::Approx(0.5));
  CHECK(report["items"][0]["cost"] == doctest::Approx(0.5));
}

TEST_CASE("a second plain cancel after the queued take was cancelled keeps the paid take running: only --abandon abandons it") {
  Rig rig;
  rig.accept(one("wind"));
  rig.submit("r1");
  REQUIRE(rig.revise(one("storm"), "b2.yaml") == Scheduler::Accept::revised);
  auto first = rig.sched->cancel("b/s1");
  REQUIRE(first.plan.size() == 1);
  REQUIRE(rig.shot("s1").next_take.empty());

  // The same plain cancel again: the paid take is not abandoned, and the answer says how to.
  auto second = rig.sched->cancel("b/s1");
  CHECK(second.changed.empty());
  CHECK(second.kept_paid == std::vector<std::string>{"s1"});
  REQUIRE(second.skipped.size() == 1);
  CHECK_MESSAGE(second.skipped[0].find("take 1 on the provider (request_id r1) is paid for and keeps running to its "
                                       "end") != std::string::npos,
                second.skipped[0]);
  CHECK(second.skipped[0].find("`wanbatch cancel --abandon b/s1`") != std::string::npos);
  CHECK(rig.shot("s1").state == ShotState::in_flight);
  CHECK(rig.ledger_events("operator_cancel") == 0);
  // The batch as a whole too: a plain cancel of it leaves the paid take.
  auto batch = rig.sched->cancel("b");
  CHECK(batch.kept_paid == std::vector<std::string>{"s1"});
  CHECK(rig.shot("s1").state == ShotState::in_flight);

  rig.complete("r1");
  rig.tick(Millis(3600 * 1000));
  CHECK(rig.shot("s1").state == ShotState::done);  // its paid video kept
  CHECK(test::exists(rig.root + "/out/b/s1.mp4"));
  CHECK(rig.submits() == 1);
}

TEST_CASE("a plain cancel of a paid take with nothing queued keeps it running, --abandon abandons it") {
  Rig rig;
  rig.accept(one("wind"));
  rig.submit("r1");
  auto r = rig.sched->cancel("b/s1");
  CHECK(r.changed.empty());
  CHECK(r.kept_paid == std::vector<std::string>{"s1"});
  CHECK(rig.shot("s1").state == ShotState::in_flight);
  r = rig.sched->cancel("b/s1", true);
  CHECK(r.changed == std::vector<std::string>{"s1"});
  CHECK(r.kept_paid.empty());
  CHECK(rig.shot("s1").state == ShotState::cancelled);
  CHECK(rig.ledger_events("operator_cancel") == 1);
}

TEST_CASE("cancel --abandon of a paid take counts its estimated cost in report.json and the ledger") {
  Rig rig;
  rig.accept(one("wind"));
  rig.submit("r1");
  REQUIRE(rig.revise(one("storm"), "b2.yaml") == Scheduler::Accept::revised);

  auto r = rig.sched->cancel("b/s1", true);
  CHECK(r.changed == std::vector<std::string>{"s1"});
  CHECK(rig.shot("s1").state == ShotState::cancelled);
  rig.tick(Millis(3600 * 1000));
  CHECK(rig.submits() == 1);
  REQUIRE(rig.finished == std::vector<std::string>{"b"});
  nlohmann::json cancel_line;
  for (const auto& e : rig.store->ledger())
    if (e.value("event", "") == "operator_cancel") cancel_line = e;
  REQUIRE(cancel_line.is_object());
  CHECK(cancel_line["request_id"] == "r1");
  const double estimate = cancel_line["cost_estimate"].get<double>();
  CHECK(estimate > 0);
  auto report = nlohmann::json::parse(test::read(rig.root + "/out/b/report.json"));
  CHECK(report["total_cost"] == doctest::Approx(estimate));
  CHECK(rig.store->spent_on(local_day(rig.clock.now)) == to_micro(estimate));  // the day's spend counts it too
}

TEST_CASE("status shows a next take queued behind the take on the provider, in text and JSON") {
  BatchRecord b;
  b.name = "b";
  b.created_ms = 1'800'000'000'000 - 60'000;
  Shot s;
  s.batch = "b";
  s.spec.id = "s1";
  s.spec.duration = 5;
  s.spec.resolution = "720P";
  s.state = ShotState::in_flight;
  s.request_id = "r1";
  s.submitted_ms = b.created_ms;
  s.next_take = next_take_json(s.spec, {}, {"prompt"});
  Shot other = s;
  other.spec.id = "s2";
  other.next_take.clear();
  StatusSnapshot snap;
  snap.daemon_running = true;
  snap.now_ms = 1'800'000'000'000;
  snap.batches.push_back({b, {s, other}});
  StatusView v = summarize(snap, PricingConfig{}, 138);
  REQUIRE(v.batches.size() == 1);
  CHECK(v.batches[0].takes_queued == 1);
  CHECK(overview_text(v, {}).find(", 1 take queued") != std::string::npos);
  auto rows = shot_rows(b, {s, other}, snap.now_ms);
  CHECK(batch_text(v, v.batches[0], rows, {}).find("(take 2 queued behind take 1 in flight)") != std::string::npos);
  CHECK(batch_json(v.batches[0])["takes_queued"] == 1);
  auto json_rows = shot_rows_json(rows);
  CHECK(json_rows[0]["take_queued"] == 2);
  CHECK(json_rows[1]["take_queued"].is_null());
}

TEST_CASE("a revision's counts put every shot in one count: new, changed, not DONE, after its take, updated, kept, removed") {
  auto stored_shot = [](const std::string& id, ShotState state, const std::string& prompt) {
    Shot s;
    s.batch = "b";
    s.spec.id = id;
    s.spec.prompt = prompt;
    s.spec.image.url = "https://cdn.example/a.png";
    s.state = state;
    s.inputs = fingerprint_inputs(s.spec);
    if (state != ShotState::pending) s.request_id = "r-" + id;
    return s;
  };
  std::vector<Shot> stored = {stored_shot("kept", ShotState::done, "p"),   stored_shot("changed", ShotState::done, "p"),
                              stored_shot("failed", ShotState::failed, "p"), stored_shot("running", ShotState::in_flight, "p"),
                              stored_shot("waiting", ShotState::pending, "p"), stored_shot("gone", ShotState::done, "p")};
  ManifestRules rules;
  auto r = parse_manifest(
      "batch: b\nshots:\n"
      "  - {id: kept, prompt: p, image: 'https://cdn.example/a.png'}\n"
      "  - {id: changed, prompt: q, image: 'https://cdn.example/a.png'}\n"
      "  - {id: failed, prompt: p, image: 'https://cdn.example/a.png'}\n"
      "  - {id: running, prompt: q, image: 'https://cdn.example/a.png'}\n"
      "  - {id: waiting, prompt: q, image: 'https://cdn.example/a.png'}\n"
      "  - {id: fresh, prompt: p, image: 'https://cdn.example/a.png'}\n",
      test::cwd() + "/b.yaml", rules);
  REQUIRE_MESSAGE(r.manifest, format_problems("b.yaml", r.problems));
  std::map<std::string, Inputs> inputs;
  for (const auto& spec : r.manifest->shots) inputs[spec.id] = fingerprint_inputs(spec);
  RevisionCounts c = count_plan(plan_revision(stored, *r.manifest, inputs));
  CHECK(c.new_shots == 1);
  CHECK(c.changed == 1);
  CHECK(c.not_done == 1);
  CHECK(c.after_running == 1);
  CHECK(c.updated == 1);
  CHECK(c.kept == 1);
  CHECK(c.removed == 1);
  CHECK(c.renders() == 4);
  CHECK(counts_text(c) ==
        "3 shots render (1 new, 1 changed, 1 last take not DONE), 1 after its take on the provider, "
        "1 not yet submitted takes the new spec, 1 kept, 1 removed");
}

TEST_CASE("the same manifest dropped again does not bring back a queued take an operator cancelled") {
  Rig rig;
  rig.accept(one("wind"));
  rig.submit("r1");
  REQUIRE(rig.revise(one("storm"), "b2.yaml") == Scheduler::Accept::revised);
  rig.sched->cancel("b/s1");  // cancels the queued take 2 (storm); take 1 (wind) runs on
  rig.complete("r1");
  rig.tick(Millis(3600 * 1000));
  REQUIRE(rig.shot("s1").state == ShotState::done);
  REQUIRE(rig.shot("s1").take == 1);

  // b2.yaml's bytes again (as a file of another name): nothing renders, take 1 stays.
  CHECK(rig.revise(one("storm"), "b2-again.yaml") == Scheduler::Accept::already_added);
  rig.tick(Millis(3600 * 1000));
  CHECK(rig.submits() == 1);
  CHECK(rig.shot("s1").take == 1);
  // Another manifest that asks for storm renders it: the cancel holds only for the same bytes.
  CHECK(rig.revise(one("storm") + "# reviewed again\n", "b3.yaml") == Scheduler::Accept::revised);
  rig.tick(Millis(1000));
  CHECK(rig.shot("s1").take == 2);
}
