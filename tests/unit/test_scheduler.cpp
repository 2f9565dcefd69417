// The shot state machine with a fake clock and a fake transport: no network,
// no sleeps. Each test answers the requests the scheduler starts.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <nlohmann/json.hpp>

#include "jobs/engine/scheduler.h"
#include "jobs/segmind.h"
#include "tests/sim/simulator.h"
#include "tests/unit/scheduler_rig.h"

using namespace wb;
using test::FakeTransport;

namespace {

const char* kOne = "batch: b\nshots: [{id: s1, prompt: wind, image: 'https://cdn.example/a.png'}]\n";

struct Rig : test::SchedulerRig {
  Rig() { start(); }
  void restart() { start(); }

  Shot shot(const std::string& key) {
    auto slash = key.find('/');
    for (auto& s : store->shots(key.substr(0, slash)))
      if (s.spec.id == key.substr(slash + 1)) return s;
    FAIL("no shot " << key);
    return {};
  }

  void step(Millis d = Millis(0)) { tick(d); }

  // Takes the single pending shot to DOWNLOADING of https://cdn.example/v.mp4 (request r1).
  void up_to_download() {
    step();
    answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1"})");
    until("/status");
    answer("/status", 200, R"({"status":"COMPLETED"})");
    step();
    answer("/v2/requests/r1", 200, R"({"status":"COMPLETED","output":"https://cdn.example/v.mp4"})");
  }

  // kOne accepted and taken to its download: that request, on the wire, taken.
  FakeTransport::Call first_download() {
    accept(kOne);
    up_to_download();
    step();
    return net.take("cdn.example/v.mp4");
  }

  // Answers submit -> status COMPLETED -> result -> download for one shot.
  void complete(const std::string& request_id, const std::string& remaining_credits = "9") {
    until("/v2/requests/" + request_id + "/status");
    auto poll = net.take("/v2/requests/" + request_id + "/status");
    FakeTransport::reply(poll, 200, R"({"status":"COMPLETED"})");
    step();
    auto fetch = net.take("/v2/requests/" + request_id);
    FakeTransport::reply(fetch, 200,
                         R"({"status":"COMPLETED","output":{"video":{"url":"https://cdn.example/)" + request_id +
                             R"(.mp4"}},"metrics":{"cost":0.5,"remaining_credits":)" + remaining_credits + "}}");
    step();
    auto dl = net.take("https://cdn.example/" + request_id + ".mp4");
    FakeTransport::deliver(dl, std::string(sim::sample_mp4()));
  }
};


}  // namespace

TEST_CASE("one shot goes from PENDING to DONE with a video, a sidecar and a report") {
  Rig rig;
  rig.accept(kOne);
  rig.step();
  auto submit = rig.net.take("/v2/wan2.7-i2v");
  CHECK(submit.request.method == "POST");
  CHECK(submit.request.connection == ConnectionUse::fresh);
  CHECK(nlohmann::json::parse(submit.request.body)["prompt"] == "wind");
  // SUBMITTING and its ledger line are on disk before the answer.
  CHECK(rig.shot("b/s1").state == ShotState::submitting);
  CHECK(rig.store->ledger().back()["event"] == "attempt");
  FakeTransport::reply(submit, 200, R"({"request_id":"r1","status":"QUEUED"})");
  CHECK(rig.shot("b/s1").state == ShotState::in_flight);
  CHECK(rig.shot("b/s1").request_id == "r1");
  CHECK(rig.store->shot_by_request("r1") == "b/s1");

  rig.step();
  CHECK_FALSE(rig.net.has("/status"));  // not due yet
  rig.until("/v2/requests/r1/status");
  auto poll = rig.net.take("/v2/requests/r1/status");
  FakeTransport::reply(poll, 200, R"({"status":"PROCESSING"})");
  rig.step(Millis(400));
  rig.complete("r1");

  Shot s = rig.shot("b/s1");
  CHECK(s.state == ShotState::done);
  CHECK(s.cost == doctest::Approx(0.5));
  auto files = test::list(rig.root + "/out/b");
  std::erase(files, "s1.jpg");  // the contact sheet's poster frame, when ffmpeg is installed
  CHECK(files == std::vector<std::string>{"report.json", "s1.json", "s1.mp4"});
  std::string sidecar = test::read(rig.root + "/out/b/s1.json");
  CHECK(sidecar.find("\"request_id\": \"r1\"") != std::string::npos);
  CHECK(sidecar.find("SECRET-KEY") == std::string::npos);
  auto report = nlohmann::json::parse(test::read(rig.root + "/out/b/report.json"));
  CHECK(report["states"]["DONE"] == 1);
  CHECK(rig.finished == std::vector<std::string>{"b"});
  CHECK(rig.store->batch("b")->finished);
}

TEST_CASE("a planned poll is rounded up to a slot of min_interval / 40, so that polls planned a few ms apart go out in one turn, never early") {
  Rig rig;
  rig.config.poll.min_interval_seconds = 2;  // the shipped bounds: slots of 50 ms
  rig.config.poll.max_interval_seconds = 300;
  rig.start();
  rig.accept("batch: b\nshots: [{id: s1, prompt: wind, image: 'https://cdn.example/a.png'},"
             " {id: s2, prompt: wind, image: 'https://cdn.example/a.png'}]\n");
  rig.step();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1","status":"QUEUED"})");
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r2","status":"QUEUED"})");
  rig.until("/status");
  while (!(rig.net.has("/r1/status") && rig.net.has("/r2/status"))) rig.tick(Millis(1));
  // Answered 7 ms apart, at a time that is not on a slot.
  rig.tick(Millis(13));
  rig.answer("/r1/status", 200, R"({"status":"PROCESSING"})");
  const int64_t first = rig.clock.mono.time_since_epoch().count() / 1000000;
  rig.tick(Millis(7));
  rig.answer("/r2/status", 200, R"({"status":"PROCESSING"})");
  const int64_t second = rig.clock.mono.time_since_epoch().count() / 1000000;
  const int64_t due1 = rig.sched->book().find("b/s1")->due_ms, due2 = rig.sched->book().find("b/s2")->due_ms;
  INFO("due1 " << due1 << " first " << first << " due2 " << due2 << " second " << second);
  CHECK(due1 % 50 == 0);
  CHECK(due2 % 50 == 0);
  CHECK(due1 >= first + 2000);  // the floor is kept: rounded up, never down
  CHECK(due2 >= second + 2000);
  CHECK(due1 - first < 2000 * 10);  // and not pushed far (the planner's jitter is in there too)
}

