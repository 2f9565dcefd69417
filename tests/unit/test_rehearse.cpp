// `wanbatch rehearse` (daemon/rehearse.h): the real scheduler on a simulated
// clock against the in-process provider. It must send nothing: the config
// points at a loopback port this test listens on and never expects a
// connection on.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <sstream>

#include "daemon/rehearse.h"
#include "daemon/commands.h"
#include "jobs/engine/render_model.h"
#include "jobs/manifest.h"
#include "jobs/revision.h"
#include "jobs/store.h"
#include "tests/support.h"

using namespace wb;

namespace {

// A listening loopback socket that fails the test if anything connects.
struct Tripwire {
  int fd = -1;
  int port = 0;
  Tripwire() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
  }
  ~Tripwire() { ::close(fd); }
  bool touched() const {
    int c = ::accept(fd, nullptr, nullptr);
    if (c >= 0) ::close(c);
    return c >= 0;
  }
};

struct Setup {
  std::string root = test::cwd();
  Tripwire wire;
  Config config = test::make_config(root, "http://127.0.0.1:" + std::to_string(wire.port));
  RehearseOptions options;
  Setup() {
    // The daemon's defaults for what repeats (the test config polls and reads credits fast).
    config.poll = PollConfig{};
    config.credits = CreditsConfig{};
    config.retry = RetryConfig{};
    options.ask_daemon = false;
    options.balance = 1000;
    test::write(root + "/media/f0.png", test::png(0));
  }
  // A manifest of `n` 5 s 720P shots, every third with a local image (uploaded).
  std::string manifest(const std::string& batch, int n, const std::string& head = "") {
    std::string text = "batch: " + batch + "\n" + head + "shots:\n";
    for (int i = 0; i < n; ++i)
      text += "  - {id: s" + std::to_string(i) + ", prompt: 'shot " + std::to_string(i) + "', image: " +
              (i % 3 == 0 ? std::string("f0.png") : std::string("'https://cdn.example/a.png'")) + "}\n";
    std::string path = root + "/media/" + batch + ".yaml";
    test::write(path, text);
    return path;
  }
  std::vector<std::string> listing(const std::string& dir) {
    std::vector<std::string> out;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir)) out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

int local_hour(int64_t epoch_ms) {
  time_t t = static_cast<time_t>(epoch_ms / 1000);
  struct tm local {};
  ::localtime_r(&t, &local);
  return local.tm_hour;
}

}  // namespace

TEST_CASE("a rehearsal of 100 shots finishes fast, predicts credits and requests, and sends nothing") {
  Setup s;
  s.config.limits.max_in_flight = 10;
  std::string file = s.manifest("hundred", 100);
  auto state_before = s.listing(s.root + "/state");
  auto out_before = s.listing(s.root + "/out");

  auto started = std::chrono::steady_clock::now();
  RehearsalResult r = rehearse(s.config, {file}, s.options);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  CHECK(took < 3.0);
  CHECK(r.finished);
  CHECK(r.shots == 100);
  CHECK(r.states["DONE"] == 100);
  CHECK(r.credits == doctest::Approx(100 * 0.5));  // 5 s at 0.1 credits/s, the price table
  CHECK(r.requests["submit"] == 100);
  CHECK(r.requests["result"] == 100);
  CHECK(r.requests["upload"] == 1);  // one local image, uploaded once by content
  CHECK(r.requests["status"] >= 100);
  CHECK(r.downloads == 100);
  CHECK(r.api_requests == r.requests["submit"] + r.requests["status"] + r.requests["result"] +
                              r.requests["upload"] + r.requests["credits"]);
  // Ten at a time, each about 138 s (the prior): ten rounds, more than 15 minutes.
  CHECK(r.makespan_s > 10 * 60);
  CHECK(r.makespan_s < 4 * 3600);
  CHECK(r.first_submit_ms >= r.start_ms);
  CHECK(r.finish_ms > r.first_submit_ms);
  bool cap_seen = false;
  for (const auto& w : r.waits) cap_seen |= w.kind == "in_flight";
  CHECK(cap_seen);

  CHECK_FALSE(s.wire.touched());  // no request reached the configured API
  CHECK(s.listing(s.root + "/state") == state_before);  // the real store and output folder untouched
  CHECK(s.listing(s.root + "/out") == out_before);
}

