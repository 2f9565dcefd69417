// The control socket under clients that connect and say nothing, with the real
// binaries: the batch goes on and the operator's commands are answered.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "daemon/control.h"
#include "tests/integration/rig.h"

namespace {

using Clock = std::chrono::steady_clock;

int connect_silent(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Keeps `count` connections to the control socket open that never send a
// byte; each one the daemon closes is replaced at once.
class SilentClients {
 public:
  SilentClients(std::string path, int count) : path_(std::move(path)), fds_(count, -1) {
    for (auto& fd : fds_) fd = connect_silent(path_);
    thread_ = std::thread([this] { keep_up(); });
  }
  ~SilentClients() {
    stop_ = true;
    thread_.join();
    for (int fd : fds_)
      if (fd >= 0) ::close(fd);
  }
  int connected() const { return connected_; }
  int closed_by_daemon() const { return closed_; }

 private:
  void keep_up() {
    while (!stop_) {
      std::vector<pollfd> p;
      for (int fd : fds_) p.push_back({fd, POLLIN, 0});
      ::poll(p.data(), p.size(), 50);  // a close from the daemon, or a look at stop_
      int open = 0;
      for (size_t i = 0; i < fds_.size(); ++i) {
        if (p[i].revents) {  // the daemon's short error line and the end of the stream
          char buf[512];
          if (::recv(fds_[i], buf, sizeof buf, MSG_DONTWAIT) == 0 || (p[i].revents & (POLLHUP | POLLERR))) {
            ::close(fds_[i]);
            ++closed_;
            fds_[i] = connect_silent(path_);
          }
        }
        if (fds_[i] >= 0) ++open;
      }
      connected_ = open;
    }
  }

  std::string path_;
  std::vector<int> fds_;
  std::atomic<bool> stop_{false};
  std::atomic<int> connected_{0};
  std::atomic<int> closed_{0};
  std::thread thread_;
};

// Runs `wanbatch ARGS`; returns its output and how long it took.
std::pair<std::string, Clock::duration> timed_cli(Rig& rig, std::vector<std::string> args) {
  std::vector<std::string> argv = {WANBATCH_BIN, "--config", rig.config};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  auto t = Clock::now();
  test::run(argv, &out, {{"SEGMIND_API_KEY", "test-key"}});
  return {out, Clock::now() - t};
}

}  // namespace

TEST_CASE("twenty silent control clients neither stall the batch nor the operator's commands") {
  Rig rig;
  rig.start_daemon();
  std::string sock = rig.root + "/state/control.sock";
  REQUIRE(test::eventually([&] { return test::exists(sock); }));
  rig.drop("quiet.yaml", manifest("quiet", 12));
  SilentClients silent(sock, 20);
  REQUIRE(test::eventually([&] { return silent.connected() == 20; }));

  auto [status, status_took] = timed_cli(rig, {"status"});
  CHECK_MESSAGE(status.find("daemon: running") != std::string::npos, status);
  CHECK(status_took < std::chrono::seconds(2));
  auto [paused, pause_took] = timed_cli(rig, {"pause"});
  CHECK_MESSAGE(paused.find("submits paused") != std::string::npos, paused);
  CHECK(pause_took < std::chrono::seconds(2));
  auto [resumed, resume_took] = timed_cli(rig, {"resume"});
  CHECK_MESSAGE(resumed.find("submits resumed") != std::string::npos, resumed);
  CHECK(resume_took < std::chrono::seconds(2));

  // A field of the wrong type gets an error answer, not the daemon's end.
  json wrong = wb::control_request(rig.root + "/state", {{"command", 5}});
  CHECK(wrong["ok"] == false);
  CHECK(wrong["error"].get<std::string>().rfind("bad request: ", 0) == 0);

  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("quiet"); }, std::chrono::seconds(60)), rig.log());
  // The silent ones were closed at their deadline (and replaced) while the batch ran.
  REQUIRE(test::eventually([&] { return silent.closed_by_daemon() >= 20; }));
  CHECK(rig.status()["batches"][0]["states"] == json{{"DONE", 12}});  // and nothing else
  CHECK(rig.held_lines().empty());
  for (const auto& [shot, n] : rig.billed()) CHECK_MESSAGE(n == 1, shot);
  CHECK(rig.billed().size() == 12);
}