TEST_CASE("a result's remaining_credits counts as a balance read: no API read for an interval after it") {
  Rig rig;
  rig.config.credits.check_interval_seconds = 300;
  rig.start();
  rig.accept(kOne);
  rig.sched->tick();
  rig.answer("/v1/get-user-credits", 200, R"({"credits":1000})");  // the first read, at 0 s
  rig.sched->tick();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1"})");
  rig.clock.advance(Millis(250000));
  rig.complete("r1");  // its result carries remaining_credits 9, at about 250 s
  REQUIRE(rig.shot("b/s1").state == ShotState::done);
  // 300 s after the first read, the balance is 50 s old: not read again.
  rig.clock.advance(Millis(100000));
  rig.sched->tick();
  CHECK_FALSE(rig.net.has("/v1/get-user-credits"));
  // An interval after the result's balance, it is.
  rig.clock.advance(Millis(200000));
  rig.sched->tick();
  CHECK(rig.net.has("/v1/get-user-credits"));
}

TEST_CASE("a result's remaining_credits never raises the balance: a garbled 1e300 opens no budget") {
  Rig rig;
  rig.start();
  rig.accept("batch: b\nshots:\n  - {id: s1, prompt: p, image: 'https://cdn.example/a.png'}\n"
             "  - {id: s2, prompt: p, image: 'https://cdn.example/a.png'}\n"
             "  - {id: s3, prompt: p, image: 'https://cdn.example/a.png'}\n");
  rig.sched->tick();
  rig.answer("/v1/get-user-credits", 200, R"({"credits":20})");
  rig.sched->tick();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1"})");
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r2"})");
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r3"})");
  rig.complete("r1", "1e300");
  CHECK(rig.sched->balance() == 20);
  rig.complete("r2", "19");
  CHECK(rig.sched->balance() == 19);
  rig.complete("r3", "50");  // a top-up is for the API's own read to show
  CHECK(rig.sched->balance() == 19);
}

