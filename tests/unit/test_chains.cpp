// Shot chains in the engine (jobs/engine/chains.h) with a fake clock and a fake
// transport: a child waits for its parent, opens with the parent's frame
// (taken with ffmpeg, uploaded, then submitted), is held when the parent ends
// without a video, and is released when the parent is retried.
#include <doctest/doctest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "jobs/revision.h"
#include "jobs/segmind.h"
#include "tests/sim/simulator.h"
#include "tests/unit/scheduler_rig.h"

using namespace wb;
using test::FakeTransport;

namespace {

#define REQUIRE_FFMPEG()                                                     \
  if (!test::have_tool("ffmpeg")) {                                                     \
    MESSAGE("skipped: ffmpeg not installed (Debian package ffmpeg)");        \
    return;                                                                  \
  }

struct Rig : test::SchedulerRig {
  Rig() { start(); }

  Shot shot(const std::string& id) {
    for (auto& s : store->shots("b"))
      if (s.spec.id == id) return s;
    FAIL("no shot " << id);
    return {};
  }

  int submits() {
    int n = 0;
    for (const auto& r : net.started) n += r.url.find("/v2/wan2.7-i2v") != std::string::npos;
    return n;
  }

  // Takes the oldest submit on the wire, answers it with `request_id` and
  // follows that job to DONE with the simulator's sample video.
  void render(const std::string& request_id) {
    answer("/v2/wan2.7-i2v", 200, R"({"request_id":")" + request_id + R"("})");
    until("/v2/requests/" + request_id + "/status");
    answer("/v2/requests/" + request_id + "/status", 200, R"({"status":"COMPLETED"})");
    tick();
    answer("/v2/requests/" + request_id, 200,
           R"({"status":"COMPLETED","output":"https://cdn.example/)" + request_id + R"(.mp4"})");
    tick();
    auto dl = net.take("https://cdn.example/" + request_id + ".mp4");
    FakeTransport::deliver(dl, std::string(sim::sample_mp4()));
    tick();
  }
};

const char* kChain = R"(batch: b
shots:
  - {id: sh010, prompt: a boat leaves, image: 'https://cdn.example/a.png'}
  - {id: sh020, prompt: the boat crosses, image: {shot: sh010, frame: last}}
  - {id: sh030, prompt: the boat arrives, image: {shot: sh020, frame: first}}
)";

}  // namespace

