// Limits and operator commands with the real binaries: 429 storms, credits
// running out and topped up, budgets, expiry after a long stop, and the
// control channel (pause, resume, retry, cancel).
#include <doctest/doctest.h>
#include <signal.h>

#include <nlohmann/json.hpp>
#include <optional>

#include "jobs/curl_transport.h"
#include "tests/integration/rig.h"

using nlohmann::json;

namespace {

wb::HttpResponse sim_get(const std::string& base, const std::string& path) {
  wb::CurlTransport t(true);
  wb::HttpRequest r;
  r.url = base + path;
  r.headers = {"x-api-key: test-key"};
  std::optional<wb::HttpResponse> out;
  t.start(r, [&](wb::HttpResponse resp) { out = std::move(resp); });
  for (int i = 0; i < 500 && !out; ++i) t.perform(wb::Millis(10), {});
  REQUIRE(out);
  return *out;
}

json sim_post(const std::string& base, const std::string& path, const std::string& body) {
  wb::CurlTransport t(true);
  wb::HttpRequest r;
  r.method = "POST";
  r.url = base + path;
  r.body = body;
  r.headers = {"Content-Type: application/json"};
  std::optional<wb::HttpResponse> out;
  t.start(r, [&](wb::HttpResponse resp) { out = std::move(resp); });
  for (int i = 0; i < 500 && !out; ++i) t.perform(wb::Millis(10), {});
  REQUIRE(out);
  return json::parse(out->body);
}

std::string cli(Rig& rig, std::vector<std::string> args, int* code = nullptr) {
  std::vector<std::string> argv = {WANBATCH_BIN, "--config", rig.config};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  int c = test::run(argv, &out, {{"SEGMIND_API_KEY", "test-key"}});
  if (code) *code = c;
  return out;
}

// Three shots are submitted, the daemon is killed, their renders end and their
// records expire while it is down, and it starts again.
void submit_then_stop_until_expired(Rig& rig) {
  rig.start_daemon();
  rig.drop("late.yaml", manifest("late", 3));
  // Killed once all three request_ids are recorded (none left SUBMITTING).
  REQUIRE(test::eventually([&] {
    json st = rig.states("late");
    return rig.billed().size() == 3 && !st.empty() && st.value("PENDING", 0) + st.value("SUBMITTING", 0) == 0;
  }));
  rig.daemon->signal(SIGKILL);
  rig.daemon->wait();
  // Down until the simulator has forgotten every one of them.
  std::vector<std::string> ids;
  std::istringstream ledger(test::read(rig.ledger));
  for (std::string line; std::getline(ledger, line);)
    if (!line.empty()) ids.push_back(json::parse(line)["request_id"]);
  REQUIRE(ids.size() == 3);
  REQUIRE(test::eventually([&] {
    for (const auto& id : ids)
      if (sim_get(rig.base, "/v2/requests/" + id + "/status").status != 404) return false;
    return true;
  }));
  rig.start_daemon();
}

}  // namespace

TEST_CASE("a 429 storm: every shot completes, none is billed twice") {
  Rig rig({"--rate-limit", "3", "--rate-window", "20"});  // 3 submits per 40 ms real
  rig.start_daemon();
  rig.drop("storm.yaml", manifest("storm", 20));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("storm"); }, std::chrono::seconds(120)), rig.log());
  auto billed = rig.billed();
  CHECK(billed.size() == 20);
  for (auto& [shot, n] : billed) CHECK_MESSAGE(n == 1, shot);
  CHECK(rig.status()["batches"][0]["states"]["DONE"] == 20);
  CHECK(rig.log().find("rate limited") != std::string::npos);
}

TEST_CASE("credits run out mid-batch: shots wait, then finish after a top-up") {
  Rig rig({"--credits", "2.0"}, "credits: {check_interval_seconds: 0.2}\n");  // 720P 4 s shots: 0.4 each
  rig.start_daemon();
  rig.drop("broke.yaml", manifest("broke", 10));
  REQUIRE_MESSAGE(test::eventually([&] {
    return cli(rig, {"status"}).find("credits") != std::string::npos && rig.states("broke").value("DONE", 0) >= 3;
  }), rig.log());
  CHECK_FALSE(rig.finished("broke"));
  auto st = rig.status()["batches"][0]["states"];
  CHECK(st.value("FAILED", 0) + st.value("HELD", 0) + st.value("REJECTED", 0) == 0);
  sim_post(rig.base, "/sim/credits", R"({"add": 100})");
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("broke"); }, std::chrono::seconds(60)), rig.log());
  CHECK(rig.status()["batches"][0]["states"]["DONE"] == 10);
  for (auto& [shot, n] : rig.billed()) CHECK_MESSAGE(n == 1, shot);
}

