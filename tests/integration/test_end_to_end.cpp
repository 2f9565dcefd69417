// The real wanbatch and segmind-sim binaries as separate processes, on a
// temporary spool, with the simulator on a free loopback port.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "jobs/mp4.h"
#include "tests/integration/rig.h"

using nlohmann::json;


TEST_CASE("a 20-shot manifest ends with 20 valid MP4s and exactly 20 submits") {
  Rig rig;
  rig.start_daemon();
  rig.drop("lake.yaml", manifest("lake", 20));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("lake"); }, std::chrono::seconds(90)), rig.log());
  auto billed = rig.billed();
  CHECK(billed.size() == 20);
  for (auto& [shot, n] : billed) CHECK_MESSAGE(n == 1, shot);
  int videos = 0;
  for (const auto& name : test::list(rig.root + "/out/lake")) {
    if (name.size() < 4 || name.substr(name.size() - 4) != ".mp4") continue;
    ++videos;
    auto check = wb::check_mp4_file(rig.root + "/out/lake/" + name);
    CHECK_MESSAGE(check.ok, name << ": " << check.error);
  }
  CHECK(videos == 20);
  auto report = json::parse(test::read(rig.root + "/out/lake/report.json"));
  CHECK(report["states"]["DONE"] == 20);
  auto st = rig.status();
  REQUIRE(st["batches"].size() == 1);
  CHECK(st["batches"][0]["batch"] == "lake");
  CHECK(st["batches"][0]["shots"] == 20);
  CHECK(st["batches"][0]["states"]["DONE"] == 20);
  CHECK(test::list(rig.root + "/spool/incoming").empty());
  CHECK(rig.log().find("test-key") == std::string::npos);
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
}

TEST_CASE("SIGKILL during the batch, several times: every shot ends and none is billed twice") {
  Rig rig;
  rig.start_daemon();
  rig.drop("storm.yaml", manifest("storm", 20));
  std::mt19937 rng(42);
  for (int kill = 0; kill < 5; ++kill) {
    ::usleep(std::uniform_int_distribution<int>(80000, 300000)(rng));
    rig.daemon->signal(SIGKILL);
    rig.daemon->wait();
    rig.start_daemon();
  }
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("storm"); }, std::chrono::seconds(120)), rig.log());
  auto st = rig.status();
  REQUIRE(st["batches"].size() == 1);
  auto states = st["batches"][0]["states"];
  int done = states.value("DONE", 0), held = states.value("HELD", 0);
  CHECK(done + held == 20);
  CHECK(done >= 1);
  // A kill holds only the submits it caught on the wire: each HELD shot is one the
  // daemon found SUBMITTING when it started again (ledger `ambiguous_on_restart`)
  // right after an attempt with no recorded outcome, or whose attempt only the
  // submit journal had (`held_unverified`: killed between journal and store);
  // and none was caught twice.
  std::map<std::string, int> caught;
  std::map<std::string, std::string> last_event;  // by shot
  for (const auto& e : rig.daemon_ledger()) {
    std::string shot = e.value("shot", ""), event = e.value("event", "");
    if (event == "ambiguous_on_restart")
      CHECK_MESSAGE(last_event[shot] == "attempt", shot << " HELD at a restart after '" << last_event[shot] << "'");
    if (event == "ambiguous_on_restart" || event == "held_unverified") ++caught[shot];
    last_event[shot] = event;
  }
  CHECK(static_cast<int>(caught.size()) == held);
  for (auto& [shot, n] : caught) CHECK_MESSAGE(n == 1, shot << " found SUBMITTING " << n << " times");
  auto billed = rig.billed();
  for (auto& [shot, n] : billed) CHECK_MESSAGE(n == 1, shot << " was billed " << n << " times");
  CHECK(static_cast<int>(billed.size()) >= done);
  // A HELD shot here can only be an ambiguous submit caught by a kill.
  for (const auto& line : rig.held_lines()) CHECK_MESSAGE(line.find("ambiguous submit") != std::string::npos, line);
  for (const auto& name : test::list(rig.root + "/out/storm"))
    if (name.size() > 4 && name.substr(name.size() - 4) == ".mp4")
      CHECK_MESSAGE(wb::check_mp4_file(rig.root + "/out/storm/" + name).ok, name);
}

