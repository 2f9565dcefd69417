// The spool with the real binaries: one daemon per spool, a manifest is taken
// exactly as read (claimed into spool.incoming/.claimed/ first), and an
// identical manifest dropped again neither lingers nor replaces a running one.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>

#include "tests/integration/rig.h"

namespace {

// Whether the process is stopped (SIGSTOP): the state letter in /proc/<pid>/stat.
bool stopped(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'T';
}

bool ready(Rig& rig) { return rig.log().find("loaded") != std::string::npos; }

ino_t inode(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

}  // namespace

TEST_CASE("a second daemon on the same spool refuses to start, naming the first, and no shot is billed twice") {
  Rig rig;
  rig.start_daemon();
  REQUIRE_MESSAGE(test::eventually([&] { return ready(rig); }), rig.log());
  // The second daemon: its own state_dir, the same spool.incoming.
  test::mkdirs(rig.root + "/state2");
  std::string text = test::read(rig.config);
  std::string key = "state_dir: " + rig.root + "/state\n";
  REQUIRE(text.find(key) != std::string::npos);
  text.replace(text.find(key), key.size(), "state_dir: " + rig.root + "/state2\n");
  test::write(rig.root + "/second.yaml", text);
  test::Process second({WANBATCH_BIN, "--config", rig.root + "/second.yaml", "daemon"},
                       {{"SEGMIND_API_KEY", "test-key"}}, rig.root + "/second.log");
  CHECK(second.wait(std::chrono::seconds(10)) == 1);
  std::string said = test::read(rig.root + "/second.log");
  CHECK_MESSAGE(said.find("pid " + std::to_string(rig.daemon->pid()) + ", state_dir " + rig.root + "/state)") !=
                    std::string::npos,
                said);
  CHECK_MESSAGE(said.find(rig.root + "/spool/incoming") != std::string::npos, said);

  rig.drop("twice.yaml", manifest("twice", 4));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("twice"); }), rig.log());
  auto billed = rig.billed();
  CHECK(billed.size() == 4);
  for (auto& [shot, n] : billed) CHECK_MESSAGE(n == 1, shot << " was billed " << n << " times");
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
}

TEST_CASE("a spool lock file deleted under a running daemon lets no second daemon bill a manifest twice") {
  Rig rig;
  rig.start_daemon();
  REQUIRE_MESSAGE(test::eventually([&] { return ready(rig); }), rig.log());
  // A clean-up job removes the lock file; a second daemon (its own state and
  // output) then locks a new one and runs.
  REQUIRE(::unlink((rig.root + "/spool/incoming/.wanbatch.lock").c_str()) == 0);
  test::mkdirs(rig.root + "/state2");
  test::mkdirs(rig.root + "/out2");
  std::string text = test::read(rig.config);
  for (std::string dir : {"/state", "/out"}) {
    std::string from = ": " + rig.root + dir + "\n";
    REQUIRE(text.find(from) != std::string::npos);
    text.replace(text.find(from), from.size(), ": " + rig.root + dir + "2\n");
  }
  test::write(rig.root + "/second.yaml", text);
  test::Process second({WANBATCH_BIN, "--config", rig.root + "/second.yaml", "daemon"},
                       {{"SEGMIND_API_KEY", "test-key"}}, rig.root + "/second.log");
  REQUIRE(test::eventually([&] { return test::read(rig.root + "/second.log").find("loaded") != std::string::npos; }));
  // Manifests until the first daemon has seen one (either daemon may take each:
  // the second can win a few races in a row on a loaded machine).
  const auto noticed = [&] { return rig.log().find("another process holds the new one") != std::string::npos; };
  int dropped = 0;
  while (dropped < 6 || (dropped < 40 && !noticed())) {
    rig.drop("m" + std::to_string(dropped) + ".yaml", manifest("m" + std::to_string(dropped), 2));
    ++dropped;
    ::usleep(20000);
  }
  auto done = [&](const std::string& b) {
    return test::exists(rig.root + "/out/" + b + "/report.json") || test::exists(rig.root + "/out2/" + b + "/report.json");
  };
  REQUIRE(test::eventually([&] {
    for (int i = 0; i < dropped; ++i)
      if (!done("m" + std::to_string(i))) return false;
    return true;
  }));
  // The prompts name the shot, not the batch: one sh000 and one sh010 a batch.
  auto billed = rig.billed();
  CHECK(billed["sh000"] == dropped);
  CHECK(billed["sh010"] == dropped);
  CHECK(noticed());
  CHECK(rig.log().find("takes no more manifests") != std::string::npos);
  second.signal(SIGTERM);
  second.wait();
}

