// Shot chains on the real binaries: the simulator renders the parent, the
// daemon takes its last frame with ffmpeg, uploads it, and submits the child
// with it. What the simulator received is compared, pixel for pixel, with the
// parent's downloaded video decoded by ffmpeg here. A kill -9 once the frame
// is taken changes nothing but the time.
#include <doctest/doctest.h>
#include <signal.h>

#include <optional>

#include "jobs/curl_transport.h"
#include "tests/integration/rig.h"

namespace {

const char* kChain = R"(batch: chain
defaults:
  duration: 4
shots:
  - id: sh010
    prompt: "sh010: a boat leaves the jetty"
    image: frames/f0.png
  - id: sh020
    prompt: "sh020: the boat crosses the lake"
    image: {shot: sh010, frame: last}
    last_frame: {shot: sh030, frame: first}
  - id: sh030
    prompt: "sh030: the boat reaches the shore"
    image: frames/f1.png
)";

// The params the simulator billed for the shot whose prompt starts with `id`.
json submitted(Rig& rig, const std::string& id) {
  std::istringstream in(test::read(rig.ledger));
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json j = json::parse(line);
    if (j["params"]["prompt"].get<std::string>().rfind(id + ":", 0) == 0) return j["params"];
  }
  FAIL("no submit of " << id << " in the simulator's ledger");
  return {};
}

// The bytes the simulator serves at an asset URL it gave for an upload.
std::string asset(const std::string& url) {
  wb::CurlTransport t(true);
  wb::HttpRequest r;
  r.url = url;
  std::optional<wb::HttpResponse> out;
  t.start(r, [&](wb::HttpResponse resp) { out = std::move(resp); });
  for (int i = 0; i < 500 && !out; ++i) t.perform(wb::Millis(10), {});
  REQUIRE(out);
  REQUIRE(out->status == 200);
  return test::base64_decode(out->body);  // the simulator keeps uploads as their base64 text
}

void check_frames(Rig& rig) {
  json child = submitted(rig, "sh020");
  test::write(rig.root + "/image.png", asset(child["image"]));
  test::write(rig.root + "/last_frame.png", asset(child["last_frame"]));
  const std::string parent = rig.root + "/out/chain/sh010.mp4", next = rig.root + "/out/chain/sh030.mp4";
  // The simulator's videos have 8 frames: the image is sh010's last, the last frame sh030's first.
  CHECK(test::frame_pixels(rig.root + "/image.png") == test::frame_pixels(parent, 7));
  CHECK(test::frame_pixels(rig.root + "/image.png") != test::frame_pixels(parent, 0));
  CHECK(test::frame_pixels(rig.root + "/last_frame.png") == test::frame_pixels(next, 0));
}

}  // namespace

TEST_CASE("a chained shot is submitted with its parent's frame, uploaded after the parent is DONE") {
  if (!test::have_tool("ffmpeg")) {
    MESSAGE("skipped: ffmpeg not installed (Debian package ffmpeg)");
    return;
  }
  Rig rig;
  rig.start_daemon();
  rig.drop("chain.yaml", kChain);
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("chain"); }, std::chrono::seconds(60)), rig.log());
  CHECK(rig.states("chain")["DONE"] == 3);
  check_frames(rig);
  for (auto& [shot, n] : rig.billed()) CHECK_MESSAGE(n == 1, shot);
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
}

