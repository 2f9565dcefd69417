// The daemon's Prometheus endpoint, scraped from the running binary, and the
// shipped alert rules: both must pass promtool (Debian: prometheus). Skipped
// with a message where promtool is missing.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <regex>
#include <thread>

#include "tests/integration/rig.h"

namespace {

bool have_promtool() { return test::run({"/bin/sh", "-c", "command -v promtool"}) == 0; }

// GET http://127.0.0.1:port/path; returns the whole answer (status line, headers, body).
std::string http_get(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  REQUIRE(::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size()));
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

int metrics_port(Rig& rig) {
  std::smatch m;
  int port = 0;
  REQUIRE(test::eventually([&] {
    std::string log = rig.log();
    static const std::regex at("metrics at http://127\\.0\\.0\\.1:([0-9]+)/metrics");
    if (!std::regex_search(log, m, at)) return false;
    port = std::stoi(m[1]);
    return true;
  }));
  return port;
}

std::string body_of(const std::string& answer) {
  auto at = answer.find("\r\n\r\n");
  return at == std::string::npos ? "" : answer.substr(at + 4);
}

}  // namespace

TEST_CASE("metrics: the running daemon's /metrics passes promtool check metrics and counts the batch") {
  if (!have_promtool()) {
    MESSAGE("promtool missing (Debian package prometheus): skipped");
    return;
  }
  Rig rig({}, "metrics:\n  listen: \"127.0.0.1:0\"\n");
  rig.start_daemon();
  const int port = metrics_port(rig);
  rig.drop("m.yaml", manifest("m", 4));
  REQUIRE(test::eventually([&] { return rig.finished("m"); }));
  std::string body;
  REQUIRE(test::eventually([&] {  // the snapshot follows within a second
    body = body_of(http_get(port, "/metrics"));
    return body.find("wanbatch_batches_unfinished 0") != std::string::npos &&
           body.find("wanbatch_shots_held 0") != std::string::npos;
  }));
  CHECK(body.find("wanbatch_shots_ended_total{state=\"DONE\"} 4") != std::string::npos);
  CHECK(body.find("wanbatch_submits_total{outcome=\"accepted\"} 4") != std::string::npos);
  CHECK(body.find("wanbatch_render_seconds_count{resolution=\"720P\"}") != std::string::npos);
  CHECK(body.find("wanbatch_render_seconds_count{resolution=\"1080P\"}") != std::string::npos);
  CHECK(body.find("wanbatch_detection_delay_seconds_bucket") != std::string::npos);
  CHECK(body.find("wanbatch_credits_spent_total") != std::string::npos);
  CHECK(body.find("wanbatch_credit_balance") != std::string::npos);
  test::write("scrape.txt", body);
  std::string out;
  int rc = test::run({"/bin/sh", "-c", "promtool check metrics < scrape.txt"}, &out);
  CHECK_MESSAGE(rc == 0, out);
  CHECK_MESSAGE(out.find("wanbatch") == std::string::npos, out);  // no lint remark on our names either

  // The same check refuses what breaks the conventions: it is not a rubber stamp.
  test::write("bad.txt", "# HELP wanbatch_submits counted\n# TYPE wanbatch_submits counter\nwanbatch_submits 1\n");
  CHECK(test::run({"/bin/sh", "-c", "promtool check metrics < bad.txt"}, &out) != 0);
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
}

TEST_CASE("metrics: a metrics.listen port in use is logged and the daemon renders on") {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(fd, 1) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  const int taken = ntohs(a.sin_port);
  Rig rig({}, "metrics:\n  listen: \"127.0.0.1:" + std::to_string(taken) + "\"\n");
  rig.start_daemon();
  rig.drop("m.yaml", manifest("m", 2));
  REQUIRE(test::eventually([&] { return rig.finished("m"); }));
  CHECK(rig.log().find("metrics.listen 127.0.0.1:" + std::to_string(taken) + ": cannot listen") != std::string::npos);
  ::close(fd);
}

TEST_CASE("metrics: the shipped alert rules pass promtool check rules, and a broken rule does not") {
  if (!have_promtool()) {
    MESSAGE("promtool missing (Debian package prometheus): skipped");
    return;
  }
  std::string rules = std::string(DOCS_DIR) + "/alerts/wanbatch.rules.yml";
  std::string out;
  int rc = test::run({"/bin/sh", "-c", "promtool check rules \"$0\"", rules}, &out);
  CHECK_MESSAGE(rc == 0, out);
  CHECK_MESSAGE(out.find("SUCCESS: 3 rules found") != std::string::npos, out);
  std::string text = test::read(rules);
  auto at = text.find("expr:");
  REQUIRE(at != std::string::npos);
  text.insert(at + 5, " (");  // an unclosed parenthesis
  test::write("broken.rules.yml", text);
  CHECK(test::run({"/bin/sh", "-c", "promtool check rules broken.rules.yml"}, &out) != 0);
  CHECK_MESSAGE(out.find("FAILED") != std::string::npos, out);
}

TEST_CASE("metrics: under 200 silent and trickling clients the daemon's scrapes come within 1 s and its loop serves on") {
  Rig rig({}, "metrics:\n  listen: \"127.0.0.1:0\"\n");
  rig.start_daemon();
  const int port = metrics_port(rig);
  auto connect_one = [&] {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      fd = -1;
    }
    return fd;
  };
  std::vector<int> silent, trickling;
  for (int i = 0; i < 200; ++i) {
    int fd = connect_one();
    REQUIRE(fd >= 0);
    (i % 2 ? trickling : silent).push_back(fd);
  }
  rig.drop("m.yaml", manifest("m", 4));
  // Every 100 ms 3 newcomers; every 500 ms one more header byte from each trickler. Meanwhile:
  // scrapes, each whole within 1 s, and the control socket (the daemon's loop) answering.
  const std::string head = "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  size_t at = 0;
  auto next_trickle = std::chrono::steady_clock::now();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  int scrapes = 0;
  while (std::chrono::steady_clock::now() < until) {
    if (std::chrono::steady_clock::now() >= next_trickle) {
      for (int fd : trickling) ::send(fd, head.data() + at % head.size(), 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      ++at;
      next_trickle += std::chrono::milliseconds(500);
    }
    for (int i = 0; i < 3; ++i)
      if (int fd = connect_one(); fd >= 0) silent.push_back(fd);
    const auto t0 = std::chrono::steady_clock::now();
    std::string answer = http_get(port, "/metrics");
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1000));
    CHECK(answer.rfind("HTTP/1.1 200 OK", 0) == 0);
    CHECK(body_of(answer).find("wanbatch_batches_unfinished") != std::string::npos);
    ++scrapes;
    const auto t1 = std::chrono::steady_clock::now();
    CHECK(wb::control_request(rig.root + "/state", {{"command", "ping"}}, 2)["ok"] == true);
    CHECK(std::chrono::steady_clock::now() - t1 < std::chrono::milliseconds(1000));
    std::this_thread::sleep_until(t0 + std::chrono::milliseconds(100));  // the attack's pace
  }
  CHECK(scrapes >= 4);
  REQUIRE(test::eventually([&] { return rig.finished("m"); }));
  for (int fd : silent) ::close(fd);
  for (int fd : trickling) ::close(fd);
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
}
