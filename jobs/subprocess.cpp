// Implementation: posix_spawnp with the child's ends of three O_CLOEXEC pipes
// dup2'ed onto 0, 1, 2, the passed descriptors onto 3, 4, ... and every other
// descriptor closed (closefrom), in its
// own process group (so a timeout kills what it started too), with the signal
// mask cleared and every signal at its default (the daemon blocks some for its
// signalfd, and a child must not inherit that). Our ends are non-blocking and
// moved along with poll(). Writing to a pipe whose reader left raises SIGPIPE:
// it is blocked around each write and a pending one consumed. A child given no
// input whose output fits its pipes is waited on by its pidfd (Child::quiet_step).
#include "jobs/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include "jobs/util.h"

namespace wb {

namespace {
using Clock = std::chrono::steady_clock;

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

bool make_pipe(int fds[2]) { return ::pipe2(fds, O_CLOEXEC) == 0; }

// A quiet wait (Child::quiet_step) sizes each pipe to the output kept, up to this;
// and looks at the pipes at least this often.
constexpr size_t kQuietPipeMax = 1 << 20;
constexpr auto kQuietLook = std::chrono::milliseconds(250);

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Reads what is there; false at end of file or on an error.
bool drain(int fd, std::string& into, size_t max, bool& truncated) {
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      size_t room = into.size() < max ? max - into.size() : 0;
      if (static_cast<size_t>(n) > room) truncated = true;
      into.append(buf, std::min(room, static_cast<size_t>(n)));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;
  }
}

ssize_t write_nosigpipe(int fd, const char* data, size_t size) {
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  ssize_t n = ::write(fd, data, size);
  int saved = errno;
  if (n < 0 && errno == EPIPE) {
    const timespec zero{0, 0};
    sigtimedwait(&pipe_set, nullptr, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = saved;
  return n;
}

std::string first_line(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  if (line.size() > 300) line = line.substr(0, 300) + "...";
  return line;
}
}  // namespace

std::string SubprocessResult::describe() const {
  if (!started) return "could not run: " + error;
  if (timed_out) return "timed out and was killed";
  std::string what = signal ? "killed by signal " + std::to_string(signal) : "exit " + std::to_string(exit_code);
  std::string line = first_line(err);
  return line.empty() ? what : what + ": " + line;
}

std::vector<std::string> helper_env(const std::vector<std::string>& extra) {
  const char* path = std::getenv("PATH");
  std::vector<std::string> env = {std::string("PATH=") + (path && *path ? path : "/usr/local/bin:/usr/bin:/bin"),
                                  "LANG=C.UTF-8"};
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

Child::~Child() {
  if (pid_ > 0) {
    kill_now();
    ::waitpid(pid_, nullptr, 0);
  }
  close_fd(in_);
  close_fd(out_);
  close_fd(err_);
  close_fd(pidfd_);
}

bool Child::start(const SubprocessSpec& spec) {
  result_ = SubprocessResult{};
  if (spec.argv.empty() || spec.argv[0].empty()) {
    result_.error = "no program given";
    return false;
  }
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (!make_pipe(in) || !make_pipe(out) || !make_pipe(err)) {
    result_.error = std::string("pipe: ") + std::strerror(errno);
    for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]})
      if (fd >= 0) ::close(fd);
    return false;
  }
  // A passed descriptor whose number is one the child's 0, 1, 2, 3... take first
  // is copied above them, so that no dup2 below overwrites it before it is used.
  const int passed = static_cast<int>(spec.pass_fds.size());
  std::vector<Fd> moved;
  std::vector<int> sources;
  for (int fd : spec.pass_fds) {
    if (fd >= 3 + passed) {
      sources.push_back(fd);
      continue;
    }
    moved.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 3 + passed));
    if (moved.back().get() < 0) {
      result_.error = "cannot pass descriptor " + std::to_string(fd) + ": " + std::strerror(errno);
      for (int p : {in[0], in[1], out[0], out[1], err[0], err[1]}) ::close(p);
      return false;
    }
    sources.push_back(moved.back().get());
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  for (int i = 0; i < passed; ++i) posix_spawn_file_actions_adddup2(&actions, sources[static_cast<size_t>(i)], 3 + i);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3 + passed);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    ::close(err[0]);
    result_.error = spec.argv[0] + ": " + std::strerror(rc);
    return false;
  }
  pid_ = pid;
  in_ = in[1];
  out_ = out[0];
  err_ = err[0];
  for (int fd : {in_, out_, err_}) set_nonblocking(fd);
  stdin_data_ = spec.stdin_data;
  stdin_off_ = 0;
  if (stdin_data_.empty()) close_fd(in_);
  max_output_ = spec.max_output_bytes;
  // Waited on by its end alone when nothing is to be written to it and each
  // pipe holds all that is kept of it and a byte more (so a longer output is
  // still seen as truncated); else woken by every write, as before.
  close_fd(pidfd_);
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  quiet_ = false;
  if (pidfd_ >= 0 && in_ < 0 && max_output_ < kQuietPipeMax) {
    const int want = static_cast<int>(max_output_ + 1);
    quiet_ = ::fcntl(out_, F_SETPIPE_SZ, want) > static_cast<int>(max_output_) &&
             ::fcntl(err_, F_SETPIPE_SZ, want) > static_cast<int>(max_output_);
  }
  timeout_ = spec.timeout;
  deadline_ = Clock::now() + spec.timeout;
  result_.started = true;
  return true;
}

