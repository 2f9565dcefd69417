// Running a helper program (ffprobe, ffmpeg, an operator's notify command)
// without a shell: an argv list, an environment built by the caller (never the
// daemon's own, which may hold the API key), no descriptor of ours but the
// three pipes (and those passed on purpose, SubprocessSpec::pass_fds), stdin fed from a string, stdout and stderr kept up to a bound,
// and a deadline after which the whole process group is killed.
//
// Child is the stepping form for an event loop (start, then step() until it
// reports the end); run() is the blocking form, for short bounded helpers.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace wb {

struct SubprocessSpec {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH when it has no '/'
  std::vector<std::string> env;   // "NAME=value", the child's whole environment
  std::string stdin_data;
  // Open descriptors of ours the child gets as its 3, 4, ... in this order (it
  // opens them as /proc/self/fd/3, ...): a file checked here, not whatever its name
  // points at by the time the child opens it.
  std::vector<int> pass_fds;
  std::chrono::milliseconds timeout{30000};
  size_t max_output_bytes = 1 << 20;  // per stream; more is read and dropped
};

struct SubprocessResult {
  bool started = false;    // false: it could not be run (error says why)
  bool timed_out = false;  // killed at its deadline
  int exit_code = -1;      // when it exited
  int signal = 0;          // when a signal ended it
  bool truncated = false;  // stdout or stderr went past max_output_bytes
  std::string out, err;
  std::string error;

  bool ok() const { return started && !timed_out && signal == 0 && exit_code == 0; }
  // For a log line: "exit 1: <stderr's first line>", "timed out after 30 s", ...
  std::string describe() const;
};

// The environment a helper gets: PATH, LANG=C.UTF-8 and the given extras.
std::vector<std::string> helper_env(const std::vector<std::string>& extra = {});

class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child();  // kills and reaps a child still running

  // Starts it; false (with result().error) when it cannot be run.
  bool start(const SubprocessSpec& spec);
  // Moves its pipes along for at most `wait`; true once it has ended and been
  // reaped (then result() is final). Kills it at its deadline.
  bool step(std::chrono::milliseconds wait);
  bool running() const { return pid_ > 0; }
  const SubprocessResult& result() const { return result_; }

 private:
  void finish_pipes();
  // The step of a child with no input to write whose pipes hold all it may
  // write (quiet_): it is woken by its end, not by each write (a wake-up is a
  // context switch, dear on a small VM: 5 of them a probe became 2).
  bool quiet_step(std::chrono::steady_clock::time_point step_end);
  // Reaps an ended child (WNOHANG); false while it runs. Sets the exit status.
  bool reap();
  // Ends a child past its deadline (or after a failed poll, `error`): killed with
  // its group, reaped, marked timed out. Returns true (the step is over).
  bool abandon(const std::string& error);
  void kill_now();

  pid_t pid_ = -1;
  int in_ = -1, out_ = -1, err_ = -1;
  int pidfd_ = -1;      // readable once the child has ended (pidfd_open)
  bool quiet_ = false;  // see quiet_step()
  std::string stdin_data_;
  size_t stdin_off_ = 0;
  size_t max_output_ = 0;
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::milliseconds timeout_{0};
  SubprocessResult result_;
};

// Runs it to the end, blocking at most about spec.timeout.
SubprocessResult run_subprocess(const SubprocessSpec& spec);

// Whether a helper can open a passed descriptor by its /proc/self/fd name
// (/proc is mounted). Without it, a helper reads a path (a file put there
// after a check is what it sees), and writes nothing: no output file is
// handed to a helper by its name (a symlink put there would be written through).
bool helpers_read_passed_fds();

// Descriptors handed to a helper (SubprocessSpec::pass_fds) and the names it
// opens them by: add() returns "/proc/self/fd/3", then "/proc/self/fd/4", ...
struct PassedFds {
  std::vector<int> fds;
  std::string add(int fd);
};

// A file a helper writes through a passed descriptor, at the temporary name
// <dir>/.<name>.tmp of its final path until commit(): whatever was at that name
// is removed first (a symlink there is removed, never followed), and the file is
// created afresh (O_EXCL, O_NOFOLLOW). The helper, however it opens its output,
// writes this file and no other.
class HelperOutput {
 public:
  explicit HelperOutput(std::string final_path);
  ~HelperOutput();  // removes the temporary file unless committed
  HelperOutput(const HelperOutput&) = delete;
  HelperOutput& operator=(const HelperOutput&) = delete;
  int fd() const { return fd_; }  // -1 (with error()) when it could not be created
  const std::string& error() const { return error_; }
  bool written() const;  // it holds something
  // Renames it to its final path if it holds something and is still the file
  // created (by name); "" or the problem.
  std::string commit();

 private:
  std::string final_;
  std::string tmp_;
  int fd_ = -1;
  bool committed_ = false;
  std::string error_;
};

}  // namespace wb
