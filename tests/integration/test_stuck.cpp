// Stuck jobs on the real binaries: one job the simulator renders far longer
// than the others is marked stuck in `wanbatch status`, announced once to
// notify.command, and never submitted again.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sstream>

#include "tests/integration/rig.h"

namespace {

// Replaces the rig's poll line with one that also sets stuck_after_seconds.
void set_stuck_after(const std::string& config, double seconds) {
  std::string text = test::read(config);
  const std::string poll = "poll: {min_interval_seconds: 0.05, max_interval_seconds: 0.3}";
  auto at = text.find(poll);
  REQUIRE(at != std::string::npos);
  text.replace(at, poll.size(),
               "poll: {min_interval_seconds: 0.05, max_interval_seconds: 0.3, stuck_after_seconds: " +
                   std::to_string(seconds) + "}");
  test::write(config, text);
}

json shot_of(Rig& rig, const std::string& batch, const std::string& id) {
  std::string out;
  if (test::run({WANBATCH_BIN, "--config", rig.config, "status", "--json", batch}, &out) != 0) return json::object();
  auto j = json::parse(out, nullptr, false);
  if (j.is_discarded()) return json::object();
  for (const auto& s : j.value("shot_list", json::array()))
    if (s.value("id", "") == id) return s;
  return json::object();
}

int lines_starting(const std::string& text, const std::string& head) {
  std::istringstream in(text);
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.rfind(head, 0) == 0;
  return n;
}

// The body of GET /metrics on 127.0.0.1:port, "" when none came.
std::string scrape_metrics(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  const std::string req = "GET /metrics HTTP/1.0\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
    char buf[8192];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  auto at = out.find("\r\n\r\n");
  return at == std::string::npos ? "" : out.substr(at + 4);
}

}  // namespace

TEST_CASE("a job rendering far too long is shown stuck and announced once to notify.command, never resubmitted") {
  // Renders take 100 simulated seconds (0.2 s here); sh010's takes 1,500 (3 s).
  Rig rig({"--render-seconds", "100", "--render-slow", "sh010:1500"});
  const std::string notes = rig.root + "/notify.log";
  std::string text = test::read(rig.config);
  text += "notify:\n  command: [/bin/sh, -c, 'printf \"%s \" \"$WANBATCH_EVENT\" >> " + notes + "; cat >> " + notes +
          "; echo >> " + notes + "']\n";
  test::write(rig.config, text);
  set_stuck_after(rig.config, 1.0);
  rig.start_daemon();
  rig.drop("s.yaml", manifest("s", 3));

  // While it renders: the shot is stuck in the batch's list and counted in the overview.
  REQUIRE(test::eventually([&] { return shot_of(rig, "s", "sh010").value("stuck", false); },
                           std::chrono::seconds(20)));
  json row = shot_of(rig, "s", "sh010");
  CHECK(row["state"] == "IN_FLIGHT");
  CHECK(row["reason"].get<std::string>().find("stuck: in flight") == 0);
  json overview = rig.status();
  for (const auto& b : overview["batches"])
    if (b["batch"] == "s") CHECK(b["stuck"] == 1);
  std::string out;
  REQUIRE(test::run({WANBATCH_BIN, "--config", rig.config, "status", "s"}, &out) == 0);
  CHECK(out.find("IN_FLIGHT (stuck)") != std::string::npos);
  CHECK(out.find("(1 stuck)") != std::string::npos);

  // It completes after all: fetched, DONE, no longer stuck; announced exactly once.
  REQUIRE(test::eventually([&] { return rig.finished("s"); }, std::chrono::seconds(30)));
  REQUIRE(test::eventually([&] { return lines_starting(test::read(notes), "batch_finished ") == 1; }));
  CHECK(rig.states("s")["DONE"] == 3);
  CHECK_FALSE(shot_of(rig, "s", "sh010").value("stuck", true));
  std::string log = test::read(notes);
  CHECK(lines_starting(log, "shot_stuck ") == 1);
  auto at = log.find("shot_stuck ");
  json note = json::parse(log.substr(at + 11, log.find('\n', at) - at - 11));
  CHECK(note["event"] == "shot_stuck");
  CHECK(note["shot"] == "sh010");
  CHECK(note["stuck_after_seconds"] == 1);
  CHECK_FALSE(note["request_id"].get<std::string>().empty());
  auto billed = rig.billed();
  CHECK(billed["sh010"] == 1);  // never resubmitted
  CHECK(billed.size() == 3);
}

TEST_CASE("a restart after downtime in which the jobs ended marks none stuck: no shot_stuck, the gauge stays 0") {
  // Renders take 2,500 simulated seconds (5 s here); stuck after 3 s.
  Rig rig({"--render-seconds", "2500"}, "metrics:\n  listen: \"127.0.0.1:0\"\n");
  const std::string notes = rig.root + "/notify.log";
  std::string text = test::read(rig.config);
  text += "notify:\n  command: [/bin/sh, -c, 'printf \"%s \" \"$WANBATCH_EVENT\" >> " + notes + "; cat >> " + notes +
          "; echo >> " + notes + "']\n";
  test::write(rig.config, text);
  set_stuck_after(rig.config, 3.0);
  rig.start_daemon();
  rig.drop("s.yaml", manifest("s", 3));
  REQUIRE(test::eventually([&] { return rig.states("s").value("IN_FLIGHT", 0) == 3; }, std::chrono::seconds(10)));
  const auto submitted = std::chrono::steady_clock::now();
  rig.daemon->signal(SIGTERM);
  REQUIRE(rig.daemon->wait() == 0);
  // Down until the renders are over and well past the stuck limit.
  while (std::chrono::steady_clock::now() < submitted + std::chrono::milliseconds(6500))
    ::usleep(50000);  // the downtime itself, not a wait for an event
  const size_t log_mark = rig.log().size();
  rig.start_daemon();
  // The metrics port of this start (the log is appended to).
  int port = 0;
  REQUIRE(test::eventually([&] {
    std::string log = rig.log().substr(log_mark);
    auto at = log.find("metrics at http://127.0.0.1:");
    if (at == std::string::npos) return false;
    port = std::stoi(log.substr(at + 28));
    return true;
  }));
  // Scraped all along until the batch is done: never a stuck job.
  int scrapes = 0;
  REQUIRE(test::eventually([&] {
    std::string body = scrape_metrics(port);
    if (body.find("wanbatch_shots_stuck ") != std::string::npos) {
      ++scrapes;
      CHECK_MESSAGE(body.find("wanbatch_shots_stuck 0") != std::string::npos, body);
    }
    return rig.finished("s");
  }));
  CHECK(scrapes > 0);
  REQUIRE(test::eventually([&] { return lines_starting(test::read(notes), "batch_finished ") == 1; }));
  CHECK(lines_starting(test::read(notes), "shot_stuck ") == 0);
  CHECK(rig.log().find("stuck: in flight") == std::string::npos);
  CHECK(rig.states("s")["DONE"] == 3);
  CHECK(rig.billed().size() == 3);
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
}
