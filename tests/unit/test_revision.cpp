// Revisions as a pure decision (jobs/revision.h): which shots of a batch render
// again when its manifest changes, and why.
#include <doctest/doctest.h>

#include "jobs/revision.h"
#include "tests/support.h"

using namespace wb;

namespace {

ShotSpec spec(const std::string& id, const std::string& prompt = "wind", const std::string& image = "/m/a.png") {
  ShotSpec s;
  s.id = id;
  s.prompt = prompt;
  s.image.path = image;
  return s;
}

Shot stored(const ShotSpec& sp, ShotState state, const std::string& image_hash = "sha256:aa") {
  Shot s;
  s.batch = "b";
  s.spec = sp;
  s.state = state;
  s.inputs["image"] = image_hash;
  if (state == ShotState::done) s.file_take = 1;
  return s;
}

Manifest manifest(std::vector<ShotSpec> shots) {
  Manifest m;
  m.batch = "b";
  m.shots = std::move(shots);
  return m;
}

std::map<std::string, Inputs> same_inputs(const Manifest& m, const std::string& hash = "sha256:aa") {
  std::map<std::string, Inputs> out;
  for (const auto& s : m.shots) out[s.id]["image"] = hash;
  return out;
}

const ShotPlan& of(const RevisionPlan& p, const std::string& id) {
  for (const auto& s : p.shots)
    if (s.id == id) return s;
  FAIL("no plan for " << id);
  static ShotPlan none;
  return none;
}

}  // namespace

TEST_CASE("an unchanged DONE shot keeps its video and costs nothing") {
  Manifest m = manifest({spec("a")});
  RevisionPlan p = plan_revision({stored(spec("a"), ShotState::done)}, m, same_inputs(m));
  CHECK(of(p, "a").action == ShotPlan::Action::keep);
  CHECK(why_text(of(p, "a")) == "unchanged");
  CHECK(p.renders() == 0);
  CHECK(p.changes_nothing());
}

TEST_CASE("a changed prompt renders a new take and names the field") {
  Manifest m = manifest({spec("a", "storm")});
  RevisionPlan p = plan_revision({stored(spec("a"), ShotState::done)}, m, same_inputs(m));
  CHECK(of(p, "a").action == ShotPlan::Action::render);
  CHECK(of(p, "a").take == 2);
  CHECK(of(p, "a").changed == std::vector<std::string>{"prompt"});
  CHECK(why_text(of(p, "a")) == "changed: prompt");
  CHECK(p.renders() == 1);
}

TEST_CASE("an image edited in place (same path, other bytes) counts as changed") {
  Manifest m = manifest({spec("a")});
  RevisionPlan p = plan_revision({stored(spec("a"), ShotState::done, "sha256:aa")}, m, same_inputs(m, "sha256:bb"));
  CHECK(of(p, "a").action == ShotPlan::Action::render);
  CHECK(of(p, "a").changed == std::vector<std::string>{"image"});
}

TEST_CASE("every render input is compared: negative_prompt, duration, resolution, seed, last_frame, audio") {
  ShotSpec a = spec("a");
  ShotSpec b = a;
  b.negative_prompt = "blur";
  b.duration = 10;
  b.resolution = "1080P";
  b.seed = 7;
  b.last_frame.url = "https://x/end.png";
  b.audio.url = "https://x/a.mp3";
  Inputs old_in{{"image", "sha256:aa"}};
  Inputs new_in{{"image", "sha256:aa"}, {"last_frame", "url:https://x/end.png"}, {"audio", "url:https://x/a.mp3"}};
  CHECK(changed_fields(a, old_in, b, new_in) ==
        std::vector<std::string>{"negative_prompt", "duration", "resolution", "seed", "last_frame", "audio"});
  CHECK(changed_fields(a, old_in, a, old_in).empty());
}

TEST_CASE("a URL input compares as its string") {
  ShotSpec a = spec("a", "wind", "");
  a.image.url = "https://x/1.png";
  ShotSpec b = a;
  b.image.url = "https://x/2.png";
  CHECK(changed_fields(a, {{"image", "url:https://x/1.png"}}, b, {{"image", "url:https://x/2.png"}}) ==
        std::vector<std::string>{"image"});
}

