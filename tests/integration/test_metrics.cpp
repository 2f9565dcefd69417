// The daemon's Prometheus endpoint, scraped from the running binary, and the
// shipped alert rules: both must pass promtool (Debian: prometheus). Skipped
// with a message where promtool is missing.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <regex>

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
