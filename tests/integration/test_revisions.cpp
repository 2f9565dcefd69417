// Revisions with the real binaries against the simulator: a batch of six
// renders, two shots change (a prompt; an image's bytes edited in place), the
// revision goes into the spool, and exactly two more submits are billed. Also
// `wanbatch plan` (changes nothing) and a kill at each step of a take's commit.
#include <doctest/doctest.h>

#include "jobs/mp4.h"
#include "tests/integration/rig.h"

namespace {

// Six shots, each with its own frame: frames/s<i>.png.
std::string six(const std::string& first_prompt = "a breeze over the lake") {
  std::string text = "batch: lake\nshots:\n";
  for (int i = 0; i < 6; ++i) {
    std::string id = "sh0" + std::to_string(i) + "0";
    text += "  - id: " + id + "\n    prompt: \"" + id + ": " + (i == 0 ? first_prompt : "a breeze over the lake") +
            "\"\n    duration: 4\n    image: frames/s" + std::to_string(i) + ".png\n";
  }
  return text;
}

void frames(Rig& rig) {
  for (int i = 0; i < 6; ++i) test::write(rig.root + "/media/frames/s" + std::to_string(i) + ".png", test::png(i % 3));
}

json report(Rig& rig) {
  auto j = json::parse(test::exists(rig.root + "/out/lake/report.json") ? test::read(rig.root + "/out/lake/report.json")
                                                                        : std::string("{}"),
                       nullptr, false);
  return j.is_discarded() ? json::object() : j;
}

bool revision_finished(Rig& rig, int revision) {
  json r = report(rig);
  return r.value("revision", 0) == revision && r["states"].value("DONE", 0) == 6;
}

json item(const json& report, const std::string& id) {
  for (const auto& i : report["items"])
    if (i["id"] == id) return i;
  return json::object();
}

int total_billed(Rig& rig) {
  int n = 0;
  for (auto& [shot, k] : rig.billed()) n += k;
  return n;
}

}  // namespace

TEST_CASE("a revision of six shots that changes two bills exactly two submits and keeps take 1 beside take 2") {
  Rig rig;
  frames(rig);
  rig.start_daemon();
  rig.drop("lake.yaml", six());
  REQUIRE_MESSAGE(test::eventually([&] { return revision_finished(rig, 1); }, std::chrono::seconds(60)), rig.log());
  REQUIRE(total_billed(rig) == 6);
  const std::string take1_sidecar = test::read(rig.root + "/out/lake/sh000.json");

  // Two changes: sh000's prompt, and sh030's frame edited in place (same path).
  test::write(rig.root + "/media/frames/s3.png", test::png(2) + std::string(16, '\0'));
  const std::string revised = "base_dir: " + rig.root + "/media\n" + six("a storm over the lake");
  test::write(rig.root + "/revised.yaml", revised);

  // plan: what would render and why, with the daemon running; it changes nothing.
  std::string out;
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "plan", rig.root + "/revised.yaml"}, &out) == 0);
  CHECK_MESSAGE(out.find("revision 2 of batch lake: will re-render 2 shots (~") != std::string::npos, out);
  CHECK_MESSAGE(out.find(" credits): 2 changed; keep 4\n") != std::string::npos, out);
  CHECK_MESSAGE(out.find("sh000  render   take 2  changed: prompt") != std::string::npos, out);
  CHECK_MESSAGE(out.find("sh030  render   take 2  changed: image") != std::string::npos, out);
  CHECK_MESSAGE(out.find("sh010  keep     take 1  unchanged") != std::string::npos, out);
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "plan", "--json", rig.root + "/revised.yaml"}, &out) == 0);
  json plan = json::parse(out);
  CHECK(plan["manifests"][0]["renders"] == 2);
  CHECK(plan["manifests"][0]["revision"] == 2);
  CHECK(plan["credits_estimate"].get<double>() > 0);
  CHECK(rig.status()["batches"][0]["states"]["DONE"] == 6);  // nothing changed
  CHECK(total_billed(rig) == 6);

  rig.drop_raw("lake.yaml", revised);
  REQUIRE_MESSAGE(test::eventually([&] { return revision_finished(rig, 2); }, std::chrono::seconds(60)), rig.log());
  auto billed = rig.billed();
  CHECK(total_billed(rig) == 8);
  CHECK(billed["sh000"] == 2);
  CHECK(billed["sh030"] == 2);
  for (const char* same : {"sh010", "sh020", "sh040", "sh050"}) CHECK_MESSAGE(billed[same] == 1, same);

  auto files = test::list(rig.root + "/out/lake");
  auto has = [&](const std::string& f) { return std::count(files.begin(), files.end(), f) == 1; };
  for (const char* f : {"sh000.mp4", "sh000.take1.mp4", "sh000.json", "sh000.take1.json", "sh030.take1.mp4"})
    CHECK_MESSAGE(has(f), f);
  CHECK_FALSE(has("sh010.take1.mp4"));
  CHECK(test::read(rig.root + "/out/lake/sh000.take1.json") == take1_sidecar);
  CHECK(wb::check_mp4_file(rig.root + "/out/lake/sh000.take1.mp4").ok);
  json r = report(rig);
  CHECK(item(r, "sh000")["take"] == 2);
  CHECK(item(r, "sh000")["changes"] == json::array({"prompt"}));
  CHECK(item(r, "sh030")["changes"] == json::array({"image"}));
  CHECK(item(r, "sh010")["take"] == 1);
  CHECK(test::exists(rig.root + "/spool/done/lake.yaml"));
  // Money shown counts every take billed: 8 takes, the report and status alike.
  CHECK(r["total_cost"].get<double>() == doctest::Approx(8 * item(r, "sh010")["cost"].get<double>()));
  CHECK(rig.status()["batches"][0]["credits_spent"].get<double>() == doctest::Approx(r["total_cost"].get<double>()));

  // status BATCH shows the take and what changed.
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "status", "lake"}, &out) == 0);
  CHECK_MESSAGE(out.find("(take 2: prompt)") != std::string::npos, out);
  // The contact sheet too, once it is redrawn.
  CHECK(test::eventually([&] {
    return test::exists(rig.root + "/out/lake/index.html") &&
           test::read(rig.root + "/out/lake/index.html").find("<dt>changed</dt><dd>prompt</dd>") != std::string::npos;
  }));

  // The same revision again: a no-op, said so in the log, nothing billed.
  rig.drop_raw("lake.yaml", revised + "# again\n");
  REQUIRE(test::eventually([&] { return rig.log().find("a no-op revision") != std::string::npos; }));
  rig.loop_turns();
  CHECK(total_billed(rig) == 8);
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
}

