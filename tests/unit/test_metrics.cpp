// The engine's metrics (daemon/metrics.h) fed by a whole engine over a fake
// transport and clock: what each series says after the shots it saw.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <vector>

#include "daemon/metrics.h"
#include "jobs/engine/gates.h"
#include "jobs/engine/spend.h"
#include "tests/sim/simulator.h"
#include "tests/unit/scheduler_rig.h"

using namespace wb;
using test::FakeTransport;

namespace {

// The value of one series ("name{labels}" as exposed) in a text exposition, or -1.
double value(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  return -1;
}

struct Rig : test::SchedulerRig {
  EngineMetrics metrics{[this] { return clock.mono; }, [this] { return clock.now; }};
  Rig() {
    start();
    sched->events().subscribe([this](const Event& e) { metrics.on_event(e); });
  }
  ShotState shot_state(const std::string& key) {
    auto slash = key.find('/');
    for (auto& s : store->shots(key.substr(0, slash)))
      if (s.spec.id == key.substr(slash + 1)) return s.state;
    FAIL("no shot " << key);
    return ShotState::pending;
  }
  // The exposition after a snapshot (one a second: the clock moves a second first).
  std::string text() {
    clock.advance(Millis(1000));
    metrics.tick(*sched);
    return metrics.text();
  }
  // The next status poll of `request_id`, answered with `status` after the clock moved to it.
  void poll(const std::string& request_id, const std::string& status) {
    until("/v2/requests/" + request_id + "/status");
    auto call = net.take("/v2/requests/" + request_id + "/status");
    FakeTransport::reply(call, 200, R"({"status":")" + status + R"("})");
  }
  void result(const std::string& request_id, const std::string& metrics_json) {
    tick();
    auto fetch = net.take("/v2/requests/" + request_id);
    FakeTransport::reply(fetch, 200,
                         R"({"status":"COMPLETED","output":"https://cdn.example/)" + request_id + R"(.mp4","metrics":)" +
                             metrics_json + "}");
    tick();
    auto dl = net.take("https://cdn.example/" + request_id + ".mp4");
    FakeTransport::deliver(dl, std::string(sim::sample_mp4()));
  }
};

const char* kOne = "batch: b\nshots: [{id: s1, prompt: wind, image: 'https://cdn.example/a.png'}]\n";

double seconds_of(MonoPoint from, MonoPoint to) { return std::chrono::duration<double>(to - from).count(); }

}  // namespace

TEST_CASE("metrics: a shot to DONE counts its submit, requests, credits, render time and detection delay") {
  Rig rig;
  rig.accept(kOne);
  std::string t = rig.text();
  CHECK(value(t, R"(wanbatch_shots{state="PENDING"})") == 1);
  CHECK(value(t, "wanbatch_batches_unfinished") == 1);
  CHECK(value(t, R"(wanbatch_batch_last_progress_timestamp_seconds{batch="b"})") > 0);

  rig.tick();
  auto submit = rig.net.take("/v2/wan2.7-i2v");
  const MonoPoint accepted = rig.clock.mono;
  FakeTransport::reply(submit, 200, R"({"request_id":"r1"})");
  rig.poll("r1", "PROCESSING");
  const MonoPoint unfinished_seen = rig.clock.mono;
  rig.poll("r1", "COMPLETED");
  const MonoPoint completed_seen = rig.clock.mono;
  const double gap = seconds_of(unfinished_seen, completed_seen);
  REQUIRE(gap > 0);
  // The job ended 30% of the gap after the unfinished poll: unseen for 70% of it.
  const double ran = seconds_of(accepted, completed_seen) - 0.7 * gap;
  REQUIRE(ran > 0);
  rig.result("r1", R"({"cost":0.5,"remaining_credits":99.5,"queue_time":)" + std::to_string(ran / 4) +
                       R"(,"inference_time":)" + std::to_string(ran * 3 / 4) + "}");
  t = rig.text();
  CHECK(rig.shot_state("b/s1") == ShotState::done);
  CHECK(value(t, R"(wanbatch_submits_total{outcome="accepted"})") == 1);
  CHECK(value(t, R"(wanbatch_submits_total{outcome="held"})") == 0);
  CHECK(value(t, R"(wanbatch_shots_ended_total{state="DONE"})") == 1);
  CHECK(value(t, R"(wanbatch_api_requests_total{endpoint="submit",status="2xx"})") == 1);
  CHECK(value(t, R"(wanbatch_api_requests_total{endpoint="status",status="2xx"})") >= 2);
  CHECK(value(t, R"(wanbatch_api_requests_total{endpoint="download",status="2xx"})") == 1);
  CHECK(value(t, "wanbatch_credits_spent_total") == doctest::Approx(0.5));
  CHECK(value(t, "wanbatch_credit_balance") == doctest::Approx(99.5));
  CHECK(value(t, R"(wanbatch_render_seconds_count{resolution="720P"})") == 1);
  CHECK(value(t, R"(wanbatch_render_seconds_sum{resolution="720P"})") == doctest::Approx(ran * 3 / 4));
  CHECK(value(t, R"(wanbatch_detection_delay_seconds_count{resolution="720P"})") == 1);
  CHECK(value(t, R"(wanbatch_detection_delay_seconds_sum{resolution="720P"})") == doctest::Approx(0.7 * gap).epsilon(0.01));
  // The batch ended: its progress series goes.
  CHECK(value(t, R"(wanbatch_batch_last_progress_timestamp_seconds{batch="b"})") == -1);
  CHECK(value(t, "wanbatch_batches_unfinished") == 0);
}

