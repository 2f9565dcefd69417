// Work that may block (a subprocess such as ffprobe) run beside the event loop:
// each task's work runs on a worker thread (at most `threads` at once, the rest
// wait in order), and the callback it returns runs later on the loop's thread,
// from drain(). fd() is readable while a callback waits, so the loop sleeps on
// it with its other descriptors. Inline mode (tests driven by a fake clock)
// runs both at once, inside run().
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace wb {

class Background {
 public:
  using Done = std::function<void()>;
  using Work = std::function<Done()>;  // runs on a worker; returns what the loop does next

  explicit Background(int threads = 2, bool inline_mode = false);
  ~Background();  // waits for the running tasks; queued ones are dropped
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

  void run(Work work);
  // Runs the callbacks whose work has finished, on the calling thread; returns how many.
  size_t drain();
  int fd() const { return fd_; }
  // Tasks queued, running, or whose callback has not run yet.
  size_t pending() const;

 private:
  void worker();

  const int threads_;
  const bool inline_;
  int fd_ = -1;  // an eventfd
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Work> queued_;
  std::deque<Done> finished_;
  size_t running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace wb