TEST_CASE("a record from before fingerprints compares the path, and an unreadable file is changed") {
  ShotSpec a = spec("a");
  CHECK(changed_fields(a, {}, a, {{"image", "sha256:aa"}}).empty());
  ShotSpec moved = spec("a", "wind", "/m/b.png");
  CHECK(changed_fields(a, {}, moved, {{"image", "sha256:aa"}}) == std::vector<std::string>{"image"});
  CHECK(changed_fields(a, {{"image", "unreadable:x"}}, a, {{"image", "unreadable:x"}}) ==
        std::vector<std::string>{"image"});
  // A file that opens but cannot be read to its end (/proc/self/mem: EIO at its first
  // page) is unreadable, not the digest of what was read (or an exception out of the plan).
  ShotSpec eio = spec("a", "wind", "/proc/self/mem");
  Inputs in = fingerprint_inputs(eio);
  CHECK(in.at("image").rfind("unreadable:cannot read the file to hash it", 0) == 0);
}

TEST_CASE("new shots render, and shots that left the manifest are removed, not rendered") {
  Manifest m = manifest({spec("a"), spec("c")});
  RevisionPlan p =
      plan_revision({stored(spec("a"), ShotState::done), stored(spec("b"), ShotState::done)}, m, same_inputs(m));
  CHECK(of(p, "c").action == ShotPlan::Action::render);
  CHECK(why_text(of(p, "c")) == "new");
  CHECK(of(p, "c").take == 1);
  CHECK(of(p, "b").action == ShotPlan::Action::remove);
  CHECK(of(p, "b").index == -1);
  CHECK(p.renders() == 1);
}

TEST_CASE("a shot whose last take did not end DONE renders again, unless HELD") {
  Manifest m = manifest({spec("f"), spec("r"), spec("c"), spec("h")});
  RevisionPlan p = plan_revision({stored(spec("f"), ShotState::failed), stored(spec("r"), ShotState::rejected),
                                  stored(spec("c"), ShotState::cancelled), stored(spec("h"), ShotState::held)},
                                 m, same_inputs(m));
  CHECK(of(p, "f").action == ShotPlan::Action::render);
  CHECK(why_text(of(p, "f")) == "last take ended FAILED");
  CHECK(of(p, "r").action == ShotPlan::Action::render);
  CHECK(of(p, "c").action == ShotPlan::Action::render);
  // A HELD job may have been billed: a person decides (wanbatch retry).
  CHECK(of(p, "h").action == ShotPlan::Action::keep);
  CHECK(of(p, "h").why == ShotPlan::Why::held);
}

TEST_CASE("the same manifest bytes again leave a failed shot to retry, but render a file edited in place") {
  Manifest m = manifest({spec("f"), spec("e")});
  auto in = same_inputs(m);
  in["e"]["image"] = "sha256:bb";
  RevisionPlan p =
      plan_revision({stored(spec("f"), ShotState::failed), stored(spec("e"), ShotState::done)}, m, in, true);
  CHECK(of(p, "f").action == ShotPlan::Action::keep);
  CHECK(of(p, "f").why == ShotPlan::Why::retry_it);
  CHECK(of(p, "e").action == ShotPlan::Action::render);
}

TEST_CASE("a changed shot not yet submitted takes the new spec, and one on the provider renders after it") {
  Manifest m = manifest({spec("p", "storm"), spec("i", "storm"), spec("u")});
  RevisionPlan p = plan_revision({stored(spec("p"), ShotState::pending), stored(spec("i"), ShotState::in_flight),
                                  stored(spec("u"), ShotState::in_flight)},
                                 m, same_inputs(m));
  CHECK(of(p, "p").action == ShotPlan::Action::update);
  CHECK(of(p, "p").take == 1);
  CHECK_FALSE(of(p, "p").costs());  // it was to be billed anyway
  CHECK(of(p, "i").action == ShotPlan::Action::render_after);
  CHECK(of(p, "i").take == 2);
  CHECK(of(p, "i").costs());
  CHECK(of(p, "u").action == ShotPlan::Action::keep);
  CHECK(why_text(of(p, "u")) == "unchanged, IN_FLIGHT");
}

