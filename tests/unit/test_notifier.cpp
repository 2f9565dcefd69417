// Notifications: webhooks to a real receiver on 127.0.0.1 through the daemon's
// CurlTransport (signature, 5xx then 2xx, redelivery after a restart), their
// formats and events, and notify.command (stdin, environment, timeout).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>

#include "daemon/notifier.h"
#include "jobs/curl_transport.h"
#include "jobs/util.h"
#include "tests/sim/http_server.h"
#include "tests/support.h"

using namespace wb;
using nlohmann::json;

namespace {

// A webhook receiver: answers each POST with the next status of `statuses`
// (then 200) and keeps what it got.
struct Receiver {
  std::mutex mu;
  std::vector<sim::Request> got;
  std::vector<int> statuses;
  sim::HttpServer server{[this](const sim::Request& r) {
    std::lock_guard<std::mutex> lock(mu);
    got.push_back(r);
    sim::Response res;
    res.status = got.size() <= statuses.size() ? statuses[got.size() - 1] : 200;
    res.body = "{}";
    return res;
  }};
  Receiver() { server.start(0); }
  std::string url() { return "http://127.0.0.1:" + std::to_string(server.port()) + "/hook"; }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu);
    return got.size();
  }
  sim::Request at(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    return got.at(i);
  }
};

struct Rig {
  std::string root = test::cwd();
  Config config = test::make_config(root);
  std::unique_ptr<Store> store = Store::open(root + "/state/db", Store::Mode::read_write);
  CurlTransport net{true};
  int64_t wall = 1700000000000;
  std::unique_ptr<Notifier> notifier;

  Rig() {
    config.api.allow_loopback_http = true;
    BatchRecord b;
    b.name = "night";
    b.created_ms = wall;
    b.finished = true;
    b.finished_ms = wall;
    Shot s1, s2;
    s1.batch = s2.batch = "night";
    s1.spec.id = "s1";
    s1.spec.prompt = s2.spec.prompt = "p";
    s1.spec.image.url = s2.spec.image.url = "https://cdn.example/a.png";
    s1.state = ShotState::done;
    s1.cost = 0.1;
    s2.spec.id = "s2";
    s2.index = 1;
    s2.state = ShotState::held;
    s2.cost = 0.2;
    store->add_batch(b, {s1, s2});
    start();
  }
  Notifier::ProgressFn progress;
  void start() {
    notifier = std::make_unique<Notifier>(config, *store, net, [this] { return wall; }, progress);
    notifier->load();
  }
  // Runs the loop (tick + transport) until `done` or 10 s of real time.
  template <class F>
  bool run_until(F done) {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < end) {
      notifier->tick();
      if (done()) return true;
      net.perform(std::chrono::milliseconds(20));
    }
    return done();
  }
};

}  // namespace

