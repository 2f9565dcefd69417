// The metrics endpoint's HTTP server: GET /metrics, nothing else, from one
// thread of its own (never the daemon's loop).
//
// Why not prometheus-cpp's Exposer: it serves through civetweb, a fixed pool
// of worker threads each taken by one connection until its request arrives or
// times out (8 workers, 2 s here): more than 8 / 2 s = 4 silent connections a
// second keep every scrape queued behind them (slowloris), and its options only
// move that rate (a thread per worker, a timeout that real scrapes must fit
// in). This server is one epoll thread with
// non-blocking sockets: each connection has a deadline from its accept for
// its whole request head (however it trickles), the head is capped in size,
// the open connections are capped (a new one drops the oldest still sending
// its head), and every answer closes its connection. The registry and its text
// format stay prometheus-cpp's (daemon/metrics.cpp).
//
// Not the control socket's ControlServer (daemon/control.h): that one is driven
// by the daemon's loop and speaks one JSON line over a Unix socket; a scrape
// must not wait on the loop, and HTTP needs its own head parsing.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "jobs/util.h"

namespace wb {

struct MetricsHttpLimits {
  Millis head_timeout{2000};    // from accept to the whole request head, however it trickles
  Millis answer_timeout{5000};  // to write the answer; then the connection is dropped
  size_t max_connections = 128; // beyond it a new connection drops the oldest one still sending
  size_t max_head = 8192;       // a longer request head is answered 431 and closed
};

class MetricsHttpServer {
 public:
  // The body of a 200 answer to GET /metrics; called on the server's thread.
  using Body = std::function<std::string()>;
  // Listens on `listen` (IPV4:PORT, PORT 0: any free port). Throws wb::Error
  // when it cannot (not an IPv4 address, address in use, not of this host).
  MetricsHttpServer(const std::string& listen, Body body, MetricsHttpLimits limits = {});
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }
  // Connections open now (for tests and logs).
  size_t connections() const { return open_.load(); }

 private:
  void run();

  Body body_;
  MetricsHttpLimits limits_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd: written by the destructor
  int epoll_fd_ = -1;
  int port_ = 0;
  std::atomic<size_t> open_{0};
  std::thread thread_;
};

// The answer to one request head (the bytes up to and including the blank
// line): 200 with `body()` for GET /metrics (a query string is ignored), 404
// for another path, 405 for another method, 400 for what is not an HTTP/1.x
// request line. Always `Connection: close`.
std::string metrics_http_answer(const std::string& head, const MetricsHttpServer::Body& body);

}  // namespace wb
