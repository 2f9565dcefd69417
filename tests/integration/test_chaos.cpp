// Chaos (ctest label `chaos`, not in the default run; scripts/chaos.sh runs it
// for as long as asked): a 200-shot batch with 5xx answers, dropped submit
// answers, FAILED jobs and record expiry switched on in the simulator, and the
// daemon SIGKILLed at random moments. Nothing may be lost or paid twice.
#include <doctest/doctest.h>

#include <cstdlib>
#include <iostream>
#include <random>

#include "jobs/mp4.h"
#include "tests/integration/rig.h"

TEST_CASE("chaos: random kills over a 200-shot batch with every fault switched on") {
  const char* env = std::getenv("WANBATCH_CHAOS_SECONDS");
  const int seconds = env ? std::atoi(env) : 20;
  const unsigned seed = std::random_device{}();
  Rig rig({"--error-rate", "0.05", "--drop-rate", "0.02", "--fail-rate", "0.05", "--expiry", "600",
           "--seed", std::to_string(seed)});
  rig.start_daemon();
  rig.drop("chaos.yaml", manifest("chaos", 200));
  std::mt19937 rng(seed);
  int kills = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline && !rig.finished("chaos")) {
    ::usleep(std::uniform_int_distribution<int>(20000, 400000)(rng));
    rig.daemon->signal(SIGKILL);
    rig.daemon->wait();
    ++kills;
    rig.start_daemon();
  }
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("chaos"); }, std::chrono::seconds(180)), rig.log());

  json states = rig.states("chaos");
  int total = 0;
  for (auto& [state, n] : states.items()) total += n.get<int>();
  CHECK(total == 200);
  CHECK(states.value("PENDING", 0) + states.value("IN_FLIGHT", 0) + states.value("DOWNLOADING", 0) == 0);
  auto billed = rig.billed();
  int paid_twice = 0;
  for (auto& [shot, n] : billed) paid_twice += n > 1;
  CHECK(paid_twice == 0);
  // HELD only for the reasons a person must see.
  int held_ambiguous = 0, held_expired = 0, held_other = 0;
  for (const auto& line : rig.held_lines()) {
    if (line.find("ambiguous submit") != std::string::npos) ++held_ambiguous;
    else if (line.find("expired") != std::string::npos) ++held_expired;
    else {
      ++held_other;
      MESSAGE(line);
    }
  }
  int bad_videos = 0, videos = 0;
  for (const auto& name : test::list(rig.root + "/out/chaos"))
    if (name.size() > 4 && name.substr(name.size() - 4) == ".mp4") {
      ++videos;
      bad_videos += !wb::check_mp4_file(rig.root + "/out/chaos/" + name).ok;
    }
  CHECK(videos == states.value("DONE", 0));
  CHECK(bad_videos == 0);
  std::cout << "chaos tally: seed " << seed << ", " << kills << " kills over " << seconds << " s; "
            << "DONE " << states.value("DONE", 0) << ", FAILED " << states.value("FAILED", 0) << ", HELD "
            << states.value("HELD", 0) << " (ambiguous " << held_ambiguous << ", expired " << held_expired
            << ", other " << held_other << "); billed " << billed.size() << " shots, paid twice " << paid_twice
            << "; invalid videos " << bad_videos << "\n";
}

TEST_CASE("20,000 manifests dropped at once (inotify overflows) are each taken exactly once") {
  const char* env = std::getenv("WANBATCH_FLOOD");
  const int total = env ? std::atoi(env) : 20000;
  const int valid_every = 2000;  // one in 2,000 is a real batch; the rest are refused
  Rig rig;
  rig.start_daemon();
  REQUIRE(test::eventually([&] { return rig.log().find("loaded") != std::string::npos; }));
  std::string staging = rig.root + "/media/flood";
  test::mkdirs(staging);
  int valid = 0;
  for (int i = 0; i < total; ++i) {
    std::string name = "m" + std::to_string(i) + ".yaml";
    bool good = i % valid_every == 0;
    valid += good;
    test::write(staging + "/" + name,
                good ? "batch: flood" + std::to_string(i) + "\nshots:\n  - {id: a, prompt: \"a: p\", image: 'https://cdn.example/a.png'}\n"
                     : "shots: []\n");
  }
  // The daemon is stopped while they arrive, so the kernel's event queue
  // (fs.inotify.max_queued_events, 16,384 by default) overflows for certain.
  rig.daemon->signal(SIGSTOP);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < total; ++i) {
    std::string name = "/m" + std::to_string(i) + ".yaml";
    REQUIRE(std::rename((staging + name).c_str(), (rig.root + "/spool/incoming" + name).c_str()) == 0);
  }
  rig.daemon->signal(SIGCONT);
  REQUIRE_MESSAGE(test::eventually([&] {
    return test::list(rig.root + "/spool/incoming").empty() &&
           static_cast<int>(test::list(rig.root + "/spool/done").size()) == valid;
  }, std::chrono::seconds(1800)), rig.log().substr(0, 4000));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto failed = test::list(rig.root + "/spool/failed");
  CHECK(static_cast<int>(failed.size()) == 2 * (total - valid));  // each manifest and its .error.txt, once
  for (const auto& name : failed)
    CHECK_MESSAGE((name.size() > 5 && (name.substr(name.size() - 5) == ".yaml" || name.substr(name.size() - 4) == ".txt")),
                  name);  // a second take would leave name.yaml.<time>
  CHECK(static_cast<int>(rig.status()["batches"].size()) == valid);
  if (total > 16384) CHECK(rig.log().find("overflowed") != std::string::npos);
  std::cout << "flood: " << total << " manifests taken in " << secs << " s, inotify overflowed: "
            << (rig.log().find("overflowed") != std::string::npos ? "yes" : "no") << "\n";
}