TEST_CASE("fingerprints hash a local file's bytes, so an edit in place changes them") {
  const std::string dir = test::cwd();
  test::write(dir + "/a.png", test::png(0));
  ShotSpec s = spec("a", "wind", dir + "/a.png");
  s.audio.url = "https://x/a.mp3";
  Inputs before = fingerprint_inputs(s);
  CHECK(before.at("image").rfind("sha256:", 0) == 0);
  CHECK(before.at("audio") == "url:https://x/a.mp3");
  CHECK(fingerprint_inputs(s) == before);
  test::write(dir + "/a.png", test::png(1));
  CHECK(fingerprint_inputs(s).at("image") != before.at("image"));
  ShotSpec gone = spec("a", "wind", dir + "/missing.png");
  CHECK(fingerprint_inputs(gone).at("image").rfind("unreadable:", 0) == 0);
}

TEST_CASE("a queued next take survives its record's JSON") {
  ShotSpec s = spec("a", "storm");
  s.seed = 3;
  NextTake n = next_take_from(next_take_json(s, {{"image", "sha256:aa"}}, {"prompt"}));
  CHECK(n.spec.prompt == "storm");
  CHECK(n.spec.seed == 3);
  CHECK(n.inputs.at("image") == "sha256:aa");
  CHECK(n.changes == std::vector<std::string>{"prompt"});
}

TEST_CASE("a next take already queued by the same revision is not queued again") {
  Manifest m = manifest({spec("i", "storm")});
  Shot running = stored(spec("i"), ShotState::in_flight);
  running.next_take = next_take_json(spec("i", "storm"), {{"image", "sha256:aa"}}, {"prompt"});
  RevisionPlan p = plan_revision({running}, m, same_inputs(m));
  CHECK(of(p, "i").action == ShotPlan::Action::keep);
  CHECK(p.changes_nothing());
  Manifest other = manifest({spec("i", "hail")});
  CHECK(of(plan_revision({running}, other, same_inputs(other)), "i").action == ShotPlan::Action::render_after);
}

namespace {
ShotSpec framed(const std::string& id, const std::string& parent, const std::string& frame = "last") {
  ShotSpec s;
  s.id = id;
  s.prompt = "wind";
  s.image.shot = parent;
  s.image.frame = frame;
  return s;
}
}  // namespace

TEST_CASE("a chain reference that names another shot or frame is a change") {
  Manifest m = manifest({spec("s1"), spec("s2"), framed("s3", "s2")});
  std::vector<Shot> old = {stored(spec("s1"), ShotState::done), stored(spec("s2"), ShotState::done),
                           stored(framed("s3", "s1"), ShotState::pending)};
  old[2].inputs.clear();
  auto in = same_inputs(m);
  in.erase("s3");
  RevisionPlan p = plan_revision(old, m, in);
  CHECK(of(p, "s3").changed == std::vector<std::string>{"image"});
  CHECK(of(p, "s3").action == ShotPlan::Action::update);
  old[2].spec = framed("s3", "s2", "first");
  p = plan_revision(old, m, in);
  CHECK(of(p, "s3").changed == std::vector<std::string>{"image"});
}

TEST_CASE("a parent that renders a new take re-renders the chain below it") {
  Manifest m = manifest({spec("s1", "wind, take 2"), framed("s2", "s1"), framed("s3", "s2"), spec("s4")});
  std::vector<Shot> old = {stored(spec("s1"), ShotState::done), stored(framed("s2", "s1"), ShotState::done),
                           stored(framed("s3", "s2"), ShotState::done), stored(spec("s4"), ShotState::done)};
  old[1].inputs.clear();
  old[2].inputs.clear();
  auto in = same_inputs(m);
  in.erase("s2");
  in.erase("s3");
  RevisionPlan p = plan_revision(old, m, in);
  CHECK(of(p, "s1").action == ShotPlan::Action::render);
  CHECK(of(p, "s2").action == ShotPlan::Action::render);
  CHECK(of(p, "s2").changed == std::vector<std::string>{"parent s1"});
  CHECK(of(p, "s3").action == ShotPlan::Action::render);  // the grandchild too
  CHECK(of(p, "s4").action == ShotPlan::Action::keep);
  CHECK(p.renders() == 3);
}