TEST_CASE("kill -9 once the frame is taken, or once uploaded: taken again, never submitted without it, billed once") {
  if (!test::have_tool("ffmpeg")) {
    MESSAGE("skipped: ffmpeg not installed (Debian package ffmpeg)");
    return;
  }
  for (std::string point : {"frame_taken", "frame_uploaded"}) {
    CAPTURE(point);
    test::mkdirs(test::cwd() + "/" + point);
    REQUIRE(::chdir(point.c_str()) == 0);
    {
      Rig rig;
      rig.start_daemon({{"WANBATCH_CRASH_AT", point}});
      rig.drop("chain.yaml", kChain);
      CHECK_MESSAGE(rig.daemon->wait(std::chrono::seconds(30)) == 128 + SIGKILL, rig.log());
      CHECK(rig.billed().count("sh020") == 0);
      rig.start_daemon();
      REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("chain"); }, std::chrono::seconds(60)), rig.log());
      CHECK(rig.states("chain")["DONE"] == 3);
      check_frames(rig);
      for (auto& [shot, n] : rig.billed()) CHECK_MESSAGE(n == 1, shot);
      rig.daemon->signal(SIGTERM);
      rig.daemon->wait();
    }
    REQUIRE(::chdir("..") == 0);
  }
}

namespace {
// sh010 fails on the simulator (its prompt has the --fail-text), which holds the
// chain below it: sh020 takes its last frame, sh030 sh020's.
std::string held_chain(const std::string& parent_prompt) {
  return "batch: held\ndefaults:\n  duration: 4\nshots:\n"
         "  - id: sh010\n    prompt: \"sh010: " + parent_prompt + "\"\n    image: frames/f0.png\n"
         "  - id: sh020\n    prompt: \"sh020: the boat crosses the lake\"\n    image: {shot: sh010, frame: last}\n"
         "  - id: sh030\n    prompt: \"sh030: the boat reaches the shore\"\n    image: {shot: sh020, frame: last}\n"
         "  - id: sh040\n    prompt: \"sh040: the lake at night\"\n    image: frames/f1.png\n";
}

json held_report(Rig& rig) {
  const std::string path = rig.root + "/out/held/report.json";
  auto j = json::parse(test::exists(path) ? test::read(path) : std::string("{}"), nullptr, false);
  return j.is_discarded() ? json::object() : j;
}
}  // namespace

TEST_CASE("plan counts chain children HELD by a failed parent that a revision renders again, as the daemon bills") {
  if (!test::have_tool("ffmpeg")) {
    MESSAGE("skipped: ffmpeg not installed (Debian package ffmpeg)");
    return;
  }
  Rig rig({"--fail-text", "FAILS_HERE"});
  rig.start_daemon();
  rig.drop("held.yaml", held_chain("a boat leaves the jetty FAILS_HERE"));
  REQUIRE_MESSAGE(test::eventually([&] { return held_report(rig).value("revision", 0) == 1; },
                                   std::chrono::seconds(60)),
                  rig.log());
  json states = held_report(rig)["states"];
  REQUIRE(states.value("FAILED", 0) == 1);
  REQUIRE(states.value("HELD", 0) == 2);
  int before = 0;
  for (auto& [shot, n] : rig.billed()) before += n;
  REQUIRE(before == 2);  // sh010 (failed) and sh040

  // The revision fixes sh010's prompt: it renders again, and its new take releases sh020 and sh030.
  const std::string revised = "base_dir: " + rig.root + "/media\n" + held_chain("a boat leaves the jetty");
  test::write(rig.root + "/revised.yaml", revised);
  std::string out;
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "plan", rig.root + "/revised.yaml"}, &out) == 0);
  CHECK_MESSAGE(out.find("will re-render 3 shots (~") != std::string::npos, out);
  CHECK_MESSAGE(out.find("1 changed, 2 chain children HELD by a parent, released by sh010's new take; keep 1") !=
                    std::string::npos,
                out);
  CHECK_MESSAGE(out.find("sh030  render   take 1  HELD by its parent: renders after sh010's new take is DONE") !=
                    std::string::npos,
                out);
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "plan", "--json", rig.root + "/revised.yaml"}, &out) == 0);
  json plan = json::parse(out);
  const int planned = plan["manifests"][0]["renders"].get<int>();
  CHECK(planned == 3);
  CHECK(plan["manifests"][0]["released"] == 2);
  CHECK(plan["manifests"][0]["shots"][1]["released_by"] == "sh010");
  const double planned_credits = plan["credits_estimate"].get<double>();

  rig.drop_raw("held.yaml", revised);
  REQUIRE_MESSAGE(test::eventually(
                      [&] {
                        json r = held_report(rig);
                        return r.value("revision", 0) == 2 && r["states"].value("DONE", 0) == 4;
                      },
                      std::chrono::seconds(60)),
                  rig.log());
  int after = 0;
  for (auto& [shot, n] : rig.billed()) after += n;
  CHECK(after - before == planned);  // what the daemon billed is what plan said
  auto billed = rig.billed();
  CHECK(billed["sh010"] == 2);
  CHECK(billed["sh020"] == 1);
  CHECK(billed["sh030"] == 1);
  CHECK(billed["sh040"] == 1);
  // The credits too (the simulator charges what the estimate counts: 4 s at 720P each).
  CHECK(held_report(rig)["total_cost"].get<double>() == doctest::Approx(planned_credits + 0.4));
  rig.daemon->signal(SIGTERM);
  rig.daemon->wait();
}