TEST_CASE("a batch budget stops the batch at its cap and says why") {
  Rig rig;
  rig.start_daemon();
  // 10 shots at ~0.4 (720P, 4 s) or ~0.6 (1080P); a 2.0 budget.
  std::string text = "budget_credits: 2.0\nbatch: capped\nshots:\n";
  for (int i = 0; i < 10; ++i)
    text += "  - {id: s" + std::to_string(i) + ", prompt: \"s" + std::to_string(i) +
            ": p\", image: 'https://cdn.example/a.png', duration: 4}\n";
  rig.drop("capped.yaml", text);
  REQUIRE_MESSAGE(test::eventually([&] {
    return rig.states("capped").value("DONE", 0) == 5;
  }), rig.log());
  // The five costs are known; the gates have had their turns since and sent nothing more.
  rig.loop_turns();
  CHECK(count_events(rig.daemon_ledger(), "attempt") == 5);
  CHECK(rig.billed().size() == 5);
  std::string st = cli(rig, {"status"});
  CHECK_MESSAGE(st.find("5 shot(s) waiting: batch budget 2.00 would be exceeded") != std::string::npos, st);
}

TEST_CASE("expiry after a long stop: HELD by default") {
  Rig rig({"--expiry", "100"});  // records kept 0.2 s real after the render
  submit_then_stop_until_expired(rig);
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("late"); }), rig.log());
  std::string st = cli(rig, {"status"});
  CHECK(rig.status()["batches"][0]["states"]["HELD"] == 3);
  CHECK(st.find("expired: the provider no longer knows request") != std::string::npos);
  CHECK(rig.billed().size() == 3);
}

TEST_CASE("expiry after a long stop: resubmitted with on_expired: resubmit") {
  Rig rig({"--expiry", "100"}, "on_expired: resubmit\n");
  submit_then_stop_until_expired(rig);
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("late"); }), rig.log());
  CHECK(rig.status()["batches"][0]["states"]["DONE"] == 3);
  for (auto& [shot, n] : rig.billed()) CHECK(n == 2);  // the price of resubmitting: documented
}

TEST_CASE("cancel of a paid take on the provider keeps it running and exits 3, cancel --abandon abandons it") {
  Rig rig({"--render-slow", "breeze:80000"});  // the job renders far longer than the test
  rig.start_daemon();
  rig.drop("paid.yaml", manifest("paid", 1));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.states("paid").value("IN_FLIGHT", 0) == 1; }), rig.log());
  int code = 0;
  for (int i = 0; i < 2; ++i) {  // however often it is asked
    std::string out = cli(rig, {"cancel", "paid/sh000"}, &code);
    CHECK(code == 3);
    CHECK_MESSAGE(out.find("cancel: 0 shot(s)") != std::string::npos, out);
    CHECK_MESSAGE(out.find("left alone: sh000: take 1 on the provider (request_id ") != std::string::npos, out);
    CHECK_MESSAGE(out.find("is paid for and keeps running to its end") != std::string::npos, out);
    CHECK_MESSAGE(out.find("`wanbatch cancel --abandon paid/sh000`") != std::string::npos, out);
    CHECK(rig.states("paid").value("IN_FLIGHT", 0) == 1);
  }
  CHECK(count_events(rig.daemon_ledger(), "operator_cancel") == 0);
  std::string out = cli(rig, {"cancel", "--abandon", "paid/sh000"}, &code);
  CHECK(code == 0);
  CHECK_MESSAGE(out.find("cancel: 1 shot(s) sh000") != std::string::npos, out);
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("paid"); }), rig.log());
  CHECK(rig.states("paid").value("CANCELLED", 0) == 1);
  CHECK(count_events(rig.daemon_ledger(), "operator_cancel") == 1);
  CHECK(rig.billed()["sh000"] == 1);
}

TEST_CASE("operator commands: pause, resume, retry a HELD shot, cancel") {
  Rig rig({"--drop-rate", "1"});
  rig.start_daemon();
  REQUIRE(test::eventually([&] { return rig.log().find("loaded") != std::string::npos; }));
  int code = 0;
  CHECK(cli(rig, {"pause"}, &code).find("submits paused") != std::string::npos);
  CHECK(code == 0);
  rig.drop("ops.yaml", manifest("ops", 3));
  REQUIRE(test::eventually([&] { return cli(rig, {"status"}).find("paused by an operator") != std::string::npos; }));
  CHECK(rig.billed().empty());
  CHECK(cli(rig, {"status"}).find("submits PAUSED") != std::string::npos);
  CHECK(cli(rig, {"cancel", "ops/sh020"}).find("cancel: 1 shot(s) sh020") != std::string::npos);
  cli(rig, {"resume"});
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("ops"); }), rig.log());
  auto st = rig.status()["batches"][0]["states"];
  CHECK(st["HELD"] == 2);  // the simulator dropped both answers
  CHECK(st["CANCELLED"] == 1);
  CHECK(cli(rig, {"retry", "ops/nope"}, &code).find("no shot") != std::string::npos);
  CHECK(code == 1);
  // An ambiguous submit needs a new (billed) job: listed with its cost, done only with --yes.
  std::string dry = cli(rig, {"retry", "ops/sh000"});
  CHECK(dry.find("retry: 0 shot(s)") != std::string::npos);
  CHECK(dry.find("sh000: needs a new submit, a new billed job (~") != std::string::npos);
  CHECK(rig.billed()["sh000"] == 1);
  std::string done = cli(rig, {"retry", "ops/sh000", "--yes"});
  CHECK(done.find("retry: 1 shot(s) sh000") != std::string::npos);
  CHECK(done.find("sh000: a new submit, a new billed job (~") != std::string::npos);
  REQUIRE(test::eventually([&] { return rig.billed()["sh000"] == 2; }));
  CHECK(rig.billed()["sh010"] == 1);
}