TEST_CASE("a child waits for its parent, then is submitted with the parent's last frame, uploaded") {
  REQUIRE_FFMPEG();
  Rig rig;
  rig.accept(kChain);
  rig.tick();
  CHECK(rig.submits() == 1);  // only the parent
  CHECK(rig.shot("sh020").state == ShotState::pending);
  CHECK(rig.shot("sh020").reason == "waiting for sh010 to finish");
  CHECK(rig.shot("sh030").reason == "waiting for sh020 to finish");
  rig.render("r1");
  REQUIRE(rig.shot("sh010").state == ShotState::done);

  // The frame is taken and uploaded before anything is submitted for sh020.
  rig.until(rig.config.api.storage_url);
  CHECK(rig.submits() == 1);
  auto upload = rig.net.take(rig.config.api.storage_url);
  auto data_url = nlohmann::json::parse(upload.request.body)["data_urls"][0].get<std::string>();
  REQUIRE(data_url.rfind("data:image/png;base64,", 0) == 0);
  test::write(rig.root + "/uploaded.png", test::base64_decode(data_url.substr(data_url.find(',') + 1)));
  test::write(rig.root + "/parent.mp4", std::string(sim::sample_mp4()));
  // The sample video has 8 frames: the upload is the 8th (not the first).
  CHECK(test::frame_pixels(rig.root + "/uploaded.png") == test::frame_pixels(rig.root + "/parent.mp4", 7));
  CHECK(test::frame_pixels(rig.root + "/uploaded.png") != test::frame_pixels(rig.root + "/parent.mp4", 0));
  FakeTransport::reply(upload, 200, R"({"file_urls":["https://cdn.example/frame-sh010-last.png"]})");

  rig.until("/v2/wan2.7-i2v");
  auto submit = rig.net.take("/v2/wan2.7-i2v");
  auto body = nlohmann::json::parse(submit.request.body);
  CHECK(body["prompt"] == "the boat crosses");
  CHECK(body["image"] == "https://cdn.example/frame-sh010-last.png");
  rig.net.calls.push_back(std::move(submit));  // back on the wire for render()
  rig.render("r2");
  REQUIRE(rig.shot("sh020").state == ShotState::done);

  // The grandchild opens with its parent's first frame.
  rig.until(rig.config.api.storage_url);
  upload = rig.net.take(rig.config.api.storage_url);
  data_url = nlohmann::json::parse(upload.request.body)["data_urls"][0].get<std::string>();
  test::write(rig.root + "/uploaded0.png", test::base64_decode(data_url.substr(data_url.find(',') + 1)));
  CHECK(test::frame_pixels(rig.root + "/uploaded0.png") == test::frame_pixels(rig.root + "/parent.mp4", 0));
}

TEST_CASE("a parent that FAILS holds its chain, naming the parent, and a retry of the parent releases it") {
  REQUIRE_FFMPEG();
  Rig rig;
  rig.accept(kChain);
  rig.tick();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1"})");
  rig.until("/v2/requests/r1/status");
  rig.answer("/v2/requests/r1/status", 422, R"({"status":"FAILED","error":"Content blocked"})");
  rig.tick();
  rig.tick();
  CHECK(rig.shot("sh010").state == ShotState::failed);
  CHECK(rig.shot("sh020").state == ShotState::held);
  CHECK(rig.shot("sh020").reason ==
        "held: its parent sh010 ended FAILED (Content blocked); `wanbatch retry b/sh010` releases it");
  CHECK(rig.shot("sh030").state == ShotState::held);
  CHECK(rig.shot("sh030").reason.rfind("held: its parent sh020 ended HELD", 0) == 0);
  CHECK(rig.submits() == 1);
  CHECK(rig.finished == std::vector<std::string>{"b"});  // every shot ended: reported

  auto r = rig.sched->retry("b/sh010", Resubmit::yes);
  CHECK(r.changed == std::vector<std::string>{"sh010", "sh020", "sh030"});
  CHECK(rig.shot("sh020").state == ShotState::pending);
  CHECK(rig.shot("sh030").state == ShotState::pending);
  rig.tick();
  CHECK(rig.submits() == 2);  // the parent again, not its children
  CHECK(rig.shot("sh020").reason == "waiting for sh010 to finish");
  rig.render("r2");
  rig.until(rig.config.api.storage_url);
  rig.answer(rig.config.api.storage_url, 200, R"({"file_urls":["https://cdn.example/f.png"]})");
  rig.until("/v2/wan2.7-i2v");
  CHECK(nlohmann::json::parse(rig.net.take("/v2/wan2.7-i2v").request.body)["image"] == "https://cdn.example/f.png");
}

TEST_CASE("a parent cancelled holds its child while submits wait at a gate") {
  Rig rig;
  rig.accept(kChain);
  rig.sched->set_paused(true);
  rig.tick();
  CHECK(rig.submits() == 0);
  rig.sched->cancel("b/sh010");
  rig.tick();
  CHECK(rig.shot("sh020").state == ShotState::held);
  CHECK(rig.shot("sh020").reason.rfind("held: its parent sh010 ended CANCELLED", 0) == 0);
}

TEST_CASE("a restart between taking the frame and its upload takes it again, and never submits without it") {
  REQUIRE_FFMPEG();
  Rig rig;
  rig.accept(kChain);
  rig.tick();
  rig.render("r1");
  rig.until(rig.config.api.storage_url);
  // The daemon dies with the upload on the wire (the frame taken, no URL yet).
  rig.net.calls.clear();
  ::unlink((rig.root + "/state/frames/b/sh010.last.png").c_str());
  rig.start();
  CHECK(rig.shot("sh020").image_url.empty());
  rig.until(rig.config.api.storage_url);
  CHECK(rig.submits() == 1);
  CHECK(test::exists(rig.root + "/state/frames/b/sh010.last.png"));  // taken again
  rig.answer(rig.config.api.storage_url, 200, R"({"file_urls":["https://cdn.example/f.png"]})");
  rig.until("/v2/wan2.7-i2v");
  CHECK(nlohmann::json::parse(rig.net.take("/v2/wan2.7-i2v").request.body)["image"] == "https://cdn.example/f.png");
  CHECK(rig.submits() == 2);
}

TEST_CASE("the chain below a shot is known to the engine (what a revision renders again)") {
  Rig rig;
  rig.accept(kChain);
  CHECK(rig.sched->chain_children("b", "sh010") == std::vector<std::string>{"sh020", "sh030"});
  CHECK(rig.sched->chain_children("b", "sh020") == std::vector<std::string>{"sh030"});
  CHECK(rig.sched->chain_children("b", "sh030").empty());
}

namespace {

const char* kChainFixed = R"(batch: b
shots:
  - {id: sh010, prompt: a boat leaves again, image: 'https://cdn.example/a.png'}
  - {id: sh020, prompt: the boat crosses, image: {shot: sh010, frame: last}}
)";

Scheduler::Accept revise(Rig& rig, const std::string& yaml, const std::string& name) {
  ManifestRules rules;
  rules.input_roots = rig.config.input_roots;
  auto r = parse_manifest(yaml, rig.root + "/media/" + name, rules);
  REQUIRE_MESSAGE(r.manifest, format_problems(name, r.problems));
  return rig.sched->accept(*r.manifest, name, rig.root + "/spool/active/b__" + name);
}

RevisionPlan plan_of(Rig& rig, const std::string& yaml) {
  auto r = parse_manifest(yaml, rig.root + "/media/plan.yaml", {});
  REQUIRE(r.manifest);
  std::map<std::string, Inputs> in;
  for (const auto& s : r.manifest->shots) in[s.id] = fingerprint_inputs(s);
  return plan_revision(rig.store->shots("b"), *r.manifest, in);
}

}  // namespace

TEST_CASE("a chain child HELD by its parent that a revision removes ends CANCELLED: never released, never billed") {
  REQUIRE_FFMPEG();
  Rig rig;
  rig.accept(kChain);
  rig.tick();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1"})");
  rig.until("/v2/requests/r1/status");
  rig.answer("/v2/requests/r1/status", 422, R"({"status":"FAILED","error":"Content blocked"})");
  rig.tick();
  rig.tick();
  REQUIRE(rig.shot("sh030").state == ShotState::held);
  // A nested hold names the parent and its state, not the parent's whole reason again.
  CHECK(rig.shot("sh030").reason ==
        "held: its parent sh020 ended HELD (held by its own parent); `wanbatch retry b/sh020` releases it");

  // The revision fixes sh010 and drops sh030 (HELD, never submitted).
  RevisionPlan plan = plan_of(rig, kChainFixed);
  CHECK(plan.renders() == 2);  // sh010 and sh020, released by its new take
  for (const auto& p : plan.shots)
    if (p.id == "sh030") {
      CHECK(p.action == ShotPlan::Action::remove);
      CHECK_FALSE(p.costs());
      CHECK(why_text(p) == "left the manifest: HELD, never submitted, so CANCELLED");
    }
  REQUIRE(revise(rig, kChainFixed, "b2.yaml") == Scheduler::Accept::revised);
  CHECK(rig.shot("sh030").state == ShotState::cancelled);
  CHECK(rig.shot("sh030").reason == "removed from the manifest (revision 2) before it was submitted");
  CHECK(rig.shot("sh030").removed);

  rig.tick();
  rig.render("r2");  // sh010's new take ends DONE: it releases sh020, not sh030
  REQUIRE(rig.shot("sh010").state == ShotState::done);
  CHECK(rig.shot("sh020").state == ShotState::pending);
  CHECK(rig.shot("sh030").state == ShotState::cancelled);
  rig.until(rig.config.api.storage_url);
  rig.answer(rig.config.api.storage_url, 200, R"({"file_urls":["https://cdn.example/f.png"]})");
  rig.until("/v2/wan2.7-i2v");
  rig.render("r3");
  REQUIRE(rig.shot("sh020").state == ShotState::done);
  for (int i = 0; i < 5; ++i) rig.tick(Millis(60000));
  CHECK(rig.submits() == 3);  // sh010 twice, sh020 once; nothing for sh030
  CHECK(rig.shot("sh030").state == ShotState::cancelled);
  CHECK(rig.shot("sh030").request_id.empty());
}

TEST_CASE("a parent's new take releases a child HELD because its frame could not be taken, and the chain below it, but "
          "not a child whose own parent stays HELD") {
  REQUIRE_FFMPEG();
  Rig rig;
  const std::string ffmpeg = rig.config.video.ffmpeg;
  rig.config.video.ffmpeg = "/bin/false";  // no frame can be taken: sh020 ends HELD, sh030 HELD by it
  rig.start();
  rig.accept(kChain);
  rig.tick();
  rig.render("r1");
  REQUIRE(rig.shot("sh010").state == ShotState::done);
  for (int i = 0; i < 200 && rig.shot("sh030").state != ShotState::held; ++i) rig.tick(std::max(rig.sched->tick(), Millis(1)));
  REQUIRE(rig.shot("sh020").state == ShotState::held);
  REQUIRE(rig.shot("sh020").reason.rfind("could not take the last frame of sh010", 0) == 0);
  REQUIRE(rig.shot("sh030").state == ShotState::held);
  CHECK(rig.shot("sh030").reason.rfind("held: its parent sh020 ended HELD (could not take the last frame of sh010", 0) == 0);
  rig.config.video.ffmpeg = ffmpeg;
  rig.start();

  // Only sh030's prompt changes: its parent sh020 stays HELD, so it is HELD again, not billed.
  const std::string only_child = std::string(kChain).replace(std::string(kChain).find("the boat arrives"), 16, "the boat lands");
  RevisionPlan plan = plan_of(rig, only_child);
  CHECK(plan.renders() == 0);
  for (const auto& p : plan.shots) {
    if (p.id == "sh030") CHECK(p.blocked_by == "sh020");
    if (p.id == "sh020")
      CHECK(why_text(p) == "unchanged, HELD, never submitted (nothing billed): stays HELD; `wanbatch retry` decides");
  }
  CHECK(count_plan(plan).blocked == 1);
  REQUIRE(revise(rig, only_child, "b2.yaml") == Scheduler::Accept::revised);
  for (int i = 0; i < 5; ++i) rig.tick(Millis(60000));
  CHECK(rig.shot("sh030").state == ShotState::held);
  CHECK(rig.shot("sh030").take == 1);  // its take 1 was never submitted: no take 2 without a take 1
  CHECK(rig.submits() == 1);

  // sh010 changes: its new take releases sh020 (its frame is taken again) and sh030 below it.
  const std::string parent = std::string(only_child).replace(only_child.find("a boat leaves"), 13, "a boat sails");
  plan = plan_of(rig, parent);
  CHECK(plan.renders() == 3);
  for (const auto& p : plan.shots)
    if (p.id != "sh010") CHECK(p.released_by == "sh010");
  REQUIRE(revise(rig, parent, "b3.yaml") == Scheduler::Accept::revised);
  rig.tick();
  rig.render("r2");
  CHECK(rig.shot("sh020").state == ShotState::pending);
  CHECK(rig.shot("sh030").state == ShotState::pending);
  rig.until(rig.config.api.storage_url);
  rig.answer(rig.config.api.storage_url, 200, R"({"file_urls":["https://cdn.example/f2.png"]})");
  rig.until("/v2/wan2.7-i2v");
  rig.render("r3");
  rig.until(rig.config.api.storage_url);
  rig.answer(rig.config.api.storage_url, 200, R"({"file_urls":["https://cdn.example/f3.png"]})");
  rig.until("/v2/wan2.7-i2v");
  rig.render("r4");
  CHECK(rig.shot("sh030").state == ShotState::done);
  CHECK(rig.submits() == 1 + plan.renders());  // what plan said is what was submitted
}