TEST_CASE("a rehearsal started outside the submit window waits for it, and says so") {
  Setup s;
  s.config.window = "22:00-07:00";
  s.options.at = "12:00";
  RehearsalResult r = rehearse(s.config, {s.manifest("night", 4)}, s.options);
  REQUIRE(r.finished);
  CHECK(local_hour(r.start_ms) == 12);
  CHECK(local_hour(r.first_submit_ms) == 22);
  REQUIRE_FALSE(r.waits.empty());
  CHECK(r.waits.front().kind == "window");
  CHECK(r.waits.front().seconds == doctest::Approx(10 * 3600).epsilon(0.01));
  CHECK(rehearsal_text(r).find("waits on window: 10h00m") != std::string::npos);
  CHECK_FALSE(s.wire.touched());
}

TEST_CASE("a rehearsal whose batch budget or balance runs out does not finish and names the wait") {
  SUBCASE("batch budget") {
    Setup s;
    RehearsalResult r = rehearse(s.config, {s.manifest("tight", 6, "budget_credits: 1.2\n")}, s.options);
    CHECK_FALSE(r.finished);
    CHECK(r.credits == doctest::Approx(1.0));  // two shots of 0.5 fit in 1.2
    CHECK(r.states["DONE"] == 2);
    CHECK(r.states["PENDING"] == 4);
    REQUIRE_FALSE(r.waits.empty());
    CHECK(r.waits.back().kind == "budget");
    CHECK(r.stalled);
    CHECK(rehearsal_text(r).find("finish        never") != std::string::npos);
  }
  SUBCASE("balance") {
    Setup s;
    s.options.balance = 1.6;  // three shots of 0.5
    RehearsalResult r = rehearse(s.config, {s.manifest("poor", 6)}, s.options);
    CHECK_FALSE(r.finished);
    CHECK_MESSAGE(r.stalled, rehearsal_text(r));
    CHECK(r.states["DONE"] == 3);
    bool credits = false;
    for (const auto& w : r.waits) credits |= w.kind == "credits";
    CHECK(credits);
    CHECK_FALSE(s.wire.touched());
  }
}

TEST_CASE("a rehearsal takes the learned render times from the store, read-only") {
  Setup s;
  {
    auto store = Store::open(s.root + "/state/db", Store::Mode::read_write);
    RenderModel m;
    for (int i = 0; i < 50; ++i) m.observe(RenderClass{"720P", 5}, 30.0 + (i % 5));
    store->put_meta("render_model", m.to_json().dump());
  }
  auto state_before = s.listing(s.root + "/state");
  s.config.limits.max_in_flight = 2;
  RehearsalResult r = rehearse(s.config, {s.manifest("fast", 4)}, s.options);
  REQUIRE(r.finished);
  CHECK(r.learned_samples == 50);
  // Two rounds of about 32 s, not of 138 s (the prior).
  CHECK(r.makespan_s > 60);
  CHECK(r.makespan_s < 120);
  CHECK(s.listing(s.root + "/state") == state_before);
}

TEST_CASE("a rehearsal that waits on the daily budget runs on to the next day") {
  Setup s;
  s.config.limits.daily_budget_credits = 1.2;  // two shots of 0.5 a day
  s.options.at = "12:00";
  RehearsalResult r = rehearse(s.config, {s.manifest("daily", 4)}, s.options);
  REQUIRE(r.finished);
  CHECK_FALSE(r.stalled);
  CHECK(r.makespan_s > 11 * 3600);  // the last two wait for midnight
  bool daily = false;
  for (const auto& w : r.waits) daily |= w.kind == "budget";
  CHECK(daily);
}