TEST_CASE("operator commands without a daemon say so") {
  Rig rig;
  int code = 0;
  CHECK(cli(rig, {"pause"}, &code).find("no running daemon") != std::string::npos);
  CHECK(code == 1);
}

TEST_CASE("estimate: the cost, and whether balance and budget cover it") {
  Rig rig({"--credits", "1.0"});
  test::write(rig.root + "/media/est.yaml", "budget_credits: 1.5\n" + manifest("est", 4));
  int code = 0;
  std::string out = cli(rig, {"estimate", rig.root + "/media/est.yaml"}, &code);
  // 4 shots of 4 s: sh010 at 1080P (0.15/s), the rest 720P (0.1/s): 0.6 + 3 x 0.4 = 1.8
  // (0.15 x 4 is 0.6000000000000001 as a double: shown exactly, as every figure)
  CHECK_MESSAGE(out.find("4 shots, ~1.8 credits, 1080P 4 s at 0.15/s, 720P 12 s at 0.1/s\n") != std::string::npos, out);
  CHECK(out.find("budget_credits 1.5: does NOT cover it") != std::string::npos);
  CHECK(out.find("balance 1 (less the reserve 0): does NOT cover it") != std::string::npos);
  CHECK(code == 1);
  // A balance of more than six digits is shown whole (ostream's default wrote 1.23457e+06).
  sim_post(rig.base, "/sim/credits", R"({"set": 1234567.89})");
  out = cli(rig, {"estimate", rig.root + "/media/est.yaml"}, &code);
  CHECK_MESSAGE(out.find("balance 1234567.89 (less the reserve 0): covers it") != std::string::npos, out);
  CHECK(code == 1);  // the batch's budget still does not
}

TEST_CASE("trickling outputs free their download slot: each download is cut after the stall time and the shot HELD") {
  Rig rig({"--trickle-downloads", "4"});
  // One download slot: before downloads had a speed floor, the first trickle held it for hours.
  std::string text = test::read(rig.config);
  std::string limits = "limits: {max_in_flight: 8, submits_per_minute: 60000}";
  REQUIRE(text.find(limits) != std::string::npos);
  text.replace(text.find(limits), limits.size(),
               "limits: {max_in_flight: 8, submits_per_minute: 60000, max_concurrent_downloads: 1,"
               " download_min_bytes_per_second: 16384, download_stall_seconds: 1}");
  text.replace(text.find("max_attempts: 5"), 15, "max_attempts: 1");
  test::write(rig.config, text);
  rig.start_daemon();
  rig.drop("slow.yaml", manifest("slow", 2));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("slow"); }, std::chrono::seconds(20)), rig.log());
  auto held = rig.held_lines();
  CHECK(held.size() == 2);
  for (const auto& line : held) CHECK_MESSAGE(line.find("too slow") != std::string::npos, line);
}

TEST_CASE("a request budget: submits yield to following work and status says why, daemon-wide") {
  Rig rig;
  // 60 requests a minute: a bucket of ten. The first balance read takes one and
  // eight submits leave the last for following work; the other twelve wait.
  std::string text = test::read(rig.config);
  std::string limits = "limits: {max_in_flight: 8, submits_per_minute: 60000}";
  REQUIRE(text.find(limits) != std::string::npos);
  text.replace(text.find(limits), limits.size(),
               "limits: {max_in_flight: 50, submits_per_minute: 60000, requests_per_minute: 60}");
  test::write(rig.config, text);
  rig.start_daemon();
  // https images only: no uploads, so shots go strictly in order and only the
  // next one to go carries the reason itself.
  std::string m = "batch: frugal\nshots:\n";
  for (int i = 0; i < 20; ++i)
    m += "  - {id: s" + std::to_string(i) + ", prompt: \"s" + std::to_string(i) +
         ": p\", image: 'https://cdn.example/a.png', duration: 4}\n";
  rig.drop("frugal.yaml", m);
  const std::string wait = "waiting: request budget (limits.requests_per_minute 60): following jobs comes first";
  std::string st;
  REQUIRE_MESSAGE(test::eventually([&] {
    st = cli(rig, {"status"});
    return st.find("\nsubmits: " + wait + "\n") != std::string::npos;
  }), (st + rig.log()));
  // Every pending shot is counted under the wait, not only the one that carries it.
  auto at = st.find(" shot(s) " + wait);
  REQUIRE_MESSAGE(at != std::string::npos, st);
  auto line = st.rfind('\n', at) + 1;
  CHECK_MESSAGE(std::stoi(st.substr(line, at - line)) >= 2, st);
  json j;
  REQUIRE(test::eventually([&] {
    j = rig.status();
    return j.value("submit_wait", "") == wait;
  }));
  CHECK(j["batches"][0]["states"].value("PENDING", 0) >= 2);
}