TEST_CASE("the signature is HMAC-SHA256 (RFC 4231 case 2)") {
  CHECK(hmac_sha256_hex("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST_CASE("a batch's end is POSTed as signed JSON, retried after a 5xx until a 2xx") {
  Receiver hook;
  hook.statuses = {503};
  Rig rig;
  rig.config.notify.webhooks = {{hook.url(), "json", "s3cret", {"batch_finished"}}};
  rig.notifier->on_event(Event::batch("night"));
  REQUIRE(rig.notifier->outbox_size() == 1);
  // The 503 keeps it, due again after the first backoff (5 s), not before.
  REQUIRE(rig.run_until([&] { return rig.notifier->next_attempt_ms() == rig.wall + 5000; }));
  CHECK(hook.count() == 1);
  rig.wall += 4999;
  rig.notifier->tick();
  CHECK(rig.notifier->next_attempt_ms() == rig.wall + 1);  // still waiting, nothing started
  rig.wall += 1;
  REQUIRE(rig.run_until([&] { return rig.notifier->outbox_size() == 0; }));
  REQUIRE(hook.count() == 2);
  sim::Request r = hook.at(1);
  CHECK(r.method == "POST");
  CHECK(r.header("x-wanbatch-signature") == "sha256=" + hmac_sha256_hex("s3cret", r.body));
  CHECK(r.header("x-wanbatch-signature") != "sha256=" + hmac_sha256_hex("other", r.body));
  json j = json::parse(r.body);
  CHECK(j["event"] == "batch_finished");
  CHECK(j["batch"] == "night");
  CHECK(j["shots"] == 2);
  CHECK(j["states"]["DONE"] == 1);
  CHECK(j["states"]["HELD"] == 1);
  CHECK(j["credits_spent"].dump() == "0.3");
  CHECK(j["state"] == "failure");
  CHECK(j["finished_at"] == "2023-11-14T22:13:20.000Z");
  CHECK(j["report"] == rig.root + "/out/night/report.json");
  CHECK(j["contact_sheet"] == rig.root + "/out/night/index.html");
}

TEST_CASE("a delivery not yet made is sent again after a restart") {
  Receiver hook;
  hook.statuses = {500};
  {
    Rig rig;
    rig.config.notify.webhooks = {{hook.url(), "json", "", {"batch_finished"}}};
    rig.notifier->on_event(Event::batch("night"));
    REQUIRE(rig.run_until([&] { return rig.notifier->next_attempt_ms() == rig.wall + 5000; }));
    REQUIRE(hook.count() == 1);
    REQUIRE(rig.notifier->outbox_size() == 1);
  }  // the daemon stops
  Rig again;  // same folder, same store
  again.config.notify.webhooks = {{hook.url(), "json", "", {"batch_finished"}}};
  again.start();
  REQUIRE(again.notifier->outbox_size() == 1);
  again.wall += 3600 * 1000;
  REQUIRE(again.run_until([&] { return again.notifier->outbox_size() == 0; }));
  CHECK(hook.count() == 2);
  CHECK(hook.at(1).header("x-wanbatch-signature").empty());  // no secret, no signature
  CHECK(json::parse(hook.at(1).body)["batch"] == "night");
  again.start();
  CHECK(again.notifier->outbox_size() == 0);  // delivered is gone from the store
}

TEST_CASE("a delivery is given up after 24 hours") {
  Receiver hook;
  hook.statuses = std::vector<int>(100, 502);
  Rig rig;
  rig.config.notify.webhooks = {{hook.url(), "json", "", {"batch_finished"}}};
  rig.notifier->on_event(Event::batch("night"));
  REQUIRE(rig.run_until([&] { return rig.notifier->next_attempt_ms() == rig.wall + 5000; }));
  rig.wall += 24 * 3600 * 1000 + 1;
  rig.notifier->tick();
  CHECK(rig.notifier->outbox_size() == 0);
}

TEST_CASE("each delivery is its own record in the store: an event writes its own, a 2xx erases it") {
  Receiver hook;
  Rig rig;
  rig.config.notify.webhooks = {{hook.url(), "json", "", {"batch_finished"}}, {hook.url() + "/2", "json", "", {"batch_finished"}}};
  rig.notifier->on_event(Event::batch("night"));
  auto stored = rig.store->notifications();
  REQUIRE(stored.size() == 2);  // one key per delivery, not one list rewritten per event
  CHECK(json::parse(stored[0].second)["url"] == hook.url());
  CHECK(!rig.store->meta("notify_outbox").has_value());
  REQUIRE(rig.run_until([&] { return rig.notifier->outbox_size() == 0; }));
  CHECK(rig.store->notifications().empty());
}

TEST_CASE("an outbox of an earlier version (one list under meta/notify_outbox) is moved to one key each") {
  Receiver hook;
  Rig rig;
  rig.config.notify.webhooks = {{hook.url(), "json", "", {"batch_finished"}}};
  json old = json::array({{{"id", 7}, {"url", hook.url()}, {"event", "batch_finished"}, {"format", "json"},
                           {"body", "{\"batch\":\"night\"}"}, {"attempts", 2}, {"first_ms", rig.wall},
                           {"next_ms", rig.wall}}});
  rig.store->put_meta("notify_outbox", old.dump());
  rig.start();
  CHECK(rig.notifier->outbox_size() == 1);
  CHECK(rig.store->notifications().size() == 1);
  CHECK(rig.store->meta("notify_outbox").value_or("") == "");
  REQUIRE(rig.run_until([&] { return rig.notifier->outbox_size() == 0; }));
  CHECK(hook.at(0).body == "{\"batch\":\"night\"}");
}

TEST_CASE("the outbox is bounded: past notify.max_pending the oldest delivery is dropped, with a count") {
  Receiver hook;
  Rig rig;
  rig.config.notify.max_pending = 3;
  rig.config.notify.webhooks = {{hook.url(), "slack", "", {"shot_held"}}};
  int counted = 0;
  rig.notifier->on_dropped = [&] { ++counted; };
  for (int i = 0; i < 5; ++i)
    rig.notifier->on_event(Event::shot("night/s" + std::to_string(i), ShotState::downloading, ShotState::held, "x"));
  CHECK(rig.notifier->outbox_size() == 3);
  CHECK(rig.notifier->dropped() == 2);
  CHECK(counted == 2);
  auto stored = rig.store->notifications();
  REQUIRE(stored.size() == 3);
  CHECK(json::parse(stored[0].second)["body"].get<std::string>().find("night/s2 ") != std::string::npos);
  // A restart with a smaller cap keeps the newest.
  rig.config.notify.max_pending = 1;
  rig.start();
  CHECK(rig.notifier->outbox_size() == 1);
  REQUIRE(rig.run_until([&] { return rig.notifier->outbox_size() == 0; }));
  REQUIRE(hook.count() == 1);
  CHECK(json::parse(hook.at(0).body)["text"].get<std::string>().find("night/s4 ") != std::string::npos);
}

TEST_CASE("a shot_held message comes from the engine's counts, not from reading the batch's shots") {
  Receiver hook;
  Rig rig;
  rig.progress = [](const std::string& batch) -> std::optional<BatchProgress> {
    if (batch != "night") return std::nullopt;
    return BatchProgress{40, 12, to_micro(1.5)};
  };
  rig.start();
  rig.config.notify.webhooks = {{hook.url(), "json", "", {"shot_held"}}};
  rig.notifier->on_event(Event::shot("night/s2", ShotState::downloading, ShotState::held, "gave up"));
  REQUIRE(rig.run_until([&] { return rig.notifier->outbox_size() == 0; }));
  json j = json::parse(hook.at(0).body);
  CHECK(j["event"] == "shot_held");
  CHECK(j["shot"] == "s2");
  CHECK(j["reason"] == "gave up");
  CHECK(j["shots"] == 40);  // the engine's figure; the store holds 2 shots of this batch
  CHECK(j["unfinished"] == 12);
  CHECK(j["credits_spent"].dump() == "1.5");
  CHECK(!j.contains("states"));
}

TEST_CASE("after an outage deliveries go paced: one at a time per endpoint, at most 4 a second") {
  Receiver hook;
  hook.statuses = {503};
  Rig rig;
  rig.config.notify.webhooks = {{hook.url(), "slack", "", {"shot_held"}}};
  for (int i = 0; i < 10; ++i)
    rig.notifier->on_event(Event::shot("night/s" + std::to_string(i), ShotState::downloading, ShotState::held, "x"));
  size_t most_on_wire = 0;
  auto watch = [&] {
    most_on_wire = std::max(most_on_wire, rig.notifier->on_the_wire());
    return rig.notifier->on_the_wire() == 0 && hook.count() >= 1;
  };
  // The endpoint fails: its other deliveries wait with it, not one request each.
  REQUIRE(rig.run_until(watch));
  CHECK(hook.count() == 1);
  CHECK(rig.notifier->next_attempt_ms() == rig.wall + 5000);
  // It is back: a burst of 4, then one every 250 ms, never two at once.
  rig.wall += 5000;
  REQUIRE(rig.run_until([&] { return watch() && hook.count() == 5; }));
  CHECK(rig.notifier->outbox_size() == 6);
  CHECK(rig.notifier->next_attempt_ms() == rig.wall + 250);
  rig.wall += 250;
  REQUIRE(rig.run_until([&] { return watch() && hook.count() == 6; }));
  CHECK(rig.notifier->outbox_size() == 5);
  for (size_t sent = 7; sent <= 11; ++sent) {
    rig.wall += 250;
    REQUIRE(rig.run_until([&] { return watch() && hook.count() == sent; }));
  }
  CHECK(rig.notifier->outbox_size() == 0);
  CHECK(most_on_wire == 1);
  // In the order of their events.
  for (size_t i = 1; i < 11; ++i)
    CHECK(json::parse(hook.at(i).body)["text"].get<std::string>().find("night/s" + std::to_string(i - 1) + " ") !=
          std::string::npos);
}

TEST_CASE("Slack and Discord hooks get a readable message, each hook only its events") {
  Receiver hook;
  Rig rig;
  rig.config.notify.credits_low_below = 5;
  rig.config.notify.webhooks = {{hook.url() + "/slack", "slack", "", {"batch_finished", "shot_held"}},
                                {hook.url() + "/discord", "discord", "", {"credits_low"}}};
  rig.notifier->on_event(Event::shot("night/s2", ShotState::downloading, ShotState::held, "gave up"));
  rig.notifier->on_event(Event::balance(10));  // not low
  rig.notifier->on_event(Event::balance(3));   // low: once
  rig.notifier->on_event(Event::balance(2));
  CHECK(rig.notifier->outbox_size() == 2);
  REQUIRE(rig.run_until([&] { return rig.notifier->outbox_size() == 0; }));
  REQUIRE(hook.count() == 2);
  for (size_t i = 0; i < 2; ++i) {
    sim::Request r = hook.at(i);
    json j = json::parse(r.body);
    if (r.path == "/hook/slack") {
      CHECK(j["text"].get<std::string>().find("night/s2 is HELD: gave up") != std::string::npos);
    } else {
      CHECK(r.path == "/hook/discord");
      CHECK(j["content"].get<std::string>().find("balance is 3, under 5") != std::string::npos);
    }
  }
}

TEST_CASE("notify.command gets the summary on stdin and only its own environment") {
  ::setenv("SEGMIND_API_KEY", "SECRET-KEY", 1);
  Rig rig;
  const std::string out = rig.root + "/seen";
  rig.config.notify.command = {"sh", "-c", "cat > \"$0\".json; env > \"$0\".env", out};
  rig.notifier->on_event(Event::batch("night"));
  ::unsetenv("SEGMIND_API_KEY");
  REQUIRE(rig.notifier->commands_running() == 1);
  REQUIRE(rig.run_until([&] { return rig.notifier->commands_running() == 0; }));
  json j = json::parse(test::read(out + ".json"));
  CHECK(j["batch"] == "night");
  CHECK(j["event"] == "batch_finished");
  std::string env = test::read(out + ".env");
  CHECK(env.find("WANBATCH_BATCH=night") != std::string::npos);
  CHECK(env.find("WANBATCH_STATE=failure") != std::string::npos);
  CHECK(env.find("WANBATCH_EVENT=batch_finished") != std::string::npos);
  CHECK(env.find("SECRET-KEY") == std::string::npos);
  CHECK(env.find("SEGMIND_API_KEY") == std::string::npos);
}

TEST_CASE("a stuck job runs notify.command with WANBATCH_EVENT=shot_stuck and its shot, reason and limit") {
  Rig rig;
  const std::string out = rig.root + "/seen";
  rig.config.notify.command = {"sh", "-c", "cat > \"$0\".json; env > \"$0\".env", out};
  rig.notifier->on_event(Event::stuck("night/s1", "stuck: in flight for 20 min, over 10 min", 1200.4, 600));
  REQUIRE(rig.notifier->commands_running() == 1);
  REQUIRE(rig.run_until([&] { return rig.notifier->commands_running() == 0; }));
  json j = json::parse(test::read(out + ".json"));
  CHECK(j["event"] == "shot_stuck");
  CHECK(j["batch"] == "night");
  CHECK(j["shot"] == "s1");
  CHECK(j["reason"] == "stuck: in flight for 20 min, over 10 min");
  CHECK(j["in_flight_seconds"] == 1200);
  CHECK(j["stuck_after_seconds"] == 600);
  std::string env = test::read(out + ".env");
  CHECK(env.find("WANBATCH_EVENT=shot_stuck") != std::string::npos);
  CHECK(env.find("WANBATCH_STATE=stuck") != std::string::npos);
  CHECK(env.find("WANBATCH_BATCH=night") != std::string::npos);
}

TEST_CASE("notify.command past its timeout is killed, and the loop never waited for it") {
  Rig rig;
  rig.config.notify.command = {"sleep", "30"};
  rig.config.notify.command_timeout_seconds = 1;
  auto t0 = std::chrono::steady_clock::now();
  rig.notifier->on_event(Event::batch("night"));
  rig.notifier->tick();
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(500));
  CHECK(rig.notifier->commands_running() == 1);
  REQUIRE(rig.run_until([&] { return rig.notifier->commands_running() == 0; }));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
}

TEST_CASE("notify, video and contact_sheet keys are read and checked") {
  const std::string root = test::cwd();
  test::make_config(root);
  const std::string base = test::config_yaml(root, "http://127.0.0.1:1");
  Config c = parse_config(base + R"(
notify:
  command: [/usr/bin/logger, -t, wanbatch]
  command_timeout_seconds: 5
  credits_low_below: 10
  max_pending: 50
  webhooks:
    - {url: "https://hooks.example.com/x", format: slack, secret: abc, events: [shot_held, credits_low]}
    - {url: "http://127.0.0.1:9/hook"}
video: {ffprobe: /usr/bin/ffprobe, timeout_seconds: 5}
contact_sheet: {interval_seconds: 2}
)",
                          "c.yaml");
  CHECK(c.notify.command == std::vector<std::string>{"/usr/bin/logger", "-t", "wanbatch"});
  REQUIRE(c.notify.webhooks.size() == 2);
  CHECK(c.notify.webhooks[0].format == "slack");
  CHECK(c.notify.webhooks[0].events == std::vector<std::string>{"shot_held", "credits_low"});
  CHECK(c.notify.webhooks[1].events == std::vector<std::string>{"batch_finished"});
  CHECK(c.notify.max_pending == 50);
  CHECK(parse_config(base, "c.yaml").notify.max_pending == 1000);
  CHECK(c.video.ffprobe == "/usr/bin/ffprobe");
  CHECK(c.video.timeout_seconds == 5);
  CHECK(c.contact_sheet.interval_seconds == 2);
  auto refused = [&](const std::string& extra, const std::string& says) {
    try {
      parse_config(base + extra, "c.yaml");
      FAIL("accepted: " << extra);
    } catch (const Error& e) {
      CHECK_MESSAGE(std::string(e.what()).find(says) != std::string::npos, e.what());
    }
  };
  refused("notify: {command: 'rm -rf /'}\n", "must be a list");
  refused("notify: {max_pending: 0}\n", "notify.max_pending");
  refused("notify: {command: [sh, -c, x], webhooks: [{url: 'http://example.com/h'}]}\n", "must be an https URL");
  // A refused webhook URL is not echoed: it may be a credential, and the message is logged.
  try {
    parse_config(base + "notify: {webhooks: [{url: 'http://hooks.example/services/T0/B0/SECRET'}]}\n", "c.yaml");
    FAIL("accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("SECRET") == std::string::npos);
  }
  refused("notify: {webhooks: [{url: 'https://h.example', format: teams}]}\n", "json, slack or discord");
  refused("notify: {webhooks: [{url: 'https://h.example', events: [everything]}]}\n", "unknown event");
  refused("video: {ffprobe: bin/ffprobe}\n", "absolute path");
}
