// The metrics endpoint's own HTTP server (daemon/metrics_http.h): scrapes stay
// answered under a slowloris crowd, heads have a deadline however they trickle,
// the oldest idle connection makes room, and only GET /metrics is served.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "daemon/metrics_http.h"

using namespace wb;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

int connect_to(int port) {
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

void set_receive_timeout(int fd, std::chrono::milliseconds limit) {
  timeval tv{static_cast<time_t>(limit.count() / 1000), static_cast<suseconds_t>(limit.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

// Sends `request` and reads the answer until the server closes, at most `limit`; "" when none came.
std::string ask(int port, const std::string& request, std::chrono::milliseconds limit) {
  int fd = connect_to(port);
  if (fd < 0) return "";
  set_receive_timeout(fd, limit);
  std::string out;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    char buf[8192];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string get(int port, const std::string& path, std::chrono::milliseconds limit = 5000ms) {
  return ask(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n\r\n", limit);
}

// Waits (blocking, bounded) until the server closes `fd`: true when it did.
bool closed_by_server(int fd, std::chrono::milliseconds limit) {
  set_receive_timeout(fd, limit);
  char buf[256];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

void raise_descriptor_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < 4096 && r.rlim_max > r.rlim_cur) {
    r.rlim_cur = std::min<rlim_t>(r.rlim_max, 4096);
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
}

const MetricsHttpServer::Body kBody = [] { return std::string("wanbatch_up 1\n"); };

}  // namespace

TEST_CASE("metrics http: scrapes are answered within 1 s while 200 silent and trickling clients hold on and more arrive") {
  raise_descriptor_limit();
  MetricsHttpServer server("127.0.0.1:0", kBody);
  const int port = server.port();
  std::mutex mu;
  std::vector<int> silent, trickling;
  for (int i = 0; i < 200; ++i) {
    int fd = connect_to(port);
    REQUIRE(fd >= 0);
    (i % 2 ? trickling : silent).push_back(fd);
  }
  // The crowd: each trickler sends one header byte every 500 ms, and 5 new silent clients come every 100 ms.
  std::atomic<bool> done{false};
  std::thread crowd([&] {
    const std::string head = "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    size_t at = 0;
    auto next_trickle = Clock::now();
    while (!done) {
      if (Clock::now() >= next_trickle) {
        std::lock_guard lock(mu);
        for (int fd : trickling) ::send(fd, head.data() + at % head.size(), 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        ++at;
        next_trickle += 500ms;
      }
      for (int i = 0; i < 5; ++i)
        if (int fd = connect_to(port); fd >= 0) {
          std::lock_guard lock(mu);
          silent.push_back(fd);
        }
      std::this_thread::sleep_for(100ms);  // the attack's pace, not a wait for the server
    }
  });
  // Scrapes for 3 s, past the heads' 2 s deadline: each one whole within 1 s.
  int scrapes = 0;
  const auto until = Clock::now() + 3s;
  while (Clock::now() < until) {
    const auto t0 = Clock::now();
    std::string answer = get(port, "/metrics", 1000ms);
    const auto took = Clock::now() - t0;
    CHECK(answer.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(answer.find("\r\n\r\nwanbatch_up 1\n") != std::string::npos);
    CHECK(took < 1000ms);
    CHECK(server.connections() <= MetricsHttpLimits{}.max_connections);
    ++scrapes;
  }
  done = true;
  crowd.join();
  CHECK(scrapes >= 3);
  for (int fd : silent) ::close(fd);
  for (int fd : trickling) ::close(fd);
}

TEST_CASE("metrics http: a request head that trickles is closed at its deadline, however it trickles") {
  MetricsHttpLimits limits;
  limits.head_timeout = 300ms;
  MetricsHttpServer server("127.0.0.1:0", kBody, limits);
  int fd = connect_to(server.port());
  REQUIRE(fd >= 0);
  const auto t0 = Clock::now();
  bool closed = false;
  // One byte every 50 ms, each well inside any per-read timeout; the server must close it anyway.
  for (const char c : std::string("GET /metrics HTTP/1.1\r\nX-Slow: abcdefghijklmnopqrstuvwxyz")) {
    ::send(fd, &c, 1, MSG_NOSIGNAL);
    if ((closed = closed_by_server(fd, 50ms))) break;
  }
  const auto took = Clock::now() - t0;
  ::close(fd);
  CHECK(closed);
  CHECK(took >= 250ms);
  CHECK(took < 1000ms);
}

TEST_CASE("metrics http: at the connection cap a newcomer drops the oldest client still sending its head") {
  MetricsHttpLimits limits;
  limits.max_connections = 4;
  MetricsHttpServer server("127.0.0.1:0", kBody, limits);
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) fds.push_back(connect_to(server.port()));
  for (int fd : fds) REQUIRE(fd >= 0);
  // A scrape makes the fifth: the first silent one goes, the scrape is answered.
  std::string answer = get(server.port(), "/metrics");
  CHECK(answer.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(closed_by_server(fds[0], 1000ms));
  // The others are still open: nothing to read, no end of stream.
  set_receive_timeout(fds[3], 50ms);
  char b;
  CHECK(::recv(fds[3], &b, 1, 0) < 0);
  CHECK((errno == EAGAIN || errno == EWOULDBLOCK));
  for (int fd : fds) ::close(fd);
}

TEST_CASE("metrics http: only GET /metrics is served, other paths, methods, garbage and huge heads get their errors") {
  MetricsHttpServer server("127.0.0.1:0", kBody);
  const int port = server.port();
  std::string ok = get(port, "/metrics?x=1");
  CHECK(ok.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(ok.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
  CHECK(ok.find("Content-Length: 14\r\n") != std::string::npos);
  CHECK(ok.find("Connection: close\r\n") != std::string::npos);
  CHECK(get(port, "/").rfind("HTTP/1.1 404 ", 0) == 0);
  CHECK(get(port, "/metrics/../etc").rfind("HTTP/1.1 404 ", 0) == 0);
  std::string post = ask(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 5000ms);
  CHECK(post.rfind("HTTP/1.1 405 ", 0) == 0);
  CHECK(post.find("Allow: GET\r\n") != std::string::npos);
  CHECK(ask(port, "HEAD /metrics HTTP/1.1\r\n\r\n", 5000ms).rfind("HTTP/1.1 405 ", 0) == 0);
  CHECK(ask(port, "hello\r\n\r\n", 5000ms).rfind("HTTP/1.1 400 ", 0) == 0);
  CHECK(ask(port, "GET /metrics SPDY/3\r\n\r\n", 5000ms).rfind("HTTP/1.1 400 ", 0) == 0);
  CHECK(ask(port, "GET /metrics HTTP/1.1\n\n", 5000ms).rfind("HTTP/1.1 200 ", 0) == 0);  // bare LF heads too
  std::string huge = "GET /metrics HTTP/1.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n";
  CHECK(ask(port, huge, 5000ms).rfind("HTTP/1.1 431 ", 0) == 0);
  // A body that throws is a 500, and the server serves on.
  MetricsHttpServer broken("127.0.0.1:0", []() -> std::string { throw std::runtime_error("boom"); });
  CHECK(get(broken.port(), "/metrics").rfind("HTTP/1.1 500 ", 0) == 0);
  CHECK(get(port, "/metrics").rfind("HTTP/1.1 200 ", 0) == 0);
}

TEST_CASE("metrics http: what cannot be listened on is an error naming metrics.listen") {
  MetricsHttpServer first("127.0.0.1:0", kBody);
  const std::string taken = "127.0.0.1:" + std::to_string(first.port());
  const std::string says = "metrics.listen " + taken + ": cannot listen";
  CHECK_THROWS_WITH_AS(MetricsHttpServer(taken, kBody), doctest::Contains(says.c_str()), Error);
  CHECK_THROWS_AS(MetricsHttpServer("[::1]:9464", kBody), Error);
  CHECK_THROWS_AS(MetricsHttpServer("localhost:9464", kBody), Error);
  CHECK_THROWS_AS(MetricsHttpServer("127.0.0.1:99999", kBody), Error);
}
