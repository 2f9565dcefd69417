// Notifications end to end, through the real binaries: the daemon renders a
// batch on the simulator, and a webhook receiver of the test's own on
// 127.0.0.1 gets batch_finished, signed; the contact sheet it names exists and
// has a card for every shot.
#include <doctest/doctest.h>

#include <mutex>
#include <vector>

#include "daemon/notifier.h"
#include "tests/integration/rig.h"
#include "tests/sim/http_server.h"

namespace {

struct Receiver {
  std::mutex mu;
  std::vector<sim::Request> got;
  sim::HttpServer server{[this](const sim::Request& r) {
    std::lock_guard<std::mutex> lock(mu);
    got.push_back(r);
    sim::Response res;
    res.status = 204;
    return res;
  }};
  Receiver() { server.start(0); }
  std::vector<sim::Request> all() {
    std::lock_guard<std::mutex> lock(mu);
    return got;
  }
};

}  // namespace

TEST_CASE("a finished batch reaches a local webhook, signed, and its contact sheet has a card for every shot") {
  Receiver hook;
  const std::string url = "http://127.0.0.1:" + std::to_string(hook.server.port()) + "/hooks/wanbatch";
  Rig rig({}, "notify:\n  webhooks:\n    - {url: \"" + url +
                  "\", format: json, secret: e2e-s3cret, events: [batch_finished, shot_held]}\n"
                  "contact_sheet: {interval_seconds: 1}\n");
  rig.start_daemon();
  rig.drop("lake.yaml", manifest("lake", 5));
  REQUIRE_MESSAGE(test::eventually([&] { return !hook.all().empty(); }), rig.log());
  std::vector<sim::Request> got = hook.all();
  REQUIRE(got.size() == 1);  // every shot DONE: no shot_held
  const sim::Request& r = got[0];
  CHECK(r.method == "POST");
  CHECK(r.path == "/hooks/wanbatch");
  CHECK(r.header("x-wanbatch-event") == "batch_finished");
  CHECK(r.header("x-wanbatch-signature") == "sha256=" + wb::hmac_sha256_hex("e2e-s3cret", r.body));
  json j = json::parse(r.body);
  CHECK(j["event"] == "batch_finished");
  CHECK(j["batch"] == "lake");
  CHECK(j["state"] == "success");
  CHECK(j["shots"] == 5);
  CHECK(j["states"]["DONE"] == 5);
  CHECK(j["report"] == rig.root + "/out/lake/report.json");
  REQUIRE(j["contact_sheet"] == rig.root + "/out/lake/index.html");
  REQUIRE(test::exists(rig.root + "/out/lake/report.json"));
  const std::string sheet = test::read(j["contact_sheet"].get<std::string>());
  for (const char* id : {"sh000", "sh010", "sh020", "sh030", "sh040"}) {
    CHECK_MESSAGE(sheet.find(std::string("data-shot=\"") + id + "\"") != std::string::npos, id);
    CHECK(test::exists(rig.root + "/out/lake/" + id + ".mp4"));
  }
  CHECK(sheet.find("data-state=\"DONE\"") != std::string::npos);
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
  // Delivered: nothing is left to send after a restart.
  CHECK(wb::Store::open(rig.root + "/state/db", wb::Store::Mode::read_only)->notifications().empty());
}