TEST_CASE("every API request carries the key header and nothing else does") {
  Rig rig;
  test::write(rig.root + "/media/a.png", test::png());  // a local frame: an upload too
  rig.accept("batch: b\nshots: [{id: s1, prompt: wind, image: a.png}]\n");
  rig.step();
  rig.answer("/upload-asset", 200, R"({"file_urls":["https://images.example/a.png"]})");
  rig.step();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1"})");
  rig.until("/status");
  rig.answer("/status", 200, R"({"status":"COMPLETED"})");
  rig.step();
  rig.answer("/v2/requests/r1", 200, R"({"status":"COMPLETED","output":"https://cdn.example/v.mp4"})");
  rig.step();
  auto dl = rig.net.take("cdn.example/v.mp4");
  FakeTransport::deliver(dl, std::string(sim::sample_mp4()));
  REQUIRE(rig.shot("b/s1").state == ShotState::done);

  const std::string api = rig.config.api.base_url + "/";
  std::set<std::string> seen;  // the kinds of request checked, so that no check below ran over nothing
  for (const auto& r : rig.net.started) {
    std::string kind = r.url.find("/v1/get-user-credits") != std::string::npos ? "credits"
                       : r.url.find("/upload-asset") != std::string::npos   ? "upload"
                       : r.url.find("/v2/wan2.7-i2v") != std::string::npos  ? "submit"
                       : r.url.find("/status") != std::string::npos         ? "status"
                       : r.url.find("/v2/requests/") != std::string::npos   ? "result"
                                                                            : "other";
    seen.insert(kind);
    auto keys = std::count(r.headers.begin(), r.headers.end(), "x-api-key: SECRET-KEY");
    if (r.url.rfind(api, 0) == 0) {
      CHECK_MESSAGE(keys == 1, kind << " " << r.url);
      continue;
    }
    CHECK_MESSAGE(kind == "other", r.url);
    for (const auto& h : r.headers) CHECK_MESSAGE(h.find("SECRET-KEY") == std::string::npos, r.url << ": " << h);
    CHECK(r.url.find("SECRET-KEY") == std::string::npos);
    CHECK(r.body.find("SECRET-KEY") == std::string::npos);
  }
  CHECK(seen == std::set<std::string>{"credits", "upload", "submit", "status", "result", "other"});
  CHECK(rig.net.started.back().url == "https://cdn.example/v.mp4");  // "other" is the download
}

TEST_CASE("a submit sent but unanswered is HELD and never sent again") {
  Rig rig;
  rig.accept(kOne);
  rig.step();
  auto submit = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::fail(submit, NetError::unknown_outcome);
  Shot s = rig.shot("b/s1");
  CHECK(s.state == ShotState::held);
  CHECK(s.reason.find("ambiguous submit") == 0);
  for (int i = 0; i < 5; ++i) rig.step(Millis(60000));
  CHECK(rig.net.calls.empty());
  CHECK(rig.finished == std::vector<std::string>{"b"});
}

TEST_CASE("a submit that never left is retried after a backoff, then HELD after max_attempts") {
  Rig rig;
  rig.accept(kOne);
  for (int attempt = 1; attempt <= rig.config.retry.max_attempts; ++attempt) {
    rig.step(Millis(1000));
    auto submit = rig.net.take("/v2/wan2.7-i2v");
    FakeTransport::fail(submit, NetError::not_sent);
    if (attempt < rig.config.retry.max_attempts) {
      CHECK(rig.shot("b/s1").state == ShotState::pending);
      rig.step();
      CHECK_FALSE(rig.net.has("/v2/wan2.7-i2v"));  // waits out the backoff
    }
  }
  Shot s = rig.shot("b/s1");
  CHECK(s.state == ShotState::held);
  CHECK(s.reason.find("submit failed 5 times") == 0);
  CHECK(s.submit_attempts == 5);
}

TEST_CASE("5xx on submit retries - 400 rejects - 406 content type is held") {
  Rig rig;
  rig.accept("batch: b\nshots:\n  - {id: a, prompt: p, image: 'https://x/a.png'}\n"
             "  - {id: b, prompt: p, image: 'https://x/b.png'}\n  - {id: c, prompt: p, image: 'https://x/c.png'}\n");
  rig.step();
  auto a = rig.net.take("/v2/wan2.7-i2v");
  auto b = rig.net.take("/v2/wan2.7-i2v");
  auto c = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::reply(a, 502, "Bad gateway");
  FakeTransport::reply(b, 400, R"({"error":"Invalid image URL"})");
  FakeTransport::reply(c, 406, "Invalid content type");
  CHECK(rig.shot("b/a").state == ShotState::pending);
  CHECK(rig.shot("b/b").state == ShotState::rejected);
  CHECK(rig.shot("b/b").reason == "HTTP 400: Invalid image URL");
  CHECK(rig.shot("b/c").state == ShotState::held);
  CHECK(rig.shot("b/c").reason.find("Invalid content type") != std::string::npos);
}

TEST_CASE("429 pauses every submit until the reset time, without counting an attempt") {
  Rig rig;
  rig.accept("batch: b\nshots:\n  - {id: a, prompt: p, image: 'https://x/a.png'}\n  - {id: b, prompt: p, image: 'https://x/b.png'}\n");
  rig.config.limits.max_in_flight = 1;
  rig.step();
  auto a = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::reply(a, 429, R"({"error":"Rate limit exceeded"})",
                       {{"x-rate-limit-reset-at-utc", iso8601_utc(rig.clock.now + Millis(30000))}});
  CHECK(rig.shot("b/a").submit_attempts == 0);
  rig.step(Millis(29000));
  CHECK(rig.net.calls.empty());
  rig.step(Millis(1001));
  CHECK(rig.net.has("/v2/wan2.7-i2v"));
}

TEST_CASE("never more shots in flight than limits.max_in_flight, and higher priority first") {
  Rig rig;
  rig.config.limits.max_in_flight = 2;
  rig.accept("batch: low\nshots:\n  - {id: l1, prompt: p, image: 'https://x/a.png'}\n", "low.yaml");
  rig.accept("batch: high\npriority: 5\nshots:\n  - {id: h1, prompt: p, image: 'https://x/a.png'}\n"
             "  - {id: h2, prompt: p, image: 'https://x/a.png'}\n  - {id: h3, prompt: p, image: 'https://x/a.png'}\n",
             "high.yaml");
  rig.step();
  REQUIRE(rig.net.calls.size() == 2);
  CHECK(rig.shot("high/h1").state == ShotState::submitting);
  CHECK(rig.shot("high/h2").state == ShotState::submitting);
  CHECK(rig.shot("low/l1").state == ShotState::pending);
  auto s1 = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::reply(s1, 200, R"({"request_id":"r1"})");
  rig.step(Millis(10));
  CHECK(rig.net.calls.size() == 1);  // still two in flight: no new submit
  auto s2 = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::reply(s2, 422, R"({"status":"FAILED","error":"x"})");
  rig.step();
  CHECK(rig.shot("high/h3").state == ShotState::submitting);
}

TEST_CASE("a restart resumes polling by request_id and holds a shot caught in SUBMITTING") {
  Rig rig;
  rig.accept("batch: b\nshots:\n  - {id: a, prompt: p, image: 'https://x/a.png'}\n  - {id: b, prompt: p, image: 'https://x/b.png'}\n");
  rig.step();
  auto a = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::reply(a, 200, R"({"request_id":"ra"})");
  // b's POST is on the wire when the daemon dies: its record says SUBMITTING.
  rig.net.calls.clear();
  rig.restart();
  CHECK(rig.shot("b/b").state == ShotState::held);
  CHECK(rig.shot("b/b").reason.find("ambiguous submit") == 0);
  CHECK(rig.store->ledger().back()["event"] == "ambiguous_on_restart");
  rig.until("/v2/requests/ra/status", Millis(1000));  // followed again within a second
  CHECK(rig.net.has("/v2/requests/ra/status"));
  CHECK_FALSE(rig.net.has("/v2/wan2.7-i2v"));
  rig.complete("ra");
  CHECK(rig.shot("b/a").state == ShotState::done);
  int attempts = 0;
  for (auto& e : rig.store->ledger()) attempts += e["event"] == "attempt";
  CHECK(attempts == 2);
}

TEST_CASE("FAILED ends the shot with the provider's error - an expired record is HELD") {
  Rig rig;
  rig.accept("batch: b\nshots:\n  - {id: a, prompt: p, image: 'https://x/a.png'}\n  - {id: b, prompt: p, image: 'https://x/b.png'}\n");
  rig.step();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"ra"})");
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"rb"})");
  rig.until("/v2/requests/ra/status");
  rig.until("/v2/requests/rb/status");
  auto pa = rig.net.take("/v2/requests/ra/status");
  auto pb = rig.net.take("/v2/requests/rb/status");
  FakeTransport::reply(pa, 422, R"({"status":"FAILED","error":"Content blocked"})");
  FakeTransport::reply(pb, 404, R"({"error":"Request rb not found"})");
  CHECK(rig.shot("b/a").state == ShotState::failed);
  CHECK(rig.shot("b/a").reason == "Content blocked");
  CHECK(rig.shot("b/b").state == ShotState::held);
  CHECK(rig.shot("b/b").reason.find("expired") == 0);
  auto report = nlohmann::json::parse(test::read(rig.root + "/out/b/report.json"));
  CHECK(report["states"]["FAILED"] == 1);
  CHECK(report["states"]["HELD"] == 1);
}