TEST_CASE("metrics: without the result's timings the detection delay is half the gap between the last two polls") {
  Rig rig;
  rig.accept(kOne);
  rig.tick();
  auto submit = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::reply(submit, 200, R"({"request_id":"r1"})");
  rig.poll("r1", "QUEUED");
  const MonoPoint unfinished_seen = rig.clock.mono;
  rig.poll("r1", "COMPLETED");
  const double gap = seconds_of(unfinished_seen, rig.clock.mono);
  rig.result("r1", R"({"cost":0.25})");
  std::string t = rig.text();
  CHECK(value(t, R"(wanbatch_detection_delay_seconds_sum{resolution="720P"})") == doctest::Approx(gap / 2));
  CHECK(value(t, R"(wanbatch_render_seconds_count{resolution="720P"})") == -1);  // none was told
}

TEST_CASE("metrics: a 429 on a submit counts as not accepted and rate limited, and shots wait with a reason") {
  Rig rig;
  rig.accept(kOne);
  rig.tick();
  auto submit = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::reply(submit, 429, R"({"error":"slow down"})");
  rig.tick();
  std::string t = rig.text();
  CHECK(value(t, R"(wanbatch_submits_total{outcome="not_accepted"})") == 1);
  CHECK(value(t, R"(wanbatch_rate_limited_total{endpoint="submit"})") == 1);
  CHECK(value(t, R"(wanbatch_api_requests_total{endpoint="submit",status="4xx"})") == 1);
  CHECK(value(t, R"(wanbatch_submit_limits_total{limit="rate"})") == 1);
  CHECK(value(t, R"(wanbatch_shots_waiting{reason="rate_limited"})") == 1);
}

TEST_CASE("metrics: HELD shots are counted over the stored history, then followed by the events") {
  Rig rig;
  rig.accept(kOne);
  rig.tick();
  auto submit = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::fail(submit, NetError::unknown_outcome);  // ambiguous: HELD
  REQUIRE(rig.shot_state("b/s1") == ShotState::held);
  rig.accept("batch: c\nshots: [{id: s1, prompt: wind, image: 'https://cdn.example/a.png'}]\n", "c.yaml");

  // A daemon start: the census counts the store; the changes after it are added.
  rig.start();
  EngineMetrics m([&rig] { return rig.clock.mono; }, [&rig] { return rig.clock.now; });
  rig.sched->events().subscribe([&m](const Event& e) { m.on_event(e); });
  CHECK(value(m.text(), "wanbatch_shots_held") == -1);  // not known before the census
  m.start_census(*rig.store);
  while (m.tick(*rig.sched) == Millis(0)) {
  }
  CHECK(value(m.text(), "wanbatch_shots_held") == 1);
  rig.sched->retry("b", Scheduler::Resubmit::yes);
  m.tick(*rig.sched);
  CHECK(value(m.text(), "wanbatch_shots_held") == 0);
}

