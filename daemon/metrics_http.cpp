#include "daemon/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

namespace wb {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kListenTag = 0;
constexpr uint64_t kStopTag = 1;
constexpr int kMaxAcceptsPerTurn = 256;  // then the other connections get a turn
constexpr Millis kAcceptPause{200};       // after accept() failed (out of descriptors)

std::string answer_of(const std::string& status, const std::string& body, const std::string& extra = "",
                      const std::string& type = "text/plain; charset=utf-8") {
  return "HTTP/1.1 " + status + "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n" + extra + "Connection: close\r\n\r\n" + body;
}

// The end of the request head in `in` (the index after its blank line), or npos.
size_t head_end(const std::string& in) {
  size_t crlf = in.find("\r\n\r\n");
  size_t lf = in.find("\n\n");
  if (crlf != std::string::npos && (lf == std::string::npos || crlf + 2 <= lf)) return crlf + 4;
  return lf == std::string::npos ? std::string::npos : lf + 2;
}

struct Conn {
  int fd = -1;
  std::string in;
  std::string out;
  size_t sent = 0;
  bool answering = false;
  Clock::time_point deadline;
};

}  // namespace

std::string metrics_http_answer(const std::string& head, const MetricsHttpServer::Body& body) {
  std::string line = head.substr(0, head.find('\n'));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string::npos ? std::string::npos : line.find(' ', sp1 + 1);
  if (sp1 == 0 || sp2 == std::string::npos || line.find(' ', sp2 + 1) != std::string::npos ||
      line.compare(sp2 + 1, 7, "HTTP/1.") != 0 || line.size() != sp2 + 9)
    return answer_of("400 Bad Request", "not an HTTP/1.x request line\n");
  const std::string method = line.substr(0, sp1);
  std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  target = target.substr(0, target.find('?'));
  if (method != "GET") return answer_of("405 Method Not Allowed", "only GET /metrics is served\n", "Allow: GET\r\n");
  if (target != "/metrics") return answer_of("404 Not Found", "only /metrics is served\n");
  try {
    return answer_of("200 OK", body(), "", "text/plain; version=0.0.4; charset=utf-8");
  } catch (const std::exception& e) {
    spdlog::error("metrics: cannot serialize the registry: {}", e.what());
    return answer_of("500 Internal Server Error", "cannot serialize the metrics\n");
  }
}

MetricsHttpServer::MetricsHttpServer(const std::string& listen, Body body, MetricsHttpLimits limits)
    : body_(std::move(body)), limits_(limits) {
  const size_t colon = listen.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (colon == std::string::npos || ::inet_pton(AF_INET, listen.substr(0, colon).c_str(), &addr.sin_addr) != 1)
    throw Error("metrics.listen " + listen + ": not IPV4:PORT");
  const std::string port = listen.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) > 65535)
    throw Error("metrics.listen " + listen + ": not IPV4:PORT");
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(port)));
  auto fail = [&](const std::string& what) {
    std::string why = what + ": " + std::strerror(errno);
    for (int fd : {listen_fd_, stop_fd_, epoll_fd_})
      if (fd >= 0) ::close(fd);
    throw Error("metrics.listen " + listen + ": cannot listen: " + why);
  };
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail("socket");
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // a restart finds its port in TIME_WAIT
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fail("bind");
  if (::listen(listen_fd_, SOMAXCONN) != 0) fail("listen");
  socklen_t len = sizeof addr;
  if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) fail("getsockname");
  port_ = ntohs(addr.sin_port);
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (stop_fd_ < 0 || epoll_fd_ < 0) fail("epoll");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenTag;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) fail("epoll_ctl");
  ev.data.u64 = kStopTag;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &ev) != 0) fail("epoll_ctl");
  thread_ = std::thread([this] { run(); });
}

MetricsHttpServer::~MetricsHttpServer() {
  uint64_t one = 1;
  if (::write(stop_fd_, &one, sizeof one) < 0) spdlog::warn("metrics: cannot stop the server thread");
  if (thread_.joinable()) thread_.join();
  ::close(epoll_fd_);
  ::close(stop_fd_);
  ::close(listen_fd_);
}

