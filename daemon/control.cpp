#include "daemon/control.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "jobs/util.h"

namespace wb {

namespace {

constexpr size_t kMaxLine = 64 * 1024;

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

bool read_line(int fd, std::string& out) {
  char buf[4096];
  while (out.find('\n') == std::string::npos) {
    if (out.size() > kMaxLine) return false;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return !out.empty();
    out.append(buf, static_cast<size_t>(n));
  }
  out.resize(out.find('\n'));
  return true;
}

void send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

}  // namespace

std::string control_socket_path(const std::string& state_dir) { return join_path(state_dir, "control.sock"); }

ControlServer::ControlServer(std::string path) : path_(std::move(path)) {
  sockaddr_un addr = address(path_);
  ::unlink(path_.c_str());  // a stale socket from a killed daemon; the state lock is ours
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  mode_t old = ::umask(0077);
  int rc = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc != 0 || ::listen(fd_, 16) != 0)
    throw Error("cannot listen on " + path_ + ": " + std::strerror(errno));
}

ControlServer::~ControlServer() {
  if (fd_ >= 0) ::close(fd_);
  ::unlink(path_.c_str());
}

void ControlServer::serve(const std::function<nlohmann::json(const nlohmann::json&)>& handle) {
  for (;;) {
    int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    set_timeouts(client, 2);
    std::string line;
    nlohmann::json answer;
    if (!read_line(client, line)) {
      answer = {{"ok", false}, {"error", "request too long or empty"}};
    } else {
      auto request = nlohmann::json::parse(line, nullptr, false);
      if (request.is_discarded() || !request.is_object())
        answer = {{"ok", false}, {"error", "the request must be one JSON object"}};
      else
        answer = handle(request);
    }
    send_all(client, answer.dump() + "\n");
    ::close(client);
  }
}

nlohmann::json control_request(const std::string& state_dir, const nlohmann::json& request) {
  std::string path = control_socket_path(state_dir);
  sockaddr_un addr = address(path);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd);
    throw Error("no running daemon answers on " + path + " (" + std::strerror(e) + ")");
  }
  set_timeouts(fd, 10);
  send_all(fd, request.dump() + "\n");
  std::string line;
  bool ok = read_line(fd, line);
  ::close(fd);
  auto answer = nlohmann::json::parse(line, nullptr, false);
  if (!ok || answer.is_discarded()) throw Error("the daemon gave no answer on " + path);
  return answer;
}

}  // namespace wb
