#include "jobs/background.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <exception>

#include "jobs/util.h"

namespace wb {

Background::Background(int threads, bool inline_mode) : threads_(threads < 1 ? 1 : threads), inline_(inline_mode) {
  if (!inline_) {
    fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd_ < 0) throw Error("cannot create an eventfd for background work");
  }
}

Background::~Background() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queued_.clear();
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  if (fd_ >= 0) ::close(fd_);
}

void Background::run(Work work) {
  if (inline_) {
    Done done = work();
    if (done) done();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued_.push_back(std::move(work));
    if (workers_.size() < static_cast<size_t>(threads_) && workers_.size() < queued_.size() + running_)
      workers_.emplace_back([this] { worker(); });
  }
  wake_.notify_one();
}

void Background::worker() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
    if (stopping_) return;
    Work work = std::move(queued_.front());
    queued_.pop_front();
    ++running_;
    lock.unlock();
    Done done;
    try {
      done = work();
    } catch (const std::exception&) {
      // A task reports its own failures through its callback; one that throws
      // anyway is dropped rather than taking the daemon down.
    }
    lock.lock();
    --running_;
    if (done) {
      finished_.push_back(std::move(done));
      uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(fd_, &one, sizeof one);
    }
  }
}

size_t Background::drain() {
  if (inline_) return 0;
  uint64_t count = 0;
  [[maybe_unused]] ssize_t n = ::read(fd_, &count, sizeof count);
  std::deque<Done> ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ready.swap(finished_);
  }
  // Every callback runs, even when one throws (a store write on a full disk):
  // the first exception is rethrown after.
  std::exception_ptr failed;
  for (auto& done : ready) {
    try {
      done();
    } catch (...) {
      if (!failed) failed = std::current_exception();
    }
  }
  if (failed) std::rethrow_exception(failed);
  return ready.size();
}

size_t Background::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_.size() + running_ + finished_.size();
}

}  // namespace wb