TEST_CASE("a rehearsal refuses a bad --at and an invalid manifest, with the reason") {
  Setup s;
  s.options.at = "25:00";
  CHECK_THROWS_WITH_AS(rehearse(s.config, {s.manifest("a", 1)}, s.options), doctest::Contains("--at must be HH:MM"),
                       Error);
  s.options.at = "";
  test::write(s.root + "/media/bad.yaml", "batch: bad\nshots: [{id: s1}]\n");
  CHECK_THROWS_AS(rehearse(s.config, {s.root + "/media/bad.yaml"}, s.options), Error);
}

TEST_CASE("a rehearsal of a revision renders only what `wanbatch plan` says renders, and a no-op revision nothing") {
  Setup s;
  const std::string first = s.manifest("rev", 4);
  {
    // The batch as the daemon left it: every shot DONE, from this manifest.
    ManifestResult m = load_manifest(first, manifest_rules(s.config));
    REQUIRE(m.manifest);
    BatchRecord b;
    b.name = "rev";
    b.sha256 = m.manifest->sha256;
    b.base_dir = m.manifest->base_dir;
    b.shot_count = 4;
    b.finished = true;
    std::vector<Shot> shots;
    for (size_t i = 0; i < m.manifest->shots.size(); ++i) {
      Shot shot;
      shot.batch = "rev";
      shot.index = static_cast<int>(i);
      shot.spec = m.manifest->shots[i];
      shot.inputs = fingerprint_inputs(shot.spec);
      shot.state = ShotState::done;
      shot.request_id = "old-" + std::to_string(i);
      shot.cost = 0.5;
      shots.push_back(shot);
    }
    auto store = Store::open(s.root + "/state/db", Store::Mode::read_write);
    store->add_batch(b, shots);
  }
  auto state_before = s.listing(s.root + "/state");

  // One prompt changed: one shot renders.
  std::string text = test::read(first);
  text.replace(text.find("'shot 2'"), 8, "'shot 2, at night'");
  test::write(s.root + "/media/rev2.yaml", text);
  RehearsalResult r = rehearse(s.config, {s.root + "/media/rev2.yaml"}, s.options);
  CHECK_MESSAGE(r.finished, rehearsal_text(r));
  CHECK(r.requests["submit"] == 1);
  CHECK(r.credits == doctest::Approx(0.5));
  CHECK(r.states["DONE"] == 4);
  REQUIRE(r.revisions.size() == 1);
  CHECK(r.revisions[0].revision == 2);
  CHECK(r.revisions[0].renders == 1);
  CHECK(rehearsal_text(r).find("batch rev: revision 2: 1 of 4 shots render, 3 kept") != std::string::npos);

  // A comment only: a no-op revision, nothing to submit, finished at once.
  test::write(s.root + "/media/rev3.yaml", test::read(first) + "# a note\n");
  r = rehearse(s.config, {s.root + "/media/rev3.yaml"}, s.options);
  CHECK(r.finished);
  CHECK(r.requests["submit"] == 0);
  CHECK(r.credits == 0);
  REQUIRE(r.revisions.size() == 1);
  CHECK(r.revisions[0].no_op);
  CHECK_FALSE(s.wire.touched());
  CHECK(s.listing(s.root + "/state") == state_before);
}

TEST_CASE("--at is HH:MM, 00:00..23:59, and nothing else") {
  for (const char* ok : {"00:00", "07:30", "23:59"}) CHECK_MESSAGE(rehearse_at_problem(ok).empty(), ok);
  for (const char* bad : {"", "7:30", "24:00", "12:60", " 1:23", "+1:23", "12:3x", "12-30", "12:300"})
    CHECK_MESSAGE(rehearse_at_problem(bad).find("--at must be HH:MM") != std::string::npos, bad);
}

