// A small HTTP/1.1 server for the simulator: one thread per connection,
// Content-Length bodies, keep-alive. Written here rather than taken from
// cpp-httplib because the simulator must be able to drop a connection after
// reading a request without answering a single byte, which httplib cannot do.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace sim {

struct Request {
  std::string method;
  std::string path;
  std::string query;
  std::map<std::string, std::string> headers;  // lower-cased names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool drop = false;  // close the connection without answering
  double trickle_bytes_per_second = 0;  // > 0: the body is sent this slowly
  bool announce_length = true;  // false: no Content-Length; the body ends when the connection closes
  // When not empty: these bytes are written verbatim instead of an answer built
  // from the fields above (status line, headers and body as given, so they may
  // lie), then the connection is closed. For fault injection (tests/faultproxy).
  std::string raw;
  size_t raw_head = 0;                    // bytes written at once before the chunks
  size_t raw_chunk = 0;                   // bytes per later write; 0: all at once
  std::chrono::milliseconds raw_pause{0};  // pause between chunks: a trickle
};

using Handler = std::function<Response(const Request&)>;

class HttpServer {
 public:
  explicit HttpServer(Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds 127.0.0.1:port (0 picks a free port) and starts serving in the background.
  void start(int port);
  void stop();
  int port() const { return port_; }

 private:
  void accept_loop();
  void serve(int fd);
  void send_raw(int fd, const Response& res);

  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable idle_;
  std::set<int> clients_;  // open connections, each served by a detached thread
};

}  // namespace sim
