// Revisions through the whole engine (jobs/engine/revisions.h) on a fake
// clock and transport: only changed shots submit again, takes are kept beside
// the newest, a take on the provider finishes before its next one starts.
#include <doctest/doctest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include <sstream>

#include "daemon/commands.h"
#include "jobs/engine/scheduler.h"
#include "jobs/takes.h"
#include "tests/sim/simulator.h"
#include "tests/unit/scheduler_rig.h"

using namespace wb;
using test::FakeTransport;

namespace {

struct Rig : test::SchedulerRig {
  Rig() { start(); }

  Scheduler::Accept revise(const std::string& yaml, const std::string& name = "b.yaml") {
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

  // Answers the next submit with `request_id`; returns its prompt.
  std::string submit(const std::string& request_id) {
    until("/v2/wan2.7-i2v");
    auto call = net.take("/v2/wan2.7-i2v");
    std::string prompt = nlohmann::json::parse(call.request.body)["prompt"];
    FakeTransport::reply(call, 200, R"({"request_id":")" + request_id + R"("})");
    return prompt;
  }

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

  int submits_waiting() { return net.has("/v2/wan2.7-i2v") ? 1 : 0; }
};

std::string two(const std::string& p1, const std::string& p2) {
  return "batch: b\nshots:\n  - {id: s1, prompt: " + p1 + ", image: 'https://cdn.example/a.png'}\n  - {id: s2, prompt: " +
         p2 + ", image: 'https://cdn.example/a.png'}\n";
}

}  // namespace

TEST_CASE("a revision renders only the changed shot, and the earlier take stays as <shot>.take1.mp4") {
  Rig rig;
  rig.accept(two("wind", "rain"));
  CHECK(rig.submit("r1") == "wind");  // submit order follows the manifest
  CHECK(rig.submit("r2") == "rain");
  rig.complete("r1");
  rig.complete("r2");
  REQUIRE(rig.store->batch("b")->finished);
  const std::string s1_take1_sidecar = test::read(rig.root + "/out/b/s1.json");

  CHECK(rig.revise(two("storm", "rain"), "b2.yaml") == Scheduler::Accept::revised);
  CHECK(rig.store->batch("b")->revision == 2);
  CHECK_FALSE(rig.store->batch("b")->finished);
  CHECK(rig.submit("r3") == "storm");
  rig.complete("r3");
  rig.tick(Millis(3600 * 1000));
  CHECK_FALSE(rig.net.has("/v2/wan2.7-i2v"));  // s2 unchanged: never submitted again

  Shot s1 = rig.shot("s1");
  CHECK(s1.state == ShotState::done);
  CHECK(s1.take == 2);
  CHECK(s1.file_take == 2);
  CHECK(s1.changes == std::vector<std::string>{"prompt"});
  CHECK(s1.earlier_cost_micro == 500000);
  CHECK(rig.shot("s2").take == 1);
  auto files = test::list(rig.root + "/out/b");
  for (const char* f : {"s1.mp4", "s1.json", "s1.take1.mp4", "s1.take1.json", "s2.mp4", "s2.json"})
    CHECK_MESSAGE(std::count(files.begin(), files.end(), f) == 1, f);
  CHECK(test::read(rig.root + "/out/b/s1.take1.json") == s1_take1_sidecar);
  CHECK(nlohmann::json::parse(test::read(rig.root + "/out/b/s1.json"))["request_id"] == "r3");
  CHECK(nlohmann::json::parse(test::read(rig.root + "/out/b/s1.json"))["take"] == 2);
  auto report = nlohmann::json::parse(test::read(rig.root + "/out/b/report.json"));
  CHECK(report["revision"] == 2);
  CHECK(report["items"][0]["take"] == 2);
  CHECK(report["items"][0]["changes"] == nlohmann::json::array({"prompt"}));
  CHECK(report["items"][1]["take"] == 1);
  CHECK(report["total_cost"] == doctest::Approx(1.5));  // three takes billed, each counted once
}

TEST_CASE("the same manifest again changes nothing, and other bytes with the same inputs are a no-op revision") {
  Rig rig;
  rig.accept(two("wind", "rain"));
  CHECK(rig.revise(two("wind", "rain")) == Scheduler::Accept::already_added);
  CHECK(rig.revise(two("wind", "rain") + "# a comment\n", "b2.yaml") == Scheduler::Accept::unchanged);
  CHECK(rig.store->batch("b")->revision == 1);
}

TEST_CASE("a shot not yet submitted takes the revision's spec and is billed once") {
  Rig rig;
  rig.sched->set_paused(true);
  rig.accept(two("wind", "rain"));
  rig.tick();
  CHECK(rig.revise(two("storm", "rain"), "b2.yaml") == Scheduler::Accept::revised);
  CHECK(rig.shot("s1").take == 1);
  rig.sched->set_paused(false);
  std::vector<std::string> prompts = {rig.submit("r1"), rig.submit("r2")};
  std::sort(prompts.begin(), prompts.end());
  CHECK(prompts == std::vector<std::string>{"rain", "storm"});
  rig.tick(Millis(10000));
  CHECK_FALSE(rig.net.has("/v2/wan2.7-i2v"));
}

TEST_CASE("a shot on the provider when its revision arrives finishes, then renders its next take") {
  Rig rig;
  rig.accept("batch: b\nshots:\n  - {id: s1, prompt: wind, image: 'https://cdn.example/a.png'}\n");
  rig.submit("r1");
  CHECK(rig.revise("batch: b\nshots:\n  - {id: s1, prompt: storm, image: 'https://cdn.example/a.png'}\n",
                   "b2.yaml") == Scheduler::Accept::revised);
  CHECK(rig.shot("s1").state == ShotState::in_flight);  // never cancelled: it is billed
  CHECK_FALSE(rig.shot("s1").next_take.empty());
  rig.tick();
  CHECK_FALSE(rig.net.has("/v2/wan2.7-i2v"));
  rig.complete("r1");
  // Take 1 DONE, take 2 PENDING with the new prompt: the batch is not finished.
  CHECK(rig.shot("s1").take == 2);
  CHECK(rig.finished.empty());
  CHECK(rig.submit("r2") == "storm");
  rig.complete("r2");
  Shot s1 = rig.shot("s1");
  CHECK(s1.state == ShotState::done);
  CHECK(s1.take == 2);
  CHECK(s1.next_take.empty());
  CHECK(test::exists(rig.root + "/out/b/s1.take1.mp4"));
  CHECK(rig.finished == std::vector<std::string>{"b"});
}

TEST_CASE("a queued next take survives a restart") {
  Rig rig;
  rig.accept("batch: b\nshots:\n  - {id: s1, prompt: wind, image: 'https://cdn.example/a.png'}\n");
  rig.submit("r1");
  rig.revise("batch: b\nshots:\n  - {id: s1, prompt: storm, image: 'https://cdn.example/a.png'}\n", "b2.yaml");
  rig.start();
  rig.complete("r1");
  CHECK(rig.submit("r2") == "storm");
}

TEST_CASE("shots that left the manifest: a PENDING one is cancelled, a DONE one kept and reported removed") {
  Rig rig;
  rig.accept(two("wind", "rain"));
  rig.submit("r1");
  rig.submit("r2");
  rig.complete("r1");
  rig.complete("r2");
  rig.sched->set_paused(true);
  rig.revise(two("wind", "rain") + "  - {id: s3, prompt: fog, image: 'https://cdn.example/a.png'}\n", "b2.yaml");
  CHECK(rig.shot("s3").state == ShotState::pending);
  rig.revise("batch: b\nshots:\n  - {id: s1, prompt: wind, image: 'https://cdn.example/a.png'}\n", "b3.yaml");
  CHECK(rig.shot("s3").state == ShotState::cancelled);
  CHECK(rig.shot("s3").removed);
  CHECK(rig.shot("s2").state == ShotState::done);
  CHECK(rig.shot("s2").removed);
  CHECK(test::exists(rig.root + "/out/b/s2.mp4"));
  REQUIRE(rig.store->batch("b")->finished);
  auto report = nlohmann::json::parse(test::read(rig.root + "/out/b/report.json"));
  CHECK(report["items"][1]["removed"] == true);
  CHECK(report["revision"] == 3);
}

TEST_CASE("takes: an earlier take keeps its name, and a stop before DONE puts the newest DONE take back") {
  const std::string dir = test::cwd() + "/out";
  test::mkdirs(dir + "/b");
  OutputDir out(dir);
  test::write(dir + "/b/s1.mp4", "take one");
  test::write(dir + "/b/s1.json", "{\"take\":1}");
  keep_take(out, "b", "s1", 1);
  // Done again after a crash: the kept take is never replaced.
  test::write(dir + "/b/.s1.new", "take two");
  REQUIRE(std::rename((dir + "/b/.s1.new").c_str(), (dir + "/b/s1.mp4").c_str()) == 0);
  keep_take(out, "b", "s1", 1);
  CHECK(test::read(dir + "/b/s1.take1.mp4") == "take one");
  CHECK(test::read(dir + "/b/s1.take1.json") == "{\"take\":1}");
  // Take two's rename happened, its DONE did not: <shot>.mp4 is take one again.
  CHECK(restore_newest_done(out, "b", "s1", 1));
  CHECK(test::read(dir + "/b/s1.mp4") == "take one");
  CHECK(test::read(dir + "/b/s1.take1.mp4") == "take one");
  CHECK_FALSE(restore_newest_done(out, "b", "s1", 1));  // already the newest DONE take
}

TEST_CASE("at a restart, the submit journal's entries of an earlier take do not touch the new take") {
  Rig rig;
  rig.accept("batch: b\nshots:\n  - {id: s1, prompt: wind, image: 'https://cdn.example/a.png'}\n");
  rig.submit("r1");
  rig.complete("r1");
  rig.revise("batch: b\nshots:\n  - {id: s1, prompt: storm, image: 'https://cdn.example/a.png'}\n", "b2.yaml");
  // A daemon restart: the store is opened again and checked against the journal,
  // whose last entry for b/s1 is take 1's accepted submit r1.
  rig.sched.reset();
  rig.store.reset();
  rig.store = Store::open(rig.root + "/state/db", Store::Mode::read_write);
  CHECK(rig.store->repairs().empty());
  rig.start();
  Shot s1 = rig.shot("s1");
  CHECK(s1.state == ShotState::pending);
  CHECK(s1.take == 2);
  CHECK(rig.submit("r2") == "storm");
  CHECK(rig.store->ledger().back()["take"] == 2);
}

TEST_CASE("plan takes a file as `wanbatch submit` spools it (its base_dir line added): the same bytes as the daemon's") {
  Rig rig;
  const std::string text = "batch: b\nshots:\n  - {id: s1, prompt: wind, image: 'https://cdn.example/a.png'}\n";
  const std::string file = rig.root + "/media/b.yaml";
  test::write(file, text);
  rig.accept(with_base_dir(text, rig.root + "/media"));  // the spool copy
  std::ostringstream out, err;
  REQUIRE(cmd_plan(rig.config, {file}, true, out, err) == 0);
  auto plan = nlohmann::json::parse(out.str());
  CHECK(plan["manifests"][0]["same_bytes"] == true);
  CHECK(plan["manifests"][0]["no_op"] == true);
  // Another base_dir is another manifest.
  test::write(file, "base_dir: /elsewhere\n" + text);
  std::ostringstream out2;
  REQUIRE(cmd_plan(rig.config, {file}, true, out2, err) == 0);
  CHECK(nlohmann::json::parse(out2.str())["manifests"][0]["same_bytes"] == false);
}
