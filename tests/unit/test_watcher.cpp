#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "daemon/watcher.h"
#include "tests/support.h"

using namespace wb;

namespace {
MonoPoint real_now() { return std::chrono::steady_clock::now(); }
}  // namespace

TEST_CASE("only manifest names are eligible") {
  CHECK(SpoolWatcher::eligible("a.yaml"));
  CHECK(SpoolWatcher::eligible("a.yml"));
  CHECK_FALSE(SpoolWatcher::eligible(".a.yaml"));
  CHECK_FALSE(SpoolWatcher::eligible("a.yaml.tmp"));
  CHECK_FALSE(SpoolWatcher::eligible("a.yaml~"));
  CHECK_FALSE(SpoolWatcher::eligible("a.txt"));
}

TEST_CASE("a file renamed in is ready at once - one written in place waits to settle") {
  std::string dir = test::cwd() + "/in";
  test::mkdirs(dir);
  SpoolWatcher w(dir, Millis(5000));
  Millis next{};
  REQUIRE(w.ensure_watch());
  CHECK(w.take_ready(real_now(), next).empty());

  test::write(test::cwd() + "/staged.yaml", "shots: []");
  REQUIRE(std::rename((test::cwd() + "/staged.yaml").c_str(), (dir + "/moved.yaml").c_str()) == 0);
  test::write(dir + "/inplace.yaml", "shots: []");
  test::write(dir + "/.hidden.yaml", "x");
  w.drain_events();
  auto ready = w.take_ready(real_now(), next);
  CHECK(ready == std::vector<std::string>{"moved.yaml"});
  CHECK(next > Millis(0));
  CHECK(next <= Millis(5001));
  // Unchanged for the settle time: taken once, and only once.
  CHECK(w.take_ready(real_now() + Millis(6000), next) == std::vector<std::string>{"inplace.yaml"});
  CHECK(w.take_ready(real_now() + Millis(12000), next).empty());
}

TEST_CASE("a file still growing is not taken") {
  std::string dir = test::cwd() + "/in";
  test::mkdirs(dir);
  SpoolWatcher w(dir, Millis(2000));
  Millis next{};
  test::write(dir + "/grow.yaml", "shots:");
  MonoPoint t = real_now() + Millis(3000);
  CHECK(w.take_ready(t, next).empty());  // first sight starts the settle clock
  test::write(dir + "/grow.yaml", "shots: [a, b]");
  CHECK(w.take_ready(t + Millis(1500), next).empty());  // changed: clock restarts
  CHECK(w.take_ready(t + Millis(3000), next).empty());
  CHECK(w.take_ready(t + Millis(4000), next) == std::vector<std::string>{"grow.yaml"});
}

TEST_CASE("a start-up rescan finds files that arrived while the daemon was down") {
  std::string dir = test::cwd() + "/in";
  test::mkdirs(dir);
  test::write(dir + "/old.yaml", "shots: []");
  SpoolWatcher w(dir, Millis(100));
  Millis next{};
  CHECK(w.take_ready(real_now(), next).empty());
  CHECK(w.take_ready(real_now() + Millis(1000), next) == std::vector<std::string>{"old.yaml"});
}

TEST_CASE("a missing folder is watched once it appears") {
  std::string dir = test::cwd() + "/later";
  SpoolWatcher w(dir, Millis(0));
  CHECK_FALSE(w.ensure_watch());
  Millis next{};
  CHECK(w.take_ready(real_now(), next).empty());
  test::mkdirs(dir);
  test::write(dir + "/x.yaml", "shots: []");
  CHECK(w.take_ready(real_now() + Millis(10), next) == std::vector<std::string>{"x.yaml"});
}
