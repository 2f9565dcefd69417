// The local control channel: a Unix socket `control.sock` in the state
// directory (mode 0600, so only the daemon's user and root reach it). One JSON
// request line, one JSON answer line, then the connection closes.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace wb {

class ControlServer {
 public:
  explicit ControlServer(std::string path);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  int fd() const { return fd_; }
  // Accepts waiting clients and answers each with `handle`.
  void serve(const std::function<nlohmann::json(const nlohmann::json&)>& handle);

 private:
  std::string path_;
  int fd_ = -1;
};

std::string control_socket_path(const std::string& state_dir);

// Sends one request to the running daemon. Throws wb::Error when no daemon answers.
nlohmann::json control_request(const std::string& state_dir, const nlohmann::json& request);

}  // namespace wb