TEST_CASE("chain children HELD by a FAILED parent that renders again are counted: released by its new take") {
  // s1 ended FAILED; s2 (its child) and s3 (s2's child) were HELD naming their parent.
  Manifest m = manifest({spec("s1"), framed("s2", "s1"), framed("s3", "s2"), framed("s4", "s1")});
  std::vector<Shot> old = {stored(spec("s1"), ShotState::failed), stored(framed("s2", "s1"), ShotState::held),
                           stored(framed("s3", "s2"), ShotState::held), stored(framed("s4", "s1"), ShotState::held)};
  old[1].reason = "held: its parent s1 ended FAILED (bad); `wanbatch retry b/s1` releases it";
  old[2].reason = "held: its parent s2 ended HELD; `wanbatch retry b/s2` releases it";
  old[3].reason = "the submit's answer was lost";  // s4: not a chain hold, stays for `retry`
  for (int i : {1, 2, 3}) old[static_cast<size_t>(i)].inputs.clear();
  auto in = same_inputs(m);
  for (const char* id : {"s2", "s3", "s4"}) in.erase(id);
  RevisionPlan p = plan_revision(old, m, in);
  CHECK(of(p, "s1").action == ShotPlan::Action::render);
  // The revision leaves them (the engine's chains release them on s1's DONE) but they cost.
  CHECK(of(p, "s2").action == ShotPlan::Action::keep);
  CHECK(of(p, "s2").released_by == "s1");
  CHECK(of(p, "s2").costs());
  CHECK(of(p, "s3").released_by == "s1");  // the grandchild too
  CHECK(why_text(of(p, "s3")) == "HELD by its parent: renders after s1's new take is DONE");
  CHECK_FALSE(of(p, "s4").costs());
  CHECK(p.renders() == 3);
  RevisionCounts c = count_plan(p);
  CHECK(c.not_done == 1);
  CHECK(c.released == 2);
  CHECK(c.kept == 1);
  CHECK(c.renders() == 3);
  CHECK(counts_text(c).find("2 chain children released by their parents' new take") != std::string::npos);

  // A HELD parent left to `wanbatch retry` (unchanged) releases nothing.
  old[0].state = ShotState::held;
  p = plan_revision(old, m, in);
  CHECK(p.renders() == 0);
  CHECK_FALSE(of(p, "s2").released());
  // A HELD parent whose prompt changed renders, and releases them.
  m.shots[0].prompt = "storm";
  p = plan_revision(old, m, in);
  CHECK(of(p, "s1").action == ShotPlan::Action::render);
  CHECK(of(p, "s2").released_by == "s1");
  CHECK(p.renders() == 3);
}

TEST_CASE("a parent's new take counts the chain below it whatever state each is in: DONE renders, on the provider renders after") {
  Manifest m = manifest({spec("s1", "storm"), framed("s2", "s1"), framed("s3", "s1"), framed("s4", "s1")});
  // s1 on the provider (its change renders after that take); s2 DONE, s3 on the provider,
  // s4 PENDING (it waits for s1 and takes the new take's frame: billed once, as planned).
  std::vector<Shot> old = {stored(spec("s1"), ShotState::in_flight), stored(framed("s2", "s1"), ShotState::done),
                           stored(framed("s3", "s1"), ShotState::in_flight),
                           stored(framed("s4", "s1"), ShotState::pending)};
  for (int i : {1, 2, 3}) old[static_cast<size_t>(i)].inputs.clear();
  auto in = same_inputs(m);
  for (const char* id : {"s2", "s3", "s4"}) in.erase(id);
  RevisionPlan p = plan_revision(old, m, in);
  CHECK(of(p, "s1").action == ShotPlan::Action::render_after);
  CHECK(of(p, "s2").action == ShotPlan::Action::render);
  CHECK(of(p, "s2").changed == std::vector<std::string>{"parent s1"});
  CHECK(of(p, "s3").action == ShotPlan::Action::render_after);
  CHECK_FALSE(of(p, "s4").costs());
  CHECK(p.renders() == 3);
  RevisionCounts c = count_plan(p);
  CHECK(c.changed == 1);
  CHECK(c.after_running == 2);
  CHECK(c.renders() == 3);
}