TEST_CASE("metrics: every reason the gates and budgets give maps to its own label") {
  SubmitState st;
  std::string err;
  TimeWindow always = *TimeWindow::parse("", err);
  const TimePoint wall = TimePoint(std::chrono::seconds(1'800'000'000));
  const MonoPoint mono = MonoPoint(std::chrono::seconds(10));
  st.balance_read = false;
  CHECK(wait_label(common_gate(st, always, wall, mono)->reason) == "balance_read");
  st.balance_read = true;
  st.credits_wait = true;
  st.balance = 1;
  CHECK(wait_label(common_gate(st, always, wall, mono)->reason) == "credits");
  st.blocked_until = mono + Millis(1000);
  st.blocked_reason = "rate limited (429)";
  CHECK(wait_label(common_gate(st, always, wall, mono)->reason) == "rate_limited");
  st.blocked_reason = "the API key was refused (nope)";
  CHECK(wait_label(common_gate(st, always, wall, mono)->reason) == "key_refused");
  st.paused = true;
  CHECK(wait_label(common_gate(st, always, wall, mono)->reason) == "paused");
  auto closed = TimeWindow::parse("01:00-01:01", err);
  REQUIRE(closed);
  st = SubmitState{};
  st.balance_read = true;
  if (auto w = common_gate(st, *closed, wall, mono)) CHECK(wait_label(w->reason) == "window");
  CHECK(wait_label(in_flight_gate(3, 3)->reason) == "in_flight");
  CHECK(wait_label(queue_gate(5, 5)->reason) == "provider_queue");
  CHECK(wait_label("waiting: " + Spend::batch_budget_gate(1.0, to_micro(1.0), to_micro(0.5))) == "batch_budget");
  CHECK(wait_label("waiting: something new") == "other");
  CHECK(wait_label("") == "other");
  CHECK(status_class(200) == "2xx");
  CHECK(status_class(503) == "5xx");
  CHECK(status_class(0) == "error");
}

namespace {

// A TCP connection to 127.0.0.1:port, or -1.
int connect_local(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}

// GET /metrics, waiting at most `limit` for the whole answer; "" when it did not come.
std::string scrape(int port, std::chrono::milliseconds limit) {
  int fd = connect_local(port);
  if (fd < 0) return "";
  timeval tv{static_cast<time_t>(limit.count() / 1000), static_cast<suseconds_t>(limit.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  std::string out;
  if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
    char buf[8192];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace

TEST_CASE("metrics: silent and trickling connections (slowloris) do not keep a scrape out") {
  EngineMetrics m{[] { return MonoPoint{}; }, [] { return TimePoint{}; }};
  MetricsServer server("127.0.0.1:0", m.registry());
  const int port = std::stoi(server.url().substr(server.url().rfind(':') + 1));
  // Half send nothing, half the start of a request and no more (the larger crowd: test_metrics_http.cpp).
  std::vector<int> attackers;
  for (int i = 0; i < 12; ++i) {
    int fd = connect_local(port);
    REQUIRE(fd >= 0);
    if (i % 2) {
      const std::string part = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
      REQUIRE(::write(fd, part.data(), part.size()) == static_cast<ssize_t>(part.size()));
    }
    attackers.push_back(fd);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::string answer = scrape(port, std::chrono::milliseconds(5000));
  const auto took = std::chrono::steady_clock::now() - t0;
  for (int fd : attackers) ::close(fd);
  CHECK(answer.rfind("HTTP/1.", 0) == 0);
  CHECK(answer.find("wanbatch_batches_unfinished") != std::string::npos);
  // One thread serves every connection as its bytes come: the scrape waits on none of them.
  CHECK(took < std::chrono::milliseconds(1000));
}

TEST_CASE("metrics: every metrics.listen the config accepts binds (port 0: any free port)") {
  EngineMetrics m{[] { return MonoPoint{}; }, [] { return TimePoint{}; }};
  for (const char* listen : {"127.0.0.1:0", "0.0.0.0:0"}) {
    MetricsServer server(listen, m.registry());
    CHECK(server.url().find(":0/") == std::string::npos);
  }
}

TEST_CASE("metrics: a job in flight past poll.stuck_after_seconds is counted stuck until it completes") {
  Rig rig;
  rig.config.poll.stuck_after_seconds = 60;
  rig.accept(kOne);
  rig.tick();
  auto submit = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::reply(submit, 200, R"({"request_id":"r1"})");
  const MonoPoint accepted = rig.clock.mono;
  CHECK(value(rig.text(), "wanbatch_shots_stuck") == 0);
  while (seconds_of(accepted, rig.clock.mono) < 90) rig.poll("r1", "PROCESSING");
  CHECK(value(rig.text(), "wanbatch_shots_stuck") == 1);
  rig.poll("r1", "COMPLETED");
  rig.result("r1", R"({"cost":0.5})");
  CHECK(value(rig.text(), "wanbatch_shots_stuck") == 0);
}

TEST_CASE("metrics: after a restart a job marked stuck before it counts only once a poll since the start says it runs") {
  Rig rig;
  rig.config.poll.stuck_after_seconds = 60;
  rig.accept(kOne);
  rig.tick();
  auto submit = rig.net.take("/v2/wan2.7-i2v");
  FakeTransport::reply(submit, 200, R"({"request_id":"r1"})");
  const MonoPoint accepted = rig.clock.mono;
  while (seconds_of(accepted, rig.clock.mono) < 90) rig.poll("r1", "PROCESSING");
  CHECK(value(rig.text(), "wanbatch_shots_stuck") == 1);
  auto restart = [&] {
    rig.clock.advance(Millis(2 * 3600 * 1000));  // down for two hours
    rig.start();
    rig.sched->events().subscribe([&rig](const Event& e) { rig.metrics.on_event(e); });
  };
  restart();
  CHECK(value(rig.text(), "wanbatch_shots_stuck") == 0);  // it may have ended meanwhile
  rig.poll("r1", "PROCESSING");
  CHECK(value(rig.text(), "wanbatch_shots_stuck") == 1);  // it has not: stuck still
  restart();
  CHECK(value(rig.text(), "wanbatch_shots_stuck") == 0);
  rig.poll("r1", "COMPLETED");  // it ended while the daemon was down
  CHECK(value(rig.text(), "wanbatch_shots_stuck") == 0);
}

TEST_CASE("metrics: a big book's walk (waits, stuck) is spaced a second per 1,000 shots, its state counts are not") {
  // Found by bench-scale: walking 10,000 unfinished shots every second was a tenth of
  // the daemon's CPU while it waited for ffprobe, whatever the work done.
  Rig rig;
  rig.sched->set_paused(true);
  for (int b = 0; b < 5; ++b) {  // 5 batches of 500 (a manifest holds 1,000 at most by default)
    std::string yaml = "batch: big" + std::to_string(b) + "\nshots:\n";
    for (int i = 0; i < 500; ++i)
      yaml += "  - {id: s" + std::to_string(i) + ", prompt: wind, image: 'https://cdn.example/a.png'}\n";
    rig.accept(yaml, "big" + std::to_string(b) + ".yaml");
  }
  rig.tick();
  std::string t = rig.text();  // the first snapshot walks at once
  CHECK(value(t, R"(wanbatch_shots{state="PENDING"})") == 2500);
  CHECK(value(t, R"(wanbatch_shots_waiting{reason="paused"})") == 2500);
  rig.sched->set_paused(false);
  rig.tick();  // submits go
  REQUIRE(rig.net.has("/v2/wan2.7-i2v"));
  t = rig.text();  // a second later: the counts are fresh, the walk is not due (2.5 s)
  CHECK(value(t, R"(wanbatch_shots{state="PENDING"})") < 2500);
  CHECK(value(t, R"(wanbatch_shots_waiting{reason="paused"})") == 2500);
  t = rig.text();
  t = rig.text();  // three seconds after the first walk
  CHECK(value(t, R"(wanbatch_shots_waiting{reason="paused"})") == 0);
}
