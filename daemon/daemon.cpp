#include "daemon/daemon.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <thread>

#include "daemon/control.h"
#include "daemon/watcher.h"
#include "jobs/curl_transport.h"
#include "jobs/manifest.h"
#include "jobs/scheduler.h"
#include "jobs/store.h"
#include "jobs/util.h"

namespace wb {

namespace {

constexpr Millis kDrainTimeout{20000};

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  s.erase(0, s.find_first_not_of(" \t\r\n"));
  return s;
}

std::string read_key_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error("cannot read the key file " + path + ": " + std::strerror(errno));
  if (st.st_mode & (S_IROTH | S_IWOTH))
    throw Error("the key file " + path + " is readable or writable by others; chmod o-rwx it");
  std::string key = trim(read_file(path, 4096));
  if (key.empty()) throw Error("the key file " + path + " is empty");
  return key;
}

class StateLock {
 public:
  explicit StateLock(const std::string& state_dir) {
    std::string path = join_path(state_dir, "wanbatch.lock");
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      char buf[32] = {};
      ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
      std::string pid = n > 0 ? trim(std::string(buf, static_cast<size_t>(n))) : "?";
      ::close(fd_);
      fd_ = -1;
      throw Error("another wanbatch daemon (pid " + pid + ") is already using the state directory " + state_dir);
    }
    std::string me = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, me.data(), me.size(), 0) < 0) {
      // The pid is informational only.
    }
  }
  ~StateLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;

 private:
  int fd_ = -1;
};