TEST_CASE("a kill at each step of a new take's commit loses no take and leaves <shot>.mp4 on a DONE take") {
  for (std::string point : {"take_kept", "renamed", "done"}) {
    CAPTURE(point);
    test::mkdirs(test::cwd() + "/" + point);
    REQUIRE(::chdir(point.c_str()) == 0);
    {
      Rig rig;
      frames(rig);
      rig.start_daemon();
      rig.drop("lake.yaml", six());
      REQUIRE_MESSAGE(test::eventually([&] { return revision_finished(rig, 1); }, std::chrono::seconds(60)), rig.log());
      const std::string take1 = test::read(rig.root + "/out/lake/sh000.json");
      rig.daemon->signal(SIGTERM);
      rig.daemon->wait();
      // The passes of `point` in revision 1 are behind; the next is take 2's.
      rig.start_daemon({{"WANBATCH_CRASH_AT", point + ":1"}});
      rig.drop("lake.yaml", six("a storm over the lake"));
      CHECK_MESSAGE(rig.daemon->wait(std::chrono::seconds(30)) == 128 + SIGKILL, rig.log());
      CHECK(test::read(rig.root + "/out/lake/sh000.take1.json") == take1);  // take 1 is kept whatever the step
      rig.start_daemon();
      REQUIRE_MESSAGE(test::eventually([&] { return revision_finished(rig, 2); }, std::chrono::seconds(60)), rig.log());
      CHECK(test::read(rig.root + "/out/lake/sh000.take1.json") == take1);
      json side = json::parse(test::read(rig.root + "/out/lake/sh000.json"));
      CHECK(side["take"] == 2);
      CHECK(rig.billed()["sh000"] == 2);
      rig.daemon->signal(SIGTERM);
      rig.daemon->wait();
    }
    REQUIRE(::chdir("..") == 0);
  }
}

TEST_CASE("a kill right after a revision is stored: the new take is submitted, not mistaken for the last take's job") {
  Rig rig;
  frames(rig);
  // One daemon for both revisions: its submit journal still holds take 1's submits when it is killed.
  rig.start_daemon({{"WANBATCH_CRASH_AT", "revised:1"}});
  rig.drop("lake.yaml", six());
  REQUIRE_MESSAGE(test::eventually([&] { return revision_finished(rig, 1); }, std::chrono::seconds(60)), rig.log());
  rig.drop("lake.yaml", six("a storm over the lake"));
  CHECK_MESSAGE(rig.daemon->wait(std::chrono::seconds(30)) == 128 + SIGKILL, rig.log());
  rig.start_daemon();
  REQUIRE_MESSAGE(test::eventually([&] { return revision_finished(rig, 2); }, std::chrono::seconds(60)), rig.log());
  CHECK(rig.billed()["sh000"] == 2);
  CHECK(total_billed(rig) == 7);
  CHECK(json::parse(test::read(rig.root + "/out/lake/sh000.json"))["parameters"]["prompt"] ==
        "sh000: a storm over the lake");
  rig.daemon->signal(SIGTERM);
  rig.daemon->wait();
}