TEST_CASE("a rehearsal uploads no file the daemon uploaded, and reads the balance first only when none is known") {
  Setup s;
  std::string file = s.manifest("media", 3);  // s0 has the local image f0.png
  RehearsalResult r = rehearse(s.config, {file}, s.options);  // the daemon's balance known: no read at the start
  REQUIRE(r.finished);
  CHECK(r.requests["upload"] == 1);
  CHECK(r.requests.count("credits") == 0);
  RehearseOptions unknown = s.options;
  unknown.balance.reset();  // no daemon: one started for the batch reads the balance first
  r = rehearse(s.config, {file}, unknown);
  CHECK(r.requests["credits"] == 1);

  // The daemon has uploaded f0.png (its URL under a/<sha256>): not uploaded again.
  {
    auto store = Store::open(s.root + "/state/db", Store::Mode::read_write);
    store->put_asset(sha256_hex(test::png(0)), "https://cdn.example/uploaded-f0.png");
  }
  r = rehearse(s.config, {file}, s.options);
  REQUIRE(r.finished);
  CHECK(r.requests.count("upload") == 0);
  CHECK(r.requests["submit"] == 3);
  CHECK_FALSE(s.wire.touched());
}

TEST_CASE("a rehearsal names a $TMPDIR it cannot make its temporary folder in, and changes nothing") {
  Setup s;
  std::string file = s.manifest("tmp", 1);
  const char* was = std::getenv("TMPDIR");
  const std::string saved = was ? was : "";
  ::setenv("TMPDIR", (s.root + "/no-such-folder").c_str(), 1);
  const std::string expected = "cannot make a temporary folder in $TMPDIR (" + s.root + "/no-such-folder)";
  CHECK_THROWS_WITH_AS(rehearse(s.config, {file}, s.options), doctest::Contains(expected.c_str()), Error);
  if (was) ::setenv("TMPDIR", saved.c_str(), 1);
  else ::unsetenv("TMPDIR");
  CHECK_FALSE(test::exists(s.root + "/no-such-folder"));
}

TEST_CASE("a rehearsal renders shot chains as the daemon does: every child submitted, its frame uploaded, billed") {
  Setup s;
  const std::string path = s.root + "/media/chain.yaml";
  test::write(path, "batch: chain\nshots:\n"
                    "  - {id: a, prompt: 'a', image: 'https://cdn.example/a.png'}\n"
                    "  - {id: b, prompt: 'b', image: {shot: a, frame: last}}\n"
                    "  - {id: c, prompt: 'c', image: {shot: b, frame: last}, last_frame: {shot: a, frame: first}}\n"
                    "  - {id: d, prompt: 'd', image: 'https://cdn.example/a.png'}\n");
  auto state_before = s.listing(s.root + "/state");
  RehearsalResult r = rehearse(s.config, {path}, s.options);
  CHECK(r.finished);
  CHECK(r.states["DONE"] == 4);
  CHECK(r.states.count("HELD") == 0);
  CHECK(r.requests["submit"] == 4);
  CHECK(r.requests["upload"] == 3);  // a's last frame, b's last frame, a's first frame
  CHECK(r.credits == doctest::Approx(4 * 0.5));
  CHECK(s.listing(s.root + "/state") == state_before);  // no frame written under the real state folder
  CHECK_FALSE(s.wire.touched());
}

TEST_CASE("a rehearsal whose $TMPDIR has no room says so, exits with an error (not an abort) and leaves no folder") {
  Setup s;
  std::string file = s.manifest("full", 3);
  const std::string tfs = s.root + "/tfs";
  std::filesystem::create_directories(tfs);
  if (::mount("tmpfs", tfs.c_str(), "tmpfs", 0, "size=256k") != 0) {
    MESSAGE("skipped: cannot mount a small tmpfs here (needs root and mount rights)");
    return;
  }
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount(dir.c_str()); }
  } unmount{tfs};
  const char* was = std::getenv("TMPDIR");
  const std::string saved = was ? was : "";
  ::setenv("TMPDIR", tfs.c_str(), 1);
  std::ostringstream out, err;
  const int rc = cmd_rehearse(s.config, {file}, s.options, out, err);
  if (was) ::setenv("TMPDIR", saved.c_str(), 1);
  else ::unsetenv("TMPDIR");
  CHECK(rc == 1);
  CHECK_MESSAGE(err.str().find("free, and a rehearsal of 3 shots needs about") != std::string::npos, err.str());
  CHECK(err.str().find("set TMPDIR to a folder with room") != std::string::npos);
  CHECK(s.listing(tfs).empty());  // its folder removed
}