// Missing folders (a share not yet mounted) are waited for, never created blindly,
// except spool.active, which is wanbatch's own.
bool wait_for_folders(const Config& c, int signal_fd) {
  const std::pair<const char*, std::string> needed[] = {{"state_dir", c.state_dir},
                                                         {"spool.incoming", c.spool.incoming},
                                                         {"spool.done", c.spool.done},
                                                         {"spool.failed", c.spool.failed},
                                                         {"output_root", c.output_root}};
  auto last_note = std::chrono::steady_clock::time_point{};
  for (;;) {
    std::string missing;
    for (const auto& [key, dir] : needed)
      if (!is_dir(dir)) missing += std::string(missing.empty() ? "" : ", ") + key + " (" + dir + ")";
    if (missing.empty() && !is_dir(c.spool.active) && is_dir(dirname_of(c.spool.active)))
      ::mkdir(c.spool.active.c_str(), 0755);
    if (missing.empty() && !is_dir(c.spool.active)) missing = "spool.active (" + c.spool.active + ")";
    if (missing.empty()) return true;
    auto now = std::chrono::steady_clock::now();
    if (now - last_note > std::chrono::seconds(30)) {
      spdlog::warn("waiting for missing folders: {}", missing);
      sd_notifyf(0, "STATUS=waiting for missing folders: %s", missing.c_str());
      last_note = now;
    }
    struct signalfd_siginfo si {};
    if (::read(signal_fd, &si, sizeof si) == sizeof si) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

std::string unique_target(const std::string& dir, const std::string& name) {
  std::string target = join_path(dir, name);
  struct stat st {};
  if (::lstat(target.c_str(), &st) != 0) return target;
  return join_path(dir, name + "." + std::to_string(to_epoch_ms(std::chrono::system_clock::now())));
}

class Daemon {
 public:
  Daemon(const Config& c, std::string key, int signal_fd)
      : c_(c),
        transport_(c.api.allow_loopback_http),
        store_(Store::open(join_path(c.state_dir, "db"), Store::Mode::read_write)),
        scheduler_(c, *store_, transport_, [] { return std::chrono::system_clock::now(); },
                   [] { return std::chrono::steady_clock::now(); }, std::move(key)),
        watcher_(c.spool.incoming, Millis(static_cast<int64_t>(c.spool.settle_seconds * 1000))),
        control_(control_socket_path(c.state_dir)),
        signal_fd_(signal_fd) {
    rules_.input_roots = c.input_roots;
    rules_.max_shots = c.limits.max_shots_per_manifest;
    rules_.max_bytes = c.limits.max_manifest_bytes;
    rules_.max_media_bytes = c.limits.max_media_bytes;
    scheduler_.on_batch_finished = [this](const BatchRecord& b) { retire_manifest(b); };
  }

  int run() {
    scheduler_.load();
    for (const auto& b : store_->batches())
      if (b.finished) retire_manifest(b);  // a stop between finishing and moving the file
    sd_notify(0, "READY=1");
    uint64_t watchdog_usec = 0;
    Millis notify_every{5000};
    if (sd_watchdog_enabled(0, &watchdog_usec) > 0)
      notify_every = std::min(notify_every, Millis(static_cast<int64_t>(watchdog_usec / 2000)));
    auto last_notify = std::chrono::steady_clock::time_point{};
    bool stopping = false;
    auto drain_deadline = std::chrono::steady_clock::now();
    for (;;) {
      MonoPoint now = std::chrono::steady_clock::now();
      Millis watch_next{1000};  // take_ready (re)creates a lost or missing watch itself
      if (!stopping)
        for (const auto& name : watcher_.take_ready(now, watch_next)) take(name);
      Millis next = std::min({scheduler_.tick(), watch_next, Millis(1000)});
      if (std::chrono::steady_clock::now() - last_notify >= notify_every) {
        // The watchdog ping doubles as a liveness proof of the loop itself.
        std::string status = std::to_string(scheduler_.unfinished_batches()) + " batches, " +
                             std::to_string(scheduler_.active_shots()) + " shots under way" +
                             (scheduler_.paused() ? ", submits PAUSED" : "") + (stopping ? ", stopping" : "");
        sd_notifyf(0, "WATCHDOG=1\nSTATUS=%s", status.c_str());
        last_notify = std::chrono::steady_clock::now();
      }
      if (stopping) {
        if (scheduler_.submits_on_the_wire() == 0) break;
        if (std::chrono::steady_clock::now() > drain_deadline) {
          spdlog::warn("stopping with {} submits unanswered; they will be HELD as ambiguous",
                       scheduler_.submits_on_the_wire());
          break;
        }
        next = std::min(next, Millis(100));
      }
      // The control clients' deadlines wake the loop too; their fds are waited on
      // after the watcher's and the signal's.
      next = std::min(next, control_.until_next_deadline(std::chrono::steady_clock::now()));
      std::vector<pollfd> fds = {{watcher_.fd(), POLLIN, 0}, {signal_fd_, POLLIN, 0}};
      auto control_fds = control_.waits();
      fds.insert(fds.end(), control_fds.begin(), control_fds.end());
      transport_.perform(next, fds);
      if (fds[0].revents) watcher_.drain_events();
      auto mono_now = std::chrono::steady_clock::now();
      bool control_ready = std::any_of(fds.begin() + 2, fds.end(), [](const pollfd& p) { return p.revents != 0; });
      if (control_ready || control_.until_next_deadline(mono_now) == Millis(0))
        control_.serve(mono_now, [this](const nlohmann::json& r) { return command(r); });
      if (fds[1].revents) {
        struct signalfd_siginfo si {};
        while (::read(signal_fd_, &si, sizeof si) == sizeof si) {
        }
        if (!stopping) {
          spdlog::info("stopping: no new submits; waiting for {} submits on the wire",
                       scheduler_.submits_on_the_wire());
          sd_notify(0, "STOPPING=1");
          scheduler_.stop_submitting();
          stopping = true;
          drain_deadline = std::chrono::steady_clock::now() + kDrainTimeout;
        }
      }
    }
    spdlog::info("stopped");
    return 0;
  }

 private:
  void take(const std::string& name) {
    std::string path = join_path(c_.spool.incoming, name);
    ManifestResult r = load_manifest(path, rules_);
    if (!r.manifest) {
      refuse(name, format_problems(name, r.problems));
      return;
    }
    const Manifest& m = *r.manifest;
    std::string active = join_path(c_.spool.active, m.batch + "__" + name);
    Scheduler::Accept a;
    try {
      a = scheduler_.accept(m, name, active);
    } catch (const Error& e) {
      spdlog::error("{}: cannot record the batch: {} (will retry)", name, e.what());
      return;
    }
    if (a == Scheduler::Accept::name_taken) {
      refuse(name, name + ":0: batch: a batch named '" + m.batch +
                       "' already exists with different content; give this manifest another batch: name\n");
      return;
    }
    try {
      move_file(path, active);
    } catch (const Error& e) {
      spdlog::error("{}: accepted, but {}", name, e.what());
    }
  }

  // One control request (daemon/control.h).
  nlohmann::json command(const nlohmann::json& request) {
    std::string cmd = request.value("command", "");
    try {
      if (cmd == "ping") return {{"ok", true}, {"paused", scheduler_.paused()}};
      if (cmd == "pause" || cmd == "resume") {
        scheduler_.set_paused(cmd == "pause");
        return {{"ok", true}, {"paused", scheduler_.paused()}};
      }
      if (cmd == "retry" || cmd == "cancel") {
        std::string target = request.value("target", "");
        auto r = cmd == "retry" ? scheduler_.retry(target) : scheduler_.cancel(target);
        return {{"ok", true}, {"changed", r.changed}, {"skipped", r.skipped}};
      }
      return {{"ok", false}, {"error", "unknown command '" + cmd + "'"}};
    } catch (const Error& e) {
      return {{"ok", false}, {"error", e.what()}};
    }
  }

  void refuse(const std::string& name, const std::string& errors) {
    spdlog::warn("{}: refused:\n{}", name, errors);
    try {
      std::string target = unique_target(c_.spool.failed, name);
      write_file_atomic(c_.spool.failed, basename_of(target) + ".error.txt", errors);
      move_file(join_path(c_.spool.incoming, name), target);
    } catch (const Error& e) {
      spdlog::error("{}: cannot move to {}: {}", name, c_.spool.failed, e.what());
    }
  }

  void retire_manifest(const BatchRecord& b) {
    struct stat st {};
    if (b.manifest_path.empty() || ::lstat(b.manifest_path.c_str(), &st) != 0) return;
    try {
      move_file(b.manifest_path, unique_target(c_.spool.done, b.manifest_name));
    } catch (const Error& e) {
      spdlog::error("batch {}: {}", b.name, e.what());
    }
  }

  const Config& c_;
  CurlTransport transport_;
  std::unique_ptr<Store> store_;
  Scheduler scheduler_;
  SpoolWatcher watcher_;
  ControlServer control_;
  int signal_fd_;
  ManifestRules rules_;
};

}  // namespace

std::string load_api_key(const ApiConfig& api) {
  std::string key;
  if (!api.key_env.empty()) {
    if (char* v = std::getenv(api.key_env.c_str()); v && *v) {
      key = trim(v);
      // Scrub the value in place: /proc/<pid>/environ shows the original block,
      // which unsetenv alone leaves untouched.
      std::fill(v, v + std::strlen(v), 'x');
    }
    ::unsetenv(api.key_env.c_str());
  }
  if (key.empty() && !api.key_file.empty()) key = read_key_file(api.key_file);
  if (key.empty()) {
    if (const char* creds = std::getenv("CREDENTIALS_DIRECTORY"); creds && *creds) {
      std::string path = join_path(creds, "segmind-api-key");
      struct stat st {};
      if (::stat(path.c_str(), &st) == 0) key = read_key_file(path);
    }
  }
  if (key.empty())
    throw Error("no API key: set $" + api.key_env + ", api.key_file, or a systemd credential named segmind-api-key");
  return key;
}

int run_daemon(const Config& config) {
  ::prctl(PR_SET_DUMPABLE, 0);
  std::string key;
  try {
    key = load_api_key(config.api);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  int sfd = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  ::signal(SIGPIPE, SIG_IGN);
  if (!wait_for_folders(config, sfd)) return 0;
  try {
    StateLock lock(config.state_dir);
    Daemon d(config, std::move(key), sfd);
    return d.run();
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}

}  // namespace wb
