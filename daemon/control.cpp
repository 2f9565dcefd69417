#include "daemon/control.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "jobs/util.h"

namespace wb {

namespace {

constexpr size_t kMaxLine = 64 * 1024;  // the longest answer the client side reads
constexpr int kMaxAcceptsPerServe = 64;
constexpr Millis kAcceptPause{1000};

sockaddr_un address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw Error("control socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

void set_timeouts(int fd, int seconds) {
  timeval tv{seconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

// One try at a short line for a client about to be closed; never waits.
void send_once(int fd, const std::string& line) { ::send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL); }

std::string error_line(const std::string& error) {
  return nlohmann::json{{"ok", false}, {"error", error}}.dump() + "\n";
}

}  // namespace

std::string control_socket_path(const std::string& state_dir) { return join_path(state_dir, "control.sock"); }

// Server side. Each client is a small state machine: reading its request until
// a newline (or end of stream), then writing its answer, then closed. The fds
// are non-blocking and every call does only what the sockets take at once, so
// a client that stalls costs the loop nothing but its slot until its deadline.

ControlServer::ControlServer(std::string path, ControlLimits limits) : path_(std::move(path)), limits_(limits) {
  sockaddr_un addr = address(path_);
  ::unlink(path_.c_str());  // a stale socket from a killed daemon; the state lock is ours
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  mode_t old = ::umask(0077);
  int rc = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc != 0 || ::listen(fd_, 64) != 0)
    throw Error("cannot listen on " + path_ + ": " + std::strerror(errno));
}

ControlServer::~ControlServer() {
  for (auto& c : clients_) ::close(c.fd);
  if (fd_ >= 0) ::close(fd_);
  ::unlink(path_.c_str());
}

std::vector<pollfd> ControlServer::waits() const {
  std::vector<pollfd> w;
  w.reserve(clients_.size() + 1);
  // While accept() is out of descriptors the listening socket stays readable;
  // it is left out of the wait until the pause ends, so the loop does not spin.
  w.push_back({accept_paused_ ? -1 : fd_, POLLIN, 0});
  for (const auto& c : clients_) w.push_back({c.fd, static_cast<short>(c.answering ? POLLOUT : POLLIN), 0});
  return w;
}

Millis ControlServer::until_next_deadline(Clock::time_point now) const {
  std::optional<Clock::time_point> earliest = accept_paused_;
  for (const auto& c : clients_)
    if (!earliest || c.deadline < *earliest) earliest = c.deadline;
  if (!earliest) return Millis::max();
  if (*earliest <= now) return Millis(0);
  return std::chrono::ceil<Millis>(*earliest - now);
}

void ControlServer::serve(Clock::time_point now, const Handler& handle) {
  // Clients already connected first: a request that came in time is answered
  // even when the loop reaches it after its deadline.
  size_t kept = 0;
  for (size_t i = 0; i < clients_.size(); ++i) {
    if (!advance(clients_[i], now, handle)) continue;
    if (kept != i) clients_[kept] = std::move(clients_[i]);
    ++kept;
  }
  clients_.resize(kept);
  if (accept_paused_ && now >= *accept_paused_) accept_paused_.reset();
  if (!accept_paused_) accept_new(now, handle);
}

void ControlServer::accept_new(Clock::time_point now, const Handler& handle) {
  // Bounded, so that a stream of connects cannot hold the loop here.
  for (int i = 0; i < kMaxAcceptsPerServe; ++i) {
    int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      spdlog::warn("control socket: cannot accept a client ({}); trying again in {} ms", std::strerror(errno),
                   kAcceptPause.count());
      accept_paused_ = now + kAcceptPause;
      return;
    }
    if (clients_.size() >= limits_.max_clients) {
      spdlog::warn("control socket: {} clients already connected; a new one is refused", clients_.size());
      send_once(fd, error_line("too many control clients at once (" + std::to_string(limits_.max_clients) +
                               "); try again"));
      ::close(fd);
      continue;
    }
    Client c;
    c.fd = fd;
    c.deadline = now + limits_.request_timeout;
    if (advance(c, now, handle)) clients_.push_back(std::move(c));
  }
}

bool ControlServer::advance(Client& c, Clock::time_point now, const Handler& handle) {
  if (!c.answering) {
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        size_t from = c.in.size();
        c.in.append(buf, static_cast<size_t>(n));
        size_t nl = c.in.find('\n', from);
        if (nl != std::string::npos) {
          c.in.resize(nl);
          answer(c, now, handle);
          break;
        }
        if (c.in.size() > limits_.max_line) {
          answer(c, now, handle);
          break;
        }
        continue;
      }
      if (n == 0) {  // the client shut down its side without a newline
        if (c.in.empty()) {
          ::close(c.fd);
          return false;
        }
        answer(c, now, handle);
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      ::close(c.fd);
      return false;
    }
    if (!c.answering) {
      if (now < c.deadline) return true;
      spdlog::info("control socket: a client sent no request line within {} ms; closed",
                   limits_.request_timeout.count());
      send_once(c.fd, error_line("no request line within " + std::to_string(limits_.request_timeout.count()) +
                                 " ms"));
      ::close(c.fd);
      return false;
    }
  }
  while (!c.out.empty()) {
    ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    c.out.clear();  // the client is gone
    c.deadline = now;
  }
  if (!c.out.empty() && now < c.deadline) return true;
  if (!c.out.empty())
    spdlog::info("control socket: an answer not taken within {} ms; dropped", limits_.answer_timeout.count());
  ::close(c.fd);
  return false;
}

