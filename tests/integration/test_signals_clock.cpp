// Signals and a stepped wall clock on the real binary (hardening issue, cases
// 2 and 7): SIGHUP, SIGUSR1 and SIGUSR2 neither kill the daemon nor lose a
// submit on the wire, and a wall clock stepped back two hours under libfaketime
// stalls nothing.
#include <doctest/doctest.h>

#include <unistd.h>

#include "tests/integration/rig.h"

namespace {
const char* kFaketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}
}  // namespace

TEST_CASE("SIGHUP, SIGUSR1 and SIGUSR2 mid-batch: no kill, no drain, nothing HELD, each shot billed once") {
  Rig rig({"--render-seconds", "500"});
  rig.start_daemon();
  rig.drop("sig.yaml", manifest("sig", 20));
  REQUIRE(test::eventually([&] { return rig.states("sig").value("IN_FLIGHT", 0) > 0; }));
  for (int i = 1; i <= 5; ++i) {  // five bursts, each one handled before the next (signals of a kind merge)
    for (int sig : {SIGHUP, SIGUSR1, SIGUSR2}) rig.daemon->signal(sig);
    REQUIRE(test::eventually([&] {
      std::string log = rig.log();
      return count(log, "SIGHUP: config") >= i && count(log, "status: ") >= i && count(log, "SIGUSR2 received") >= i;
    }));
  }
  // A config that no longer loads changes nothing; a valid edit is applied live.
  std::string good = test::read(rig.config);
  test::write(rig.config, good + "no_such_key: 1\n");
  rig.daemon->signal(SIGHUP);
  REQUIRE(test::eventually([&] { return rig.log().find("the config was not reloaded") != std::string::npos; }));
  std::string edited = good;
  edited.replace(edited.find("max_in_flight: 8"), 16, "max_in_flight: 6");
  test::write(rig.config, edited);
  rig.daemon->signal(SIGHUP);
  REQUIRE(test::eventually([&] { return rig.log().find("applied: limits.max_in_flight") != std::string::npos; }));
  // Every poll.* key applies at once, the stuck limit too.
  REQUIRE(edited.find("max_interval_seconds: 0.3}") != std::string::npos);
  edited.replace(edited.find("max_interval_seconds: 0.3}"), 26, "max_interval_seconds: 0.3, stuck_after_seconds: 3600}");
  test::write(rig.config, edited);
  rig.daemon->signal(SIGHUP);
  REQUIRE_MESSAGE(test::eventually([&] { return rig.log().find("applied: poll.stuck_after_seconds") != std::string::npos; }),
                  rig.log());
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("sig"); }), rig.log());
  CHECK(rig.daemon->running());
  std::string log = rig.log();
  CHECK(count(log, "SIGHUP: config") >= 5);
  CHECK(count(log, "status: ") >= 5);
  CHECK(count(log, "SIGUSR2 received") >= 5);
  CHECK(log.find("stopping") == std::string::npos);
  CHECK(rig.states("sig")["DONE"] == 20);
  CHECK(rig.held_lines().empty());
  for (auto& [shot, n] : rig.billed()) CHECK_MESSAGE(n == 1, shot);
  CHECK(rig.billed().size() == 20);
}

TEST_CASE("a wall clock stepped back two hours under libfaketime: polls and submits go on") {
  if (::access(kFaketime, R_OK) != 0) {
    MESSAGE("libfaketime is not installed (scripts/lib.sh installs it); skipped");
    return;
  }
  Rig rig({"--render-seconds", "1500"});  // 3 s renders
  std::string clock_file = rig.root + "/faketime";
  test::write(clock_file, "+0\n");
  rig.start_daemon({{"LD_PRELOAD", kFaketime},
                    {"FAKETIME_TIMESTAMP_FILE", clock_file},
                    {"FAKETIME_NO_CACHE", "1"},
                    {"FAKETIME_DONT_FAKE_MONOTONIC", "1"},
                    // The sanitizer build: libfaketime is preloaded before the ASan runtime.
                    {"ASAN_OPTIONS", "verify_asan_link_order=0"}});
  rig.drop("before.yaml", manifest("before", 4));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.states("before").value("IN_FLIGHT", 0) == 4; }), rig.log());
  test::write(clock_file, "-2h\n");
  // Jobs in flight are still polled, fetched and downloaded...
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("before"); }, std::chrono::seconds(30)), rig.log());
  // ...and a batch that arrives after the step is submitted at once.
  rig.drop("after.yaml", manifest("after", 4));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("after"); }, std::chrono::seconds(30)), rig.log());
  CHECK(rig.states("before")["DONE"] == 4);
  CHECK(rig.states("after")["DONE"] == 4);
  CHECK(rig.log().find("waiting: submit rate") == std::string::npos);
  // The daemon really ran two hours behind: its log lines say so.
  std::string year_hour = wb::iso8601_utc(std::chrono::system_clock::now() - std::chrono::hours(2)).substr(0, 13);
  year_hour[10] = ' ';
  CHECK_MESSAGE(rig.log().find(year_hour) != std::string::npos, year_hour);
}