TEST_CASE("an invalid manifest lands in failed/ with its errors - a valid one after it completes") {
  Rig rig;
  rig.start_daemon();
  rig.drop("broken.yaml", "batch: broken\nshots:\n  - id: a\n    prompt: p\n    image: frames/f0.png\n    duration: 99\n");
  rig.drop("fine.yaml", manifest("fine", 2));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("fine"); }), rig.log());
  CHECK(test::exists(rig.root + "/spool/failed/broken.yaml"));
  std::string errors = test::read(rig.root + "/spool/failed/broken.yaml.error.txt");
  CHECK(errors == "broken.yaml:7: shots[a].duration: must be between 2 and 15, got 99\n");
  auto st = rig.status();
  REQUIRE(st["batches"].size() == 1);
  CHECK(st["batches"][0]["batch"] == "fine");
}

TEST_CASE("a dropped submit answer holds the shot and the simulator bills it once") {
  Rig rig({"--drop-rate", "1"});
  rig.start_daemon();
  rig.drop("drop.yaml", manifest("drop", 1));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("drop"); }), rig.log());
  // Whatever the daemon would send, it sends while it runs: stopped, it can bill no more.
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
  CHECK(rig.billed() == std::map<std::string, int>{{"sh000", 1}});
  CHECK(count_events(rig.daemon_ledger(), "attempt") == 1);
  auto st = rig.status();
  CHECK(st["batches"][0]["states"]["HELD"] == 1);
}

TEST_CASE("a second daemon on the same state directory refuses to start") {
  Rig rig;
  rig.start_daemon();
  REQUIRE(test::eventually([&] { return rig.log().find("loaded") != std::string::npos; }));
  std::string out;
  int code = test::run({WANBATCH_BIN, "--config", rig.config, "daemon"}, &out, {{"SEGMIND_API_KEY", "k"}});
  CHECK(code == 1);
  CHECK(out.find("another wanbatch daemon") != std::string::npos);
  CHECK(rig.daemon->running());
}

TEST_CASE("validate and submit from the command line") {
  Rig rig;
  test::write(rig.root + "/media/good.yaml", manifest("good", 2));
  test::write(rig.root + "/media/bad.yaml", "shots:\n  - id: a\n    prompt: p\n    image: frames/f0.png\n    resolution: 8K\n");
  std::string out;
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "validate", rig.root + "/media/good.yaml"}, &out) == 0);
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "validate", rig.root + "/media/good.yaml",
                   rig.root + "/media/bad.yaml"}, &out) == 1);
  CHECK(out.find(rig.root + "/media/bad.yaml:5: shots[a].resolution: must be 720P or 1080P, got '8K'") != std::string::npos);
  // Nothing is submitted when one file is bad.
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "submit", rig.root + "/media/good.yaml",
                   rig.root + "/media/bad.yaml"}, &out) == 1);
  CHECK(test::list(rig.root + "/spool/incoming").empty());
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "submit", rig.root + "/media/good.yaml"}, &out) == 0);
  std::string spooled = test::read(rig.root + "/spool/incoming/good.yaml");
  CHECK(spooled.find("base_dir: \"" + rig.root + "/media\"") != std::string::npos);
  // The same name again while the first still waits: refused, first untouched.
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "submit", rig.root + "/media/good.yaml"}, &out) == 1);
  CHECK(out.find("already waiting") != std::string::npos);
  rig.start_daemon();
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("good"); }), rig.log());
}

TEST_CASE("a wrong config stops the daemon at start with the key named") {
  Rig rig;
  test::write(rig.config, test::read(rig.config) + "limits2: {}\n");
  std::string out;
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "daemon"}, &out, {{"SEGMIND_API_KEY", "k"}}) == 2);
  CHECK(out.find("limits2: unknown key") != std::string::npos);
}

TEST_CASE("--help of every subcommand describes it") {
  for (std::string sub : {"daemon", "validate", "submit", "status"}) {
    std::string out;
    CHECK(test::run({WANBATCH_BIN, sub, "--help"}, &out) == 0);
    CHECK_MESSAGE(out.find("Usage") != std::string::npos, out);
  }
}

TEST_CASE("SIGTERM mid-batch: the daemon exits cleanly and promptly, and a restart finishes the batch") {
  Rig rig;
  rig.start_daemon();
  rig.drop("term.yaml", manifest("term", 20));
  REQUIRE(test::eventually([&] { return rig.billed().size() >= 4; }));
  rig.daemon->signal(SIGTERM);
  auto t0 = std::chrono::steady_clock::now();
  CHECK(rig.daemon->wait(std::chrono::seconds(25)) == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(21));
  CHECK(rig.log().find("stopped") != std::string::npos);
  rig.start_daemon();
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("term"); }), rig.log());
  CHECK(rig.states("term")["DONE"] == 20);  // a clean stop leaves no ambiguous submit
  for (auto& [shot, n] : rig.billed()) CHECK_MESSAGE(n == 1, shot);
}