void Child::kill_now() {
  if (pid_ <= 0) return;
  ::kill(-pid_, SIGKILL);
  ::kill(pid_, SIGKILL);
}

bool Child::abandon(const std::string& error) {
  if (!error.empty()) result_.error = error;
  result_.timed_out = true;
  kill_now();
  finish_pipes();
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  close_fd(pidfd_);
  return true;
}

void Child::finish_pipes() {
  close_fd(in_);
  close_fd(out_);
  close_fd(err_);
}

bool Child::reap() {
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == 0) return false;
  if (r > 0) {
    if (WIFEXITED(status)) result_.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) result_.signal = WTERMSIG(status);
  }
  // The group may have left helpers behind; they go with it.
  ::kill(-pid_, SIGKILL);
  pid_ = -1;
  close_fd(pidfd_);
  return true;
}

bool Child::quiet_step(Clock::time_point step_end) {
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline_) return abandon("");
    // The pipes are asked for nothing but their hang-up (their data waits in
    // them); a look at them at least every kQuietLook keeps a child that wrote
    // past max_output_ (blocked on a full pipe) from waiting for its deadline.
    pollfd fds[3];
    int n = 0;
    fds[n++] = {pidfd_, POLLIN, 0};
    if (out_ >= 0) fds[n++] = {out_, 0, 0};
    if (err_ >= 0) fds[n++] = {err_, 0, 0};
    auto left = std::min({deadline_, step_end, now + kQuietLook}) - now;
    int ms = static_cast<int>(std::max<long long>(0, std::chrono::ceil<std::chrono::milliseconds>(left).count()));
    int r = ::poll(fds, n, ms);
    if (r < 0 && errno != EINTR) return abandon(std::string("poll: ") + std::strerror(errno));
    // What is there is taken, whatever woke the poll.
    if (out_ >= 0 && !drain(out_, result_.out, max_output_, result_.truncated)) close_fd(out_);
    if (err_ >= 0 && !drain(err_, result_.err, max_output_, result_.truncated)) close_fd(err_);
    if (result_.truncated) {
      // It writes more than is kept: its pipes are read as they fill from now on.
      quiet_ = false;
      return false;
    }
    if (r > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) && reap()) {
      // Ended: all it wrote is in the pipes (a helper it left was killed with its group).
      if (out_ >= 0) drain(out_, result_.out, max_output_, result_.truncated);
      if (err_ >= 0) drain(err_, result_.err, max_output_, result_.truncated);
      finish_pipes();
      return true;
    }
    if (Clock::now() >= step_end && Clock::now() < deadline_) return false;
  }
}