TEST_CASE("a chain child HELD by a failed parent that a revision removes is CANCELLED, never billed, and plan agrees") {
  if (!test::have_tool("ffmpeg")) {
    MESSAGE("skipped: ffmpeg not installed (Debian package ffmpeg)");
    return;
  }
  Rig rig({"--fail-text", "FAILS_HERE"});
  rig.start_daemon();
  rig.drop("held.yaml", held_chain("a boat leaves the jetty FAILS_HERE"));
  REQUIRE_MESSAGE(test::eventually([&] { return held_report(rig).value("revision", 0) == 1; },
                                   std::chrono::seconds(60)),
                  rig.log());
  REQUIRE(held_report(rig)["states"].value("HELD", 0) == 2);
  int before = 0;
  for (auto& [shot, n] : rig.billed()) before += n;

  // sh010 fixed, sh030 (HELD by sh020, never submitted) left the manifest.
  std::string text = held_chain("a boat leaves the jetty");
  const size_t from = text.find("  - id: sh030"), to = text.find("  - id: sh040");
  text.erase(from, to - from);
  const std::string revised = "base_dir: " + rig.root + "/media\n" + text;
  test::write(rig.root + "/revised.yaml", revised);
  std::string out;
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "plan", "--json", rig.root + "/revised.yaml"}, &out) == 0);
  json plan = json::parse(out);
  const int planned = plan["manifests"][0]["renders"].get<int>();
  CHECK(planned == 2);  // sh010 and sh020
  CHECK(plan["manifests"][0]["removed"] == 1);
  for (const auto& s : plan["manifests"][0]["shots"])
    if (s["id"] == "sh030") {
      CHECK(s["action"] == "removed");
      CHECK(s["renders"] == false);
      CHECK(s["why"] == "left the manifest: HELD, never submitted, so CANCELLED");
    }

  rig.drop_raw("held.yaml", revised);
  REQUIRE_MESSAGE(test::eventually(
                      [&] {
                        json r = held_report(rig);
                        return r.value("revision", 0) == 2 && r["states"].value("DONE", 0) == 3;
                      },
                      std::chrono::seconds(60)),
                  rig.log());
  int after = 0;
  for (auto& [shot, n] : rig.billed()) after += n;
  CHECK(after - before == planned);
  auto billed = rig.billed();
  CHECK(billed.count("sh030") == 0);  // never submitted, never billed
  CHECK(billed["sh020"] == 1);
  json report = held_report(rig);
  CHECK(report["states"].value("CANCELLED", 0) == 1);
  const std::string log = rig.log();
  CHECK_MESSAGE(log.find("held/sh030: released") == std::string::npos, log);
  CHECK_MESSAGE(log.find("held/sh020: released, its parent sh010 is DONE") != std::string::npos, log);
  rig.daemon->signal(SIGTERM);
  rig.daemon->wait();
}