TEST_CASE("a manifest renamed over the one being taken is taken too, and nothing vanishes") {
  // Stopped right after the claim, then right after the read: each time a second
  // manifest is renamed over the same name in spool.incoming.
  for (std::string point : {"claimed", "manifest_read"}) {
    CAPTURE(point);
    test::mkdirs(test::cwd() + "/" + point);
    REQUIRE(::chdir(point.c_str()) == 0);
    {
      Rig rig;
      rig.start_daemon({{"WANBATCH_STOP_AT", point}});
      rig.drop("twin.yaml", manifest("first", 2));
      REQUIRE_MESSAGE(test::eventually([&] { return stopped(rig.daemon->pid()); }), rig.log());
      // No base_dir: its relative media path resolves from spool.incoming, as if read there.
      rig.drop_raw("twin.yaml", "batch: second\nshots:\n  - {id: b1, prompt: \"b1: p\", image: ../../media/frames/f2.png}\n");
      rig.daemon->signal(SIGCONT);
      auto ended = [&](const std::string& batch) { return test::exists(rig.root + "/out/" + batch + "/report.json"); };
      REQUIRE_MESSAGE(test::eventually([&] { return ended("first") && ended("second"); }), rig.log());
      REQUIRE(test::eventually([&] { return test::list(rig.root + "/spool/done").size() == 2; }));
      CHECK(test::list(rig.root + "/spool/failed").empty());
      CHECK(test::list(rig.root + "/spool/incoming").empty());
      CHECK(test::list(rig.root + "/spool/incoming/.claimed").empty());
      CHECK(test::list(rig.root + "/spool/active").empty());
      auto billed = rig.billed();
      CHECK(billed == std::map<std::string, int>{{"sh000", 1}, {"sh010", 1}, {"b1", 1}});
      rig.daemon->signal(SIGTERM);
      CHECK(rig.daemon->wait() == 0);
    }
    REQUIRE(::chdir("..") == 0);
  }
}

TEST_CASE("an identical manifest of a finished batch is logged and moved to done/") {
  Rig rig;
  rig.start_daemon();
  rig.drop("lake.yaml", manifest("lake", 2));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("lake"); }), rig.log());
  rig.drop("lake.yaml", manifest("lake", 2));
  REQUIRE_MESSAGE(test::eventually([&] { return test::list(rig.root + "/spool/done").size() == 2; }), rig.log());
  std::string log = rig.log();
  CHECK(log.find("lake.yaml: a no-op revision: batch 'lake' already finished from these same bytes") !=
        std::string::npos);
  CHECK(log.find("`wanbatch plan` shows what would render") != std::string::npos);
  CHECK(test::list(rig.root + "/spool/active").empty());
  CHECK(test::list(rig.root + "/spool/incoming").empty());
  CHECK(test::list(rig.root + "/spool/failed").empty());
  CHECK(rig.billed() == std::map<std::string, int>{{"sh000", 1}, {"sh010", 1}});
}

TEST_CASE("a finished batch's manifest left in active/ by a stop is moved to done/ at the next start") {
  Rig rig;
  rig.start_daemon();
  rig.drop("lake.yaml", manifest("lake", 2));
  rig.drop("ab.yaml", manifest("a__b", 1));  // a batch name may hold "__" too (attack)
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("lake"); }), rig.log());
  REQUIRE_MESSAGE(test::eventually([&] { return test::exists(rig.root + "/spool/done/ab.yaml"); }), rig.log());
  rig.daemon->signal(SIGTERM);
  REQUIRE(rig.daemon->wait() == 0);
  // A stop between the batch's end and the move of its file: the file is back in active/.
  const std::string active = rig.root + "/spool/active/lake__lake.yaml";
  const std::string active_ab = rig.root + "/spool/active/a__b__ab.yaml";
  REQUIRE(std::rename((rig.root + "/spool/done/lake.yaml").c_str(), active.c_str()) == 0);
  REQUIRE(std::rename((rig.root + "/spool/done/ab.yaml").c_str(), active_ab.c_str()) == 0);
  rig.start_daemon();
  REQUIRE_MESSAGE(test::eventually([&] { return !test::exists(active) && !test::exists(active_ab); }), rig.log());
  CHECK(test::exists(rig.root + "/spool/done/lake.yaml"));
  CHECK(test::exists(rig.root + "/spool/done/ab.yaml"));
  CHECK(rig.billed() == std::map<std::string, int>{{"sh000", 2}, {"sh010", 1}});  // one sh000 a batch
}

TEST_CASE("an identical manifest of a running batch leaves the running one's file in active/ alone") {
  Rig rig;
  rig.start_daemon();
  REQUIRE_MESSAGE(test::eventually([&] { return ready(rig); }), rig.log());
  REQUIRE(test::run({WANBATCH_BIN, "--config", rig.config, "pause"}) == 0);  // keeps the batch running
  rig.drop("run.yaml", manifest("run", 2));
  std::string active = rig.root + "/spool/active/run__run.yaml";
  REQUIRE_MESSAGE(test::eventually([&] { return test::exists(active); }), rig.log());
  ino_t first = inode(active);
  rig.drop("run.yaml", manifest("run", 2));
  std::string error = rig.root + "/spool/failed/run.yaml.error.txt";
  REQUIRE_MESSAGE(test::eventually([&] { return test::exists(error); }), rig.log());
  CHECK(test::read(error).find("run.yaml:0: batch: batch 'run' is already running from these same bytes") == 0);
  CHECK(inode(active) == first);
  REQUIRE(test::run({WANBATCH_BIN, "--config", rig.config, "resume"}) == 0);
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("run"); }), rig.log());
  CHECK(test::list(rig.root + "/spool/active").empty());
  CHECK(rig.billed() == std::map<std::string, int>{{"sh000", 1}, {"sh010", 1}});
}
