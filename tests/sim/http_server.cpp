#include "tests/sim/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string_view>

namespace sim {

namespace {

constexpr size_t kMaxHeader = 64 * 1024;
constexpr size_t kMaxBody = 128ull << 20;

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 206: return "Partial Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 410: return "Gone";
    case 413: return "Payload Too Large";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 504: return "Gateway Timeout";
    default: return "Status";
  }
}

bool send_all(int fd, std::string_view data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Sends `body` at about `rate` bytes a second, a tenth of a second's worth at a
// time. Waiting is a poll on the socket: the client closing it (or stop()
// shutting it down) ends the trickle at once.
bool send_slowly(int fd, std::string_view body, double rate) {
  size_t chunk = std::max<size_t>(1, static_cast<size_t>(rate / 10));
  int pause_ms = std::max(1, static_cast<int>(1000.0 * static_cast<double>(chunk) / rate));
  for (size_t off = 0; off < body.size(); off += chunk) {
    if (!send_all(fd, body.substr(off, chunk))) return false;
    pollfd p{fd, POLLIN, 0};
    if (off + chunk < body.size() && ::poll(&p, 1, pause_ms) > 0) return false;
  }
  return true;
}

}  // namespace

void HttpServer::send_raw(int fd, const Response& res) {
  size_t head = std::min(res.raw_head, res.raw.size());
  if (head > 0 && !send_all(fd, res.raw.substr(0, head))) return;
  size_t chunk = res.raw_chunk ? res.raw_chunk : res.raw.size();
  for (size_t off = head; off < res.raw.size() && !stopping_; off += chunk) {
    if (off > head && res.raw_pause.count() > 0) {
      std::unique_lock<std::mutex> lock(mu_);
      if (idle_.wait_for(lock, res.raw_pause, [this] { return stopping_.load(); })) return;
    }
    if (!send_all(fd, res.raw.substr(off, chunk))) return;
  }
}

HttpServer::HttpServer(Handler handler) : handler_(std::move(handler)) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start(int port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 512) != 0)
    throw std::runtime_error(std::string("cannot listen on 127.0.0.1:") + std::to_string(port) + ": " +
                             std::strerror(errno));
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

void HttpServer::stop() {
  if (stopping_.exchange(true)) return;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  std::unique_lock<std::mutex> lock(mu_);
  idle_.notify_all();  // wakes trickles (send_raw)
  for (int fd : clients_) ::shutdown(fd, SHUT_RDWR);
  idle_.wait(lock, [this] { return clients_.empty(); });
}

void HttpServer::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard<std::mutex> lock(mu_);
    clients_.insert(fd);
    std::thread([this, fd] { serve(fd); }).detach();
  }
}

void HttpServer::serve(int fd) {
  std::string buf;
  char chunk[16384];
  bool keep = true;
  while (keep && !stopping_) {
    size_t header_end;
    while ((header_end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (buf.size() > kMaxHeader) {
        keep = false;
        break;
      }
      ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) {
        keep = false;
        break;
      }
      buf.append(chunk, static_cast<size_t>(n));
    }
    if (!keep) break;
    Request req;
    std::string head = buf.substr(0, header_end);
    buf.erase(0, header_end + 4);
    size_t line_end = head.find("\r\n");
    std::string line = head.substr(0, line_end);
    size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string::npos || sp2 == sp1) break;
    req.method = line.substr(0, sp1);
    std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    size_t q = target.find('?');
    req.path = target.substr(0, q);
    if (q != std::string::npos) req.query = target.substr(q + 1);
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t e = head.find("\r\n", pos);
      if (e == std::string::npos) e = head.size();
      std::string h = head.substr(pos, e - pos);
      size_t colon = h.find(':');
      if (colon != std::string::npos) {
        std::string name = h.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(), ::tolower);
        std::string value = h.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        req.headers[name] = value;
      }
      pos = e + 2;
    }
    size_t length = 0;
    if (!req.header("content-length").empty()) length = std::stoull(req.header("content-length"));
    if (length > kMaxBody) break;
    while (buf.size() < length) {
      ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) {
        keep = false;
        break;
      }
      buf.append(chunk, static_cast<size_t>(n));
    }
    if (!keep) break;
    req.body = buf.substr(0, length);
    buf.erase(0, length);

    Response res = handler_(req);
    if (res.drop) break;
    if (!res.raw.empty()) {
      send_raw(fd, res);
      break;
    }
    if (req.header("connection") == "close" || !res.announce_length) keep = false;
    std::string out = "HTTP/1.1 " + std::to_string(res.status) + " " + reason(res.status) + "\r\n";
    out += "Content-Type: " + res.content_type + "\r\n";
    if (res.announce_length) out += "Content-Length: " + std::to_string(res.body.size()) + "\r\n";
    for (const auto& [k, v] : res.headers) out += k + ": " + v + "\r\n";
    if (!keep) out += "Connection: close\r\n";
    out += "\r\n";
    if (!send_all(fd, out)) break;
    if (req.method == "HEAD") continue;
    bool sent = res.trickle_bytes_per_second > 0 ? send_slowly(fd, res.body, res.trickle_bytes_per_second)
                                                  : send_all(fd, res.body);
    if (!sent) break;
  }
  std::lock_guard<std::mutex> lock(mu_);
  clients_.erase(fd);
  ::close(fd);
  idle_.notify_all();
}

}  // namespace sim