bool Child::step(std::chrono::milliseconds wait) {
  if (pid_ <= 0) return true;
  const auto step_end = Clock::now() + wait;
  if (quiet_) {
    if (quiet_step(step_end)) return true;
    if (quiet_) return false;  // the step's time is up
  }
  for (;;) {
    auto now = Clock::now();
    if (now >= deadline_) return abandon("");
    pollfd fds[3];
    int n = 0;
    if (in_ >= 0) fds[n++] = {in_, POLLOUT, 0};
    if (out_ >= 0) fds[n++] = {out_, POLLIN, 0};
    if (err_ >= 0) fds[n++] = {err_, POLLIN, 0};
    if (n == 0) {
      // Both outputs closed: it has ended or is about to.
      if (!reap()) {
        // Outputs closed but still running: look again shortly, up to the deadline.
        if (now >= step_end) return false;
        ::poll(nullptr, 0, 5);
        continue;
      }
      return true;
    }
    auto left = std::min(deadline_, step_end) - now;
    int ms = static_cast<int>(std::max<long long>(0, std::chrono::ceil<std::chrono::milliseconds>(left).count()));
    int r = ::poll(fds, n, ms);
    if (r < 0 && errno != EINTR) return abandon(std::string("poll: ") + std::strerror(errno));
    if (r == 0 && Clock::now() >= step_end && Clock::now() < deadline_) return false;
    for (int i = 0; i < n && r > 0; ++i) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == in_) {
        ssize_t w = write_nosigpipe(in_, stdin_data_.data() + stdin_off_, stdin_data_.size() - stdin_off_);
        if (w > 0) stdin_off_ += static_cast<size_t>(w);
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || stdin_off_ >= stdin_data_.size()) close_fd(in_);
      } else if (fds[i].fd == out_) {
        if (!drain(out_, result_.out, max_output_, result_.truncated)) close_fd(out_);
      } else if (fds[i].fd == err_) {
        if (!drain(err_, result_.err, max_output_, result_.truncated)) close_fd(err_);
      }
    }
  }
}

SubprocessResult run_subprocess(const SubprocessSpec& spec) {
  Child child;
  if (!child.start(spec)) return child.result();
  while (!child.step(std::chrono::milliseconds(1000))) {
  }
  return child.result();
}

bool helpers_read_passed_fds() { return ::access("/proc/self/fd", X_OK) == 0; }

std::string PassedFds::add(int fd) {
  fds.push_back(fd);
  return "/proc/self/fd/" + std::to_string(2 + fds.size());
}

HelperOutput::HelperOutput(std::string final_path) : final_(std::move(final_path)) {
  const size_t name = final_.rfind('/') + 1;  // 0 without a '/'
  tmp_ = final_.substr(0, name) + "." + final_.substr(name) + ".tmp";
  if (::unlink(tmp_.c_str()) != 0 && errno != ENOENT) {
    error_ = "cannot remove " + tmp_ + ": " + std::strerror(errno);
    return;
  }
  fd_ = ::open(tmp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd_ < 0) error_ = "cannot create " + tmp_ + ": " + std::strerror(errno);
}

HelperOutput::~HelperOutput() {
  if (fd_ < 0) return;
  if (!committed_) {
    // Only the file made here: something else put at the name stays for a person.
    struct stat mine {}, there {};
    if (::fstat(fd_, &mine) == 0 && ::lstat(tmp_.c_str(), &there) == 0 && mine.st_dev == there.st_dev &&
        mine.st_ino == there.st_ino)
      ::unlink(tmp_.c_str());
  }
  ::close(fd_);
}

bool HelperOutput::written() const {
  struct stat st {};
  return fd_ >= 0 && ::fstat(fd_, &st) == 0 && st.st_size > 0;
}

std::string HelperOutput::commit() {
  if (fd_ < 0) return error_;
  struct stat mine {}, there {};
  if (::fstat(fd_, &mine) != 0 || mine.st_size == 0) return "nothing was written";
  if (::lstat(tmp_.c_str(), &there) != 0 || !S_ISREG(there.st_mode) || there.st_dev != mine.st_dev ||
      there.st_ino != mine.st_ino)
    return tmp_ + " was replaced while the helper wrote it";
  if (::rename(tmp_.c_str(), final_.c_str()) != 0) return "cannot rename it to " + final_ + ": " + std::strerror(errno);
  committed_ = true;
  return "";
}

}  // namespace wb
