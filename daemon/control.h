// The local control channel: a Unix socket `control.sock` in the state
// directory (mode 0600, so only the daemon's user and root reach it). One JSON
// request line, one JSON answer line, then the connection closes.
#pragma once

#include <poll.h>

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "jobs/util.h"

namespace wb {

struct ControlLimits {
  Millis request_timeout{2000};  // from connect to a full request line; then the client is closed
  Millis answer_timeout{2000};   // to write the answer; then it is dropped
  size_t max_clients = 32;       // beyond it a new client gets a short error and is closed at once
  size_t max_line = 64 * 1024;   // a longer request line gets an error answer
};

// Serves the socket from the daemon's event loop without ever blocking it:
// every read and write is non-blocking, each client has its own buffers and
// deadline, and the loop waits on waits() for at most until_next_deadline().
class ControlServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json&)>;
  using Clock = std::chrono::steady_clock;

  explicit ControlServer(std::string path, ControlLimits limits = {});
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // What to wait on: the listening socket, each client still sending its
  // request (POLLIN) and each client being answered (POLLOUT).
  std::vector<pollfd> waits() const;
  // Time from `now` to the earliest client deadline; Millis::max() with no client.
  Millis until_next_deadline(Clock::time_point now) const;
  // Accepts waiting clients, reads what they sent, answers each full request
  // line with `handle`, writes what the sockets take and closes clients that
  // are done or past their deadline. Never waits.
  void serve(Clock::time_point now, const Handler& handle);
  void serve(const Handler& handle) { serve(Clock::now(), handle); }
  size_t clients() const { return clients_.size(); }

 private:
  struct Client {
    int fd = -1;
    std::string in;   // the request as read so far
    std::string out;  // the answer line still to write
    bool answering = false;
    Clock::time_point deadline;
  };
  // Moves one client along; false when it is done and closed.
  bool advance(Client& c, Clock::time_point now, const Handler& handle);
  void answer(Client& c, Clock::time_point now, const Handler& handle);
  void accept_new(Clock::time_point now, const Handler& handle);

  std::string path_;
  ControlLimits limits_;
  int fd_ = -1;
  std::vector<Client> clients_;
  std::optional<Clock::time_point> accept_paused_;  // accept() failed (out of descriptors): until then
};

std::string control_socket_path(const std::string& state_dir);

// Why control_request() got no answer: no daemon listens (no socket, or
// connection refused), or one took the connection but gave no answer in time
// (its loop is busy or stuck), or it closed the connection without one.
class ControlError : public Error {
 public:
  enum class Kind { no_daemon, timed_out, no_answer };
  ControlError(Kind kind, const std::string& message) : Error(message), kind(kind) {}
  Kind kind;
};

// Sends one request to the running daemon and waits up to `timeout_seconds`
// for its answer. Throws ControlError when none comes.
nlohmann::json control_request(const std::string& state_dir, const nlohmann::json& request, int timeout_seconds = 10);

}  // namespace wb
