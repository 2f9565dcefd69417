// Helpers shared by the tests: files, a fake clock, a fake transport, child
// processes, and a config for a temporary spool.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "config/config.h"
#include "jobs/http.h"
#include "jobs/util.h"

namespace test {

std::string cwd();
void write(const std::string& path, const std::string& data);
std::string read(const std::string& path);
bool exists(const std::string& path);
void mkdirs(const std::string& path);
std::vector<std::string> list(const std::string& dir);  // names, sorted, no dotfiles
// A small valid PNG (solid colour); `variant` changes its content.
std::string png(int variant = 0);
// Standard base64 (the upload endpoint's data URLs), stopping at padding.
std::string base64_decode(const std::string& text);
// True when `tool` is found in PATH.
bool have_tool(const std::string& tool);
// The RGB24 pixels of an image, or of frame `n` (from 0) of a video, as ffmpeg
// decodes them: "the same picture" whatever the file's encoding. Fails the test
// when ffmpeg cannot.
std::string frame_pixels(const std::string& file, int n = -1);

// Wall and monotonic time that advance together; step_wall() moves the wall
// clock alone, as an NTP correction or a restored VM does.
struct FakeClock {
  wb::TimePoint now = wb::TimePoint(std::chrono::seconds(1'800'000'000));
  wb::MonoPoint mono = wb::MonoPoint(std::chrono::seconds(5'000));
  void advance(wb::Millis d) {
    now += d;
    mono += d;
  }
  void step_wall(wb::Millis d) { now += d; }
};

// Records requests; the test answers them one by one.
class FakeTransport : public wb::Transport {
 public:
  struct Call {
    wb::HttpRequest request;
    wb::HttpCallback done;
  };
  void start(wb::HttpRequest request, wb::HttpCallback done) override {
    started.push_back(request);
    calls.push_back({std::move(request), std::move(done)});
  }
  size_t active() const override { return calls.size(); }
  // Removes and returns the oldest call whose URL contains `part`; fails the test if none.
  Call take(const std::string& part);
  bool has(const std::string& part) const;
  static void reply(Call& call, long status, const std::string& body,
                    std::map<std::string, std::string> headers = {});
  static void fail(Call& call, wb::NetError error);
  // Writes `data` to the call's sink and answers `status`.
  static void deliver(Call& call, const std::string& data, long status = 200);

  std::deque<Call> calls;
  std::vector<wb::HttpRequest> started;  // every request ever started, in order, answered or not
};

// A child process. Killed (SIGKILL) on destruction if still running.
class Process {
 public:
  Process(std::vector<std::string> argv, std::map<std::string, std::string> env = {},
          const std::string& log_file = "");
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  pid_t pid() const { return pid_; }
  void signal(int sig);
  // Waits for exit; returns the exit code, or 128+signal. -1 on timeout.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  bool running();

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

// Runs a command to completion; returns exit code and captures stdout+stderr.
int run(const std::vector<std::string>& argv, std::string* output = nullptr,
        std::map<std::string, std::string> env = {});

// Polls `cond` every 20 ms until it holds or `timeout` passes.
template <typename F>
bool eventually(F cond, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    ::usleep(20000);
  }
  return cond();
}

// A config for a spool, state and output under `root`, talking to `base_url`.
std::string config_yaml(const std::string& root, const std::string& base_url,
                        const std::string& extra = "", double settle_seconds = 0.2);
wb::Config make_config(const std::string& root, const std::string& base_url = "https://api.example.com");

}  // namespace test