// Turns the request in `c.in` into the answer line in `c.out`.
void ControlServer::answer(Client& c, Clock::time_point now, const Handler& handle) {
  nlohmann::json a;
  if (c.in.size() > limits_.max_line) {
    a = {{"ok", false}, {"error", "the request line is over " + std::to_string(limits_.max_line) + " bytes"}};
  } else {
    auto request = nlohmann::json::parse(c.in, nullptr, false);
    if (request.is_discarded() || !request.is_object()) {
      a = {{"ok", false}, {"error", "the request must be one JSON object"}};
    } else {
      try {
        a = handle(request);
      } catch (const std::exception& e) {  // e.g. a field of the wrong type
        a = {{"ok", false}, {"error", std::string("bad request: ") + e.what()}};
      }
    }
  }
  c.in.clear();
  c.in.shrink_to_fit();
  c.out = a.dump() + "\n";
  c.answering = true;
  c.deadline = now + limits_.answer_timeout;
}

nlohmann::json control_request(const std::string& state_dir, const nlohmann::json& request, int timeout_seconds) {
  using Kind = ControlError::Kind;
  std::string path = control_socket_path(state_dir);
  sockaddr_un addr = address(path);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  set_timeouts(fd, timeout_seconds);  // before connect, which waits while the daemon's backlog is full
  const std::string busy = "the daemon is busy: it did not answer on " + path + " in " + std::to_string(timeout_seconds) + " s";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd);
    if (e == EAGAIN || e == EWOULDBLOCK || e == ETIMEDOUT || e == EINTR) throw ControlError(Kind::timed_out, busy);
    throw ControlError(Kind::no_daemon, "no running daemon answers on " + path + " (" + std::strerror(e) + ")");
  }
  std::string line;
  bool timed_out = false;
  send_all(fd, request.dump() + "\n");  // a daemon that takes none of it times out below
  char buf[4096];
  while (!timed_out && line.find('\n') == std::string::npos && line.size() <= kMaxLine) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      line.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    timed_out = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    break;
  }
  ::close(fd);
  if (timed_out) throw ControlError(Kind::timed_out, busy);
  auto answer = nlohmann::json::parse(line.substr(0, line.find('\n')), nullptr, false);
  if (line.empty() || answer.is_discarded())
    throw ControlError(Kind::no_answer, "the daemon gave no answer on " + path);
  return answer;
}

}  // namespace wb