TEST_CASE("polls that fail are retried without limit and never resubmit") {
  Rig rig;
  rig.accept(kOne);
  rig.step();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1"})");
  for (int i = 0; i < 12; ++i) {
    rig.until("/status");
    auto p = rig.net.take("/status");
    if (i % 2) FakeTransport::reply(p, 503, "");
    else FakeTransport::fail(p, NetError::unknown_outcome);
  }
  CHECK(rig.shot("b/s1").state == ShotState::in_flight);
  CHECK_FALSE(rig.net.has("/v2/wan2.7-i2v"));
}

TEST_CASE("a local frame is uploaded once for every shot that uses it") {
  Rig rig;
  test::write(rig.root + "/media/a.png", test::png());
  rig.accept("batch: b\nshots:\n  - {id: a, prompt: p, image: a.png}\n  - {id: b, prompt: p, image: a.png, last_frame: a.png}\n");
  rig.step();
  auto up = rig.net.take("/upload-asset");
  CHECK(up.request.body.find("data:image/png;base64,") != std::string::npos);
  CHECK_FALSE(rig.net.has("/upload-asset"));
  rig.step();
  CHECK_FALSE(rig.net.has("/v2/wan2.7-i2v"));  // waits for the upload
  FakeTransport::reply(up, 200, R"({"file_urls":["https://images.example/a.png"]})");
  rig.step();
  CHECK_FALSE(rig.net.has("/upload-asset"));
  auto s1 = rig.net.take("/v2/wan2.7-i2v");
  auto s2 = rig.net.take("/v2/wan2.7-i2v");
  CHECK(nlohmann::json::parse(s1.request.body)["image"] == "https://images.example/a.png");
  CHECK(nlohmann::json::parse(s2.request.body)["last_frame"] == "https://images.example/a.png");
}

TEST_CASE("a download that is not an MP4 is retried, then HELD - nothing half-written remains") {
  Rig rig;
  rig.accept(kOne);
  rig.up_to_download();
  for (int i = 0; i < rig.config.retry.max_attempts; ++i) {
    rig.step(Millis(1000));
    auto dl = rig.net.take("cdn.example/v.mp4");
    FakeTransport::deliver(dl, "<html>Access denied</html>");
  }
  Shot s = rig.shot("b/s1");
  CHECK(s.state == ShotState::held);
  CHECK(s.reason.find("not a valid MP4") != std::string::npos);
  CHECK(test::list(rig.root + "/out/b") == std::vector<std::string>{"report.json"});
  CHECK_FALSE(test::exists(rig.root + "/out/b/.s1.mp4.part"));
}

TEST_CASE("a missing output folder makes the download wait, not fail") {
  Rig rig;
  rig.accept(kOne);
  rig.up_to_download();
  std::filesystem::rename(rig.root + "/out", rig.root + "/out-unmounted");
  for (int i = 0; i < 10; ++i) rig.step(Millis(60000));
  CHECK(rig.shot("b/s1").state == ShotState::downloading);
  CHECK(rig.shot("b/s1").reason.rfind("waiting: cannot write the video: output_root", 0) == 0);
  CHECK(rig.shot("b/s1").attempts == 0);
  std::filesystem::rename(rig.root + "/out-unmounted", rig.root + "/out");
  rig.step(Millis(60000));
  auto dl = rig.net.take("cdn.example/v.mp4");
  FakeTransport::deliver(dl, std::string(sim::sample_mp4()));
  CHECK(rig.shot("b/s1").state == ShotState::done);
}

TEST_CASE("a batch name that exists with other bytes is a revision - the same bytes are recognised") {
  Rig rig;
  ManifestRules rules;
  rules.input_roots = rig.config.input_roots;
  auto m1 = parse_manifest(kOne, rig.root + "/media/b.yaml", rules);
  auto m2 = parse_manifest(std::string(kOne) + "# changed\n", rig.root + "/media/b.yaml", rules);
  CHECK(rig.sched->accept(*m1.manifest, "b.yaml", "x") == Scheduler::Accept::added);
  CHECK(rig.sched->accept(*m1.manifest, "b.yaml", "x") == Scheduler::Accept::already_added);
  // Other bytes, no render input changed: a no-op revision (tests/unit/test_revisions.cpp for real ones).
  CHECK(rig.sched->accept(*m2.manifest, "b.yaml", "x") == Scheduler::Accept::unchanged);
}

TEST_CASE("a download cut short resumes with a Range request from where it stopped") {
  Rig rig;
  rig.accept(kOne);
  rig.up_to_download();
  std::string video(sim::sample_mp4());
  size_t half = video.size() / 2;
  rig.step();
  auto first = rig.net.take("cdn.example/v.mp4");
  CHECK(first.request.resume_from == 0);
  REQUIRE(::write(first.request.sink_fd, video.data(), half) == static_cast<ssize_t>(half));
  FakeTransport::fail(first, NetError::unknown_outcome);  // the connection dropped mid-body
  CHECK(test::exists(rig.root + "/out/b/.s1.mp4.part"));
  rig.step(Millis(60000));
  auto second = rig.net.take("cdn.example/v.mp4");
  CHECK(second.request.resume_from == static_cast<long long>(half));
  FakeTransport::deliver(second, video.substr(half), 206);
  CHECK(rig.shot("b/s1").state == ShotState::done);
  CHECK(test::read(rig.root + "/out/b/s1.mp4") == video);
}

TEST_CASE("a full or unwritable output disk makes the download wait and retry, without limit") {
  Rig rig;
  rig.accept(kOne);
  rig.up_to_download();
  for (int i = 0; i < 3 * rig.config.retry.max_attempts; ++i) {
    rig.step(Millis(120000));
    auto dl = rig.net.take("cdn.example/v.mp4");
    FakeTransport::fail(dl, NetError::local_write);  // ENOSPC in the write callback
    CHECK(rig.shot("b/s1").state == ShotState::downloading);
  }
  rig.step(Millis(120000));
  auto dl = rig.net.take("cdn.example/v.mp4");
  FakeTransport::deliver(dl, std::string(sim::sample_mp4()));
  CHECK(rig.shot("b/s1").state == ShotState::done);
}

TEST_CASE("a disk-full spell spends none of the retries of the checks that come after it") {
  Rig rig;
  rig.accept(kOne);
  rig.up_to_download();
  for (int i = 0; i < 3 * rig.config.retry.max_attempts; ++i) {
    rig.step(Millis(120000));
    auto dl = rig.net.take("cdn.example/v.mp4");
    FakeTransport::fail(dl, NetError::local_write);
  }
  rig.step(Millis(120000));
  auto bad = rig.net.take("cdn.example/v.mp4");
  FakeTransport::deliver(bad, "<html>Access denied</html>");
  Shot s = rig.shot("b/s1");
  CHECK(s.state == ShotState::downloading);  // its first failed check, not its sixteenth
  CHECK(s.attempts == 1);
  rig.step(Millis(120000));
  auto good = rig.net.take("cdn.example/v.mp4");
  FakeTransport::deliver(good, std::string(sim::sample_mp4()));
  CHECK(rig.shot("b/s1").state == ShotState::done);
}

TEST_CASE("a commit that waited for the disk resumes from its whole .part - a 416 naming that length is the video") {
  Rig rig;
  auto first = rig.first_download();
  const std::string video(sim::sample_mp4());
  // The sidecar cannot be written (as on a full disk): the checked video stays a .part.
  std::filesystem::create_symlink("elsewhere.json", rig.root + "/out/b/s1.json");
  FakeTransport::deliver(first, video);
  Shot waiting = rig.shot("b/s1");
  CHECK(waiting.state == ShotState::downloading);
  CHECK(waiting.reason.find("cannot write the video") != std::string::npos);
  CHECK(test::read(rig.root + "/out/b/.s1.mp4.part") == video);
  std::filesystem::remove(rig.root + "/out/b/s1.json");
  rig.step(Millis(60000));
  auto again = rig.net.take("cdn.example/v.mp4");
  CHECK(again.request.resume_from == static_cast<long long>(video.size()));
  FakeTransport::reply(again, 416, "", {{"content-range", "bytes */" + std::to_string(video.size())}});
  Shot done = rig.shot("b/s1");
  CHECK(done.state == ShotState::done);
  CHECK(test::read(rig.root + "/out/b/s1.mp4") == video);
  CHECK(nlohmann::json::parse(test::read(rig.root + "/out/b/s1.json"))["request_id"] == "r1");
}

TEST_CASE("a .part swapped while its commit waited is not taken for the video - the download starts over") {
  // Outside attack (cf34e07): a file of the same length put at the .part name
  // during the disk wait ended DONE on the 416, with another video's SHA-256.
  Rig rig;
  auto first = rig.first_download();
  const std::string video(sim::sample_mp4());
  std::filesystem::create_symlink("elsewhere.json", rig.root + "/out/b/s1.json");
  FakeTransport::deliver(first, video);
  REQUIRE(rig.shot("b/s1").state == ShotState::downloading);
  std::string other = video;
  other[other.size() - 1] ^= 0x55;  // same length, another last byte
  test::write(rig.root + "/out/b/swap", other);
  REQUIRE(::rename((rig.root + "/out/b/swap").c_str(), (rig.root + "/out/b/.s1.mp4.part").c_str()) == 0);
  std::filesystem::remove(rig.root + "/out/b/s1.json");
  rig.step(Millis(60000));
  auto again = rig.net.take("cdn.example/v.mp4");
  CHECK(again.request.resume_from == 0);
  FakeTransport::deliver(again, video);
  CHECK(rig.shot("b/s1").state == ShotState::done);
  CHECK(test::read(rig.root + "/out/b/s1.mp4") == video);
  CHECK(nlohmann::json::parse(test::read(rig.root + "/out/b/s1.json"))["video"]["sha256"] == sha256_hex(video));
}

TEST_CASE("a folder where the commit writes HOLDs the shot with what to remove, instead of waiting for ever") {
  Rig rig;
  rig.accept(kOne);
  rig.up_to_download();
  rig.step();
  auto first = rig.net.take("cdn.example/v.mp4");
  test::mkdirs(rig.root + "/out/b/.s1.json.commit");
  FakeTransport::deliver(first, std::string(sim::sample_mp4()));
  CHECK(rig.shot("b/s1").state == ShotState::downloading);
  CHECK(rig.shot("b/s1").reason.rfind("waiting: cannot write the video", 0) == 0);
  rig.step(Millis(60000));
  Shot s = rig.shot("b/s1");
  CHECK(s.state == ShotState::held);
  CHECK(s.reason.find(".s1.json.commit is not a regular file: remove it, then `wanbatch retry b/s1`") !=
        std::string::npos);
  CHECK(s.held_from == ShotState::downloading);
  CHECK_FALSE(rig.net.has("cdn.example/v.mp4"));
}

TEST_CASE("an output URL that is gone at every download ends HELD, not fetched and downloaded for ever") {
  Rig rig;
  rig.accept(kOne);
  rig.up_to_download();
  for (int i = 0; i < 3 * rig.config.retry.max_attempts && rig.shot("b/s1").state != ShotState::held; ++i) {
    if (rig.shot("b/s1").state == ShotState::fetching) {
      rig.until("/v2/requests/r1");
      rig.answer("/v2/requests/r1", 200, R"({"status":"COMPLETED","output":"https://cdn.example/v.mp4"})");
      continue;
    }
    rig.until("cdn.example/v.mp4");
    rig.answer("cdn.example/v.mp4", 404, "gone");
  }
  Shot s = rig.shot("b/s1");
  CHECK(s.state == ShotState::held);
  CHECK(s.reason.find("gave up after " + std::to_string(rig.config.retry.max_attempts)) == 0);
}

TEST_CASE("a spell of 5xx on status polls spends none of the attempts of a malformed answer after it") {
  Rig rig;
  rig.accept(kOne);
  rig.step();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1"})");
  for (int i = 0; i < 3 * rig.config.retry.max_attempts; ++i) {
    rig.until("/status");
    rig.answer("/status", 503, R"({"error":"busy"})");
  }
  rig.until("/status");
  rig.answer("/status", 200, R"({"status":"WHAT"})");  // counted: retried, then HELD after max_attempts
  Shot s = rig.shot("b/s1");
  CHECK(s.state == ShotState::in_flight);
  CHECK(s.attempts == 1);
}

TEST_CASE("a downloaded video with another name linked to it is downloaded again, never committed") {
  Rig rig;
  auto first = rig.first_download();
  const std::string video(sim::sample_mp4());
  REQUIRE(::link((rig.root + "/out/b/.s1.mp4.part").c_str(), (rig.root + "/held-elsewhere").c_str()) == 0);
  FakeTransport::deliver(first, video);
  Shot s = rig.shot("b/s1");
  CHECK(s.state == ShotState::downloading);
  CHECK(s.reason.find("another name (a hard link)") != std::string::npos);
  CHECK_FALSE(test::exists(rig.root + "/out/b/s1.mp4"));
  rig.step(Millis(120000));
  auto again = rig.net.take("cdn.example/v.mp4");
  CHECK(again.request.resume_from == 0);
  FakeTransport::deliver(again, video);
  REQUIRE(rig.shot("b/s1").state == ShotState::done);
  struct stat st {};
  REQUIRE(::stat((rig.root + "/out/b/s1.mp4").c_str(), &st) == 0);
  CHECK(st.st_nlink == 1);
}

TEST_CASE("a FIFO at <shot>.mp4 HOLDs the shot, it is not removed") {
  Rig rig;
  rig.accept(kOne);
  rig.up_to_download();
  test::mkdirs(rig.root + "/out/b");
  REQUIRE(::mkfifo((rig.root + "/out/b/s1.mp4").c_str(), 0644) == 0);
  rig.step();
  Shot s = rig.shot("b/s1");
  CHECK(s.state == ShotState::held);
  CHECK(s.reason.find("s1.mp4 is not a regular file") != std::string::npos);
  struct stat st {};
  REQUIRE(::lstat((rig.root + "/out/b/s1.mp4").c_str(), &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));
}

TEST_CASE("a 416 that names another length than the .part holds starts the download over") {
  Rig rig;
  auto first = rig.first_download();
  const std::string video(sim::sample_mp4());
  REQUIRE(::write(first.request.sink_fd, video.data(), 100) == 100);
  FakeTransport::fail(first, NetError::unknown_outcome);
  rig.step(Millis(60000));
  auto second = rig.net.take("cdn.example/v.mp4");
  CHECK(second.request.resume_from == 100);
  FakeTransport::reply(second, 416, "", {{"content-range", "bytes */50"}});  // the server's file is shorter
  CHECK(rig.shot("b/s1").state == ShotState::downloading);
  CHECK_FALSE(test::exists(rig.root + "/out/b/.s1.mp4.part"));
  rig.step(Millis(120000));
  auto third = rig.net.take("cdn.example/v.mp4");
  CHECK(third.request.resume_from == 0);
  FakeTransport::deliver(third, video);
  CHECK(rig.shot("b/s1").state == ShotState::done);
}

TEST_CASE("a retried step is saved - a restart keeps the count, and the record says why it is retried") {
  Rig rig;
  rig.accept(kOne);
  rig.step();
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1"})");
  rig.until("/status");
  rig.answer("/status", 503, R"({"error":"busy"})");
  Shot polled = rig.shot("b/s1");
  CHECK(polled.attempts == 0);  // a 5xx is retried without limit: a wait, not an attempt
  CHECK(polled.reason.rfind("retrying: status", 0) == 0);
  rig.until("/status");
  rig.answer("/status", 200, R"({"status":"PROCESSING"})");
  CHECK(rig.shot("b/s1").attempts == 0);
  CHECK(rig.shot("b/s1").reason.empty());
  rig.until("/status");
  rig.answer("/status", 200, R"({"status":"COMPLETED"})");
  rig.step();
  rig.answer("/v2/requests/r1", 200, R"({"status":"COMPLETED","output":"https://cdn.example/v.mp4"})");
  // A daemon killed after each failed download: the count goes on from the record.
  for (int i = 1; i < rig.config.retry.max_attempts; ++i) {
    rig.step(Millis(120000));
    auto dl = rig.net.take("cdn.example/v.mp4");
    FakeTransport::deliver(dl, "<html>Access denied</html>");
    Shot s = rig.shot("b/s1");
    CHECK(s.state == ShotState::downloading);
    CHECK(s.attempts == i);
    CHECK(s.reason.rfind("retrying: downloaded file is not a valid MP4", 0) == 0);
    rig.restart();
  }
  rig.step(Millis(120000));
  auto last = rig.net.take("cdn.example/v.mp4");
  FakeTransport::deliver(last, "<html>Access denied</html>");
  Shot held = rig.shot("b/s1");
  CHECK(held.state == ShotState::held);
  CHECK(held.reason.rfind("gave up after " + std::to_string(rig.config.retry.max_attempts) + " attempts", 0) == 0);
}

TEST_CASE("a poster frame is shown with its video only - none while the video is retried, its own once DONE") {
  Rig rig;
  rig.accept(kOne);
  rig.up_to_download();
  const std::string video(sim::sample_mp4());
  int reads = 0;
  rig.sched->set_video_hash([&reads](int fd) -> std::string {
    if (++reads <= 2) throw Error("cannot read the file to hash it: Input/output error");
    return sha256_fd_hex(fd);
  });
  rig.step();
  auto first = rig.net.take("cdn.example/v.mp4");
  FakeTransport::deliver(first, video);
  // Checked and decoded (a poster was taken), not DONE: nothing shown, nothing staged.
  CHECK(rig.shot("b/s1").state == ShotState::downloading);
  CHECK_FALSE(test::exists(rig.root + "/out/b/s1.jpg"));
  CHECK_FALSE(test::exists(rig.root + "/out/b/.s1.jpg.part"));
  rig.step(Millis(120000));
  auto second = rig.net.take("cdn.example/v.mp4");
  FakeTransport::deliver(second, video);
  rig.step(Millis(120000));
  auto third = rig.net.take("cdn.example/v.mp4");
  FakeTransport::deliver(third, video);
  CHECK(rig.shot("b/s1").state == ShotState::done);
  CHECK(test::read(rig.root + "/out/b/s1.jpg").substr(0, 2) == "\xFF\xD8");  // ffmpeg is installed (scripts/test.sh)
  CHECK_FALSE(test::exists(rig.root + "/out/b/.s1.jpg.part"));
}

TEST_CASE("a download carries the configured speed floor and deadline, and a trickle cut short resumes, then is HELD") {
  Rig rig;
  rig.config.limits.download_min_bytes_per_second = 1000;
  rig.config.limits.download_stall_seconds = 7;
  rig.restart();
  rig.accept(kOne);
  rig.up_to_download();
  std::string video(sim::sample_mp4());
  long long written = 0;
  for (int i = 0; i < rig.config.retry.max_attempts; ++i) {
    rig.step(Millis(120000));
    auto dl = rig.net.take("cdn.example/v.mp4");
    CHECK(dl.request.min_bytes_per_second == 1000);
    CHECK(dl.request.stall_time == Millis(7000));
    CHECK(dl.request.deadline_expected_bytes > 0);
    CHECK(dl.request.deadline_expected_bytes <= rig.config.limits.max_download_bytes);
    CHECK(dl.request.resume_from == written);  // each retry resumes where the trickle stopped
    REQUIRE(::write(dl.request.sink_fd, video.data() + written, 10) == 10);
    written += 10;
    FakeTransport::fail(dl, NetError::unknown_outcome);  // cut: too slow, or past the deadline
  }
  Shot s = rig.shot("b/s1");
  CHECK(s.state == ShotState::held);
  CHECK(s.reason.find("outcome unknown") != std::string::npos);
}

TEST_CASE("adopt: a HELD ambiguous submit follows the job a person found, to DONE, with no new submit") {
  Rig rig;
  rig.accept("batch: b\nshots:\n  - {id: s1, prompt: wind, image: 'https://cdn.example/a.png'}\n"
             "  - {id: s2, prompt: rain, image: 'https://cdn.example/a.png'}\n");
  rig.step();
  auto first = rig.net.take("/v2/wan2.7-i2v");
  auto second = rig.net.take("/v2/wan2.7-i2v");
  if (nlohmann::json::parse(first.request.body)["prompt"] != "wind") std::swap(first, second);
  FakeTransport::fail(first, NetError::unknown_outcome);  // s1: sent, no answer
  FakeTransport::reply(second, 200, R"({"request_id":"r2"})");  // s2's job is r2
  REQUIRE(rig.shot("b/s1").state == ShotState::held);
  const size_t submits_before = std::count_if(rig.net.started.begin(), rig.net.started.end(), [](auto& r) {
    return r.url.find("/v2/wan2.7-i2v") != std::string::npos;
  });

  // Refused, changing nothing: a batch target, a non-token id, an id of another
  // shot, a shot that is not HELD.
  CHECK_THROWS_WITH_AS(rig.sched->adopt("b", "r9"), doctest::Contains("one shot"), Error);
  CHECK_THROWS_WITH_AS(rig.sched->adopt("b/s1", "../x"), doctest::Contains("is not a request_id"), Error);
  CHECK_THROWS_WITH_AS(rig.sched->adopt("b/s1", "r2"), doctest::Contains("already belongs to b/s2"), Error);
  CHECK_THROWS_WITH_AS(rig.sched->adopt("b/s2", "r7"), doctest::Contains("only a HELD shot"), Error);
  CHECK_THROWS_WITH_AS(rig.sched->adopt("b/nope", "r7"), doctest::Contains("no shot"), Error);
  CHECK(rig.shot("b/s1").state == ShotState::held);
  CHECK(rig.store->ledger().back()["event"] != "adopted");

  auto r = rig.sched->adopt("b/s1", "r1");
  CHECK(r.changed == std::vector<std::string>{"s1"});
  CHECK(rig.shot("b/s1").state == ShotState::in_flight);
  CHECK(rig.shot("b/s1").request_id == "r1");
  CHECK(rig.store->shot_by_request("r1") == "b/s1");
  auto adopted = rig.store->ledger().back();
  CHECK(adopted["event"] == "adopted");
  CHECK(adopted["request_id"] == "r1");
  CHECK_THROWS_WITH_AS(rig.sched->adopt("b/s1", "r1"), doctest::Contains("is IN_FLIGHT"), Error);

  rig.complete("r1");
  rig.complete("r2");
  CHECK(rig.shot("b/s1").state == ShotState::done);
  CHECK(rig.shot("b/s1").cost == doctest::Approx(0.5));
  CHECK(rig.shot("b/s2").state == ShotState::done);
  const size_t submits_after = std::count_if(rig.net.started.begin(), rig.net.started.end(), [](auto& r) {
    return r.url.find("/v2/wan2.7-i2v") != std::string::npos;
  });
  CHECK(submits_after == submits_before);  // adopting sent no submit
  CHECK(rig.finished == std::vector<std::string>{"b"});
}

TEST_CASE("a first night of 40 shots of an unknown class: 32 scouts, and the first completion or a scout's failure plans the parked ones again") {
  Rig rig;
  rig.config.poll.min_interval_seconds = 2;  // the shipped bounds
  rig.config.poll.max_interval_seconds = 300;
  rig.config.limits.max_in_flight = 40;
  rig.start();
  std::string yaml = "batch: b\nshots:\n";
  for (int i = 10; i < 50; ++i)
    yaml += "  - {id: s" + std::to_string(i) + ", prompt: wind, image: 'https://cdn.example/a.png'}\n";
  rig.accept(yaml);
  for (int i = 10; i < 50; ++i) {
    rig.until("/v2/wan2.7-i2v");
    rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r)" + std::to_string(i) + R"(","status":"QUEUED"})");
  }
  // Every job's first poll says PROCESSING.
  std::set<std::string> polled;
  auto answer_polls = [&](const std::string& status) {
    for (int i = 10; i < 50; ++i) {
      const std::string part = "/r" + std::to_string(i) + "/status";
      if (!rig.net.has(part)) continue;
      rig.answer(part, 200, R"({"status":")" + status + "\"}");
      polled.insert("b/s" + std::to_string(i));
    }
  };
  while (polled.size() < 40) {
    rig.until("/status");
    answer_polls("PROCESSING");
  }
  auto now_ms = [&] { return rig.clock.mono.time_since_epoch().count() / 1000000; };
  auto due_in = [&](const std::string& key) { return rig.sched->book().find(key)->due_ms - now_ms(); };
  std::vector<std::string> parked, scouts;
  for (int i = 10; i < 50; ++i) {
    const std::string key = "b/s" + std::to_string(i);
    (due_in(key) >= 250'000 ? parked : scouts).push_back(key);
  }
  // 32 scouts; the other 8 parked, or (drawn scouts replaced by later draws) on
  // the prior's plan until their next poll.
  REQUIRE(parked.size() >= 1);
  REQUIRE(parked.size() <= 8);
  const std::string scout_id = "r" + scouts.front().substr(3);
  // The next poll of a job not parked: the others still render.
  rig.until("/" + scout_id + "/status", Millis(300'000));
  SUBCASE("the class's first completion") {
    rig.answer("/" + scout_id + "/status", 200, R"({"status":"COMPLETED"})");
    rig.step();
    rig.answer("/v2/requests/" + scout_id, 200,
               R"({"status":"COMPLETED","output":"https://cdn.example/v.mp4","metrics":{"inference_time":130,"cost":0.5}})");
    for (const std::string& key : parked) {
      INFO(key);
      CHECK(due_in(key) < 120'000);  // planned on the learned 130 s render, not left at the ceiling
    }
  }
  SUBCASE("a scout that fails hands its place to a parked job") {
    // Every job not parked fails at its next poll: the scouts among them each
    // hand their place on, one parked job each, while parked jobs are left.
    size_t failed = 0;
    const int64_t start = now_ms();
    std::set<std::string> repolled;
    while (failed < scouts.size() || repolled.size() < parked.size()) {
      rig.until("/status", Millis(300'000));
      for (const std::string& key : scouts) {
        const std::string part = "/r" + key.substr(3) + "/status";
        if (!rig.net.has(part)) continue;
        rig.answer(part, 422, R"({"status":"FAILED","error":"Content blocked"})");
        CHECK(rig.shot(key).state == ShotState::failed);
        ++failed;
      }
      for (const std::string& key : parked)
        if (rig.net.has("/r" + key.substr(3) + "/status")) repolled.insert(key);
      answer_polls("PROCESSING");
    }
    // Every parked job took a scout's place (there were more scouts than parked
    // jobs) and was polled on the plan, long before its ceiling poll.
    CHECK(now_ms() - start < 200'000);
    for (const std::string& key : parked) CHECK(rig.shot(key).state == ShotState::in_flight);
  }
}