// The thread. Connections are kept by a sequence number (their epoll tag), so
// the map's order is the order of their accept: the first one still sending
// its head is the oldest idle one.
void MetricsHttpServer::run() {
  std::map<uint64_t, Conn> conns;
  uint64_t next_tag = kStopTag + 1;
  bool accept_paused = false;  // accept() failed (out of descriptors): until accept_resume
  Clock::time_point accept_resume{};
  auto drop = [&](std::map<uint64_t, Conn>::iterator it) {
    ::close(it->second.fd);  // also takes it out of the epoll set
    open_.store(conns.size() - 1);
    return conns.erase(it);
  };
  auto watch = [&](uint64_t tag, Conn& c, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  };
  // Writes what the socket takes; false when the connection is done (all
  // written, or the peer gone).
  auto write_some = [&](Conn& c) {
    while (c.sent < c.out.size()) {
      ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        c.sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    ::shutdown(c.fd, SHUT_WR);
    return false;
  };
  auto start_answer = [&](uint64_t tag, Conn& c, std::string answer, Clock::time_point now) {
    c.in.clear();
    c.in.shrink_to_fit();
    c.out = std::move(answer);
    c.answering = true;
    c.deadline = now + limits_.answer_timeout;
    if (!write_some(c)) return false;
    watch(tag, c, EPOLLOUT);
    return true;
  };
  // Reads what came; false when the connection is done and must be dropped.
  auto read_some = [&](uint64_t tag, Conn& c, Clock::time_point now) {
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        size_t end = head_end(c.in);
        if (end != std::string::npos && end <= limits_.max_head)
          return start_answer(tag, c, metrics_http_answer(c.in.substr(0, end), body_), now);
        if (c.in.size() > limits_.max_head)
          return start_answer(tag, c, answer_of("431 Request Header Fields Too Large", "request head over " +
                                                std::to_string(limits_.max_head) + " bytes\n"), now);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
  };
  auto accept_some = [&](Clock::time_point now) {
    for (int i = 0; i < kMaxAcceptsPerTurn; ++i) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          spdlog::warn("metrics: cannot accept a connection ({}); trying again in {} ms", std::strerror(errno),
                       kAcceptPause.count());
          accept_paused = true;
          accept_resume = now + kAcceptPause;
          ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
        }
        return;
      }
      if (conns.size() >= limits_.max_connections) {
        // Room for the newcomer: the oldest still sending its head goes (else the oldest of all).
        auto victim = conns.begin();
        for (auto it = conns.begin(); it != conns.end(); ++it)
          if (!it->second.answering) {
            victim = it;
            break;
          }
        drop(victim);
      }
      const uint64_t tag = next_tag++;
      Conn& c = conns[tag];
      c.fd = fd;
      c.deadline = now + limits_.head_timeout;
      open_.store(conns.size());
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = tag;
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
      if (!read_some(tag, c, now)) drop(conns.find(tag));
    }
  };

  std::vector<epoll_event> events(64);
  for (;;) {
    Clock::time_point now = Clock::now();
    bool any = accept_paused;
    Clock::time_point earliest = accept_resume;
    for (const auto& [tag, c] : conns)
      if (!any || c.deadline < earliest) {
        earliest = c.deadline;
        any = true;
      }
    int timeout = -1;
    if (any) timeout = earliest <= now ? 0 : static_cast<int>(std::chrono::ceil<Millis>(earliest - now).count());
    int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout);
    if (n < 0 && errno != EINTR) {
      spdlog::error("metrics: epoll_wait failed ({}); the endpoint stops", std::strerror(errno));
      break;
    }
    now = Clock::now();
    bool stop = false;
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[static_cast<size_t>(i)].data.u64;
      if (tag == kStopTag) {
        stop = true;
      } else if (tag == kListenTag) {
        accept_some(now);
      } else if (auto it = conns.find(tag); it != conns.end()) {
        Conn& c = it->second;
        if (!(c.answering ? write_some(c) : read_some(tag, c, now))) drop(it);
      }
    }
    if (stop) break;
    if (accept_paused && now >= accept_resume) {
      accept_paused = false;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kListenTag;
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
    }
    for (auto it = conns.begin(); it != conns.end();)
      it = it->second.deadline <= now ? drop(it) : std::next(it);
  }
  for (auto& [tag, c] : conns) ::close(c.fd);
  open_.store(0);
}

}  // namespace wb
